"""Epoch-based learning-rate schedules used by the ReID models (configs pass them as ``_partial_``).

Every epoch count of a schedule (warm-up length, milestones) is either a **fraction of the run**
(a float in [0, 1], e.g. ``warmup_epochs: 0.0625``, ``milestones: [0.9]``) or an **absolute epoch**
(an int). Fractions scale with ``trainer.max_epochs``, so a 2-epoch debug run keeps the shape of a
120-epoch paper run; an absolute value outside the run is refused with a message, because a run that
is all warm-up (or never reaches its milestone) trains a different model than the one configured.
The model passes ``max_epochs`` (its trainer's) when it builds the schedule.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch.optim.lr_scheduler import LambdaLR

from src.utils.errors import ConfigValueError

Epochs = Union[int, float]


def resolve_epochs(value: Epochs, max_epochs: Optional[int], key: str, allow_end: bool = False,
                   length_key: str = "trainer.max_epochs") -> int:
    """An int epoch as is, a float fraction in [0, 1] as ``round(fraction * max_epochs)``.

    ``key`` names the config value in errors. With ``max_epochs`` unknown (None or -1: an open-ended
    run), fractions are refused and ints are not range-checked. ``allow_end``: ``value == max_epochs``
    is accepted (a warm-up may not, a cosine end may).
    """
    open_ended = max_epochs is None or max_epochs < 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigValueError(f"{key}={value!r}: give an int (epochs) or a fraction of the run in [0, 1].")
    if isinstance(value, float):
        if not 0.0 <= value <= 1.0:
            raise ConfigValueError(
                f"{key}={value}: a float is a fraction of {length_key} and must lie in [0, 1]; "
                f"write an int for a number of epochs (e.g. {key}={round(value)}).")
        if open_ended:
            raise ConfigValueError(
                f"{key}={value} is a fraction of the run, but {length_key} is not set; "
                f"set {length_key} or give an int number of epochs.")
        return int(round(value * max_epochs))
    epochs = int(value)
    if epochs < 0:
        raise ConfigValueError(f"{key}={epochs}: epochs must be >= 0.")
    if not open_ended and (epochs > max_epochs or (epochs == max_epochs and not allow_end)):
        raise ConfigValueError(
            f"{key}={epochs} does not fall inside the run (trainer.max_epochs={max_epochs}). Lower it, "
            f"raise trainer.max_epochs, or give a fraction of the run (a float in [0, 1], e.g. {key}=0.1).")
    return epochs


def _warmup(epoch: int, warmup_epochs: int, warmup_factor: float) -> float:
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return 1.0
    alpha = epoch / warmup_epochs
    return warmup_factor * (1 - alpha) + alpha


def warmup_multistep(optimizer: torch.optim.Optimizer, warmup_epochs: Epochs = 10,
                     warmup_factor: float = 0.01, milestones: Sequence[Epochs] = (40, 70),
                     gamma: float = 0.1, max_epochs: Optional[int] = None,
                     key: str = "model.scheduler", length_key: str = "trainer.max_epochs") -> LambdaLR:
    """Linear warm-up from ``warmup_factor * lr`` then step decay by ``gamma`` at each milestone (BoT).

    ``warmup_epochs`` and ``milestones``: ints (epochs) or fractions of ``max_epochs``.
    """
    warmup = resolve_epochs(warmup_epochs, max_epochs, f"{key}.warmup_epochs", length_key=length_key)
    steps = sorted(resolve_epochs(m, max_epochs, f"{key}.milestones", length_key=length_key) for m in milestones)
    if steps and warmup > steps[0]:
        raise ConfigValueError(
            f"{key}: the warm-up ({warmup} epochs) ends after the first milestone (epoch {steps[0]}); "
            "lower warmup_epochs or move the milestone.")

    def factor(epoch: int) -> float:
        decay = gamma ** sum(epoch >= m for m in steps)
        return _warmup(epoch, warmup, warmup_factor) * decay

    return LambdaLR(optimizer, factor)


def warmup_cosine(optimizer: torch.optim.Optimizer, max_epochs: Optional[int] = None,
                  warmup_epochs: Epochs = 10, warmup_factor: float = 0.01,
                  min_lr_factor: float = 0.002, key: str = "model.scheduler",
                  length_key: str = "trainer.max_epochs") -> LambdaLR:
    """Linear warm-up then cosine annealing to ``min_lr_factor * lr`` at ``max_epochs``."""
    if max_epochs is None or max_epochs < 1:
        raise ConfigValueError(f"{key}: a cosine schedule needs {length_key} >= 1 (got {max_epochs}).")
    warmup = resolve_epochs(warmup_epochs, max_epochs, f"{key}.warmup_epochs", length_key=length_key)

    def factor(epoch: int) -> float:
        if epoch < warmup:
            return _warmup(epoch, warmup, warmup_factor)
        span = max(1, max_epochs - warmup)
        progress = min(1.0, (epoch - warmup) / span)
        return min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
