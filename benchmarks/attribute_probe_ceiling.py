"""Linear-probe ceiling of each person attribute on the procedural renderer's own pixels.

    python benchmarks/attribute_probe_ceiling.py                      # 400 identities x 6 images
    python benchmarks/attribute_probe_ceiling.py --identities 200 --images 4 --seed 7
    python benchmarks/attribute_probe_ceiling.py --fixed-box   # no box jitter: what the drawing shows
    python benchmarks/attribute_probe_ceiling.py --features mask   # the silhouette alone (shape attributes)

What a model could at best read from an image, linearly: the renderer draws identities of a held-out
plan (its own dataset seed, never GenePerson-mini's) with GenePerson-mini's nuisance settings
(``DEFAULT_GENERATOR``); per attribute, a linear probe is fitted on the flattened, standardized pixels
(N, 3 * H * W, plus their 4 x 4 average-pooled copy, itself linear in the pixels) of half of the
identities (its L2 weight decay chosen on a quarter more, then refitted on both) and scored on the
images of the last quarter (identity disjoint, so it measures the attribute, not memorized people).
The probe is a class-balanced linear least-squares classifier (ridge regression on the one-hot labels),
solved in its dual form on the images' Gram matrix (exact, and fast). An image counts for an attribute only where
the attribute shows in it (what the renderer reports hidden: glasses on a back view, occluded shoes).

Prints, per attribute: the probe's balanced accuracy (mean per-class recall: a rare value such as
sunglasses counts as much as a common one), chance (1 / classes) and ``norm`` = (acc - chance) /
(1 - chance); zero-shot figures of a model are read against these.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

import numpy as np
import torch

ATTRIBUTES = (
    "gender",
    "age_group",
    "build",
    "hair_style",
    "hair_colour",
    "upper_type",
    "upper_colour",
    "upper_pattern",
    "lower_type",
    "lower_colour",
    "shoes",
    "bag",
    "hat",
    "glasses",
    "viewpoint",
)


def hidden_of(record: dict) -> tuple[str, ...]:
    """The attributes the record's view hides (none with a renderer that predates the visibility rule)."""
    try:
        from ppreid.synth.attributes import hidden_attributes
    except ImportError:
        return ()
    return tuple(hidden_attributes(record))


def render(identities: int, images: int, seed: int, height: int, width: int, cameras: int, fixed_box: bool):
    """(pixels (N, H*W*3) float32 in [0, 1], person masks (N, H*W) float32 or None where the renderer has
    none, records, pids, per-image hidden keys)."""
    from ppreid.synth.generators.procedural import ProceduralGenerator
    from ppreid.synth.mini import DEFAULT_GENERATOR
    from ppreid.synth.plan import SynthPlan

    plan = SynthPlan.from_config(
        {
            "num_identities": identities,
            "num_cameras": cameras,
            "seed": seed,
            "images_per_identity": images,
            "split": "train",
            "pid_start": 1,
        }
    )
    options = dict(DEFAULT_GENERATOR)
    if fixed_box:  # the person always fills the same box: what the drawing shows, apart from the jitter
        options.update(person_height=(0.9, 0.9), shift_x=0.0, shift_y=0.0)
    gen = ProceduralGenerator(**options)
    info = getattr(gen, "render_info", None)
    pixels, masks, records, pids, hidden = [], [], [], [], []
    for ident in plan.identities():
        for img in ident.images:
            req = img.request(height, width)
            if info is not None:
                out = info(req)
                im, hid = out.image, out.hidden
                masks.append(out.mask.reshape(-1).astype(np.float32))
            else:
                im, hid = gen.render(req), hidden_of(req.attributes)
            pixels.append(np.asarray(im, np.float32).reshape(-1) / 255.0)
            records.append(req.attributes)
            pids.append(ident.pid)
            hidden.append(tuple(hid))
    return np.stack(pixels), (np.stack(masks) if masks else None), records, np.asarray(pids), hidden


def ridge_probe(k_train: torch.Tensor, y: torch.Tensor, classes: int, decays) -> list[torch.Tensor]:
    """Per weight decay, the dual weights a (N, C) of a class-balanced linear least-squares classifier:
    ridge regression on the centred one-hot labels, each class's column divided by its frequency (so a
    rare class weighs as much as a common one), w = X^T a and |w|^2 = a^T k a, a = (k + decay * N * I)^-1 T,
    from one eigendecomposition of the training Gram matrix ``k_train`` (N, N): exact, and N^3 work once
    instead of N * D per step of an iterative fit."""
    n = k_train.shape[0]
    onehot = torch.nn.functional.one_hot(y, classes).double()
    freq = onehot.mean(0).clamp(min=1.0 / n)
    target = (onehot - freq) / freq
    evals, evecs = torch.linalg.eigh(k_train)
    proj = evecs.t() @ target
    return [evecs @ (proj / (evals.clamp(min=0) + d * n)[:, None]) for d in decays]


