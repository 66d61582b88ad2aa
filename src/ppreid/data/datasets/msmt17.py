"""MSMT17 (Wei et al., Person Transfer GAN to Bridge Domain Gap for Person Re-identification, CVPR 2018).

Layout under root (or root/MSMT17_V1/, root/MSMT17_V2/, root/MSMT17/):
    - V1: ``train/ test/ list_train.txt list_val.txt list_query.txt list_gallery.txt``
    - V2: ``mask_train_v2/ mask_test_v2/`` with the same four list files.
List lines are ``relpath pid``; relpath is under the train folder for list_train/list_val and under
the test folder for list_query/list_gallery. The camera is the 3rd ``_`` field of the file name
(``0000_000_01_0303morning_0015_0.jpg`` -> camera 01 -> camid 0).

Dataset statistics (train = list_train + list_val, the full training data):
    - identities: 1,041 (train) + 3,060 (test).
    - images: 32,621 (train) + 11,659 (query) + 82,161 (gallery).
    - cameras: 15.
"""

from __future__ import annotations

from pathlib import Path

from ppreid.data.datasets.base import ReIDRecord, ReIDSplits, register_dataset, relabel
from ppreid.utils.errors import DatasetLayoutError

NUM_CAMS = 15
LISTS = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
VERSIONS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
NESTED = ("MSMT17_V1", "MSMT17_V2", "MSMT17")
LAYOUT = "train/, test/ (V1) or mask_train_v2/, mask_test_v2/ (V2), plus " + ", ".join(LISTS)


def _find_layout(root: Path, eval_only: bool = False) -> tuple[Path, str, str]:
    """``(base, train_dir, test_dir)`` of the first V1/V2 layout found in root or a nested folder
    (``eval_only``: the test folder and the query / gallery lists are enough)."""
    lists = LISTS[2:] if eval_only else LISTS
    for base in [root] + [root / n for n in NESTED]:
        for train_dir, test_dir in VERSIONS.values():
            if (eval_only or (base / train_dir).is_dir()) and (base / test_dir).is_dir():
                missing = [str(base / f) for f in lists if not (base / f).is_file()]
                if missing:
                    raise DatasetLayoutError(
                        f"msmt17: missing list file(s) {', '.join(missing)}. Expected {LAYOUT} under {base}."
                    )
                return base, train_dir, test_dir
    raise DatasetLayoutError(
        f"msmt17: no MSMT17 layout under {root}: expected {LAYOUT} under it (or under "
        f"{root}/MSMT17_V1 or {root}/MSMT17_V2). Download MSMT17 and put it at "
        f"<paths.data_dir>/MSMT17, or set the dataset's root in the data config."
    )


def _read_list(list_file: Path, image_dir: Path) -> list[ReIDRecord]:
    """Records of one list file (original pids, 0-based camids), sorted by path."""
    records = []
    lines = list_file.read_text().splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            relpath, pid = parts[0], int(parts[1])
            cam = int(Path(relpath).name.split("_")[2])
            if len(parts) != 2:
                raise ValueError
        except (IndexError, ValueError):
            raise DatasetLayoutError(
                f"msmt17: {list_file} line {lineno} '{line}' is not 'relpath pid' with a file named like "
                f"0000_000_01_0303morning_0015_0.jpg (camera = 3rd '_' field). Re-download the list files."
            ) from None
        if not 1 <= cam <= NUM_CAMS:
            raise DatasetLayoutError(
                f"msmt17: {list_file} line {lineno}: camera {cam} of {relpath} is outside 1..{NUM_CAMS}."
            )
        records.append(ReIDRecord(str(image_dir / relpath), pid, cam - 1))
    if not records:
        raise DatasetLayoutError(f"msmt17: list file {list_file} is empty; re-download it.")
    return sorted(records, key=lambda r: r.path)


@register_dataset("msmt17")
def msmt17(root: str, include_val: bool = True, eval_only: bool = False) -> ReIDSplits:
    """``include_val``: train on list_train + list_val (the standard full training set).
    ``eval_only``: read only the test folder and list_query / list_gallery (``.train`` stays empty)."""
    base, train_dir, test_dir = _find_layout(Path(root), eval_only)
    if eval_only:
        return ReIDSplits(
            name="msmt17",
            root=str(base),
            query=_read_list(base / "list_query.txt", base / test_dir),
            gallery=_read_list(base / "list_gallery.txt", base / test_dir),
        )
    train = _read_list(base / "list_train.txt", base / train_dir)
    if include_val:
        train = sorted(train + _read_list(base / "list_val.txt", base / train_dir), key=lambda r: r.path)
    return ReIDSplits(
        name="msmt17",
        root=str(base),
        train=relabel(train),
        query=_read_list(base / "list_query.txt", base / test_dir),
        gallery=_read_list(base / "list_gallery.txt", base / test_dir),
    )
