"""Embed a folder of person crops with a trained checkpoint: ``python embed.py CKPT FOLDER [--out F]``.

The model, its input size and its normalization come from the checkpoint itself (any checkpoint
written by train.py). Writes an ``.npz`` with ``features`` (N, D) float32, ``paths`` (N,) and, for
Market-style file names (``0002_c1s1_000451_03.jpg``), ``pids`` / ``camids`` (0-based; -1 where a name
does not follow the pattern), and ``normalized`` (bool). Load it with ``numpy.load``.

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


def list_crops(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by path."""
    from ppreid.utils.errors import ConfigValueError

    if not folder.is_dir():
        raise ConfigValueError(f"FOLDER={folder}: no such folder; give a folder of person crops.")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigValueError(f"FOLDER={folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    return files


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

    files = list_crops(Path(folder))
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
