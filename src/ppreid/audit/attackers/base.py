"""What every reversal attacker of the privacy audit does: learn feature -> image, then reconstruct.

Features arrive standardized (B,D) (the audit standardizes them with the training pairs' mean / std),
images (B,3,h,w) in [0, 1] at the attack size. ``reconstruct`` also receives each image's dataset
index (B,), so a stochastic attacker can seed its noise per image: results then do not depend on how
the images are batched.

Training runs until the validation loss plateaus (:class:`Plateau`): every ``eval_every`` steps the
attacker's own loss is measured on held-out pairs (``val_loss``), and training stops when it has not
improved by ``min_improvement`` (a fraction of the best value) for ``patience`` evaluations, or at the
step budget; the weights of the best evaluation are kept and the curve is returned.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn

from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditBinding:
    """What the audit of one split lends an attacker that reads more than (feature, image) pairs, through its
    optional ``bind(binding)``: the white-box ``optim`` inverts E (``features_of``, ``mean_image``), ``own``
    runs the checkpoint's decoder (``extractor``, ``feat_mean``, ``feat_std``). Learned attackers have no
    ``bind``.

    ``extractor``: the audited model (frozen); ``features_of``: [0, 1] images (B,3,h,w) -> this split's
    standardized features (B,D), differentiable in the images; ``feat_mean``, ``feat_std`` (D,): that
    standardization; ``mean_image`` (1,3,h,w): the split's mean training image."""

    extractor: nn.Module
    features_of: Callable[[torch.Tensor], torch.Tensor]
    feat_mean: torch.Tensor
    feat_std: torch.Tensor
    mean_image: torch.Tensor


@dataclass
class Plateau:
    """Early stopping on a validation curve: ``update(step, value)`` after each evaluation, True = stop.

    An evaluation improves when its value is below ``best * (1 - min_improvement)``; ``patience``
    evaluations in a row without improvement stop training. ``start``: evaluations before this step are
    recorded but neither stop training nor count as the best (a GAN's L1 warm-up)."""

    patience: int = 5
    min_improvement: float = 0.0
    start: int = 0
    best: float = float("inf")
    best_step: int | None = None
    bad: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if int(self.patience) < 1 or not 0.0 <= float(self.min_improvement) < 1.0:
            raise ConfigValueError(
                f"model.early_stopping: patience={self.patience} must be >= 1 and min_improvement="
                f"{self.min_improvement} in [0, 1) (a fraction of the best validation loss)."
            )

    def update(self, step: int, value: float) -> bool:
        """Record ``value`` at ``step``; True when training should stop (``patience`` evaluations since the best)."""
        self.history.append((int(step), float(value)))
        if step < self.start:
            return False
        if value < self.best * (1.0 - self.min_improvement) or self.best_step is None:
            self.best, self.best_step, self.bad = float(value), int(step), 0
            return False
        self.bad += 1
        return self.bad >= self.patience


