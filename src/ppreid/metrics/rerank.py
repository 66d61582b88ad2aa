"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in bounded memory, with the reference's numbers.

The numbers are those of ``re_ranking`` that torchreid and fast-reid ship (from Zhong's
repository); the reference builds several dense (N, N) arrays, N = Q + G, which at Market-1501
scale (N = 19,281) is over 7 GB. Here nothing N x N is ever held:

1. Row i of the reference's normalised matrix is column i of the full distance matrix, squared
   (float32) and divided by its own maximum, so one pass over column blocks gives each row's
   normaliser and its top ranks (``torch.topk``, then ordered by (distance, index)).
2. k-reciprocal sets, their expansion and the Gaussian weights are computed for all rows at once
   from the (N, k1 + 1) rank table; V, the local query expansion, is a sparse CSR matrix.
3. The Jaccard term sums min(V[q, k], V[g, k]) over the (q, k, g) triples where both are non-zero,
   streamed in query chunks; the original distance enters only as the (Q, G) block.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ppreid.utils.errors import ConfigValueError

# Elements of the float32 (rows, N) block ranked at once; of the (queries, G) float32 block of a
# Jaccard chunk; and (query, feature, gallery) triples per Jaccard chunk (~40 bytes each).
_RANK_BLOCK_ELEMENTS = 1 << 24
_JACCARD_BLOCK_ELEMENTS = 1 << 22
_TRIPLES_PER_CHUNK = 1 << 22


