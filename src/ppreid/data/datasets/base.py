"""Records and splits shared by every dataset parser.

A parser turns a dataset folder into three lists of :class:`ReIDRecord`
(train, query, gallery). Parsers register themselves by name with
:func:`register_dataset`, so adding a dataset is one new file (plus a config).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ppreid.utils.errors import DatasetLayoutError


@dataclass
class ReIDRecord:
    """One image: where it is, who it shows, which camera took it.

    pid: train records are relabelled 0..N-1 (sorted order of original pids);
         query/gallery keep original pids (0 = distractor, kept in gallery).
    camid: 0-based camera (or, for GenePerson, environment-profile) id.
    attributes: GenePerson only: identity + environment attribute record.
    domain: index of the source dataset in multi-source training (0 for a single source); a
        style label for domain-aware models.
    mask: GenePerson only, when the manifest names one: the path of the image's person mask (a PNG of
        the image's size, 255 = person).
    hidden: GenePerson only: attribute keys this image does not show besides what its view hides (the
        manifest's ``hidden``, e.g. shoes behind an occluder); captions never name them.
    """

    path: str
    pid: int
    camid: int
    attributes: dict[str, Any] | None = None
    domain: int = 0
    mask: str | None = None
    hidden: tuple[str, ...] = ()


@dataclass
class ReIDSplits:
    """The train/query/gallery lists of one dataset, plus a printable summary."""

    name: str
    root: str
    train: list[ReIDRecord] = field(default_factory=list)
    query: list[ReIDRecord] = field(default_factory=list)
    gallery: list[ReIDRecord] = field(default_factory=list)

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        return len({r.camid for r in self.train})

    def summary(self) -> str:
        def row(split: str, recs: list[ReIDRecord]) -> str:
            return f"  {split:<8}| {len({r.pid for r in recs}):>6} | {len(recs):>8} | {len({r.camid for r in recs}):>4}"

        return "\n".join(
            [
                f"=> {self.name} ({self.root})",
                "  subset  |   #ids | #images  | #cams",
                row("train", self.train),
                row("query", self.query),
                row("gallery", self.gallery),
            ]
        )


DATASETS: dict[str, Callable[..., ReIDSplits]] = {}


def register_dataset(name: str):
    """Decorator: make a parser ``fn(root, **options) -> ReIDSplits`` reachable by name."""

    def wrap(fn):
        DATASETS[name] = fn
        return fn

    return wrap


def build_dataset(name: str, root: str | Path, eval_only: bool = False, **options) -> ReIDSplits:
    """Parse the dataset ``name`` from its own folder ``root``.

    Returns an object with ``.train``, ``.query``, ``.gallery`` lists of records.
    eval_only: only query and gallery are needed (evaluation): a parser that takes ``eval_only`` then
    accepts a folder without its training split and leaves ``.train`` empty; others parse everything.
    """
    import inspect

    from ppreid.data import datasets as _all  # noqa: F401  (imports every parser module)

    if name not in DATASETS:
        from ppreid.utils.errors import ConfigValueError

        raise ConfigValueError(f"unknown dataset '{name}'. Known: {', '.join(sorted(DATASETS))}.")
    parser = DATASETS[name]
    if eval_only and "eval_only" in inspect.signature(parser).parameters:
        options["eval_only"] = True
    return parser(str(root), **options)


# Shared parsing helpers: Market-style folders, relabelling, multi-source merge.

MARKET_PATTERN = re.compile(r"([-\d]+)_c(\d+)")
MARKET_EXAMPLE = "0002_c1s1_000451_03.jpg (pid 0002, camera c1)"
MARKET_SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def _fix_hint(default_folder: str) -> str:
    return (
        f"Download the dataset and put it at <paths.data_dir>/{default_folder}, "
        f"or set the dataset's root in the data config."
    )


def resolve_root(
    root: str | Path, required: Sequence[str], nested: Sequence[str], dataset: str, layout: str, default_folder: str
) -> Path:
    """Return ``root`` if it holds every folder in ``required``, else the first ``root/<nested>`` that does.

    Accepts the common layout where the archive was unpacked into its own folder under root
    (e.g. ``root/Market-1501-v15.09.15/bounding_box_train``).
    """
    root = Path(root)
    candidates = [root] + [root / n for n in nested]
    for cand in candidates:
        if all((cand / r).is_dir() for r in required):
            return cand
    if not root.is_dir():
        raise DatasetLayoutError(
            f"{dataset}: dataset folder {root} does not exist. Expected {layout} under it. " + _fix_hint(default_folder)
        )
    near = next((c for c in candidates if any((c / r).is_dir() for r in required)), root)
    missing = [str(near / r) for r in required if not (near / r).is_dir()]
    raise DatasetLayoutError(
        f"{dataset}: missing {', '.join(missing)}. Expected {layout} under {root}"
        + (f" (or under {root}/{nested[0]})" if nested else "")
        + ". "
        + _fix_hint(default_folder)
    )


def list_images(folder: Path, ext: str, dataset: str) -> list[Path]:
    """Files ending in ``ext`` directly in ``folder``, sorted by name; an empty folder is an error."""
    ext = ext.lower() if ext.startswith(".") else f".{ext.lower()}"
    if not folder.is_dir():
        raise DatasetLayoutError(f"{dataset}: missing folder {folder}.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ext and p.is_file())
    if not files:
        raise DatasetLayoutError(
            f"{dataset}: no *{ext} images in {folder}. The folder is empty or holds another "
            f"format; re-download or re-extract the dataset."
        )
    return files


def parse_market_name(path: Path, dataset: str, pattern: re.Pattern = MARKET_PATTERN) -> tuple[int, int]:
    """``(pid, camera)`` from the *basename* of a Market-style file; camera as written (1-based)."""
    m = pattern.match(path.name)
    try:
        if m is None:
            raise ValueError
        return int(m.group(1)), int(m.group(2))
    except ValueError:
        raise DatasetLayoutError(
            f"{dataset}: file name {path} does not match the pattern '{pattern.pattern}' "
            f"(expected e.g. {MARKET_EXAMPLE}). Rename or delete the file."
        ) from None


def parse_market_folder(
    folder: Path,
    dataset: str,
    ext: str = ".jpg",
    num_cams: int | None = None,
    max_pid: int | None = None,
    drop_distractors: bool = False,
) -> list[ReIDRecord]:
    """Records (original pids, 0-based camids) of one Market-style folder, in sorted file order.

    pid -1 (junk) is dropped; pid 0 (distractor) is dropped only if ``drop_distractors``.
    ``num_cams`` / ``max_pid`` are sanity bounds: a file outside them means a wrong folder.
    """
    records = []
    for path in list_images(folder, ext, dataset):
        pid, cam = parse_market_name(path, dataset)
        if pid == -1 or (drop_distractors and pid == 0):
            continue
        if pid < 0 or (max_pid is not None and pid > max_pid):
            raise DatasetLayoutError(
                f"{dataset}: {path} has pid {pid}, outside 0..{'' if max_pid is None else max_pid} "
                f"(-1 = junk); is {folder} really {dataset}?"
            )
        if cam < 1 or (num_cams is not None and cam > num_cams):
            raise DatasetLayoutError(
                f"{dataset}: {path} has camera c{cam}, outside c1..{'' if num_cams is None else f'c{num_cams}'}; "
                f"is {folder} really {dataset}?"
            )
        records.append(ReIDRecord(str(path), pid, cam - 1))
    return records


def relabel(records: Sequence[ReIDRecord]) -> list[ReIDRecord]:
    """Train pids -> 0..N-1 in sorted order of the original pids (same labels on every rank)."""
    label = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [replace(r, pid=label[r.pid]) for r in records]


def parse_market_style(
    root: str | Path,
    dataset: str,
    default_folder: str,
    nested: Sequence[str] = (),
    ext: str = ".jpg",
    num_cams: int | None = None,
    max_pid: int | None = None,
    eval_only: bool = False,
) -> ReIDSplits:
    """The whole Market-1501 protocol: relabelled train without distractors, raw query/gallery.

    eval_only: parse (and require) only ``query/`` and ``bounding_box_test/``; ``.train`` stays empty.
    """
    needed = MARKET_SPLITS[1:] if eval_only else MARKET_SPLITS
    layout = ", ".join(f"{s}/" for s in needed) + f" with *{ext} images"
    base = resolve_root(root, needed, nested, dataset, layout, default_folder)
    kw = dict(dataset=dataset, ext=ext, num_cams=num_cams, max_pid=max_pid)
    if eval_only:
        return ReIDSplits(
            name=dataset,
            root=str(base),
            query=parse_market_folder(base / "query", **kw),
            gallery=parse_market_folder(base / "bounding_box_test", **kw),
        )
    train = parse_market_folder(base / "bounding_box_train", drop_distractors=True, **kw)
    if not train:
        raise DatasetLayoutError(
            f"{dataset}: {base / 'bounding_box_train'} holds only junk/distractor images (pid <= 0)."
        )
    return ReIDSplits(
        name=dataset,
        root=str(base),
        train=relabel(train),
        query=parse_market_folder(base / "query", **kw),
        gallery=parse_market_folder(base / "bounding_box_test", **kw),
    )


def merge_train_sets(sources: Sequence[ReIDSplits | Sequence[ReIDRecord]]) -> tuple[list[ReIDRecord], int, int]:
    """Concatenate the train sets of several sources for multi-source training.

    Source i's pids start after source i-1's, and likewise its camids, so identities and cameras
    of different datasets never collide. A source spans ``max(pid)+1`` labels and ``max(camid)+1``
    cameras (train pids are 0..N-1 after relabelling). Each record's ``domain`` is its source's
    position in ``sources``. Returns ``(records, num_pids, num_cams)``; the input records are not
    modified.
    """
    merged: list[ReIDRecord] = []
    pid_offset = cam_offset = 0
    for domain, src in enumerate(sources):
        recs = list(getattr(src, "train", src))
        if not recs:
            continue
        merged.extend(replace(r, pid=r.pid + pid_offset, camid=r.camid + cam_offset, domain=domain) for r in recs)
        pid_offset += max(r.pid for r in recs) + 1
        cam_offset += max(r.camid for r in recs) + 1
    return merged, pid_offset, cam_offset
