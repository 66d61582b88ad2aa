"""Epoch-based learning-rate schedules used by the ReID models (configs pass them as ``_partial_``)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR


def _warmup(epoch: int, warmup_epochs: int, warmup_factor: float) -> float:
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return 1.0
    alpha = epoch / warmup_epochs
    return warmup_factor * (1 - alpha) + alpha


def warmup_multistep(optimizer: torch.optim.Optimizer, warmup_epochs: int = 10,
                     warmup_factor: float = 0.01, milestones: Sequence[int] = (40, 70),
                     gamma: float = 0.1) -> LambdaLR:
    """Linear warm-up from ``warmup_factor * lr`` then step decay by ``gamma`` at each milestone (BoT)."""
    milestones = sorted(int(m) for m in milestones)

    def factor(epoch: int) -> float:
        decay = gamma ** sum(epoch >= m for m in milestones)
        return _warmup(epoch, warmup_epochs, warmup_factor) * decay

    return LambdaLR(optimizer, factor)


def warmup_cosine(optimizer: torch.optim.Optimizer, max_epochs: int, warmup_epochs: int = 10,
                  warmup_factor: float = 0.01, min_lr_factor: float = 0.002) -> LambdaLR:
    """Linear warm-up then cosine annealing to ``min_lr_factor * lr`` at ``max_epochs``."""

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return _warmup(epoch, warmup_epochs, warmup_factor)
        span = max(1, max_epochs - warmup_epochs)
        progress = min(1.0, (epoch - warmup_epochs) / span)
        return min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
