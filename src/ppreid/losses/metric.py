"""Metric-learning losses on embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ppreid.utils.errors import ConfigValueError


def euclidean_dist(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(N,D), (M,D) -> (N,M) euclidean distances; clamped before sqrt so gradients stay finite at 0."""
    sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * x @ y.t()
    return sq.clamp(min=eps).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al. 2017): per anchor, its farthest positive and nearest negative.

    forward(features (B,D), targets (B,)) -> scalar. margin=None gives the soft margin
    softplus(d_ap - d_an); otherwise relu(d_ap - d_an + margin). Anchors without another
    sample of their id, or without a negative, in the batch have no triplet and are left
    out of the mean (0 if none has one).
    """

    input_kind = "features"

    def __init__(self, margin: float | None = 0.3, normalize_feature: bool = False) -> None:
        super().__init__()
        if margin is not None and margin < 0:
            raise ConfigValueError(
                f"TripletLoss: margin={margin}; use a value >= 0 (BoT: 0.3) or null for the soft margin."
            )
        self.margin = None if margin is None else float(margin)
        self.normalize_feature = normalize_feature

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.normalize_feature:
            features = F.normalize(features, dim=1)
        dist = euclidean_dist(features, features)
        same = targets.view(-1, 1) == targets.view(1, -1)
        eye = torch.eye(len(targets), dtype=torch.bool, device=features.device)
        pos, neg = same & ~eye, ~same
        d_ap = dist.masked_fill(~pos, float("-inf")).amax(dim=1)
        d_an = dist.masked_fill(~neg, float("inf")).amin(dim=1)
        valid = pos.any(dim=1) & neg.any(dim=1)
        if not valid.any():
            return features.sum() * 0.0
        diff = d_ap[valid] - d_an[valid]
        if self.margin is None:
            return F.softplus(diff).mean()
        return F.relu(diff + self.margin).mean()
