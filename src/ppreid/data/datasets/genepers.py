"""GenePerson: the synthetic dataset of DPPP stage 1 (written by ``synth.py``), and any folder in
its format, e.g. the embedded procedural source and target domains.

Layout under root (docs/architecture.md, "GenePerson format"):
    - ``bounding_box_train/PPPPP_cC_SSSSSS.jpg``: Market-style names, camera written 1-based (c1).
    - ``manifest.jsonl``: one JSON object per image with at least ``file`` (path relative to root),
      ``pid`` (the pid written in the name), ``camid`` (0-based, = C - 1) and ``attributes``.
    - optional held-out split ``query/`` + ``bounding_box_test/`` (Market-style names): the
      procedural target domains use it; a folder with only these two is a test-only domain.
With a manifest, train records come from it and carry ``attributes``; the manifest and the name must
agree on pid and camera, and every image must be listed (and vice versa). Without a manifest, train
records come from the names. Held-out records get attributes when the manifest lists them.
Unlike real datasets, a train pid 0 is a normal identity here (there are no distractors); pid -1 is
dropped as junk everywhere. A "camera" is an environment profile (scene + illumination + camera look).

Dataset statistics (the paper's release): 130,519 images of 6,641 identities (train only).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from ppreid.data.datasets.base import (
    ReIDRecord,
    ReIDSplits,
    list_images,
    parse_market_folder,
    parse_market_name,
    register_dataset,
    relabel,
)
from ppreid.utils.errors import DatasetLayoutError

NAME = "genepers"
MANIFEST = "manifest.jsonl"
TRAIN_DIR = "bounding_box_train"
HELD_OUT = ("query", "bounding_box_test")
REQUIRED_KEYS = ("file", "pid", "camid", "attributes")
LAYOUT = f"{TRAIN_DIR}/ (+ {MANIFEST}) and/or a held-out split {HELD_OUT[0]}/ + {HELD_OUT[1]}/"


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Manifest entries keyed by their normalised relative path (``bounding_box_train/x.jpg``)."""
    entries: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{NAME}: {path} line {lineno}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetLayoutError(f"{where} is not valid JSON ({err}); re-run synth.py to rewrite it.") from None
        missing = [k for k in REQUIRED_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise DatasetLayoutError(
                f"{where} lacks {', '.join(missing)}; each line needs "
                f"{', '.join(REQUIRED_KEYS)}. Re-run synth.py to rewrite it."
            )
        if not all(
            isinstance(entry[k], int) and not isinstance(entry[k], bool) for k in ("pid", "camid")
        ) or not isinstance(entry["attributes"], dict):
            raise DatasetLayoutError(f"{where}: pid and camid must be integers and attributes an object.")
        rel = PurePosixPath(entry["file"]).as_posix()
        if PurePosixPath(rel).parts[0] not in (TRAIN_DIR,) + HELD_OUT:
            raise DatasetLayoutError(
                f"{where}: file '{rel}' is not under {TRAIN_DIR}/, {HELD_OUT[0]}/ or {HELD_OUT[1]}/."
            )
        if rel in entries:
            raise DatasetLayoutError(f"{where}: file '{rel}' is listed twice.")
        entries[rel] = entry
    return entries


def _check_agrees(path: Path, entry: dict[str, Any], manifest: Path) -> None:
    """The manifest (0-based camid) and a Market-style name (1-based ``_cC``) must tell the same story."""
    pid, cam = parse_market_name(path, NAME)
    if (pid, cam - 1) != (entry["pid"], entry["camid"]):
        raise DatasetLayoutError(
            f"{NAME}: {path} says pid {pid}, camera c{cam} (camid {cam - 1}) but {manifest} says pid "
            f"{entry['pid']}, camid {entry['camid']} (0-based). Re-run synth.py to rewrite the set."
        )


def _train_from_manifest(
    files: list[Path], manifest: dict[str, dict[str, Any]], manifest_path: Path
) -> list[ReIDRecord]:
    records = []
    for path in files:
        entry = manifest.get(f"{TRAIN_DIR}/{path.name}")
        if entry is None:
            raise DatasetLayoutError(
                f"{NAME}: {path} is not listed in {manifest_path}. The set is incomplete or mixed; "
                f"re-run synth.py with the same config to finish it, or delete the file."
            )
        _check_agrees(path, entry, manifest_path)
        if entry["pid"] != -1:
            records.append(
                ReIDRecord(
                    str(path),
                    entry["pid"],
                    entry["camid"],
                    entry["attributes"],
                    mask=_mask(entry, manifest_path),
                    hidden=tuple(entry.get("hidden") or ()),
                )
            )
    return records


def _mask(entry: dict[str, Any], manifest_path: Path) -> str | None:
    """The path of the entry's person mask (``mask``: relative to the set's folder), if the manifest names one."""
    return str(manifest_path.parent / entry["mask"]) if entry.get("mask") else None


def _attach(
    records: list[ReIDRecord], split: str, manifest: dict[str, dict[str, Any]] | None, manifest_path: Path
) -> list[ReIDRecord]:
    """Give held-out records the attributes the manifest lists for them (if any)."""
    for rec in records:
        entry = (manifest or {}).get(f"{split}/{Path(rec.path).name}")
        if entry is not None:
            _check_agrees(Path(rec.path), entry, manifest_path)
            rec.attributes = entry["attributes"]
            rec.mask = _mask(entry, manifest_path)
            rec.hidden = tuple(entry.get("hidden") or ())
    return records


@register_dataset("genepers")
def genepers(root: str, ext: str = ".jpg", eval_only: bool = False) -> ReIDSplits:
    """eval_only: read only the held-out split (``.train`` stays empty)."""
    base = Path(root)
    has_train = (base / TRAIN_DIR).is_dir()
    held = [(base / s).is_dir() for s in HELD_OUT]
    if not has_train and not any(held):
        raise DatasetLayoutError(
            f"{NAME}: no GenePerson dataset at {base}: expected {LAYOUT} under it. Run "
            f"`python synth.py` to write one (default <paths.data_dir>/GenePerson), or set the dataset's root."
        )
    if any(held) and not all(held):
        missing = [str(base / s) for s, ok in zip(HELD_OUT, held) if not ok]
        raise DatasetLayoutError(
            f"{NAME}: held-out split incomplete, missing {', '.join(missing)}; "
            f"expected both {HELD_OUT[0]}/ and {HELD_OUT[1]}/ under {base}."
        )
    manifest_path = base / MANIFEST
    manifest = read_manifest(manifest_path) if manifest_path.is_file() else None
    splits = ReIDSplits(name=NAME, root=str(base))
    on_disk = set()
    if has_train and not eval_only:
        files = list_images(base / TRAIN_DIR, ext, NAME)
        on_disk.update(f"{TRAIN_DIR}/{p.name}" for p in files)
        train = (
            _train_from_manifest(files, manifest, manifest_path)
            if manifest is not None
            else parse_market_folder(base / TRAIN_DIR, NAME, ext)
        )
        if not train:
            raise DatasetLayoutError(f"{NAME}: {base / TRAIN_DIR} holds only junk images (pid -1).")
        splits.train = relabel(train)
    if all(held):
        query, gallery = (parse_market_folder(base / s, NAME, ext) for s in HELD_OUT)
        splits.query = _attach(query, HELD_OUT[0], manifest, manifest_path)
        splits.gallery = _attach(gallery, HELD_OUT[1], manifest, manifest_path)
        on_disk.update(f"{s}/{p.name}" for s in HELD_OUT for p in list_images(base / s, ext, NAME))
    listed = {f for f in (manifest or ()) if not (eval_only and PurePosixPath(f).parts[0] == TRAIN_DIR)}
    absent = sorted(listed - on_disk)
    if absent:
        raise DatasetLayoutError(
            f"{NAME}: {manifest_path} lists {len(absent)} image(s) that are missing, e.g. {base / absent[0]}. "
            f"Re-run synth.py with the same config to finish the set."
        )
    return splits
