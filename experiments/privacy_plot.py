"""Utility vs leakage trade-off of privacy audits (``model=attack`` runs), as a PNG and a text table.

    python experiments/privacy_plot.py logs/audits --baseline logs/audits/unprotected --out tradeoff.png

Every folder is searched for results.json; audits are pooled per config exactly as ``tables.py`` pools
them (``audit.group_hash``: the audited model's config and the attack config, any seed). One point per
config, means over the targets, then mean ± std over the seeds (error bars), in two panels:

- left: x = the strongest attacker's **SSIM gain** (its SSIM above its null, the same attacker trained on
  shuffled features: what the feature lets it reconstruct), cross-domain; y = mAP (%);
- right: x = the **normalized leakage** of the most-leaking attacker, (R1 - chance) / (the reference
  judge's R1 on real images - chance), in %; y = mAP (%).

The table adds the in-domain gain and leakage. With ``--baseline`` (the audits of the unprotected model)
the plot marks the goal region (each privacy figure at most ``--keep`` x the baseline's, mAP at most
``--map-cost`` points below it) and the table names the best point: within the mAP cost, the lowest of
the largest ratio to the baseline among the gains and leakages (cross-domain and in-domain).
"""

import sys

from ppreid.reports.privacy_plot import main

if __name__ == "__main__":
    sys.exit(main())
