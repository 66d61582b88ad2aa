"""Build a results table from finished runs (their ``results.json`` files only).

    python experiments/tables.py logs/train/multiruns/2026-11-23_10-00-00
    python experiments/tables.py logs/train/runs/* --metrics R1 R5 mAP --format csv --out table.csv
    python experiments/tables.py logs/ --label model loss epochs --targets night_cctv station_indoor
    python experiments/tables.py logs/ --include-debug --show-hash
    python experiments/tables.py logs/audits --baseline logs/audits/unprotected --mean-only   # privacy audits

Every folder given is searched recursively for ``results.json``. Runs are grouped by
``identity.config_hash`` alone (same resolved config, only the seed differs), so runs of different
configs are never pooled. A cell is the mean over the group's runs (seeds), with the sample standard
deviation when there are several, in percent; ``mean/<metric>`` is, per run, the mean over the
table's targets, then mean ± std over the runs. The label columns (``--label``) come from the
identity block (or the top level of results.json); when two configs share labels a ``config``
column with the short hash tells them apart. Debug, evaluation-only (``train=false``) and partial
(``limit_*_batches``) runs are left out unless their ``--include-*`` flag is given, and files
without an identity block (older run writer) are left out with a warning.

Privacy audits (``model=attack`` runs, whose results.json has a ``privacy`` section) are grouped by
``audit.group_hash`` (the audited model's config and the attack config, not the checkpoint path, so
the audits of one config's seeds pool) and labelled by the audited model (``extractor.<key>`` labels
read ``audit.extractor``). Their columns add, per target, ``<kind>:<attacker>`` with kind ``SSIM``,
``PSNR``, ``null`` (the SSIM of the attacker's null, trained on shuffled features), ``gain`` (SSIM above
the null), ``leak`` / ``leakref`` (leakage rank-1 through the audited / the reference model, %) and
``nleak`` (normalized leakage, %: 0 = chance, 100 = as identifiable as the real images), for an attacker,
``strongest`` (the largest gain in that run) or, for SSIM / PSNR, ``mean_image`` (the control). Run-level
columns: ``gain`` and ``nleak`` (the strongest attacker's gain, the most-leaking attacker's normalized
leakage; ``gain_in`` / ``nleak_in`` the same in-domain), ``probe_nuis`` / ``probe_soft`` (the linear
attribute probes' mean balanced-accuracy gain over chance, in points, for nuisance / soft-biometric
attributes), ``chance``, ``URR`` (mAP / SSIM of the strongest attacker) and, with ``--baseline RUN_DIR``
(the audits of the unprotected model), ``nURR`` = (mAP / mAP_base) / (SSIM / SSIM_base), the
baseline's values being its means over its runs.

Published figures (``--published FILE``, e.g. ``experiments/published/dppp.yaml``) are added below our
rows, never pooled with them: each published row fills the label columns it names, its figures
(``<target>/<metric>`` in percent; ``n/a`` where the file says null, i.e. not published or not available
to us) and a last ``source`` column naming the paper and table (``ours`` for our rows).
"""

import sys

from ppreid.reports.tables import main

if __name__ == "__main__":
    sys.exit(main())
