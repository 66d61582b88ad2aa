"""Paired-by-seed differences between two configurations' runs (their ``results.json`` files only).

    python experiments/paired.py logs/dppp_sandbox/pdm_aligned logs/dppp_sandbox/clipreid_aligned
    python experiments/paired.py A B --metric R1 --targets night_cctv station_indoor --format csv

Two folders (or run files), A and B, each searched recursively for ``results.json`` like
``experiments/tables.py`` does (the same rules: debug, partial, evaluation-only and untrained runs are
left out). Each side must hold runs of **one** configuration (one ``identity.config_hash``) and at most
one run per seed. Runs are paired by their seed; seeds present on one side only are named and left
out. Per seed the table gives A, B and A - B for each target and for ``mean`` (the mean over the
targets, per run), then the mean ± sample standard deviation of each column over the paired seeds, in
percent. The last line says whether the mean difference is larger than its spread (one and two
standard deviations), the yardstick of the sandbox studies' goals.
"""

import sys

from ppreid.reports.paired import main

if __name__ == "__main__":
    sys.exit(main())
