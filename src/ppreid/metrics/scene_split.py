"""Scene sensitivity of a ranking: AP over a query's true matches in its own scene vs in another scene
(:func:`scene_split_ap`, :func:`scene_split_features`), ranked and tied as :mod:`ppreid.metrics.reid` ranks."""

from __future__ import annotations

from typing import Any

import torch

from ppreid.metrics.reid import (
    ReIDEvalInputError,
    _as_distance_dtype,
    _as_tensor,
    _ids,
    distance_matrix,
)

# Distances per block of the scene split (query x gallery), and its (query x match x gallery) comparisons.
_SCENE_ELEMENTS = 1 << 22


def scene_split_ap(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    q_scenes: Any,
    g_scenes: Any,
) -> dict:
    """Scene sensitivity: AP over the true matches in the query's own scene vs in another scene.

    A model that ranks by background finds a person's images in the query's scene first and those
    in another scene late. Each query therefore gets two APs, one per kind of true match (same
    pid, other camera): ``same`` counts only its matches whose scene (``g_scenes``) equals the
    query's (``q_scenes``), ``diff`` only the others; the matches of the other kind are left out
    of that ranking like junk (same pid and camera), so both rank the same impostors. Ranking and
    ties as :func:`evaluate_distmat` (ascending distance, then gallery order).

    distmat: (Q, G) distances; pids, camids, scenes: (Q,) and (G,) integer ids (a scene: e.g. the
    background's index). Returns ``same_bg_ap`` / ``diff_bg_ap`` (means over the queries that
    have at least one match of that kind; None when none has), ``n_same`` / ``n_diff`` (those
    query counts) and ``gap`` = same - diff (None unless both exist). With one scene everywhere,
    ``same_bg_ap`` is the mAP.
    """
    dist = _as_tensor(distmat, "distmat")
    if dist.dim() != 2:
        raise ReIDEvalInputError(f"distmat must be 2-D (num_query, num_gallery), got shape {tuple(dist.shape)}.")
    dist = _as_distance_dtype(dist.detach())
    ids = _scene_ids(q_pids, g_pids, q_camids, g_camids, q_scenes, g_scenes, *dist.shape, dist.device)
    rows = max(1, _SCENE_ELEMENTS // max(1, dist.shape[1]))
    parts = [_scene_aps(dist[s : s + rows], s, *ids) for s in range(0, dist.shape[0], rows)]
    return _scene_summary(parts)


def scene_split_features(
    qf: Any,
    gf: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    q_scenes: Any,
    g_scenes: Any,
    metric: str = "cosine",
) -> dict:
    """:func:`scene_split_ap` from query (Q, D) and gallery (G, D) features, distances as
    :func:`evaluate_features` ranks them, computed a block of queries at a time (never Q x G)."""
    q, g = _as_tensor(qf, "qf").detach(), _as_tensor(gf, "gf").detach()
    if q.dim() != 2 or g.dim() != 2 or q.shape[1] != g.shape[1]:
        raise ReIDEvalInputError(
            f"qf and gf must be 2-D with the same feature size, got {tuple(q.shape)} and {tuple(g.shape)}."
        )
    dtype = torch.float64 if torch.float64 in (q.dtype, g.dtype) else torch.float32
    q, g = q.to(dtype), g.to(q.device, dtype)
    ids = _scene_ids(q_pids, g_pids, q_camids, g_camids, q_scenes, g_scenes, q.shape[0], g.shape[0], q.device)
    rows = max(1, _SCENE_ELEMENTS // max(1, g.shape[0]))
    parts = [_scene_aps(distance_matrix(q[s : s + rows], g, metric), s, *ids) for s in range(0, q.shape[0], rows)]
    return _scene_summary(parts)


def _scene_ids(q_pids, g_pids, q_camids, g_camids, q_scenes, g_scenes, nq: int, ng: int, dev) -> tuple:
    q = tuple(_ids(x, n, nq, dev) for x, n in ((q_pids, "q_pids"), (q_camids, "q_camids"), (q_scenes, "q_scenes")))
    g = tuple(_ids(x, n, ng, dev) for x, n in ((g_pids, "g_pids"), (g_camids, "g_camids"), (g_scenes, "g_scenes")))
    return q + g


def _scene_aps(dist, start, qp, qc, qs, gp, gc, gs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query AP over same-scene matches and over other-scene matches of the query rows
    ``start : start + B`` (dist (B, G)); queries without a match of that kind are left out.

    No row is sorted: a match's rank in a ranking is one plus the entries of that ranking ordered
    before it by (distance, gallery index), and a ranking holds the impostors (other pids) plus the
    matches of one kind; so each match (M per row at most) is compared with the row's impostors
    (B, M, G) and with the row's other matches (B, M, M).
    """
    if bool(torch.isnan(dist).any()):
        raise ReIDEvalInputError("distances contain NaN; check the features (a NaN feature gives NaN distances).")
    stop = start + dist.shape[0]
    pid_eq = gp[None, :] == qp[start:stop, None]  # (B, G)
    match = pid_eq & (gc[None, :] != qc[start:stop, None])  # same pid, other camera; same camera = junk
    counts = match.sum(1)
    nb, ng = match.shape
    m = int(counts.max()) if nb else 0
    if m == 0:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    rows, cols = match.nonzero(as_tuple=True)  # row-major: each row's matches in gallery order
    slot = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    col = torch.zeros(nb, m, dtype=torch.long, device=dist.device)
    real = torch.zeros(nb, m, dtype=torch.bool, device=dist.device)
    col[rows, slot], real[rows, slot] = cols, True
    dm = dist.gather(1, col)  # (B, M) distances of the matches
    same = real & (gs[col] == qs[start:stop, None])
    imp_before = torch.zeros(nb, m, dtype=torch.float64, device=dist.device)
    g_idx = torch.arange(ng, device=dist.device)
    step = max(1, _SCENE_ELEMENTS // max(1, m * ng))
    for r in range(0, nb, step):  # (b, M, G) at a time: impostors ordered before each match
        d, c = dist[r : r + step, None, :], dm[r : r + step, :, None]
        before = (d < c) | ((d == c) & (g_idx[None, None, :] < col[r : r + step, :, None]))
        imp_before[r : r + step] = (before & ~pid_eq[r : r + step, None, :]).sum(2).double()
    # match k before match j (same row): (B, M_j, M_k)
    dj, dk = dm[:, :, None], dm[:, None, :]
    k_before_j = (dk < dj) | ((dk == dj) & (col[:, None, :] < col[:, :, None]))
    out = []
    for kind in (same, real & ~same):
        rank_in_kind = 1 + (k_before_j & kind[:, None, :]).sum(2).double()  # (B, M)
        precision = rank_in_kind / (rank_in_kind + imp_before)
        hits = kind.sum(1)
        ap = (precision * kind).sum(1) / hits.clamp_min(1)
        out.append(ap[hits > 0])
    return out[0], out[1]


def _scene_summary(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    same = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0)
    diff = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0)
    result: dict[str, Any] = {
        "same_bg_ap": float(same.mean()) if same.numel() else None,
        "diff_bg_ap": float(diff.mean()) if diff.numel() else None,
        "n_same": int(same.numel()),
        "n_diff": int(diff.numel()),
    }
    both = result["same_bg_ap"] is not None and result["diff_bg_ap"] is not None
    result["gap"] = result["same_bg_ap"] - result["diff_bg_ap"] if both else None
    return result
