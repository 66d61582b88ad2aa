"""CUHK03-NP, the new protocol of Zhong et al. (Re-ranking Person Re-identification with
k-reciprocal Encoding, CVPR 2017) on CUHK03 (Li et al., DeepReID, CVPR 2014).

Layout under root (or root/cuhk03-np/): ``labeled/`` and ``detected/``, each Market-style
(``bounding_box_train/ query/ bounding_box_test/``) with ``*.png``. Option ``variant`` picks one.
Market-1501 rules and metric.

Dataset statistics (767 train / 700 test identities):
    - labeled:  7,368 (train) + 1,400 (query) + 5,328 (gallery) images.
    - detected: 7,365 (train) + 1,400 (query) + 5,332 (gallery) images.
    - cameras: file names use c1/c2 (the two views of a camera pair); up to c10 (5 pairs) accepted.
"""

from __future__ import annotations

from pathlib import Path

from ppreid.data.datasets.base import ReIDSplits, parse_market_style, register_dataset
from ppreid.utils.errors import ConfigValueError, DatasetLayoutError

VARIANTS = ("labeled", "detected")


@register_dataset("cuhk03np")
def cuhk03np(root: str, variant: str = "labeled", eval_only: bool = False) -> ReIDSplits:
    """eval_only: only the variant's ``query/`` and ``bounding_box_test/`` are read (and needed)."""
    if variant not in VARIANTS:
        raise ConfigValueError(
            f"cuhk03np: variant '{variant}' is not one of {', '.join(VARIANTS)}; "
            f"set the dataset option variant to 'labeled' or 'detected'."
        )
    base = Path(root)
    if not (base / variant).is_dir() and (base / "cuhk03-np" / variant).is_dir():
        base = base / "cuhk03-np"
    if not (base / variant).is_dir():
        raise DatasetLayoutError(
            f"cuhk03np: missing folder {base / variant}. Expected labeled/ and detected/ under {root}, "
            f"each with bounding_box_train/, query/, bounding_box_test/ of *.png images. Download "
            f"CUHK03-NP and put it at <paths.data_dir>/cuhk03-np, or set the dataset's root in the data config."
        )
    return parse_market_style(
        base / variant,
        f"cuhk03np-{variant}",
        default_folder=f"cuhk03-np/{variant}",
        ext=".png",
        num_cams=10,
        max_pid=1467,
        eval_only=eval_only,
    )
