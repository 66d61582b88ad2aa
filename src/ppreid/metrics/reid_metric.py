"""ReIDEvaluator: a torchmetrics Metric that gathers query/gallery features across ranks.

Under DDP every rank sees a shard of the test set, and DistributedSampler pads the last shard
with repeated samples. Each sample therefore carries its position in the concatenated
[query..., gallery...] list of its target dataset; ``compute()`` gathers all ranks (list states,
``dist_reduce_fx="cat"``), puts the samples back in index order, drops the padding duplicates,
checks that nothing is missing and calls :func:`ppreid.metrics.reid.evaluate_features`, so every
rank gets exactly the single-process result.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ppreid.metrics.reid import (
    ReIDEvalInputError,
    distance_matrix,
    evaluate_distmat,
    evaluate_features,
)
from ppreid.metrics.scene_split import scene_split_ap, scene_split_features


class ReIDEvaluator(Metric):
    """Market-1501 CMC / mAP / mINP of one target dataset (query + gallery in one loader).

    update: features (B, D), pids (B,), camids (B,), indices (B,) with index < num_query for
    queries. compute() returns the dict of ``evaluate_features`` (``cmc`` a numpy array).
    ``num_gallery``, when given, also checks that the gallery is complete.
    ``strict=False`` (for runs that deliberately evaluate only some batches, e.g. a fast dev run)
    evaluates whatever samples arrived instead of raising, and marks the result ``partial``.

    Extras (the ``eval.*`` options): ``rerank`` = ``{k1, k2, lambda_value}`` ranks by k-reciprocal
    re-ranked distances (builds the Q x G, Q x Q and G x G distances); ``ranked_queries`` > 0 adds
    ``ranked``: for that many evenly spaced queries, the top ``ranked_topk`` gallery indices (same-pid
    same-camera entries left out, as the metric does) and whether each is a true match;
    ``keep_features`` adds ``features``: the ordered query / gallery features, pids and camids (CPU);
    ``scenes`` = (query scenes (Q,), gallery scenes (G,)) integer ids, or :meth:`set_scenes`, adds
    ``scene``: the scene split of :func:`ppreid.metrics.scene_split.scene_split_ap` by the same distances.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_query: int,
        metric: str = "cosine",
        max_rank: int = 50,
        num_gallery: int | None = None,
        strict: bool = True,
        rerank: dict | None = None,
        keep_features: bool = False,
        ranked_queries: int = 0,
        ranked_topk: int = 10,
        scenes: tuple[Any, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rerank = dict(rerank) if rerank else None
        self.keep_features = bool(keep_features)
        self.ranked_queries = int(ranked_queries)
        self.ranked_topk = int(ranked_topk)
        if int(num_query) != num_query or num_query < 1:
            raise ReIDEvalInputError(f"num_query={num_query!r} must be a positive integer.")
        self.num_query = int(num_query)
        self.metric = metric
        self.max_rank = max_rank
        self.num_gallery = num_gallery
        self.strict = bool(strict)
        for name in ("features", "pids", "camids", "indices"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.scenes: tuple[torch.Tensor, torch.Tensor] | None = None
        if scenes is not None:
            self.set_scenes(*scenes)

    def set_scenes(self, query_scenes: Any, gallery_scenes: Any) -> None:
        """Scene id of every query (Q,) and gallery image (G,), in dataset order (e.g. the index of each
        image's background): full evaluations then also report the scene split (``scene``)."""
        q = torch.as_tensor(query_scenes, dtype=torch.long).reshape(-1)
        g = torch.as_tensor(gallery_scenes, dtype=torch.long).reshape(-1)
        if q.numel() != self.num_query or (self.num_gallery is not None and g.numel() != int(self.num_gallery)):
            raise ReIDEvalInputError(
                f"set_scenes got {q.numel()} query and {g.numel()} gallery scenes for a set of {self.num_query} "
                f"queries and {self.num_gallery} gallery images; pass one scene id per image in dataset order."
            )
        self.scenes = (q, g)

    def update(
        self,
        features: torch.Tensor,
        pids: torch.Tensor,
        camids: torch.Tensor,
        indices: torch.Tensor,
    ) -> None:
        """features (B, D); pids, camids, indices (B,) integer tensors."""
        n = features.shape[0]
        if features.dim() != 2 or any(t.reshape(-1).shape[0] != n for t in (pids, camids, indices)):
            raise ReIDEvalInputError(
                f"ReIDEvaluator.update expects features (B, D) and pids/camids/indices (B,), got "
                f"{tuple(features.shape)}, {tuple(pids.shape)}, {tuple(camids.shape)}, "
                f"{tuple(indices.shape)}."
            )
        self.features.append(features.detach())
        self.pids.append(pids.detach().reshape(-1).long())
        self.camids.append(camids.detach().reshape(-1).long())
        self.indices.append(indices.detach().reshape(-1).long())

    def compute(self) -> dict:
        if len(self.indices) == 0:
            raise ReIDEvalInputError("ReIDEvaluator.compute() called before any update().")
        feats = dim_zero_cat(self.features)
        pids = dim_zero_cat(self.pids)
        camids = dim_zero_cat(self.camids)
        idx = dim_zero_cat(self.indices)

        idx, order = torch.sort(idx, stable=True)
        first = torch.ones_like(idx, dtype=torch.bool)
        first[1:] = idx[1:] != idx[:-1]
        dup = ~first
        if bool(dup.any()):
            starts = first.nonzero().squeeze(1)
            src = order[starts[torch.cumsum(first.long(), 0) - 1]]  # kept copy of each entry
            same = (pids[order[dup]] == pids[src[dup]]) & (camids[order[dup]] == camids[src[dup]])
            if not bool(same.all()):
                bad = int(idx[dup][~same][0])
                raise ReIDEvalInputError(
                    f"index {bad} was given twice with different pid/camid; indices must be "
                    "each sample's position in the concatenated [query..., gallery...] list."
                )
        idx, order = idx[first], order[first]
        if not self.strict:
            return self._partial_result(feats[order], pids[order], camids[order], idx)
        total = idx.numel()
        expected = total if self.num_gallery is None else self.num_query + int(self.num_gallery)
        if total != expected or not torch.equal(idx, torch.arange(expected, device=idx.device)):
            present = torch.zeros(max(expected, int(idx.max()) + 1), dtype=torch.bool)
            present[idx.clamp_min(0).cpu()] = True
            missing = (~present[:expected]).nonzero().squeeze(1)[:5].tolist()
            raise ReIDEvalInputError(
                f"ReIDEvaluator got {total} distinct indices in [{int(idx.min())}, "
                f"{int(idx.max())}] but needs exactly 0..{expected - 1} (missing e.g. {missing}); "
                "evaluate every query and gallery sample once (drop_last=False) and pass its "
                "position in the concatenated [query..., gallery...] list as `indices`."
            )
        if total <= self.num_query:
            raise ReIDEvalInputError(
                f"ReIDEvaluator has {total} samples but num_query={self.num_query}: no gallery; "
                "check num_query and that the loader covers query and gallery."
            )
        feats, pids, camids = feats[order], pids[order], camids[order]
        q, g = slice(0, self.num_query), slice(self.num_query, total)
        return self._evaluate(feats[q], feats[g], pids[q], pids[g], camids[q], camids[g])

    def _evaluate(self, qf, gf, q_pids, g_pids, q_camids, g_camids, extras: bool = True) -> dict:
        """Metrics of one query / gallery set, plus the ranked list and features if asked for and
        ``extras`` (a partial set has no pictures or export: its indices are not the dataset's)."""
        reranked = None
        if self.rerank is not None:
            from ppreid.metrics.rerank import k_reciprocal_rerank

            reranked = k_reciprocal_rerank(
                distance_matrix(qf, gf, self.metric),
                distance_matrix(qf, qf, self.metric),
                distance_matrix(gf, gf, self.metric),
                **self.rerank,
            )
            result = evaluate_distmat(reranked, q_pids, g_pids, q_camids, g_camids, max_rank=self.max_rank)
        else:
            result = evaluate_features(
                qf, gf, q_pids, g_pids, q_camids, g_camids, metric=self.metric, max_rank=self.max_rank
            )
        if extras and self.scenes is not None and self.scenes[1].numel() == gf.shape[0]:
            ids = (q_pids, g_pids, q_camids, g_camids, *(t.to(qf.device) for t in self.scenes))
            result["scene"] = (
                scene_split_ap(reranked, *ids)
                if reranked is not None
                else scene_split_features(qf, gf, *ids, metric=self.metric)
            )
        if extras and self.ranked_queries > 0:
            result["ranked"] = self._ranked(qf, gf, q_pids, g_pids, q_camids, g_camids, reranked)
        if extras and self.keep_features:
            result["features"] = {
                "qf": qf.detach().cpu(),
                "gf": gf.detach().cpu(),
                "q_pids": q_pids.cpu(),
                "g_pids": g_pids.cpu(),
                "q_camids": q_camids.cpu(),
                "g_camids": g_camids.cpu(),
            }
        return result

    def _ranked(self, qf, gf, q_pids, g_pids, q_camids, g_camids, reranked) -> dict:
        """Top-k gallery of evenly spaced queries, by the distances the metric used (ties: gallery order)."""
        nq = qf.shape[0]
        rows = sorted(
            {round(i * (nq - 1) / max(1, self.ranked_queries - 1)) for i in range(min(nq, self.ranked_queries))}
        )
        rows_t = torch.tensor(rows, dtype=torch.long, device=qf.device)
        dist = (
            (
                torch.as_tensor(reranked)[rows_t.cpu()]
                if reranked is not None
                else distance_matrix(qf[rows_t], gf, self.metric)
            )
            .float()
            .cpu()
        )
        gp, gc = g_pids.cpu(), g_camids.cpu()
        out = {"query": rows, "gallery": [], "match": [], "distance": []}
        for i, row in enumerate(rows):
            qp, qc = int(q_pids[row]), int(q_camids[row])
            junk = (gp == qp) & (gc == qc)
            d = dist[i].masked_fill(junk, float("inf"))
            top = torch.argsort(d, stable=True)[: self.ranked_topk]
            top = top[torch.isfinite(d[top])]
            out["gallery"].append(top.tolist())
            out["match"].append((gp[top] == qp).tolist())
            out["distance"].append(d[top].tolist())
        return out

    def _partial_result(self, feats, pids, camids, idx) -> dict:
        """Evaluate the samples present (query: index < num_query); zeros if nothing is rankable."""
        is_q = idx < self.num_query
        result = None
        if bool(is_q.any()) and bool((~is_q).any()):
            try:
                result = self._evaluate(
                    feats[is_q], feats[~is_q], pids[is_q], pids[~is_q], camids[is_q], camids[~is_q], extras=False
                )
            except ReIDEvalInputError:
                result = None
        if result is None:
            import numpy as np

            result = {"cmc": np.zeros(self.max_rank), "mAP": 0.0, "mINP": 0.0, "num_valid_queries": 0}
        result["partial"] = True
        return result
