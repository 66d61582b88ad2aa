"""Exact Market-1501 ranking metrics (CMC, mAP, mINP), vectorized in torch and chunked over queries.

The protocol is the one torchreid's ``eval_market1501`` computes: rank the gallery by ascending
distance (ties: gallery order), drop gallery entries that share the query's pid *and* camera,
skip queries with no remaining match. We never sort a row: a query has few true matches, so the
rank of each match is one plus the number of valid gallery entries ordered before it, i.e. with
a smaller (distance, gallery index) pair. Per query block (B, G):

1. the m matches of each row are found from the pid-sorted gallery (O(matches), no B x G mask)
   and sorted by (distance, index): thresholds T (B, M);
2. every entry gets a bin that is a *monotone* function of its distance, on a grid spanning the
   row's thresholds; a per-row histogram + cumsum counts, for each threshold, the entries in
   strictly lower bins (strictly closer, exactly, by monotonicity); junk goes to a dump bin;
3. the few entries that share a bin with a threshold are compared exactly (distance, then
   gallery index) against the thresholds of that bin.

The result is exact for any finite or infinite distances (NaN is rejected); only the amount of
work in step 3 depends on the data (many exact ties make it larger, never wrong).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ppreid.utils.errors import ReIDInputError

_METRICS = ("cosine", "euclidean")
# Distances per query block (rows whose thresholds are prepared together; the distance block
# of evaluate_features) and per sub-block (streamed through the binning passes; cache-sized
# on CPU). Working memory is ~9 bytes per sub-block element plus the block itself.
_BLOCK_ELEMENTS = {"cpu": 1 << 24, "cuda": 1 << 26}
_SUB_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}
# Bins of the monotone grid per row, and the cap on (candidates x thresholds) compared at once.
_MAX_BINS = 4096
_PAIR_BLOCK = 1 << 22


class ReIDEvalInputError(ReIDInputError, ValueError):
    """Inputs to the ReID evaluator are inconsistent (shapes, NaN, no valid query, bad metric)."""


def evaluate_distmat(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
) -> dict:
    """Market-1501 CMC / mAP / mINP from a query x gallery distance matrix.

    distmat: (Q, G) numpy array or torch tensor (smaller = more similar); ids: (Q,) and (G,).
    Returns ``cmc`` (numpy float64, length ``max_rank``; a gallery shorter than ``max_rank`` is
    padded with its last value, 1.0 for every query once its first match is found, where
    torchreid would shorten the curve), ``mAP``, ``mINP`` (floats in [0, 1]) and
    ``num_valid_queries``. Runs on the tensor's device (numpy: CPU).
    """
    dist = _as_tensor(distmat, "distmat")
    if dist.dim() != 2:
        raise ReIDEvalInputError(
            f"distmat must be 2-D (num_query, num_gallery), got shape {tuple(dist.shape)}; "
            "pass one row per query and one column per gallery image."
        )
    _check_max_rank(max_rank)
    nq, ng = dist.shape
    ranker = _Ranker(q_pids, g_pids, q_camids, g_camids, nq, ng, dist.device)
    acc = _Accumulator(max_rank)
    block = _rows_per(_BLOCK_ELEMENTS, ng, dist.device)
    for start in range(0, nq, block):
        stop = min(start + block, nq)
        acc.add(*ranker.rank(_as_distance_dtype(dist[start:stop].detach()), start, stop))
    return acc.result()


def evaluate_features(
    qf: Any,
    gf: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    metric: str = "cosine",
    max_rank: int = 50,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """Market-1501 metrics from query (Q, D) and gallery (G, D) features, never building Q x G.

    ``metric="cosine"``: distance = 1 - cos (features L2-normalized, eps 1e-12 like
    ``F.normalize``; the gallery is scaled by its inverse norms instead of copied);
    ``"euclidean"``: squared euclidean distance. Distances are computed for ``chunk_size``
    queries at a time (default: ~16M distances per chunk on CPU, ~64M on CUDA) on ``device``
    (default: the device of ``qf``). Float64 features stay float64, others run in float32.
    Returns the same dict as :func:`evaluate_distmat`.
    """
    if metric not in _METRICS:
        raise ReIDEvalInputError(f"metric={metric!r} is not supported; use one of {_METRICS}.")
    q = _as_tensor(qf, "qf")
    g = _as_tensor(gf, "gf")
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ReIDEvalInputError(
            f"qf and gf must be 2-D with the same feature size, got {tuple(q.shape)} and "
            f"{tuple(g.shape)}; pass (num_query, dim) and (num_gallery, dim) features."
        )
    _check_max_rank(max_rank)
    dev = torch.device(device) if device is not None else q.device
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    g = g.detach().to(dev, dtype)
    nq, ng = q.shape[0], g.shape[0]
    ranker = _Ranker(q_pids, g_pids, q_camids, g_camids, nq, ng, dev)
    if chunk_size is None:
        chunk_size = _rows_per(_BLOCK_ELEMENTS, ng, dev)
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise ReIDEvalInputError(f"chunk_size={chunk_size!r} must be a positive number of queries.")
    chunk_size = int(chunk_size)

    if metric == "cosine":
        g_scale = (-1.0 / g.norm(dim=1).clamp_min(1e-12)).unsqueeze(0)  # (1, G)
    else:
        g_sq = g.pow(2).sum(dim=1).unsqueeze(0)  # (1, G)
    acc = _Accumulator(max_rank)
    for start in range(0, nq, chunk_size):
        stop = min(start + chunk_size, nq)
        qc = q[start:stop].detach().to(dev, dtype)
        if metric == "cosine":
            qc = qc / qc.norm(dim=1, keepdim=True).clamp_min(1e-12)
            block = torch.mm(qc, g.t()).mul_(g_scale).add_(1.0)  # 1 - cos
        else:
            block = torch.addmm(g_sq, qc, g.t(), alpha=-2.0).add_(qc.pow(2).sum(1, keepdim=True))
        acc.add(*ranker.rank(block, start, stop))
        del block
    return acc.result()


def distance_matrix(x: torch.Tensor, y: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) distances as :func:`evaluate_features` ranks them: ``cosine`` = 1 - cos,
    ``euclidean`` = squared euclidean distance (the form re-ranking expects)."""
    if metric not in _METRICS:
        raise ReIDEvalInputError(f"metric={metric!r} is not supported; use one of {_METRICS}.")
    if metric == "cosine":
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        yn = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 1.0 - xn @ yn.t()
    sq = torch.addmm(y.pow(2).sum(1).unsqueeze(0), x, y.t(), alpha=-2.0)
    return sq.add_(x.pow(2).sum(1, keepdim=True)).clamp_min_(0.0)


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ReIDEvalInputError(
            f"{name} could not be read as an array ({err}); pass a numpy array or torch tensor."
        ) from err


