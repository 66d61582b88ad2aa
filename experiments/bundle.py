"""A study's compact results bundle under experiments/results/: ``python experiments/bundle.py --help``.

The command line of :mod:`ppreid.reports.bundle` (its docstring has the details).
"""

import sys

from ppreid.reports.bundle import main

if __name__ == "__main__":
    sys.exit(main())
