"""Market-1501 (Zheng et al., Scalable Person Re-identification: A Benchmark, ICCV 2015).

Layout under root (or root/Market-1501-v15.09.15/): ``bounding_box_train/ query/ bounding_box_test/``,
``*.jpg`` named ``PPPP_cCsS_FFFFFF_BB.jpg``.

Dataset statistics (after dropping junk, pid -1):
    - identities: 751 (train) + 750 (query); gallery 751 + distractors (pid 0).
    - images: 12,936 (train) + 3,368 (query) + 15,913 (gallery).
    - cameras: 6.
"""

from __future__ import annotations

from ppreid.data.datasets.base import ReIDSplits, parse_market_style, register_dataset


@register_dataset("market1501")
def market1501(root: str, eval_only: bool = False) -> ReIDSplits:
    """eval_only: only ``query/`` and ``bounding_box_test/`` are read (and needed)."""
    return parse_market_style(
        root,
        "market1501",
        default_folder="Market-1501-v15.09.15",
        nested=("Market-1501-v15.09.15",),
        num_cams=6,
        max_pid=1501,
        eval_only=eval_only,
    )
