"""The two decoder attackers: ``l1`` (the conventional reversal) and ``gan`` (decoder + discriminator)."""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
from torch import nn

from src.losses.adversarial import gan_losses, l1_reconstruction, r1_penalty
from src.nn.attackers.base import ReversalAttacker
from src.utils.errors import ConfigValueError


class L1Attacker(ReversalAttacker):
    """A residual up-sampling decoder trained with the L1 loss (Xiao et al.'s reversal)."""

    def __init__(self, decoder: Callable[..., nn.Module], steps: int = 1500, batch_size: int = 64,
                 lr: float = 1e-3, log_every: int = 200) -> None:
        super().__init__(steps, batch_size, log_every)
        self.decoder_factory, self.lr = decoder, float(lr)

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.decoder = self.decoder_factory(feat_dim=feat_dim, image_size=list(image_size))
        self.opt = torch.optim.Adam(self.decoder.parameters(), lr=self.lr)

    def train_step(self, feat, images):
        loss = l1_reconstruction(self.decoder(feat), images)
        self.minimize(self.opt, loss)
        return {"l1": loss.item()}

    @torch.no_grad()
    def reconstruct(self, feat, index):
        return self.decoder(feat)


def gan_attacker_step(decoder: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
                      opt_d: torch.optim.Optimizer, feat: torch.Tensor, images: torch.Tensor,
                      d_loss_fn: Callable, g_loss_fn: Callable, l1_weight: float, adv_weight: float,
                      r1_gamma: float = 0.0) -> Dict[str, float]:
    """One GAN step of the attacker: D on real vs decoded images (+ R1), then the decoder on
    ``l1_weight`` x L1 + ``adv_weight`` x the generator loss, D frozen. feat (B,D), images (B,3,h,w) in [0, 1].

    The one place the attacker's GAN convention lives, so that it can be swapped for a shared GAN step.
    """
    fake = decoder(feat)
    real = images.detach().requires_grad_(r1_gamma > 0)
    real_scores = discriminator(real, feat)
    d_loss = d_loss_fn(real_scores, discriminator(fake.detach(), feat))
    if r1_gamma > 0:
        d_loss = d_loss + r1_gamma * r1_penalty(real_scores, real)
    ReversalAttacker.minimize(opt_d, d_loss)
    discriminator.requires_grad_(False)
    l1 = l1_reconstruction(fake, images.detach())
    adv = g_loss_fn(discriminator(fake, feat))
    discriminator.requires_grad_(True)
    ReversalAttacker.minimize(opt_g, l1_weight * l1 + adv_weight * adv)
    return {"l1": l1.item(), "g_adv": adv.item(), "d": d_loss.item()}


class GANAttacker(ReversalAttacker):
    """Decoder + feature-conditioned discriminator: ``l1_weight`` x L1 + ``adv_weight`` x the GAN loss.

    The first ``l1_warmup`` fraction of the steps trains the decoder with L1 alone (as SRGAN starts from
    its MSE network): the adversarial term then sharpens a decoder that already reconstructs.
    """

    def __init__(self, decoder: Callable[..., nn.Module], discriminator: Callable[..., nn.Module],
                 steps: int = 1500, batch_size: int = 64, lr: float = 1e-3, d_lr: float = 2e-4,
                 betas: Sequence[float] = (0.5, 0.999), gan_loss: str = "hinge", l1_weight: float = 1.0,
                 adv_weight: float = 0.05, r1_gamma: float = 0.0, l1_warmup: float = 0.5,
                 log_every: int = 200) -> None:
        super().__init__(steps, batch_size, log_every)
        if not 0.0 <= float(l1_warmup) <= 1.0:
            raise ConfigValueError(f"GANAttacker: l1_warmup={l1_warmup} is a fraction of the steps, in [0, 1].")
        self.l1_warmup, self.step_count, self.total_steps = float(l1_warmup), 0, self.steps
        self.decoder_factory, self.disc_factory = decoder, discriminator
        self.lr, self.d_lr, self.betas = float(lr), float(d_lr), tuple(float(b) for b in betas)
        self.d_loss_fn, self.g_loss_fn = gan_losses(gan_loss)
        self.l1_weight, self.adv_weight, self.r1_gamma = float(l1_weight), float(adv_weight), float(r1_gamma)

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.decoder = self.decoder_factory(feat_dim=feat_dim, image_size=list(image_size))
        self.discriminator = self.disc_factory(feat_dim=feat_dim, image_size=list(image_size))
        self.opt_g = torch.optim.Adam(self.decoder.parameters(), lr=self.lr, betas=self.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.d_lr, betas=self.betas)

    def fit(self, feats, images, name, generator, steps=None):
        self.step_count, self.total_steps = 0, self.steps if steps is None else int(steps)
        return super().fit(feats, images, name, generator, steps)

    def train_step(self, feat, images):
        self.step_count += 1
        if self.step_count <= self.l1_warmup * self.total_steps:
            l1 = l1_reconstruction(self.decoder(feat), images)
            self.minimize(self.opt_g, self.l1_weight * l1)
            return {"l1": l1.item()}
        return gan_attacker_step(self.decoder, self.discriminator, self.opt_g, self.opt_d, feat, images,
                                 self.d_loss_fn, self.g_loss_fn, self.l1_weight, self.adv_weight, self.r1_gamma)

    @torch.no_grad()
    def reconstruct(self, feat, index):
        return self.decoder(feat)
