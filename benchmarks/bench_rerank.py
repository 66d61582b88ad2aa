"""Speed and memory of k-reciprocal re-ranking (src/ppreid/metrics/rerank.py), printed as figures.

Features are L2-normalised identity clusters (same-id cosine ~0.5, like a trained model's), and
the three distance blocks are squared euclidean distances from ``ppreid.metrics.reid.distance_matrix``,
which is what torchreid's engine hands to its ``re_ranking``.

(a) Q=1,000, G=5,000, dim 2,048: ``k_reciprocal_rerank`` against the dense NumPy reference
    (``src/ppreid/metrics/reference_rerank.py``) in the same run: times, speed-up, max |difference|
    (asserted <= 1e-4).
(b) Market-1501 scale, Q=3,368, G=15,913, dim 2,048: ``k_reciprocal_rerank`` alone, in a fresh
    subprocess so that its peak RSS is its own; asserted < 6 GB. The dense reference would need
    ~6 GB of (N, N) arrays here (N = 19,281) and is not run.

    python benchmarks/bench_rerank.py [--quick] [--skip-market] [--threads 2] [--repeats 3]
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

from ppreid.metrics.reference_rerank import re_ranking_reference
from ppreid.metrics.reid import distance_matrix
from ppreid.metrics.rerank import k_reciprocal_rerank

RSS_LIMIT_BYTES = 6 * 1024**3
TOLERANCE = 1e-4


def clustered_features(
    seed: int, num_query: int, num_gallery: int, dim: int, num_ids: int, num_distractors: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, dim), (G, dim) unit-norm features: id centre + equal-norm noise; distractors are
    gallery items with an id of their own."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_ids + num_distractors, dim, generator=gen)
    q_ids = torch.randint(0, num_ids, (num_query,), generator=gen)
    g_ids = torch.cat(
        [
            torch.randint(0, num_ids, (num_gallery - num_distractors,), generator=gen),
            torch.arange(num_ids, num_ids + num_distractors),
        ]
    )
    feats = []
    for ids in (q_ids, g_ids):
        f = centers[ids] + torch.randn(len(ids), dim, generator=gen)
        feats.append(f / f.norm(dim=1, keepdim=True))
    return feats[0], feats[1]


def engine_distances(qf: torch.Tensor, gf: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q_g, q_q, g_g float32 squared euclidean distances, as torchreid's engine computes them."""
    return tuple(distance_matrix(x, y, "euclidean").numpy() for x, y in ((qf, gf), (qf, qf), (gf, gf)))


def bench_compare(num_query: int, num_gallery: int, dim: int, repeats: int) -> None:
    qf, gf = clustered_features(0, num_query, num_gallery, dim, num_ids=num_gallery // 7, num_distractors=0)
    qg, qq, gg = engine_distances(qf, gf)
    print(f"[compare] Q={num_query} G={num_gallery} dim={dim}, squared euclidean float32, k1=20 k2=6 lambda=0.3")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = k_reciprocal_rerank(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)
        times.append(time.perf_counter() - t0)
    t_ours = min(times)
    t0 = time.perf_counter()
    ref = re_ranking_reference(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)
    t_ref = time.perf_counter() - t0
    diff = float(np.abs(ours - ref).max())
    print(f"[compare] k_reciprocal_rerank {t_ours:8.3f} s  (best of {repeats})")
    print(f"[compare] numpy reference     {t_ref:8.3f} s  speed-up {t_ref / t_ours:5.1f}x")
    print(f"[compare] max |ours - reference| = {diff:.2e}  (dtype {ours.dtype}, shape {ours.shape})")
    assert diff <= TOLERANCE, f"max difference {diff:.2e} exceeds {TOLERANCE:.0e}"


def market_case(num_query: int, num_gallery: int, dim: int) -> None:
    """Body of the Market-scale subprocess: prints one JSON line with times and RSS figures."""
    t0 = time.perf_counter()
    qf, gf = clustered_features(
        1, num_query, num_gallery, dim, num_ids=751, num_distractors=min(2794, num_gallery // 6)
    )
    qg, qq, gg = engine_distances(qf, gf)
    del qf, gf
    setup_seconds = time.perf_counter() - t0
    setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    rss_before = current_rss_bytes()
    reset_call_peak()
    t0 = time.perf_counter()
    out = k_reciprocal_rerank(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)
    seconds = time.perf_counter() - t0
    # After the VmHWM reset ru_maxrss reports the peak since the reset; the process's peak is the max.
    print(
        json.dumps(
            {
                "seconds": seconds,
                "setup_seconds": setup_seconds,
                "peak_rss_bytes": max(setup_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
                "setup_peak_bytes": setup_peak,
                "rss_before_bytes": rss_before,
                "call_peak_bytes": call_peak_bytes(),
                "input_bytes": qg.nbytes + qq.nbytes + gg.nbytes,
                "output_bytes": out.nbytes,
                "finite": bool(np.isfinite(out).all()),
            }
        )
    )


def bench_market(num_query: int, num_gallery: int, dim: int, threads: int) -> None:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--market-child",
        "--threads",
        str(threads),
        "--size",
        str(num_query),
        str(num_gallery),
        str(dim),
    ]
    print(f"[market] Q={num_query} G={num_gallery} dim={dim}, fresh subprocess ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
    if proc.returncode != 0:
        raise SystemExit(f"Market-scale case failed:\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    gib = 1024**3
    print(
        f"[market] set-up (features + 3 distance blocks): {res['setup_seconds']:.1f} s, "
        f"inputs {res['input_bytes'] / gib:.2f} GB, output {res['output_bytes'] / gib:.2f} GB"
    )
    print(f"[market] k_reciprocal_rerank {res['seconds']:.2f} s")
    print(
        f"[market] RSS before the call {res['rss_before_bytes'] / gib:.2f} GB (torch, inputs); peak RSS "
        f"of the process {res['peak_rss_bytes'] / gib:.2f} GB (set-up peak {res['setup_peak_bytes'] / gib:.2f} GB)"
    )
    if res["call_peak_bytes"]:
        print(
            f"[market] peak RSS during the call (VmHWM reset before it): {res['call_peak_bytes'] / gib:.2f} GB, "
            f"{(res['call_peak_bytes'] - res['rss_before_bytes']) / gib:.2f} GB above the RSS before it"
        )
    assert res["finite"], "re-ranked distances contain NaN or inf"
    assert res["peak_rss_bytes"] < RSS_LIMIT_BYTES, f"peak RSS {res['peak_rss_bytes'] / gib:.2f} GB exceeds 6 GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds), for a smoke test")
    parser.add_argument("--skip-market", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--market-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.market_child:
        market_case(*args.size)
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {args.threads} threads, "
        f"{os.cpu_count()} CPUs, load average {load}"
    )
    if args.quick:
        bench_compare(200, 1000, 256, args.repeats)
        if not args.skip_market:
            bench_market(500, 2500, 256, args.threads)
        return
    bench_compare(1000, 5000, 2048, args.repeats)
    if not args.skip_market:
        bench_market(3368, 15913, 2048, args.threads)


if __name__ == "__main__":
    main()
