"""One step of a feature-reversal GAN, shared by the GAN defence and a GAN attacker.

``ReversalStep(generator, discriminator, g_optimizer, d_optimizer, ...)(feat, images)`` trains the
reversal module R = (G: feature -> image, D: (image, feature) -> score) on one batch of (feature,
image) pairs with the feature fixed (it arrives detached):

1. **D**, every ``d_every`` calls (lazy updates): the GAN loss of ``gan_loss`` (hinge / lsgan /
   logistic) on real images vs G's images, both judged given the feature; every ``r1_every`` D steps
   the R1 penalty on real images with weight ``r1_gamma * r1_every`` (StyleGAN2's lazy R1).
2. **G**, every ``g_every`` calls: ``pixel_weight`` x the pixel loss (l1 / l2) + ``ssim_weight`` x
   (1 - SSIM) + ``adv_weight`` x the generator's GAN loss, with D's weights taking no gradient.

``adv_weight=0`` (or ``adversarial=False`` for one call, e.g. an attacker's L1 warm-up) trains G alone.
How a loss becomes a step is the caller's: ``minimize(optimizer, name, compute_loss) -> loss`` (the
default: zero_grad, backward, step; a LightningModule passes its own, with manual_backward and a
NaN check). ``clock`` counts the calls and the steps taken and is saved with the caller's state.

Shapes: feat (B,D); images (B,3,H,W) in [0, 1] at the generator's image size.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from ppreid.losses.adversarial import RECONSTRUCTION_LOSSES, gan_losses, r1_penalty, ssim_reconstruction
from ppreid.utils.errors import ConfigValueError

Minimize = Callable[[torch.optim.Optimizer, str, Callable[[], torch.Tensor]], torch.Tensor]
CLOCK_KEYS = ("batches", "d_steps", "g_steps", "r1_steps")


def plain_minimize(
    optimizer: torch.optim.Optimizer, name: str, compute_loss: Callable[[], torch.Tensor]
) -> torch.Tensor:
    loss = compute_loss()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


@contextmanager
def frozen(module: nn.Module):
    """``module``'s parameters take no gradient inside the block (their flags are restored after)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def positive_int(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigValueError(f"{key}={value!r}: give an int >= 1 (1 = every batch).")
    return value


def non_negative(key: str, value) -> float:
    value = float(value)
    if not value >= 0.0:
        raise ConfigValueError(f"{key}={value}: must be >= 0 (0 turns the term off).")
    return value


class ReversalStep:
    """D (lazy, with lazy R1) then G on one batch; see the module docstring."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module | None,
        g_optimizer,
        d_optimizer=None,
        *,
        gan_loss: str = "hinge",
        pixel_loss: str = "l1",
        pixel_weight: float = 1.0,
        ssim_weight: float = 0.0,
        adv_weight: float = 0.05,
        r1_gamma: float = 1.0,
        d_every: int = 4,
        r1_every: int = 16,
        g_every: int = 1,
        minimize: Minimize = plain_minimize,
        key: str = "model",
    ) -> None:
        if pixel_loss not in RECONSTRUCTION_LOSSES:
            raise ConfigValueError(
                f"{key}.pixel_loss={pixel_loss!r} is unknown; use one of {', '.join(RECONSTRUCTION_LOSSES)}."
            )
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.d_loss_fn, self.g_loss_fn = gan_losses(gan_loss)
        self.pixel_fn = RECONSTRUCTION_LOSSES[pixel_loss]
        self.pixel_weight = non_negative(f"{key}.pixel_weight", pixel_weight)
        self.ssim_weight = non_negative(f"{key}.ssim_weight", ssim_weight)
        self.adv_weight = non_negative(f"{key}.d_weight", adv_weight)
        self.r1_gamma = non_negative(f"{key}.r1_gamma", r1_gamma)
        self.d_every = positive_int(f"{key}.d_every", d_every)
        self.r1_every = positive_int(f"{key}.r1_every", r1_every)
        self.g_every = positive_int(f"{key}.g_every", g_every)
        self.minimize = minimize
        self.clock = dict.fromkeys(CLOCK_KEYS, 0)

    @property
    def uses_discriminator(self) -> bool:
        return self.adv_weight > 0 and self.discriminator is not None

    def __call__(self, feat: torch.Tensor, images: torch.Tensor, adversarial: bool = True) -> dict[str, torch.Tensor]:
        """One call: returns the losses it computed (detached) and ``recon``, G's images of this batch
        (after its step, or before when G did not step)."""
        feat, images = feat.detach(), images.detach()
        batch = self.clock["batches"]
        self.clock["batches"] += 1
        out: dict[str, torch.Tensor] = {}
        use_d = adversarial and self.uses_discriminator
        if use_d and batch % self.d_every == 0:
            out.update(self._d_step(feat, images))
        if batch % self.g_every == 0:
            out.update(self._g_step(feat, images, use_d))
        else:
            with torch.no_grad():
                out["recon"] = self.generator(feat)
        return out

    def _d_step(self, feat: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
        do_r1 = self.r1_gamma > 0 and self.clock["d_steps"] % self.r1_every == 0
        out = {}

        def d_loss() -> torch.Tensor:
            with torch.no_grad():
                fake = self.generator(feat)
            real = images.clone().requires_grad_(do_r1)
            real_scores = self.discriminator(real, feat)
            adv = self.d_loss_fn(real_scores, self.discriminator(fake, feat))
            out["loss_d"] = adv.detach()
            if not do_r1:
                return adv
            r1 = r1_penalty(real_scores, real)
            out["r1"] = r1.detach()
            return adv + self.r1_gamma * self.r1_every * r1

        self.minimize(self.d_optimizer, "d", d_loss)
        self.clock["d_steps"] += 1
        self.clock["r1_steps"] += int(do_r1)
        return out

    def _g_step(self, feat: torch.Tensor, images: torch.Tensor, use_d: bool) -> dict[str, torch.Tensor]:
        out = {}

        def g_loss() -> torch.Tensor:
            recon = self.generator(feat)
            out["recon"] = recon
            pixel = self.pixel_fn(recon, images)
            out["loss_g_pixel"] = pixel.detach()
            total = self.pixel_weight * pixel
            if self.ssim_weight > 0:
                structure = ssim_reconstruction(recon, images)
                out["loss_g_ssim"] = structure.detach()
                total = total + self.ssim_weight * structure
            if not use_d:
                return total
            with frozen(self.discriminator):
                adv = self.g_loss_fn(self.discriminator(recon, feat))
            out["loss_g_adv"] = adv.detach()
            return total + self.adv_weight * adv

        self.minimize(self.g_optimizer, "g", g_loss)
        self.clock["g_steps"] += 1
        out["recon"] = out["recon"].detach()
        return out
