"""The privacy trade-off plot (mAP against the audit's reconstruction gain): ``python experiments/privacy_plot.py --help``.

The command line of :mod:`ppreid.reports.privacy_plot` (its docstring has the details).
"""

import sys

from ppreid.reports.privacy_plot import main

if __name__ == "__main__":
    sys.exit(main())
