"""Dense NumPy k-reciprocal re-ranking, step by step as the reference code does it.

The reference is ``re_ranking(q_g_dist, q_q_dist, g_g_dist, k1, k2, lambda_value)`` that
torchreid (``torchreid/utils/rerank.py``) and fast-reid (``fastreid/evaluation/rerank.py``)
ship, from Zhong et al.'s repository (CVPR 2017). This transcription keeps its arithmetic:
the blocks are squared element-wise and cast to float32, every row of the (N, N) matrix is
divided by its column's maximum (the matrix is transposed after the division), ``np.argsort``
uses NumPy's default kind, and V, the Jaccard term and the result are float32. It holds
several dense (N, N) arrays, N = Q + G: the speed and correctness baseline of
``ppreid.metrics.rerank``, used by ``bench_rerank.py`` and the tests, not for Market-1501 scale.
"""

from __future__ import annotations

import numpy as np


def re_ranking_reference(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """(Q, G), (Q, Q), (G, G) distances -> (Q, G) float32 re-ranked distances."""
    num_query = q_g_dist.shape[0]
    num_all = num_query + q_g_dist.shape[1]

    dist = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    )
    dist = np.power(dist, 2).astype(np.float32)
    dist = np.transpose(1.0 * dist / np.max(dist, axis=0))
    V = np.zeros_like(dist).astype(np.float32)
    initial_rank = np.argsort(dist).astype(np.int32)

    half = int(np.around(k1 / 2.0))
    for i in range(num_all):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        reciprocal = forward[np.where(backward == i)[0]]
        expansion = reciprocal
        for candidate in reciprocal:
            cand_forward = initial_rank[candidate, : half + 1]
            cand_backward = initial_rank[cand_forward, : half + 1]
            cand_reciprocal = cand_forward[np.where(cand_backward == candidate)[0]]
            overlap = len(np.intersect1d(cand_reciprocal, reciprocal))
            if overlap > 2.0 / 3 * len(cand_reciprocal):
                expansion = np.append(expansion, cand_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        V[i, expansion] = 1.0 * weight / np.sum(weight)

    dist = dist[:num_query]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(num_all):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
        del V_qe
    del initial_rank

    inv_index = [np.where(V[:, col] != 0)[0] for col in range(num_all)]
    jaccard = np.zeros_like(dist, dtype=np.float32)
    for i in range(num_query):
        temp_min = np.zeros(shape=[1, num_all], dtype=np.float32)
        nonzero = np.where(V[i, :] != 0)[0]
        images = [inv_index[col] for col in nonzero]
        for j in range(len(nonzero)):
            temp_min[0, images[j]] = temp_min[0, images[j]] + np.minimum(V[i, nonzero[j]], V[images[j], nonzero[j]])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)

    final = jaccard * (1 - lambda_value) + dist * lambda_value
    return final[:num_query, num_query:]
