"""Paired-by-seed differences between two configs' runs: ``python experiments/paired.py --help``.

The command line of :mod:`ppreid.reports.paired` (its docstring has the details).
"""

import sys

from ppreid.reports.paired import main

if __name__ == "__main__":
    sys.exit(main())
