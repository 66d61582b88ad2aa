"""The GPU check: what a first few minutes on one GPU should measure, in one table.

    python benchmarks/gpu_check.py [--json FILE] [--only STEP[,STEP]] [--workdir DIR]
    python benchmarks/gpu_check.py --dry-run          # every step on tiny shapes, on CPU (CI)

Steps (each under a time cap; the sum of the caps fits in 8 minutes on an H200-class GPU):

evaluator    the ReID evaluator (src/ppreid/metrics/reid.py) on CUDA vs the CPU path at Market-1501 scale
             (3,368 x 15,913, dim 2048) and MSMT17 scale (11,659 x 82,161), synthetic features, pids and
             cameras: seconds of each, and equality of CMC / mAP / mINP (the MSMT17 CPU time is
             extrapolated from a subset of the queries; the table says from how many);
throughput   training images/s and peak GPU memory at 256x128 of BoT / ResNet-50 and of the stage-2
             iteration of CLIP-ReID and PDM on ViT-B/16 (random weights, synthetic batches), with
             bf16-mixed and fp32 (32-true);
privacy_gan  joint-phase iterations/s of model=privacy_gan (ResNet-50, 256x128, the paper recipe's G and
             D) through Lightning's loop, with bf16-mixed and fp32;
diffusion    synthesis images/s of the ``diffusion`` generator with a random-weight pipeline of Stable
             Diffusion 1.5's size (UNet 860M, VAE, CLIP ViT-L/14-size text encoder, real tokenizer) at
             512x256, batch 1 and 8, DDIM, fp16;
fdr          ``python train.py debug=fdr`` of every model (bot, clipreid, pdm, privacy_gan, attack) with
             ``trainer=gpu`` and ``trainer=ddp trainer.devices=1``, as subprocesses in a temp folder (the
             attack audits a checkpoint written by a short bot run first).

Nothing is downloaded (``HF_HUB_OFFLINE=1``; every model has random weights). The exit code is 0
when every row says ``ok``, 1 when any step failed (the table names it, with a one-line reason),
2 on bad arguments or when no GPU is visible without ``--dry-run``. A failing step does not stop
the others. ``--dry-run`` runs the same code on tiny shapes on CPU: tiny feature counts, tiny_cnn /
clip_tiny backbones, a tiny UNet, and ``trainer=cpu`` / DDP on CPU for the fast dev runs (in this
process, except the checkpoint run, which goes through the ``train.py`` subprocess path).

This file holds the evaluator step and the driver; the other steps are ``gpu_check_training.py``
(throughput, privacy_gan), ``gpu_check_diffusion.py`` and ``gpu_check_fdr.py``, the table and helpers
``gpu_check_core.py``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

STARTED = time.time()  # before the heavy imports: the reported wall time includes them
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch
from gpu_check_core import Check, StepTimeout, format_table, one_line
from gpu_check_diffusion import step_diffusion
from gpu_check_fdr import failure_reason, step_fdr  # noqa: F401  (failure_reason: tests)
from gpu_check_training import step_privacy_gan, step_throughput

STEP_NAMES = ("evaluator", "throughput", "privacy_gan", "diffusion", "fdr")
# Hard time caps (s) per step. On the GPU they sum to 445 s, so with start-up the check ends within
# 8 minutes; the dry run's caps only stop a hung step on a slow shared CPU.
TIME_CAPS_S = {"evaluator": 70, "throughput": 95, "privacy_gan": 60, "diffusion": 40, "fdr": 180}
DRY_RUN_CAPS_S = {"evaluator": 120, "throughput": 120, "privacy_gan": 120, "diffusion": 120, "fdr": 400}
# CUDA vs CPU from the same features: each device rounds its own fp32 matmul, which may swap
# near-tied gallery entries (on CPU, these features in fp32 vs fp64 moved mAP by ~1e-8 and CMC not at
# all, at both scales); from the same distance matrix the ranking is exact on both devices.
FEATURE_TOLERANCE = 1e-4
EXACT_TOLERANCE = 1e-9
CPU_EXTRAPOLATION_BUDGET_S = 15.0  # CPU seconds spent on the MSMT17-scale subset


# ============================================================================ 1. evaluator
def synthetic_reid_split(
    num_query: int,
    num_gallery: int,
    num_ids: int,
    num_cams: int,
    num_distractors: int,
    dim: int,
    seed: int,
    identity_strength: float = 0.2,
):
    """Query / gallery features (CPU float32) with identity structure, and Market-like pids / camids.

    feature = noise + ``identity_strength`` * centre of its identity, so ranks are partial (mAP well
    below 1), as with a real model; built in slices so that only the two arrays are ever held.
    """
    import numpy as np
    from bench_evaluator import market_like_ids

    rng = np.random.default_rng(seed)
    q_pids, g_pids, q_cams, g_cams = market_like_ids(rng, num_query, num_gallery, num_ids, num_cams, num_distractors)
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(int(max(q_pids.max(), g_pids.max())) + 1, dim, generator=gen)
    feats = []
    for pids in (q_pids, g_pids):
        out = torch.empty(len(pids), dim)
        for s in range(0, len(pids), 4096):
            ids = torch.as_tensor(pids[s : s + 4096])
            out[s : s + 4096] = torch.randn(len(ids), dim, generator=gen) + identity_strength * centers[ids]
        feats.append(out)
    return feats[0], feats[1], q_pids, g_pids, q_cams, g_cams


def max_result_diff(a: dict, b: dict) -> float:
    """Largest absolute difference of CMC / mAP / mINP (inf when the valid query counts differ)."""
    import numpy as np

    if a["num_valid_queries"] != b["num_valid_queries"]:
        return math.inf
    return float(
        max(
            np.abs(np.asarray(a["cmc"]) - np.asarray(b["cmc"])).max(),
            abs(a["mAP"] - b["mAP"]),
            abs(a["mINP"] - b["mINP"]),
        )
    )


def add_equality(chk: Check, setting: str, diff: float, tolerance: float) -> None:
    status = "ok" if diff <= tolerance else f"FAIL: results differ by {diff:.3g} (tolerance {tolerance:g})"
    chk.add(setting, diff, "max abs diff", status)


def step_evaluator(chk: Check) -> None:
    if chk.dry_run:
        scales = [("market1501-like", 60, 300, 20, 6, 30, 32), ("msmt17-like", 120, 900, 40, 15, 0, 32)]
    else:
        scales = [("market1501", 3368, 15913, 751, 6, 2794, 2048), ("msmt17", 11659, 82161, 3060, 15, 0, 2048)]
    cpu_seconds_per_pair: list[float] = []  # measured on the first scale, sizes the second one's subset
    for seed, (name, nq, ng, ids, cams, distractors, dim) in enumerate(scales):
        with chk.setting(f"{name} {nq}x{ng} d{dim}"):
            evaluator_scale(chk, name, nq, ng, ids, cams, distractors, dim, seed, cpu_seconds_per_pair)
        if chk.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()


def evaluator_scale(
    chk: Check,
    name: str,
    nq: int,
    ng: int,
    ids: int,
    cams: int,
    distractors: int,
    dim: int,
    seed: int,
    cpu_seconds_per_pair: list[float],
) -> None:
    """Rows of one scale: device and CPU seconds, speed-up, equality from the same features and from the
    same distances. The CPU path runs on the first ``n_sub`` queries when the whole set would take more
    than ``CPU_EXTRAPOLATION_BUDGET_S`` (its time is then extrapolated, and said so)."""
    from ppreid.metrics.reid import distance_matrix, evaluate_distmat, evaluate_features

    dev = chk.device
    other = "cpu (dry run: no GPU)" if chk.dry_run else "CUDA"
    label = f"{name} {nq}x{ng} d{dim}"
    qf, gf, q_pids, g_pids, q_cams, g_cams = synthetic_reid_split(
        nq, ng, ids, cams, distractors, dim, seed, identity_strength=1.0 if chk.dry_run else 0.2
    )
    qd, gd = qf.to(dev), gf.to(dev)
    evaluate_features(qd[:64], gd, q_pids[:64], g_pids, q_cams[:64], g_cams)  # warm-up (CUDA context, kernels)

    res_dev, t_dev = chk.timed(lambda: evaluate_features(qd, gd, q_pids, g_pids, q_cams, g_cams))
    chk.add(f"{label}: {other} evaluate_features (mAP {100 * res_dev['mAP']:.2f}%)", t_dev, "s")

    if seed == 0:
        n_sub = nq
    elif chk.dry_run:
        n_sub = nq // 4  # exercises the extrapolation
    elif cpu_seconds_per_pair:
        n_sub = int(min(nq, max(256, CPU_EXTRAPOLATION_BUDGET_S / (cpu_seconds_per_pair[0] * ng))))
    else:  # the first scale failed before its CPU timing
        n_sub = max(256, nq // 8)
    q = slice(0, n_sub)
    res_cpu, t_cpu = chk.timed(lambda: evaluate_features(qf[q], gf, q_pids[q], g_pids, q_cams[q], g_cams, device="cpu"))
    cpu_seconds_per_pair.append(t_cpu / (n_sub * ng))
    t_cpu_full = t_cpu * nq / n_sub
    threads = torch.get_num_threads()
    if n_sub == nq:
        chk.add(f"{label}: CPU evaluate_features ({threads} threads)", t_cpu_full, "s")
    else:
        chk.add(
            f"{label}: CPU evaluate_features ({threads} threads), extrapolated from the first {n_sub} of {nq} queries",
            t_cpu_full,
            "s",
        )
    chk.add(f"{label}: {other} speed-up over CPU", t_cpu_full / t_dev, "x")

    res_sub = res_dev if n_sub == nq else evaluate_features(qd[q], gd, q_pids[q], g_pids, q_cams[q], g_cams)
    add_equality(
        chk,
        f"{label}: {other} = CPU from the same features ({n_sub} queries)",
        max_result_diff(res_sub, res_cpu),
        FEATURE_TOLERANCE,
    )
    n_exact = min(n_sub, 1024)
    e = slice(0, n_exact)
    dist = distance_matrix(qd[e], gd)
    exact_dev = evaluate_distmat(dist, q_pids[e], g_pids, q_cams[e], g_cams)
    exact_cpu = evaluate_distmat(dist.cpu(), q_pids[e], g_pids, q_cams[e], g_cams)
    add_equality(
        chk,
        f"{label}: {other} = CPU from the same distances ({n_exact} queries)",
        max_result_diff(exact_dev, exact_cpu),
        EXACT_TOLERANCE,
    )


STEPS: dict[str, Callable[[Check], None]] = {
    "evaluator": step_evaluator,
    "throughput": step_throughput,
    "privacy_gan": step_privacy_gan,
    "diffusion": step_diffusion,
    "fdr": step_fdr,
}


# ============================================================================ driver
def run_step(chk: Check, name: str, cap_s: float) -> None:
    """Run one step under its time cap; any error becomes a FAIL row of that step."""
    chk.step, chk.current = name, "-"
    chk.deadline = time.monotonic() + cap_s
    rows_before = len(chk.rows)

    def on_alarm(signum, frame):
        raise StepTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, cap_s)
    print(f"[{name}] (time cap {cap_s:.0f} s)", flush=True)
    start = time.perf_counter()
    try:
        STEPS[name](chk)
    except StepTimeout:
        chk.add(chk.current, None, "", f"FAIL: time cap of {cap_s:.0f} s reached")
    except Exception as exc:  # noqa: BLE001
        chk.add(chk.current, None, "", f"FAIL: {one_line(exc)}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if len(chk.rows) == rows_before:
        chk.add("-", None, "", "FAIL: the step produced no figure")
    chk.add("step total", time.perf_counter() - start, "s")
    if chk.device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="every step on tiny shapes on CPU (for CI)")
    ap.add_argument(
        "--only", default=None, help=f"comma-separated steps to run (default: all of {', '.join(STEP_NAMES)})"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON to this file")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the fast dev runs' folders and logs (default: a temp folder, removed when every step passed)",
    )
    ap.add_argument("--fdr-workers", type=int, default=6, help="fast dev runs at once on the GPU (default 6)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    steps = list(STEP_NAMES) if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEP_NAMES]
    if unknown or not steps:
        print(
            f"error: --only {args.only}: unknown step(s) {', '.join(unknown) or '(none given)'}; "
            f"steps are {', '.join(STEP_NAMES)}",
            file=sys.stderr,
        )
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "error: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); run with --dry-run "
            "for the CPU version of every step",
            file=sys.stderr,
        )
        return 2
    if args.fdr_workers < 1:
        print(f"error: --fdr-workers {args.fdr_workers} must be >= 1", file=sys.stderr)
        return 2
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check_")) if own_workdir else args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    chk = Check(args.dry_run, workdir, args.json, args.fdr_workers, started=STARTED)
    info = chk.describe()
    print("gpu_check: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    caps = DRY_RUN_CAPS_S if args.dry_run else TIME_CAPS_S
    for name in steps:
        run_step(chk, name, caps[name])
        chk.write_json()
    failed = chk.failed_steps()
    wall = time.time() - chk.started
    print(f"\ngpu_check ({info['mode']}, {info['device']}), {wall:.0f} s:")
    print(format_table(chk.rows))
    if failed:
        print(f"\nFAILED: {', '.join(failed)} (work folder kept: {workdir})")
    else:
        print("\nall steps ok")
        if own_workdir:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
