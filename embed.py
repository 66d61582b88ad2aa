"""Embed a folder of person crops with a trained checkpoint: ``python embed.py CKPT FOLDER [--out F]``.

The model, its input size and its normalization come from the checkpoint itself (any checkpoint
written by train.py). Writes an ``.npz`` with ``features`` (N, D) float32, ``paths`` (N,) and, for
Market-style file names (``0002_c1s1_000451_03.jpg``), ``pids`` / ``camids`` (0-based; -1 where a name
does not follow the pattern), and ``normalized`` (bool). Load it with ``numpy.load``.

FOLDER may be a dataset folder (GenePerson from synth.py, a Market-style set): then only the person images
of its split folders (``bounding_box_train/``, ``bounding_box_test/``, ``query/``) are embedded, and other
images in it (GenePerson's contact sheet ``samples.jpg``) are skipped, with one line saying how many.

Features are the model's raw test features, **not** L2-normalised, unless ``--normalize`` is given (then
every row has unit length, and a dot product is the cosine similarity the evaluator ranks by).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# A dataset folder (GenePerson from synth.py, Market-style sets) keeps its people in split folders;
# images beside them (GenePerson's contact sheet samples.jpg, previews) are not person crops.
PERSON_SPLITS = ("bounding_box_train", "bounding_box_test", "query", "gallery")
DATASET_MARKERS = ("manifest.jsonl", "bounding_box_train", "bounding_box_test", "query")


def list_crops(folder: Path) -> tuple[list[Path], list[Path]]:
    """(person crops, skipped images) under ``folder`` (recursively), each sorted by path.

    Inside a dataset folder (one holding ``manifest.jsonl``, ``bounding_box_*/`` or ``query/``) only the
    images in its split folders are person crops; other images there (e.g. ``samples.jpg``) are skipped."""
    from functools import cache

    from ppreid.utils.errors import ConfigValueError

    if not folder.is_dir():
        raise ConfigValueError(f"FOLDER={folder}: no such folder; give a folder of person crops.")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

    @cache
    def is_dataset_folder(path: Path) -> bool:
        return any((path / m).exists() for m in DATASET_MARKERS)

    def is_person(image: Path) -> bool:
        """In the nearest dataset folder above ``image`` (up to ``folder``), it lies in a split folder."""
        for parent in image.parents:
            if is_dataset_folder(parent):
                return image.relative_to(parent).parts[0] in PERSON_SPLITS
            if parent == folder:
                return True
        return True

    crops = [p for p in images if is_person(p)]
    skipped = [p for p in images if not is_person(p)]
    if not crops:
        beside = f"; {len(skipped)} beside a dataset's split folders" if skipped else ""
        raise ConfigValueError(f"FOLDER={folder} holds no person images ({', '.join(IMAGE_SUFFIXES)}{beside}).")
    return crops, skipped


def embed_folder(
    ckpt_path: str,
    folder: str,
    out: str,
    batch_size: int = 64,
    flip: bool = False,
    device: str = "auto",
    progress: bool = True,
    normalize: bool = False,
) -> Path:
    """Embed every crop under ``folder`` and write ``out`` (atomically); returns its path.

    ``normalize``: L2-normalise each feature (after the flip-test mean, as the evaluator does for cosine)."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from ppreid.data.datasets.base import MARKET_PATTERN
    from ppreid.data.image_dataset import read_image
    from ppreid.data.transforms import build_transforms
    from ppreid.training.checkpoint import describe, load_model_from_checkpoint
    from ppreid.utils.device import resolve_device
    from ppreid.utils.fileops import atomic_write_bytes

    files, skipped = list_crops(Path(folder))
    if skipped:
        names = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        print(
            f"skipped {len(skipped)} image(s) that are not person crops of a dataset's split folders "
            f"({', '.join(PERSON_SPLITS)}): {names}",
            file=sys.stderr,
        )
    model, spec = load_model_from_checkpoint(ckpt_path, key="CKPT")
    dev = resolve_device(device, key="--device")
    model.to(dev)
    inp = spec["input"]
    tf = build_transforms(inp["height"], inp["width"], is_train=False, mean=inp["mean"], std=inp["std"])
    print(f"embedding {len(files)} crops with {describe(spec)}", file=sys.stderr)
    feats = []
    with torch.no_grad():
        for start in tqdm(range(0, len(files), batch_size), disable=not progress, desc="embed", unit="batch"):
            images = torch.stack([tf(read_image(str(p))) for p in files[start : start + batch_size]]).to(dev)
            f = model.extract_features(images)
            if flip:
                f = (f + model.extract_features(torch.flip(images, dims=[3]))) / 2
            feats.append(f.float().cpu())
    pids, camids = [], []
    for p in files:
        m = MARKET_PATTERN.match(p.name)
        pids.append(int(m.group(1)) if m else -1)
        camids.append(int(m.group(2)) - 1 if m else -1)
    features = torch.cat(feats)
    if normalize:
        features = torch.nn.functional.normalize(features, dim=1)
    buf = io.BytesIO()
    np.savez(
        buf,
        features=features.numpy().astype(np.float32),
        paths=np.asarray([str(p) for p in files]),
        pids=np.asarray(pids, dtype=np.int64),
        camids=np.asarray(camids, dtype=np.int64),
        normalized=np.asarray(bool(normalize)),
    )
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_path, buf.getvalue())
    return out_path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", help="a checkpoint written by train.py, e.g. logs/train/runs/<run>/checkpoints/last.ckpt")
    ap.add_argument("folder", help="a folder of person crops (searched recursively)")
    ap.add_argument("--out", default="features.npz", help="output .npz file (default: features.npz)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--flip", action="store_true", help="flip-test: mean of each crop's and its mirror's features")
    ap.add_argument(
        "--normalize",
        action="store_true",
        help="L2-normalise every feature (unit length: dot product = cosine similarity). Without it the "
        "features are the model's raw test features, not normalised",
    )
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from ppreid.utils.errors import find_input_error

    try:
        path = embed_folder(
            args.ckpt,
            args.folder,
            args.out,
            args.batch_size,
            args.flip,
            args.device,
            progress=not args.no_progress,
            normalize=args.normalize,
        )
    except Exception as exc:  # bad input: one clear line, no traceback
        err = find_input_error(exc)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    how = "L2-normalised" if args.normalize else "not normalised; --normalize for unit length"
    print(f"features written to {path} ({how})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
