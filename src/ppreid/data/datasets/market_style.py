"""Any dataset converted to the Market-1501 layout, e.g. the synthetic RandPerson, UnrealPerson and
ClonedPerson training sets used in domain-generalization tables.

Layout under root: ``bounding_box_train/`` (required) and, optionally, ``query/`` + ``bounding_box_test/``,
with Market-style names ``PPPP_cC_*.jpg`` (pid, then the 1-based camera, from the file's basename).
Train pids are relabelled 0..N-1; pid -1 is junk (dropped) and pid 0 a distractor (dropped from train).
No bounds on pids or cameras: the sources differ in both.
"""

from __future__ import annotations

from pathlib import Path

from ppreid.data.datasets.base import ReIDSplits, parse_market_folder, register_dataset, relabel
from ppreid.utils.errors import DatasetLayoutError

TRAIN, HELD_OUT = "bounding_box_train", ("query", "bounding_box_test")


@register_dataset("market_style")
def market_style(root: str, ext: str = ".jpg", label: str = "market_style") -> ReIDSplits:
    name = label  # the dataset named in messages
    base = Path(root)
    if not (base / TRAIN).is_dir():
        raise DatasetLayoutError(
            f"{name}: {base / TRAIN} does not exist. Expected a Market-1501-style folder under {base}: "
            f"{TRAIN}/ (+ optional query/ and bounding_box_test/) with PPPP_cC_*{ext} images. Convert the "
            "dataset to that layout, or set the dataset's root in the data config."
        )
    held = [(base / s).is_dir() for s in HELD_OUT]
    if any(held) and not all(held):
        raise DatasetLayoutError(f"{name}: {base} has only one of query/ and bounding_box_test/; give both or neither.")
    train = parse_market_folder(base / TRAIN, name, ext, drop_distractors=True)
    if not train:
        raise DatasetLayoutError(f"{name}: {base / TRAIN} holds only junk/distractor images (pid <= 0).")
    splits = ReIDSplits(name=name, root=str(base), train=relabel(train))
    if all(held):
        splits.query = parse_market_folder(base / "query", name, ext)
        splits.gallery = parse_market_folder(base / "bounding_box_test", name, ext)
    return splits
