"""What every reversal attacker of the privacy audit does: learn feature -> image, then reconstruct.

Features arrive standardized (B,D) (the audit standardizes them with the training pairs' mean / std),
images (B,3,h,w) in [0, 1] at the attack size. ``reconstruct`` also receives each image's dataset
index (B,), so a stochastic attacker can seed its noise per image: results then do not depend on how
the images are batched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from torch import nn

from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)


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

    def fit(
        self,
        feats: torch.Tensor,
        images: torch.Tensor,
        name: str,
        generator: torch.Generator,
        steps: int | None = None,
    ) -> float:
        """``steps`` (default ``self.steps``) steps on random batches of (feats (N,D), images (N,3,h,w) uint8);
        returns the seconds taken."""
        start = time.time()
        self.train()
        n = feats.shape[0]
        steps = self.steps if steps is None else int(steps)
        for step in range(steps):
            idx = torch.randint(0, n, (min(self.batch_size, n),), generator=generator)
            losses = self.train_step(feats[idx].to(self.device), images[idx].to(self.device).float() / 255.0)
            if self.log_every and (step % self.log_every == 0 or step == steps - 1):
                text = ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
                log.info("attacker %s: step %d/%d, %s (%.0f s)", name, step + 1, steps, text, time.time() - start)
        self.eval()
        return time.time() - start

    @property
    def device(self) -> torch.device:
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