def _as_distance_dtype(block: torch.Tensor) -> torch.Tensor:
    """Float32/float64 as given; half types upcast exactly to float32, integers to float64."""
    if block.dtype in (torch.float32, torch.float64):
        return block
    if block.dtype == torch.bool or block.is_complex():
        raise ReIDEvalInputError(f"distmat has dtype {block.dtype}; pass real-valued distances.")
    return block.float() if block.is_floating_point() else block.double()


def _check_max_rank(max_rank: int) -> None:
    if isinstance(max_rank, bool) or int(max_rank) != max_rank or max_rank < 1:
        raise ReIDEvalInputError(f"max_rank={max_rank!r} must be a positive integer (e.g. 50).")


def _rows_per(budget: dict, num_gallery: int, device: torch.device) -> int:
    elements = budget["cuda" if device.type == "cuda" else "cpu"]
    return max(1, elements // max(1, num_gallery))


def _ids(x: Any, name: str, n: int, device: torch.device) -> torch.Tensor:
    t = _as_tensor(x, name).reshape(-1)
    if t.numel() != n:
        raise ReIDEvalInputError(
            f"{name} has {t.numel()} entries but the distances/features have {n}; "
            "pass one id per query (rows) and per gallery image (columns)."
        )
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise ReIDEvalInputError(f"{name} must hold integer ids, got non-integer values.")
    return t.to(device=device, dtype=torch.int64)


class _Ranker:
    """Ranks of every query's true matches, block by block of query rows.

    Each query's same-pid gallery entries are listed from the pid-sorted gallery (stable, so
    gallery order survives within a pid) and split into matches (other camera) and junk (same
    camera), per block, so memory follows the block, not the whole query set.
    """

    def __init__(self, q_pids, g_pids, q_camids, g_camids, nq: int, ng: int, device) -> None:
        self.q_pids = _ids(q_pids, "q_pids", nq, device)
        self.q_cams = _ids(q_camids, "q_camids", nq, device)
        g_pids_t = _ids(g_pids, "g_pids", ng, device)
        self.g_cams = _ids(g_camids, "g_camids", ng, device)
        self.order = torch.argsort(g_pids_t, stable=True)
        self.sorted_pids = g_pids_t[self.order].contiguous()

    def pairs(self, start: int, stop: int):
        """Same-pid (row - start, gallery index) pairs of queries [start, stop), sorted by row
        then gallery index, split into matches and junk."""
        qp = self.q_pids[start:stop]
        dev = qp.device
        lo = torch.searchsorted(self.sorted_pids, qp)
        counts = torch.searchsorted(self.sorted_pids, qp, right=True) - lo
        rows = torch.repeat_interleave(torch.arange(stop - start, device=dev), counts)
        first = torch.cumsum(counts, 0) - counts
        cols = self.order[lo[rows] + torch.arange(rows.numel(), device=dev) - first[rows]]
        junk = self.g_cams[cols] == self.q_cams[start:stop][rows]
        return (rows[~junk], cols[~junk]), (rows[junk], cols[junk])

    def rank(self, dist: torch.Tensor, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """dist: (B, G) distances of queries [start, stop). Returns 1-based ranks (B, M) int64 of
        each row's matches in (distance, gallery index) order after junk removal, and the match
        counts m (B,); entries k >= m[b] are padding."""
        b, g = dist.shape
        dev = dist.device
        (m_rows, m_cols), (j_rows, j_cols) = self.pairs(start, stop)
        m = torch.bincount(m_rows, minlength=b)
        width = int(m.max()) if b > 0 else 0
        if width == 0:
            return torch.zeros(b, 0, dtype=torch.int64, device=dev), m

        # Thresholds: each row's match distances sorted by (distance, gallery index).
        slot = torch.arange(m_rows.numel(), device=dev) - (torch.cumsum(m, 0) - m)[m_rows]
        thr = torch.full((b, width), math.inf, dtype=dist.dtype, device=dev)
        thr[m_rows, slot] = dist[m_rows, m_cols]
        thr_idx = torch.full((b, width), g - 1, dtype=torch.int64, device=dev)
        thr_idx[m_rows, slot] = m_cols
        thr, perm = torch.sort(thr, dim=1, stable=True)
        thr_idx = thr_idx.gather(1, perm)
        real = torch.arange(width, device=dev).unsqueeze(0) < m.unsqueeze(1)

        # Monotone grid over [lowest, highest] threshold of each row, clamped finite so that the
        # scale is finite and positive: then D * scale + shift is NaN only where D is.
        big = torch.finfo(dist.dtype).max / 8
        lo = thr[:, 0].clamp(-big, big)
        hi = thr.gather(1, (m - 1).clamp_min(0).unsqueeze(1)).squeeze(1).clamp(-big, big)
        nbins = max(16, min(_MAX_BINS, g // 4))
        span = torch.maximum(hi - lo, 1e-3 * torch.maximum(lo.abs(), hi.abs()))
        span = span.clamp_min(1e-30 if dist.dtype == torch.float32 else 1e-300)
        scale = ((nbins - 1) / span).unsqueeze(1)
        shift = 1.0 - lo.unsqueeze(1) * scale  # bin 0: below lo, 1..nbins: grid, nbins+1: above
        grid = _Grid(nbins, scale, shift, thr, thr_idx, real)

        ranks = torch.empty(b, width, dtype=torch.int64, device=dev)
        sub = _rows_per(_SUB_ELEMENTS, g, dev)
        work = _Workspace(min(sub, b), g, dist.dtype, dev)
        junk_ptr = [0] + torch.cumsum(torch.bincount(j_rows, minlength=b), 0).tolist()
        for s0 in range(0, b, sub):
            s1 = min(s0 + sub, b)
            junk = (j_rows[junk_ptr[s0] : junk_ptr[s1]] - s0, j_cols[junk_ptr[s0] : junk_ptr[s1]])
            ranks[s0:s1] = grid.ranks(dist[s0:s1], s0, junk, work, start)
        return ranks, m


class _Workspace:
    """Buffers reused by every sub-block (no fresh large allocation, hence no page faults)."""

    def __init__(self, rows: int, g: int, dtype: torch.dtype, device) -> None:
        self.y = torch.empty(rows * g, dtype=dtype, device=device)
        self.bins = torch.empty(rows * g, dtype=torch.int32, device=device)
        self.cand = torch.empty(rows * g, dtype=torch.bool, device=device)


class _Grid:
    """Per-row monotone binning of distances, and exact ranks of the thresholds from it."""

    def __init__(self, nbins, scale, shift, thr, thr_idx, real) -> None:
        self.nbins, self.scale, self.shift = nbins, scale, shift
        self.thr, self.thr_idx, self.real = thr, thr_idx, real

    def ranks(self, dist, s0: int, junk, work: _Workspace, offset: int) -> torch.Tensor:
        """dist: (S, G) rows s0.. of the block; junk: (rows, cols) within it. Returns (S, M)."""
        n, g = dist.shape
        dev = dist.device
        width = self.thr.shape[1]
        nb = self.nbins + 3  # + below, above, dump (junk)
        thr, thr_idx, real = self.thr[s0 : s0 + n], self.thr_idx[s0 : s0 + n], self.real[s0 : s0 + n]

        # Separate mul and add (no fused multiply-add): each is correctly rounded, hence monotone.
        y = work.y[: n * g].view(n, g)
        torch.mul(dist, self.scale[s0 : s0 + n], out=y)
        y.add_(self.shift[s0 : s0 + n]).clamp_(0, self.nbins + 1)
        if torch.isnan(y.sum()):
            raise ReIDEvalInputError(
                f"distances of queries {offset + s0}..{offset + s0 + n - 1} contain NaN, which "
                "cannot be ranked; check the features, or mark missing distances with +inf."
            )
        bins = work.bins[: n * g].view(n, g)
        bins.copy_(y)  # floor (values are >= 0)
        bins.add_(torch.arange(0, n * nb, nb, dtype=torch.int32, device=dev).unsqueeze(1))
        # A threshold's bin is read from its own entry, so equal distances share a bin exactly.
        thr_bins = bins.gather(1, thr_idx).long()
        bins[junk] = torch.arange(n, dtype=torch.int32, device=dev)[junk[0]] * nb + nb - 1
        flat = bins.view(-1)
        hist = torch.bincount(flat, minlength=n * nb).view(n, nb)
        below = (torch.cumsum(hist, 1) - hist).view(-1)[thr_bins.view(-1)].view(n, width)

        # Entries sharing a bin with a threshold: exact (distance, then index) comparison.
        table = torch.zeros(n * nb, dtype=torch.bool, device=dev)
        table[thr_bins[real]] = True
        cand = work.cand[: n * g]
        torch.index_select(table, 0, flat, out=cand)
        pos = cand.nonzero().squeeze(1)
        step = max(1, _PAIR_BLOCK // width)
        for p0 in range(0, pos.numel(), step):
            p = pos[p0 : p0 + step]
            r, c = p // g, p % g
            d = dist[r, c].unsqueeze(1)
            t = thr[r]
            before = (d < t) | ((d == t) & (c.unsqueeze(1) <= thr_idx[r]))
            before &= (thr_bins[r] == flat[p].long().unsqueeze(1)) & real[r]
            below.index_add_(0, r, before.to(torch.int64))
        return below


class _Accumulator:
    """Sums CMC hits, AP and INP over query chunks (float64) and builds the result dict."""

    def __init__(self, max_rank: int) -> None:
        self.max_rank = int(max_rank)
        self.first_hits = torch.zeros(self.max_rank + 1, dtype=torch.float64)
        self.ap_sum = 0.0
        self.inp_sum = 0.0
        self.num_valid = 0

    def add(self, ranks: torch.Tensor, m: torch.Tensor) -> None:
        valid = m > 0
        if not bool(valid.any()):
            return
        ranks, m = ranks[valid], m[valid]
        width = ranks.shape[1]
        k = torch.arange(1, width + 1, device=ranks.device, dtype=torch.float64).unsqueeze(0)
        real = k <= m.unsqueeze(1)
        precision = torch.where(real, k / ranks.clamp_min(1).to(torch.float64), 0.0)
        ap = precision.sum(1) / m.to(torch.float64)
        last = ranks.gather(1, (m - 1).unsqueeze(1)).squeeze(1).to(torch.float64)
        first = (ranks[:, 0] - 1).clamp_max(self.max_rank).cpu()
        self.first_hits += torch.bincount(first, minlength=self.max_rank + 1).to(torch.float64)
        self.ap_sum += float(ap.sum())
        self.inp_sum += float((m.to(torch.float64) / last).sum())
        self.num_valid += int(m.numel())

    def result(self) -> dict:
        if self.num_valid == 0:
            raise ReIDEvalInputError(
                "no query has a match in the gallery (same pid, other camera), so CMC/mAP are "
                "undefined; check that query and gallery pids/camids come from the same dataset."
            )
        cmc = torch.cumsum(self.first_hits[: self.max_rank], 0) / self.num_valid
        return {
            "cmc": cmc.numpy().astype(np.float64),
            "mAP": self.ap_sum / self.num_valid,
            "mINP": self.inp_sum / self.num_valid,
            "num_valid_queries": self.num_valid,
        }