class ReversalAttacker(nn.Module):
    """Base of the learned attackers: subclasses build their networks in ``build`` and implement
    ``train_step`` (one optimization step, returns its losses) and ``reconstruct``."""

    needs_training = True

    def __init__(self, steps: int, batch_size: int, log_every: int = 200) -> None:
        super().__init__()
        if int(steps) < 0 or int(batch_size) < 1:
            raise ConfigValueError(
                f"{type(self).__name__}: steps={steps} must be >= 0 and batch_size={batch_size} >= 1."
            )
        self.steps, self.batch_size, self.log_every = int(steps), int(batch_size), int(log_every)

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        raise NotImplementedError

    def train_step(self, feat: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def quick(self) -> None:
        """Cheapest settings for a fast dev run (after ``build``): nothing to change by default."""

    def reconstruct(self, feat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Standardized features (B,D) and dataset indices (B,) -> images (B,3,h,w) in [0, 1]."""
        raise NotImplementedError

    @staticmethod
    def minimize(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss`` (gradients cleared first)."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def val_loss(self, feat: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The attacker's own training loss on held-out pairs (B,D), (B,3,h,w) in [0, 1], deterministic (a scalar);
        called in eval mode without gradients."""
        raise NotImplementedError

    def plateau_start(self, steps: int) -> int:
        """The first step at which a plateau may stop training (``steps``: the budget); 0 by default."""
        return 0

    @torch.no_grad()
    def evaluate(self, feats: torch.Tensor, images: torch.Tensor, batch_size: int = 256) -> float:
        """Mean ``val_loss`` over held-out pairs (feats (N,D), images (N,3,h,w) uint8), weighted by batch size."""
        was_training = self.training
        self.eval()
        total = 0.0
        for i in range(0, feats.shape[0], batch_size):
            f, x = feats[i : i + batch_size].to(self.device), images[i : i + batch_size].to(self.device).float() / 255.0
            total += float(self.val_loss(f, x)) * f.shape[0]
        self.train(was_training)
        return total / max(1, feats.shape[0])

    def fit(
        self,
        feats: torch.Tensor,
        images: torch.Tensor,
        name: str,
        generator: torch.Generator,
        steps: int | None = None,
        val: tuple[torch.Tensor, torch.Tensor] | None = None,
        stopping: Mapping[str, Any] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """At most ``steps`` (default ``self.steps``) steps on random batches of (feats (N,D), images (N,3,h,w)
        uint8). With ``val`` (held-out (feats, images)) and ``stopping`` (``eval_every``, ``patience``,
        ``min_improvement``), the validation loss is measured every ``eval_every`` steps and at the end,
        training stops at a plateau and the best evaluation's weights are kept. Returns the curve:
        ``step``, ``train`` (the mean main training loss since the previous evaluation), ``val``, and
        ``best_step``, ``stopped_step``, ``max_steps``, ``stopped`` (``plateau`` | ``max_steps``), ``seconds``.

        ``should_stop`` is asked before every step (the audit passes ``trainer.received_sigterm``): Lightning's
        own loops never run while an attacker trains inside ``on_test_start``, so without it a SIGTERM (a
        scheduler's time limit, ``kill``) would be noted and ignored until the audit ends. True raises
        Lightning's ``SIGTERMException``, which ends the run as Lightning's loops would."""
        start = time.time()
        self.train()
        n = feats.shape[0]
        steps = self.steps if steps is None else int(steps)
        stopping = dict(stopping or {})
        every = int(stopping.get("eval_every", 0) or 0) if val is not None and val[0].shape[0] > 0 else 0
        plateau = Plateau(
            int(stopping.get("patience", 5)), float(stopping.get("min_improvement", 0.0)), self.plateau_start(steps)
        )
        curve: dict[str, Any] = {"step": [], "train": [], "val": []}
        best_state, running, stopped, step = None, [], "max_steps", 0
        for step in range(1, steps + 1):
            if should_stop is not None and should_stop():
                log.info("attacker %s: stopped by SIGTERM at step %d of %d", name, step, steps)
                raise SIGTERMException
            idx = torch.randint(0, n, (min(self.batch_size, n),), generator=generator)
            losses = self.train_step(feats[idx].to(self.device), images[idx].to(self.device).float() / 255.0)
            running.append(next(iter(losses.values())))
            if self.log_every and (step % self.log_every == 1 or step == steps):
                text = ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
                log.info("attacker %s: step %d/%d, %s (%.0f s)", name, step, steps, text, time.time() - start)
            if every and (step % every == 0 or step == steps):
                value = self.evaluate(*val)
                curve["step"].append(step)
                curve["train"].append(sum(running) / len(running))
                curve["val"].append(value)
                running = []
                stop = plateau.update(step, value)
                if plateau.best_step == step:
                    best_state = copy.deepcopy(self.state_dict())
                if stop:
                    stopped = "plateau"
                    break
        if best_state is not None and plateau.best_step != step:
            self.load_state_dict(best_state)
        self.eval()
        curve.update(
            best_step=plateau.best_step if every else step,
            stopped_step=step,
            max_steps=steps,
            stopped=stopped,
            seconds=round(time.time() - start, 2),
        )
        if every:
            log.info(
                "attacker %s: %s at step %d of %d, best validation loss %.4f at step %s",
                name,
                "plateau" if stopped == "plateau" else "step budget reached",
                step,
                steps,
                plateau.best,
                plateau.best_step,
            )
        return curve

    @property
    def device(self) -> torch.device:
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
