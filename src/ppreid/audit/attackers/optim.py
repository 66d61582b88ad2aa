"""The white-box inversion attacker ``optim``: gradient descent on an image until the audited extractor's
feature of it matches the stored one (classic model inversion, Mahendran & Vedaldi 2015).

Nothing is trained: a defence that re-parametrises its features to fool learned decoders cannot fool
this attacker, which queries the extractor itself. The image is x = sigmoid(logits), started from the
mean training image (``init: mean``) or mid-grey (``grey``), and minimizes

    mean((f(x) - f*)^2) + tv_weight * TV(x) + l2_weight * mean((x - mean image)^2)

over standardized features (the audit's standardization), TV the mean absolute difference of
neighbouring pixels: a smoothness prior, the L2 term a prior towards the mean training image. With
``downscale`` k > 1 the logits live on a grid k times coarser, bilinearly up-sampled: a strong smoothness
prior against the high-frequency patterns that match a CNN's feature without looking like a person.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ppreid.audit.attackers.base import AuditBinding
from ppreid.audit.attackers.images import resize
from ppreid.utils.errors import ConfigValueError

INITS = ("mean", "grey")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-image mean absolute difference of vertical and horizontal neighbours: (B,3,H,W) -> (B,)."""
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return dh + dw


class OptimAttacker(nn.Module):
    """Model inversion by gradient descent; ``bind`` gives it the extractor and the mean image.

    ``steps`` Adam steps of learning rate ``lr`` per batch of ``batch_size`` images; the audit inverts at
    most ``max_images`` of its scored images (null: all), as each costs ``steps`` passes through E."""

    needs_training = False

    def __init__(
        self,
        steps: int = 100,
        batch_size: int = 128,
        lr: float = 0.05,
        tv_weight: float = 0.05,
        l2_weight: float = 0.01,
        init: str = "mean",
        max_images: int | None = None,
        downscale: int = 1,
        log_every: int = 0,
    ) -> None:
        super().__init__()
        if int(steps) < 0 or int(batch_size) < 1 or not float(lr) > 0:
            raise ConfigValueError(
                f"OptimAttacker: steps={steps} >= 0, batch_size={batch_size} >= 1 and lr={lr} > 0 are needed."
            )
        if init not in INITS:
            raise ConfigValueError(f"OptimAttacker: init={init!r}; use one of {', '.join(INITS)}.")
        self.steps, self.batch_size, self.lr = int(steps), int(batch_size), float(lr)
        self.tv_weight, self.l2_weight, self.init = float(tv_weight), float(l2_weight), init
        self.max_images = None if max_images is None else int(max_images)
        if int(downscale) < 1:
            raise ConfigValueError(f"OptimAttacker: downscale={downscale}; give an int >= 1 (1: full resolution).")
        self.downscale = int(downscale)
        self.features_of: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.mean_image: torch.Tensor | None = None

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.image_size = tuple(int(s) for s in image_size)

    def bind(self, binding: AuditBinding) -> None:
        """E's standardized features of [0, 1] images (``binding.features_of``, differentiable in the images)
        and the mean training image (the start and the L2 prior)."""
        self.features_of, self.mean_image = binding.features_of, binding.mean_image

    def quick(self) -> None:
        self.steps = 1

    def fit(self, *args, **kwargs) -> float:
        return 0.0

    def reconstruct(self, feat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Standardized features (B,D) -> the images (B,3,h,w) whose features match them (``batch_size`` at once)."""
        if self.features_of is None:
            raise RuntimeError("OptimAttacker.reconstruct before bind(): the audit binds the extractor first.")
        return torch.cat(
            [self._invert(feat[i : i + self.batch_size]) for i in range(0, feat.shape[0], self.batch_size)]
        )

    def _invert(self, feat: torch.Tensor) -> torch.Tensor:
        mean = self.mean_image.to(feat.device)
        start = (
            mean.expand(feat.shape[0], -1, -1, -1)
            if self.init == "mean"
            else torch.full((feat.shape[0], 3, *self.image_size), 0.5, device=feat.device)
        )
        with torch.inference_mode(False), torch.enable_grad():
            target = feat.detach().clone()
            coarse = tuple(max(1, s // self.downscale) for s in self.image_size)
            logits = torch.logit(resize(start, coarse).clamp(0.02, 0.98)).clone().requires_grad_(True)
            opt = torch.optim.Adam([logits], lr=self.lr)
            for _ in range(self.steps):
                x = torch.sigmoid(resize(logits, self.image_size))
                loss = (self.features_of(x) - target).pow(2).mean(dim=1)
                if self.tv_weight:
                    loss = loss + self.tv_weight * total_variation(x)
                if self.l2_weight:
                    loss = loss + self.l2_weight * (x - mean).pow(2).mean(dim=(1, 2, 3))
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
        return torch.sigmoid(resize(logits.detach(), self.image_size))
