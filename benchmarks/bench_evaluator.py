"""Speed and memory of the ReID evaluator (src/ppreid/metrics/reid.py), printed as figures.

(a) Market-1501 scale: a random 3,368 x 15,913 float32 distance matrix with Market-like ids
    (751 ids, 6 cameras, 2,794 distractors of pid 0, junk where pid and camera coincide);
    ``evaluate_distmat`` against the per-query NumPy reference in the same run (stable argsort,
    the protocol's tie rule, and torchreid's default quicksort), results asserted equal to 1e-6.
(b) MSMT17 scale: ``evaluate_features`` on 11,659 x 82,161 float32 features of dim 2048, run in a
    fresh subprocess so that its peak RSS (``ru_maxrss``) is its own; asserted < 3 GB.

    python benchmarks/bench_evaluator.py [--skip-msmt] [--skip-market] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from memory import call_peak_bytes, current_rss_bytes, reset_call_peak

from ppreid.metrics.reference_eval import reference_eval
from ppreid.metrics.reid import evaluate_distmat, evaluate_features

RSS_LIMIT_BYTES = 3 * 1024**3


def market_like_ids(
    rng: np.random.Generator, num_query: int, num_gallery: int, num_ids: int, num_cams: int, num_distractors: int
):
    """Query/gallery pids and camids shaped like Market-1501's test split."""
    pids = np.arange(1, num_ids + 1)
    q_pids = np.concatenate([pids, rng.choice(pids, num_query - num_ids)])
    g_real = num_gallery - num_distractors
    g_pids = np.concatenate([pids, rng.choice(pids, g_real - num_ids), np.zeros(num_distractors, int)])
    rng.shuffle(g_pids)
    q_cams = rng.integers(0, num_cams, num_query)
    g_cams = rng.integers(0, num_cams, num_gallery)
    return q_pids, g_pids, q_cams, g_cams


def assert_equal(ours: dict, ref: dict, tol: float = 1e-6) -> None:
    assert ours["num_valid_queries"] == ref["num_valid_queries"]
    assert np.abs(np.asarray(ours["cmc"]) - ref["cmc"]).max() <= tol
    assert abs(ours["mAP"] - ref["mAP"]) <= tol and abs(ours["mINP"] - ref["mINP"]) <= tol


def bench_market(repeats: int) -> None:
    rng = np.random.default_rng(0)
    nq, ng = 3368, 15913
    q_pids, g_pids, q_cams, g_cams = market_like_ids(rng, nq, ng, 751, 6, 2794)
    distmat = rng.random((nq, ng), dtype=np.float32)
    junk = (q_pids[:, None] == g_pids[None]) & (q_cams[:, None] == g_cams[None])
    matches = (q_pids[:, None] == g_pids[None]) & ~junk
    print(
        f"[market] {nq} x {ng} float32, matches/query {matches.sum(1).mean():.1f}, junk/query {junk.sum(1).mean():.1f}"
    )

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = evaluate_distmat(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50)
        times.append(time.perf_counter() - t0)
    t_ours = min(times)
    t0 = time.perf_counter()
    ref = reference_eval(distmat, q_pids, g_pids, q_cams, g_cams, 50, kind="stable")
    t_stable = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_quick = reference_eval(distmat, q_pids, g_pids, q_cams, g_cams, 50, kind="quicksort")
    t_quick = time.perf_counter() - t0
    assert_equal(ours, ref)
    assert_equal(ours, ref_quick)
    print(
        f"[market] R1 {ours['cmc'][0]:.6f} mAP {ours['mAP']:.6f} mINP {ours['mINP']:.6f} "
        f"(equal to the reference within 1e-6)"
    )
    print(f"[market] evaluate_distmat       {t_ours:7.3f} s  (best of {repeats})")
    print(f"[market] numpy ref, stable sort {t_stable:7.3f} s  speed-up {t_stable / t_ours:5.1f}x")
    print(f"[market] numpy ref, quicksort   {t_quick:7.3f} s  speed-up {t_quick / t_ours:5.1f}x")


def msmt_case(threads: int) -> None:
    """Body of the MSMT17-scale subprocess: prints one JSON line with time and peak RSS."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    nq, ng, dim = 11659, 82161, 2048
    q_pids, g_pids, q_cams, g_cams = market_like_ids(rng, nq, ng, 3060, 15, 0)
    gen = torch.Generator().manual_seed(1)
    centers = torch.randn(int(max(q_pids.max(), g_pids.max())) + 1, dim, generator=gen)
    # Identity structure (same-id cosine ~0.04 against noise ~0.02) so that ranks are partial,
    # built in slices so that the set-up itself never holds more than the two feature arrays.
    qf = torch.empty(nq, dim)
    gf = torch.empty(ng, dim)
    for feats, pids in ((qf, q_pids), (gf, g_pids)):
        for s in range(0, len(pids), 4096):
            ids = torch.as_tensor(pids[s : s + 4096])
            feats[s : s + 4096] = torch.randn(len(ids), dim, generator=gen) + 0.2 * centers[ids]
    del centers
    setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rss_before = current_rss_bytes()
    reset_call_peak()
    t0 = time.perf_counter()
    out = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="cosine")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    call_peak = call_peak_bytes()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_bytes": peak,
                "setup_peak_bytes": setup_peak,
                "rss_before_bytes": rss_before,
                "call_peak_bytes": call_peak,
                "R1": float(out["cmc"][0]),
                "mAP": out["mAP"],
                "mINP": out["mINP"],
                "num_valid_queries": out["num_valid_queries"],
            }
        )
    )


def bench_msmt(threads: int) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--msmt-child", "--threads", str(threads)]
    print("[msmt17] 11659 x 82161 x 2048 float32 cosine, fresh subprocess ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    if proc.returncode != 0:
        raise SystemExit(f"MSMT17 case failed:\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    gb = res["peak_rss_bytes"] / 1024**3
    print(
        f"[msmt17] R1 {res['R1']:.4f} mAP {res['mAP']:.4f} mINP {res['mINP']:.4f} "
        f"({res['num_valid_queries']} valid queries)"
    )
    print(
        f"[msmt17] evaluate_features {res['seconds']:.1f} s, peak RSS {gb:.2f} GB; before the "
        f"call (torch + 0.77 GB of features): RSS {res['rss_before_bytes'] / 1024**3:.2f} GB, "
        f"set-up peak {res['setup_peak_bytes'] / 1024**3:.2f} GB"
    )
    if res["call_peak_bytes"]:
        print(
            f"[msmt17] peak RSS during the call alone (VmHWM reset before it): "
            f"{res['call_peak_bytes'] / 1024**3:.2f} GB"
        )
    assert res["peak_rss_bytes"] < RSS_LIMIT_BYTES, f"peak RSS {gb:.2f} GB exceeds 3 GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-market", action="store_true")
    parser.add_argument("--skip-msmt", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--msmt-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.msmt_child:
        msmt_case(args.threads)
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average {load}")
    if not args.skip_market:
        bench_market(args.repeats)
    if not args.skip_msmt:
        bench_msmt(args.threads)


if __name__ == "__main__":
    main()
