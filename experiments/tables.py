"""A results table from finished runs' results.json files: ``python experiments/tables.py --help``.

The command line of :mod:`ppreid.reports.tables` (its docstring has the details).
"""

import sys

from ppreid.reports.tables import main

if __name__ == "__main__":
    sys.exit(main())
