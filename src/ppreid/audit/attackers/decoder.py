"""The two decoder attackers: ``l1`` (the conventional reversal) and ``gan`` (decoder + discriminator)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ppreid.audit.attackers.base import ReversalAttacker
from ppreid.losses.adversarial import l1_reconstruction
from ppreid.privacy.reversal import ReversalStep
from ppreid.utils.errors import ConfigValueError


class L1Attacker(ReversalAttacker):
    """A residual up-sampling decoder trained with the L1 loss (Xiao et al.'s reversal)."""

    def __init__(
        self,
        decoder: Callable[..., nn.Module],
        steps: int = 1500,
        batch_size: int = 64,
        lr: float = 1e-3,
        log_every: int = 200,
    ) -> None:
        super().__init__(steps, batch_size, log_every)
        self.decoder_factory, self.lr = decoder, float(lr)

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.decoder = self.decoder_factory(feat_dim=feat_dim, image_size=list(image_size))
        self.opt = torch.optim.Adam(self.decoder.parameters(), lr=self.lr)

    def train_step(self, feat, images):
        loss = l1_reconstruction(self.decoder(feat), images)
        self.minimize(self.opt, loss)
        return {"l1": loss.item()}

    def val_loss(self, feat, images):
        return l1_reconstruction(self.decoder(feat), images)

    @torch.no_grad()
    def reconstruct(self, feat, index):
        return self.decoder(feat)


class GANAttacker(ReversalAttacker):
    """Decoder + feature-conditioned discriminator: ``l1_weight`` x L1 + ``adv_weight`` x the GAN loss.

    The first ``l1_warmup`` fraction of the steps trains the decoder with L1 alone (as SRGAN starts from
    its MSE network): the adversarial term then sharpens a decoder that already reconstructs. Each step is
    the privacy GAN defence's own ``ReversalStep`` (one GAN convention for defence and audit), with D and
    its R1 penalty every step (``d_every = r1_every = 1``).
    """

    def __init__(
        self,
        decoder: Callable[..., nn.Module],
        discriminator: Callable[..., nn.Module],
        steps: int = 1500,
        batch_size: int = 64,
        lr: float = 1e-3,
        d_lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        gan_loss: str = "hinge",
        l1_weight: float = 1.0,
        adv_weight: float = 0.05,
        r1_gamma: float = 0.0,
        l1_warmup: float = 0.5,
        log_every: int = 200,
    ) -> None:
        super().__init__(steps, batch_size, log_every)
        if not 0.0 <= float(l1_warmup) <= 1.0:
            raise ConfigValueError(f"GANAttacker: l1_warmup={l1_warmup} is a fraction of the steps, in [0, 1].")
        self.l1_warmup, self.step_count, self.total_steps = float(l1_warmup), 0, self.steps
        self.decoder_factory, self.disc_factory = decoder, discriminator
        self.lr, self.d_lr, self.betas = float(lr), float(d_lr), tuple(float(b) for b in betas)
        self.step_options = {
            "gan_loss": gan_loss,
            "pixel_loss": "l1",
            "pixel_weight": float(l1_weight),
            "adv_weight": float(adv_weight),
            "r1_gamma": float(r1_gamma),
            "d_every": 1,
            "r1_every": 1,
            "g_every": 1,
            "key": "model.gan",
        }
        ReversalStep(nn.Identity(), None, None, **self.step_options)  # bad values stop here, before any work

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.decoder = self.decoder_factory(feat_dim=feat_dim, image_size=list(image_size))
        self.discriminator = self.disc_factory(feat_dim=feat_dim, image_size=list(image_size))
        self.opt_g = torch.optim.Adam(self.decoder.parameters(), lr=self.lr, betas=self.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.d_lr, betas=self.betas)
        self.step = ReversalStep(
            self.decoder, self.discriminator, self.opt_g, self.opt_d, minimize=self._minimize, **self.step_options
        )

    def _minimize(self, optimizer, name, compute_loss):
        loss = compute_loss()
        self.minimize(optimizer, loss)
        return loss

    def fit(self, feats, images, name, generator, steps=None, val=None, stopping=None, should_stop=None):
        self.step_count, self.total_steps = 0, self.steps if steps is None else int(steps)
        return super().fit(feats, images, name, generator, steps, val, stopping, should_stop)

    def val_loss(self, feat, images):
        """The pixel (L1) loss: what the decoder reconstructs, whatever D thinks of it."""
        return l1_reconstruction(self.decoder(feat), images)

    def plateau_start(self, steps: int) -> int:
        """No plateau stops the L1 warm-up: the adversarial phase always runs."""
        return int(self.l1_warmup * steps) + 1

    def train_step(self, feat, images):
        self.step_count += 1
        warmup = self.step_count <= self.l1_warmup * self.total_steps
        out = self.step(feat, images, adversarial=not warmup)
        names = {"loss_g_pixel": "l1", "loss_g_adv": "g_adv", "loss_d": "d", "r1": "r1"}
        return {names[k]: float(v) for k, v in out.items() if k in names}

    @torch.no_grad()
    def reconstruct(self, feat, index):
        return self.decoder(feat)