def k_reciprocal_rerank(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> Any:
    """Re-ranked (Q, G) float32 distances from (Q, G), (Q, Q) and (G, G) distances.

    Like the reference, the given distances are squared element-wise first. To get torchreid's
    numbers pass what its engine passes, squared euclidean distances
    (``ppreid.metrics.reid.distance_matrix(x, y, "euclidean")``), so d**4 is normalised; plain
    euclidean distances give the feature-level variant (reid-strong-baseline), which normalises
    d**2. The result equals the reference's to float32 rounding; exact distance ties, which the
    reference orders arbitrarily, are ordered by index. ``k1 + 1`` or ``k2`` above Q + G are cut
    to Q + G, as the reference's slices cut them. Numpy arrays or torch tensors; the result is
    of the kind of ``q_g_dist`` (a tensor on its device).
    """
    _check_params(k1, k2, lambda_value)
    qg, qq, gg = (
        _as_numpy(x, name) for x, name in ((q_g_dist, "q_g_dist"), (q_q_dist, "q_q_dist"), (g_g_dist, "g_g_dist"))
    )
    _check_shapes(qg, qq, gg)
    dtype = np.result_type(qg, qq, gg)
    num_all = qg.shape[0] + qg.shape[1]
    half = int(np.around(k1 / 2.0))
    width = min(max(k1 + 1, k2), num_all)

    ranks, col_max = _top_ranks(qq, qg, gg, width, dtype)
    V = _expansion_weights(qq, qg, gg, ranks, col_max, min(k1 + 1, num_all), min(half + 1, num_all), dtype)
    if k2 != 1:
        V = _query_expansion(V, ranks[:, : min(k2, num_all)])
    del ranks
    out = _jaccard_blend(V, qg, col_max, lambda_value, dtype)
    if isinstance(q_g_dist, torch.Tensor):
        return torch.from_numpy(out).to(q_g_dist.device)
    return out


def _check_params(k1: int, k2: int, lambda_value: float) -> None:
    for name, k in (("k1", k1), ("k2", k2)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigValueError(f"{name}={k!r} must be an integer >= 1; the paper uses k1=20, k2=6.")
    if not 0.0 <= lambda_value <= 1.0:
        raise ConfigValueError(
            f"lambda_value={lambda_value!r} is outside [0, 1]; pass a weight in [0, 1] (the paper uses 0.3)."
        )


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2:
        raise ConfigValueError(f"{name} has shape {x.shape}; pass a 2-D distance matrix.")
    return x


def _check_shapes(qg: np.ndarray, qq: np.ndarray, gg: np.ndarray) -> None:
    nq, ng = qg.shape
    if nq == 0 or ng == 0:
        raise ConfigValueError(f"q_g_dist has shape {qg.shape}; pass at least one query and one gallery item.")
    if qq.shape != (nq, nq):
        raise ConfigValueError(
            f"q_q_dist has shape {qq.shape} but q_g_dist {qg.shape} needs ({nq}, {nq}); pass query-query distances."
        )
    if gg.shape != (ng, ng):
        raise ConfigValueError(
            f"g_g_dist has shape {gg.shape} but q_g_dist {qg.shape} needs ({ng}, {ng}); pass gallery-gallery distances."
        )


def _squared(block: np.ndarray, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """The reference's ``np.power(dist, 2).astype(np.float32)``, squared in the dtype of its
    concatenation of the three blocks."""
    if out is None:
        out = np.empty(block.shape, dtype=np.float32)
    return np.square(block, out=out, dtype=dtype)


def _top_ranks(qq, qg, gg, width: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """ranks (N, width) int64: each row's nearest items, ascending; col_max (N,) float32: the
    maximum of column i of the squared (N, N) matrix, which normalises row i."""
    nq, ng = qg.shape
    num_all = nq + ng
    ranks = np.empty((num_all, width), dtype=np.int64)
    col_max = np.empty(num_all, dtype=np.float32)
    step = max(1, min(num_all, _RANK_BLOCK_ELEMENTS // num_all))
    buf = np.empty((step, num_all), dtype=np.float32)
    # Row blocks never straddle the query/gallery boundary, so each reads one pair of blocks.
    bounds = [(a, min(a + step, nq)) for a in range(0, nq, step)]
    bounds += [(a, min(a + step, num_all)) for a in range(nq, num_all, step)]
    for start, stop in bounds:
        rows = buf[: stop - start]
        if stop <= nq:  # rows of queries: columns of [q_q; q_g^T]
            _squared_columns(qq, start, stop, dtype, rows[:, :nq])
            _squared(qg[start:stop], dtype, out=rows[:, nq:])
        else:  # rows of gallery items: columns of [q_g; g_g]
            _squared_columns(qg, start - nq, stop - nq, dtype, rows[:, :nq])
            _squared_columns(gg, start - nq, stop - nq, dtype, rows[:, nq:])
        peak = rows.max(axis=1)
        if np.isnan(peak).any():
            item = start + int(np.flatnonzero(np.isnan(peak))[0])
            name = f"query {item}" if item < nq else f"gallery item {item - nq}"
            raise ConfigValueError(f"the distances to {name} contain NaN; pass NaN-free distances.")
        col_max[start:stop] = peak
        rows /= peak[:, None]
        values, index = torch.topk(torch.from_numpy(rows), width, dim=1, largest=False, sorted=True)
        values, index = values.numpy(), index.numpy()
        order = np.lexsort((index, values), axis=1)
        ranks[start:stop] = np.take_along_axis(index, order, axis=1)
    return ranks, col_max


def _squared_columns(block: np.ndarray, start: int, stop: int, dtype, out: np.ndarray) -> None:
    """out (B, R) <- squared block[:, start:stop].T, transposed in row tiles so reads stay cached."""
    tile = 1024
    for r in range(0, block.shape[0], tile):
        _squared(block[r : r + tile, start:stop].T, dtype, out=out[:, r : r + tile])


def _normalised_at(qq, qg, gg, col_max, rows: np.ndarray, cols: np.ndarray, dtype) -> np.ndarray:
    """Entries (rows, cols) of the normalised matrix: full[cols, rows] squared / col_max[rows]."""
    nq = qg.shape[0]
    raw = np.empty(rows.shape, dtype=dtype)
    row_q, col_q = rows < nq, cols < nq
    for sel, block, r, c in (
        (row_q & col_q, qq, cols, rows),
        (row_q & ~col_q, qg, rows, cols - nq),
        (~row_q & col_q, qg, cols, rows - nq),
        (~row_q & ~col_q, gg, cols - nq, rows - nq),
    ):
        raw[sel] = block[r[sel], c[sel]]
    return _squared(raw, dtype) / col_max[rows]


def _reciprocal_mask(ranks: np.ndarray) -> np.ndarray:
    """(N, w) bool: ranks[i, j] is k-reciprocal to i (i is among the first w ranks of ranks[i, j])."""
    num_all = ranks.shape[0]
    mask = np.empty(ranks.shape, dtype=bool)
    step = max(1, (1 << 22) // (ranks.shape[1] ** 2))
    for start in range(0, num_all, step):
        stop = min(start + step, num_all)
        back = ranks[ranks[start:stop]]
        mask[start:stop] = (back == np.arange(start, stop)[:, None, None]).any(axis=2)
    return mask


def _expansion_weights(qq, qg, gg, ranks, col_max, width: int, half_width: int, dtype) -> sp.csr_matrix:
    """V (N, N) CSR float32: Gaussian weights exp(-d) over each row's expanded k-reciprocal set,
    normalised to sum 1. A neighbour's half-size set joins when > 2/3 of it is in the row's set."""
    num_all = ranks.shape[0]
    full, half = ranks[:, :width], ranks[:, :half_width]
    full_mask, half_mask = _reciprocal_mask(full), _reciprocal_mask(half)

    row, pos = np.nonzero(full_mask)
    cand = full[row, pos]
    keys = np.sort(row * num_all + cand)
    if keys.size == 0:
        return sp.csr_matrix((num_all, num_all), dtype=np.float32)
    cand_sets, cand_valid = half[cand], half_mask[cand]
    probe = row[:, None] * num_all + cand_sets
    found = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
    overlap = ((keys[found] == probe) & cand_valid).sum(axis=1)
    accept = overlap > 2.0 / 3 * cand_valid.sum(axis=1)

    extra_valid = cand_valid[accept]
    extra_rows = np.broadcast_to(row[accept][:, None], extra_valid.shape)[extra_valid]
    extra_cols = cand_sets[accept][extra_valid]
    all_keys = np.unique(np.concatenate([keys, extra_rows * num_all + extra_cols]))
    rows, cols = all_keys // num_all, all_keys % num_all

    weight = np.exp(-_normalised_at(qq, qg, gg, col_max, rows, cols, dtype))
    total = np.bincount(rows, weights=weight, minlength=num_all).astype(np.float32)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num_all))])
    return sp.csr_matrix((weight / total[rows], cols, indptr), shape=(num_all, num_all))


def _query_expansion(V: sp.csr_matrix, neighbours: np.ndarray) -> sp.csr_matrix:
    """V_qe[i] = mean of V over i's first k2 ranks (neighbours (N, k2), i itself first)."""
    num_all, k = neighbours.shape
    pick = sp.csr_matrix(
        (np.ones(neighbours.size, dtype=np.float32), neighbours.ravel(), np.arange(0, neighbours.size + 1, k)),
        shape=(num_all, num_all),
    )
    out = (pick @ V).tocsr()
    out.data /= np.float32(k)
    return out


def _jaccard_blend(V: sp.csr_matrix, qg: np.ndarray, col_max: np.ndarray, lambda_value: float, dtype) -> np.ndarray:
    """(Q, G) float32: Jaccard distance 1 - m / (2 - m), m = sum_k min(V[q, k], V[g, k]), blended
    with the normalised original distance by lambda_value. Where m = 0 the Jaccard term is 1, so
    the dense pass writes (1 - lambda) + lambda * original and only pairs with m > 0 are redone."""
    nq, ng = qg.shape
    vq = V[:nq]
    by_feature = V[nq:].T.tocsr()  # row k: the gallery items g with V[g, k] != 0
    lengths = np.diff(by_feature.indptr)[vq.indices]
    cum = np.concatenate([[0], np.cumsum(lengths)])
    triples_before = cum[vq.indptr]
    query_of_nz = np.repeat(np.arange(nq), np.diff(vq.indptr))
    max_rows = max(1, _JACCARD_BLOCK_ELEMENTS // ng)
    keep, weight = np.float32(1 - lambda_value), lambda_value

    out = np.empty((nq, ng), dtype=np.float32)
    start = 0
    while start < nq:
        stop = int(np.searchsorted(triples_before, triples_before[start] + _TRIPLES_PER_CHUNK, side="right")) - 1
        stop = min(max(start + 1, stop), start + max_rows, nq)
        original = _squared(qg[start:stop], dtype)
        original /= col_max[start:stop, None]
        chunk = out[start:stop]
        np.multiply(original, weight, out=chunk)
        chunk += keep

        s, e = vq.indptr[start], vq.indptr[stop]
        n = lengths[s:e]
        offsets = np.repeat(by_feature.indptr[vq.indices[s:e]] - (cum[s + 1 : e + 1] - cum[s]) + n, n)
        offsets += np.arange(offsets.size)
        mins = np.minimum(np.repeat(vq.data[s:e], n), by_feature.data[offsets])
        flat = np.repeat(query_of_nz[s:e] - start, n) * ng + by_feature.indices[offsets]
        shared = np.bincount(flat, weights=mins, minlength=chunk.size)
        pairs = np.flatnonzero(shared)  # every min is > 0: exactly the pairs with shared features
        shared = shared[pairs].astype(np.float32)
        jaccard = 1 - shared / (2.0 - shared)
        chunk.flat[pairs] = jaccard * (1 - lambda_value) + original.flat[pairs] * weight
        start = stop
    return out
