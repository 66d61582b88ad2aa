"""Per-query NumPy Market-1501 evaluator, the way torchreid's (Cython) ``eval_market1501`` works.

It sorts every gallery row, removes junk (same pid and camera), and reads CMC/AP/INP from
cumsums. Used by ``bench_evaluator.py`` as the speed and correctness baseline.
``kind="stable"`` breaks distance ties by gallery order (the protocol); torchreid itself calls
``np.argsort`` with the default quicksort, which is faster and differs only on exact ties.
"""

from __future__ import annotations

import numpy as np


def reference_eval(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
    kind: str = "stable",
) -> dict:
    """distmat (Q, G) -> dict(cmc (max_rank,), mAP, mINP, num_valid_queries); cmc padded with its
    last value when the gallery is shorter than max_rank, like ``ppreid.metrics.reid``."""
    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind=kind)
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        raw = (g_pids[order][keep] == q_pids[i]).astype(np.float64)
        if not raw.any():
            continue
        cum = raw.cumsum()
        cmc = np.minimum(cum, 1.0)
        if cmc.size < max_rank:
            cmc = np.concatenate([cmc, np.full(max_rank - cmc.size, cmc[-1])])
        cmc_sum += cmc[:max_rank]
        positions = np.nonzero(raw)[0]
        ap_sum += float((cum[positions] / (positions + 1.0)).sum() / raw.sum())
        inp_sum += float(cum[positions[-1]] / (positions[-1] + 1.0))
        num_valid += 1
    if num_valid == 0:
        raise ValueError("no query has a match in the gallery")
    return {
        "cmc": cmc_sum / num_valid,
        "mAP": ap_sum / num_valid,
        "mINP": inp_sum / num_valid,
        "num_valid_queries": num_valid,
    }