def balanced_accuracy(a: torch.Tensor, k_cross: torch.Tensor, y: torch.Tensor, classes: int) -> float:
    """Mean per-class recall of dual weights ``a`` on images whose Gram rows against its training images are
    ``k_cross`` (classes absent from ``y`` are skipped)."""
    pred = (k_cross @ a).argmax(1)
    recalls = [float((pred[y == c] == c).double().mean()) for c in range(classes) if (y == c).any()]
    return sum(recalls) / len(recalls)


def gram(pixels: np.ndarray, height: int, width: int, pools=(1, 4), channels: int = 3) -> torch.Tensor:
    """The (N, N) Gram matrix of the images' features: per pooling p in ``pools``, the pixels average-pooled
    p x p (a linear map of the pixels; p = 4 tolerates the box jitter), standardized per dimension over
    all images (no labels involved), each scale weighted 1 / its dimension so that each counts alike."""
    k = torch.zeros(len(pixels), len(pixels), dtype=torch.float64)
    for p in pools:
        x = torch.from_numpy(pixels).view(len(pixels), height, width, channels).permute(0, 3, 1, 2)
        x = torch.nn.functional.avg_pool2d(x, p) if p > 1 else x
        x = x.reshape(len(pixels), -1).double()
        x = (x - x.mean(0)) / x.std(0).clamp(min=1e-3)
        k += (x @ x.t()) / x.shape[1]
    return k


def probe(k_all, records, pids, hidden, key: str, seed: int, decays=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)) -> dict:
    keep = np.asarray([key in r and key not in h for r, h in zip(records, hidden)])
    values = sorted({r[key] for r, k in zip(records, keep) if k})
    if len(values) < 2:
        return {}
    c = len(values)
    y_all = torch.as_tensor([values.index(r[key]) if k else -1 for r, k in zip(records, keep)])
    ids = np.unique(pids)
    rng = np.random.default_rng(seed)
    ids = ids[rng.permutation(len(ids))]
    n_test, n_val = len(ids) // 4, len(ids) // 4
    test_ids, val_ids, train_ids = ids[:n_test], ids[n_test : n_test + n_val], ids[n_test + n_val :]
    tr, va, te = (torch.from_numpy(np.flatnonzero(np.isin(pids, w) & keep)) for w in (train_ids, val_ids, test_ids))
    trva = torch.cat([tr, va])
    fits = ridge_probe(k_all[tr][:, tr], y_all[tr], c, decays)
    best = decays[int(np.argmax([balanced_accuracy(a, k_all[va][:, tr], y_all[va], c) for a in fits]))]
    (a,) = ridge_probe(k_all[trva][:, trva], y_all[trva], c, (best,))
    acc = balanced_accuracy(a, k_all[te][:, trva], y_all[te], c)
    return {"acc": acc, "chance": 1.0 / c, "norm": (acc - 1.0 / c) / (1 - 1.0 / c), "classes": c, "scored": len(te)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--identities", type=int, default=400)
    ap.add_argument("--images", type=int, default=6, help="images per identity")
    ap.add_argument("--cameras", type=int, default=20)
    ap.add_argument("--seed", type=int, default=9173, help="dataset seed of the probe's own identities")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pools", type=int, nargs="+", default=[1, 4], help="feature scales (average pooling)")
    ap.add_argument("--attributes", nargs="*", default=list(ATTRIBUTES))
    ap.add_argument(
        "--features",
        choices=("pixels", "mask"),
        default="pixels",
        help="the probe reads the RGB pixels, or only the person's silhouette (the renderer's mask: shape alone)",
    )
    ap.add_argument(
        "--fixed-box", action="store_true", help="no bounding-box jitter (person at 0.9 of the height, centred)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    pixels, masks, records, pids, hidden = render(
        args.identities, args.images, args.seed, args.height, args.width, args.cameras, args.fixed_box
    )
    t1 = time.perf_counter()
    from ppreid.synth.generators.procedural import ProceduralGenerator

    print(
        f"renderer {ProceduralGenerator.model_id}: {len(pixels)} images of {args.identities} identities "
        f"({args.height}x{args.width}{', fixed box' if args.fixed_box else ''}) rendered in {t1 - t0:.1f} s; "
        f"the probe reads the {'silhouette' if args.features == 'mask' else 'pixels'}"
    )
    print(f"{'attribute':<14} {'bal.acc':>7} {'chance':>7} {'norm':>6} {'classes':>7} {'scored':>7}")
    if args.features == "mask":
        if masks is None:
            raise SystemExit("--features mask needs a renderer that returns the person's mask (render_info).")
        pixels = masks
    k_all = gram(pixels, args.height, args.width, tuple(args.pools), 1 if args.features == "mask" else 3)
    for key in args.attributes:
        r = probe(k_all, records, pids, hidden, key, args.seed)
        if r:
            print(f"{key:<14} {r['acc']:6.3f} {r['chance']:7.3f} {r['norm']:6.3f} {r['classes']:7d} {r['scored']:7d}")
    print(f"probes fitted in {time.perf_counter() - t1:.1f} s")


if __name__ == "__main__":
    main()
