"""What stops a ``model=privacy_gan`` run early: a NaN / inf loss, or DDP ranks whose step counters differ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ppreid.utils.errors import TrainingDivergedError


def check_finite(trainer: Any, name: str, value: torch.Tensor, where: str) -> None:
    """Stop on a NaN / inf loss (all ranks together under DDP) before it reaches a weight; ``where``: the
    epoch, phase and adversary batches, for the message."""
    bad = (~torch.isfinite(value.detach())).any().float()
    if trainer.world_size > 1:
        bad = trainer.strategy.reduce(bad, reduce_op="max")
    if bool(bad > 0):
        raise TrainingDivergedError(
            f"model=privacy_gan: loss {name} is {value.detach().float().item()} at global step "
            f"{trainer.global_step} ({where}). Training stopped; checkpoints/last.ckpt holds the "
            "last finished epoch. Lower the learning rates (model.optimizer.lr, model.g_optimizer.lr / "
            "model.d_optimizer.lr, model.pool.optimizer.lr), raise model.r1_gamma, or resume with ckpt_path=..."
        )


def check_ranks_in_step(
    counters: dict[str, int], all_gather: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> None:
    """Every rank must have taken the same steps (the lazy-update clocks are per batch)."""
    keys = sorted(counters)
    mine = torch.tensor([counters[k] for k in keys], dtype=torch.float64, device=device)
    gathered = all_gather(mine).reshape(-1, len(keys))
    if not bool((gathered == gathered[0]).all()):
        raise RuntimeError(f"privacy_gan: ranks out of step, counters {keys} per rank: {gathered.tolist()}")
