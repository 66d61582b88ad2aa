"""The stage-1 feature cache of the two-stage CLIP models: a frozen image encoder's features of the
training images, computed once (sharded over DDP ranks, gathered and put back in index order, so every
rank holds the single-process cache)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger("ppreid.models.two_stage_clip")


@torch.no_grad()
def cache_training_features(
    backbone: nn.Module,
    dm,
    device: torch.device,
    embed_dim: int,
    restyled: bool,
    restyle_strength: float,
    indices: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Image-encoder features of the training images (test transforms, eval mode), the same on every
    rank: ``feats`` (N, E) in index order, ``restyled`` (N, E) of photometrically re-styled views when
    ``restyled``, ``index`` (N,) the cached training indices and ``row`` (n_train,) mapping a training
    index to its row (-1: not cached). ``indices``: cache only these images (a fast dev run caches its
    one batch)."""
    loader = dm.train_feature_loader(restyled=restyled, restyle_strength=restyle_strength, indices=indices)
    was_training = backbone.training
    backbone.eval()
    views = ("image", "image_restyled") if restyled else ("image",)
    parts: dict[str, list] = {v: [] for v in views}
    seen = []
    for batch in loader:
        for v in views:
            parts[v].append(backbone(batch[v].to(device)).float())
        seen.append(batch["index"].to(device))
    backbone.train(was_training)
    n_train = len(dm.train_records)
    wanted = (
        torch.arange(n_train, device=device)
        if indices is None
        else torch.as_tensor(sorted({int(i) for i in indices}), device=device)
    )
    idx = torch.cat(seen) if seen else torch.zeros(0, dtype=torch.long, device=device)
    cache = {}
    for v in views:
        feats = torch.cat(parts[v]) if parts[v] else torch.zeros(0, embed_dim, device=device)
        cache["feats" if v == "image" else "restyled"] = gather_in_order(feats, idx, wanted)
    row = torch.full((n_train,), -1, dtype=torch.long, device=device)
    row[wanted] = torch.arange(len(wanted), device=device)
    cache["row"], cache["index"] = row, wanted
    log.info(
        "stage 1: cached image-encoder features of %d training images%s",
        len(wanted),
        " (+ re-styled views)" if restyled else "",
    )
    return cache


def gather_in_order(feats: torch.Tensor, idx: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """This rank's (rows, training indices) -> (len(wanted), E) rows in the order of ``wanted``, on
    every rank."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        size = math.ceil(len(wanted) / world)
        pad = size - len(idx)
        feats = torch.cat([feats, feats.new_zeros(pad, feats.shape[1])])
        idx = torch.cat([idx, idx.new_full((pad,), -1)])
        all_feats = [torch.empty_like(feats) for _ in range(world)]
        all_idx = [torch.empty_like(idx) for _ in range(world)]
        dist.all_gather(all_feats, feats.contiguous())
        dist.all_gather(all_idx, idx.contiguous())
        feats, idx = torch.cat(all_feats), torch.cat(all_idx)
        keep = idx >= 0
        feats, idx = feats[keep], idx[keep]
    position = torch.searchsorted(wanted, idx)
    out = feats.new_zeros(len(wanted), feats.shape[1])
    out[position] = feats
    if len(torch.unique(idx)) != len(wanted):
        raise RuntimeError(f"feature cache covers {len(torch.unique(idx))} of {len(wanted)} training images")
    return out
