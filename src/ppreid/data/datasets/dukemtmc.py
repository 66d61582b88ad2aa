"""DukeMTMC-reID (Ristani et al. ECCVW 2016; Zheng et al. ICCV 2017).

Layout under root (or root/DukeMTMC-reID/): ``bounding_box_train/ query/ bounding_box_test/``,
``*.jpg`` named ``PPPP_cC_fFFFFFFF.jpg``. Market-1501 rules.

Dataset statistics:
    - identities: 702 (train) + 702 (query); gallery 1,110 (incl. 408 distractor identities).
    - images: 16,522 (train) + 2,228 (query) + 17,661 (gallery).
    - cameras: 8.
"""

from __future__ import annotations

from ppreid.data.datasets.base import ReIDSplits, parse_market_style, register_dataset


@register_dataset("dukemtmc")
def dukemtmc(root: str, eval_only: bool = False) -> ReIDSplits:
    """eval_only: only ``query/`` and ``bounding_box_test/`` are read (and needed)."""
    return parse_market_style(
        root, "dukemtmc", default_folder="DukeMTMC-reID", nested=("DukeMTMC-reID",), num_cams=8, eval_only=eval_only
    )
