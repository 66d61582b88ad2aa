"""Epoch-based learning-rate schedules used by the ReID models (configs pass them as ``_partial_``).

Every epoch count of a schedule (warm-up length, milestones) is either a **fraction of the run**
(a float in [0, 1], e.g. ``warmup_epochs: 0.0625``, ``milestones: [0.9]``) or an **absolute epoch**
(an int). Fractions scale with ``trainer.max_epochs``, so a 2-epoch debug run keeps the shape of a
120-epoch paper run; an absolute value outside the run is refused with a message, because a run that
is all warm-up (or never reaches its milestone) trains a different model than the one configured.
The model passes ``max_epochs`` (its trainer's) when it builds the schedule.

``epoch_offset``: the epoch number the schedule gives the first epoch. 0 (the default) is
torch's convention; CLIP-ReID steps its schedulers *before* each epoch with 1-based epochs, so its
recipes use ``epoch_offset: 1`` (e.g. stage 2 trains its first epoch at ``5e-6 * 0.19``, not
``5e-6 * 0.1``). ``timm_cosine`` is timm's ``CosineLRScheduler``, the schedule CLIP-ReID's stage 1 uses.
``warmup_cosine_factor`` is per optimizer step instead: CLIP's warm-up + cosine (``model.schedule=steps``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from ppreid.utils.errors import ConfigValueError

Epochs = int | float


def resolve_epochs(
    value: Epochs, max_epochs: int | None, key: str, allow_end: bool = False, length_key: str = "trainer.max_epochs"
) -> int:
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
                f"write an int for a number of epochs (e.g. {key}={round(value)})."
            )
        if open_ended:
            raise ConfigValueError(
                f"{key}={value} is a fraction of the run, but {length_key} is not set; "
                f"set {length_key} or give an int number of epochs."
            )
        return int(round(value * max_epochs))
    epochs = int(value)
    if epochs < 0:
        raise ConfigValueError(f"{key}={epochs}: epochs must be >= 0.")
    if not open_ended and (epochs > max_epochs or (epochs == max_epochs and not allow_end)):
        raise ConfigValueError(
            f"{key}={epochs} does not fall inside the run (trainer.max_epochs={max_epochs}). Lower it, "
            f"raise trainer.max_epochs, or give a fraction of the run (a float in [0, 1], e.g. {key}=0.1)."
        )
    return epochs


def _warmup(epoch: int, warmup_epochs: int, warmup_factor: float) -> float:
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return 1.0
    alpha = epoch / warmup_epochs
    return warmup_factor * (1 - alpha) + alpha


def warmup_multistep(
    optimizer: torch.optim.Optimizer,
    warmup_epochs: Epochs = 10,
    warmup_factor: float = 0.01,
    milestones: Sequence[Epochs] = (40, 70),
    gamma: float = 0.1,
    max_epochs: int | None = None,
    key: str = "model.scheduler",
    length_key: str = "trainer.max_epochs",
    epoch_offset: int = 0,
) -> LambdaLR:
    """Linear warm-up from ``warmup_factor * lr`` then step decay by ``gamma`` at each milestone (BoT).

    ``warmup_epochs`` and ``milestones``: ints (epochs) or fractions of ``max_epochs``. Epoch ``k``
    (0-based, as trained) is scheduled as epoch ``e = k + epoch_offset``: factor
    ``w(e) * gamma ** #(milestones <= e)`` with ``w(e) = warmup_factor * (1 - e / warmup) + e / warmup``
    for ``e < warmup``, else 1.
    """
    warmup = resolve_epochs(warmup_epochs, max_epochs, f"{key}.warmup_epochs", length_key=length_key)
    steps = sorted(resolve_epochs(m, max_epochs, f"{key}.milestones", length_key=length_key) for m in milestones)
    if steps and warmup > steps[0]:
        raise ConfigValueError(
            f"{key}: the warm-up ({warmup} epochs) ends after the first milestone (epoch {steps[0]}); "
            "lower warmup_epochs or move the milestone."
        )

    def factor(epoch: int) -> float:
        epoch = epoch + int(epoch_offset)
        decay = gamma ** sum(epoch >= m for m in steps)
        return _warmup(epoch, warmup, warmup_factor) * decay

    return LambdaLR(optimizer, factor)


def timm_cosine(
    optimizer: torch.optim.Optimizer,
    max_epochs: int | None = None,
    warmup_epochs: Epochs = 5,
    warmup_lr_init: float = 1e-5,
    lr_min: float = 1e-6,
    epoch_offset: int = 1,
    key: str = "model.scheduler",
    length_key: str = "trainer.max_epochs",
) -> LambdaLR:
    """timm's ``CosineLRScheduler`` (t_initial = ``max_epochs``, ``warmup_t`` = ``warmup_epochs``, linear
    warm-up from the absolute ``warmup_lr_init``, floor ``lr_min``, one cycle), stepped per epoch.

    CLIP-ReID's stage 1: ``scheduler.step(e)`` before each 1-based epoch e, so epoch ``k`` (0-based)
    trains at timm's value for ``t = k + epoch_offset``. The values come from timm's public
    ``step(t)`` on a shadow optimizer with the same per-group learning rates, and are applied as a
    torch ``LambdaLR``: the models, Lightning and checkpoints step and save it as any torch scheduler
    (``step()`` without an epoch, ``state_dict``), which timm's own scheduler is not.
    """
    from timm.scheduler.cosine_lr import CosineLRScheduler

    if max_epochs is None or max_epochs < 1:
        raise ConfigValueError(f"{key}: a cosine schedule needs {length_key} >= 1 (got {max_epochs}).")
    warmup = resolve_epochs(warmup_epochs, max_epochs, f"{key}.warmup_epochs", length_key=length_key)
    bases = [float(group["lr"]) for group in optimizer.param_groups]
    shadow = torch.optim.SGD([{"params": [torch.zeros(1)], "lr": lr} for lr in bases])
    timm_schedule = CosineLRScheduler(
        shadow,
        t_initial=int(max_epochs),
        lr_min=float(lr_min),
        warmup_t=warmup,
        warmup_lr_init=float(warmup_lr_init),
        cycle_limit=1,
        t_in_epochs=True,
    )

    def timm_lrs(t: int) -> list[float]:
        """timm's per-group learning rates at epoch ``t`` (what its ``step(t)`` sets)."""
        timm_schedule.step(t)
        return [float(group["lr"]) for group in shadow.param_groups]

    def group_factor(i: int):
        return lambda epoch: timm_lrs(epoch + int(epoch_offset))[i] / bases[i] if bases[i] else 0.0

    return LambdaLR(optimizer, [group_factor(i) for i in range(len(bases))])


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """The learning-rate factor of optimizer step ``step`` (0-based): (step + 1) / warmup_steps during the
    warm-up, then a half cosine from 1 to 0 over the remaining ``total_steps - warmup_steps`` steps."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))
