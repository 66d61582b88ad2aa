"""What the extractor E is trained against in the joint phase (``model.defence``).

Every defence has the same small interface, used by src/ppreid/models/privacy_gan.py:

- ``build_optimizers()``: its optimizers (after E's in ``configure_optimizers``);
- ``bind(optimizers, minimize)``: the (Lightning-wrapped) optimizers and the step function of this run;
- ``adversary_step(feat, real)``: step 1, its adversaries learn from (detached feature, image) pairs;
- ``privacy_loss(feat, real, pids, blind)``: step 2, a differentiable loss of E's feature (the caller
  multiplies it by ``model.privacy_weight``);
- ``on_joint_epoch_start(epoch)``, ``reconstruct(feat)`` (pictures), ``clock`` (saved counters).

``feat`` is the stored feature (B,D), ``real`` the input (B,3,h,w) in [0, 1] at the reconstruction
size, ``blind`` a feature-blind prediction of it (the running mean image, (1,3,h,w)).

- ``GANDefence``: the reversal GAN of the paper (our reading), one G and one D (``ReversalStep``);
- ``DependenceDefence``: no adversary, a within-identity dependence penalty (NoPeek / BiDO);
- ``NoDefence``: nothing (the unprotected extractor, or a stochastic bottleneck alone);
- the decoder pool with restarts lives in ``pool.py``; ``build.py`` picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ppreid.losses.adversarial import RECONSTRUCTION_LOSSES, fake_realism, neg_pixel_similarity, ssim_gain_loss
from ppreid.losses.dependence import DEPENDENCE_MEASURES, within_identity_dependence
from ppreid.metrics.privacy import ssim
from ppreid.privacy.reversal import ReversalStep, frozen, plain_minimize
from ppreid.utils.errors import ConfigValueError

RECON_PRIVACY_LOSSES = ("neg_pixel", "ssim", "ssim_gain")


def reconstruction_privacy(
    kind: str, recon: torch.Tensor, real: torch.Tensor, blind: torch.Tensor, neg_pixel_kind: str = "l1"
) -> torch.Tensor:
    """A privacy loss of a decoder's reconstruction (lower = the reconstruction leaks less)."""
    if kind == "neg_pixel":
        return neg_pixel_similarity(recon, real, neg_pixel_kind)
    if kind == "ssim":
        return ssim(recon, real, check_range=False).mean()
    return ssim_gain_loss(recon, real, blind)


class Defence(nn.Module):
    has_adversary = False
    adversaries: tuple[str, ...] = ()  # the modules it trains (panels of loss_curves.png)

    def __init__(self) -> None:
        super().__init__()
        self.clock: dict[str, int] = {}
        self.minimize = plain_minimize

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        """Create the networks once E's feature size and the reconstruction size are known."""

    def build_optimizers(self) -> list[torch.optim.Optimizer]:
        return []

    def bind(self, optimizers: Sequence, minimize: Callable) -> None:
        self.optimizers_, self.minimize = list(optimizers), minimize

    def adversary_step(self, feat: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def privacy_loss(
        self, feat: torch.Tensor, real: torch.Tensor, pids: torch.Tensor, blind: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return feat.new_zeros(()), {}

    def on_joint_epoch_start(self, epoch: int) -> None:
        """Called at the start of every epoch of the joint phase."""

    @torch.no_grad()
    def reconstruct(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        """name -> (B,3,h,w) reconstructions of its decoders, for pictures ({} without any)."""
        return {}


class NoDefence(Defence):
    """E is trained as BoT (the unprotected row, or a stochastic bottleneck alone)."""


class GANDefence(Defence):
    """One reversal GAN (G + D). Step 1: ``ReversalStep`` on the detached feature. Step 2: ``privacy_loss``
    on G's reconstruction: ``neg_pixel`` (minus the pixel error), ``ssim``, ``ssim_gain`` (SSIM above the
    mean image's, floored at 0) or ``realism`` (D's fake loss, D given the *detached* feature: E may only
    win by changing G's image, not by moving D's condition)."""

    has_adversary = True
    adversaries = ("generator", "discriminator")
    PRIVACY_LOSSES = RECON_PRIVACY_LOSSES + ("realism",)

    def __init__(
        self,
        generator: Callable[..., nn.Module],
        discriminator: Callable[..., nn.Module],
        g_optimizer: Callable,
        d_optimizer: Callable,
        privacy_loss: str = "ssim_gain",
        neg_pixel_kind: str = "l1",
        pixel_loss: str = "l1",
        pixel_weight: float = 1.0,
        gan_loss: str = "hinge",
        d_weight: float = 0.05,
        r1_gamma: float = 1.0,
        d_every: int = 4,
        r1_every: int = 16,
        g_every: int = 1,
    ) -> None:
        super().__init__()
        if privacy_loss not in self.PRIVACY_LOSSES:
            raise ConfigValueError(
                f"model.privacy_loss={privacy_loss!r} is unknown; use one of {', '.join(self.PRIVACY_LOSSES)}."
            )
        if neg_pixel_kind not in RECONSTRUCTION_LOSSES:
            raise ConfigValueError(
                f"model.neg_pixel_kind={neg_pixel_kind!r} is unknown; use one of {', '.join(RECONSTRUCTION_LOSSES)}."
            )
        self.privacy_loss_kind, self.neg_pixel_kind, self.gan_loss = privacy_loss, neg_pixel_kind, gan_loss
        self.generator_factory, self.discriminator_factory = generator, discriminator
        self.g_optimizer_factory, self.d_optimizer_factory = g_optimizer, d_optimizer
        self.step_options = dict(
            gan_loss=gan_loss,
            pixel_loss=pixel_loss,
            pixel_weight=pixel_weight,
            adv_weight=d_weight,
            r1_gamma=r1_gamma,
            d_every=d_every,
            r1_every=r1_every,
            g_every=g_every,
        )
        # checks every value now (a bad config fails before any data is read)
        self.step = ReversalStep(nn.Identity(), None, None, **self.step_options)
        if privacy_loss == "realism" and not d_weight > 0:
            raise ConfigValueError(
                "model.privacy_loss=realism needs the discriminator, but model.d_weight=0 "
                "turns it off; give d_weight > 0 or privacy_loss=neg_pixel / ssim / ssim_gain."
            )
        self.clock = self.step.clock

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.feat_dim, self.image_size = int(feat_dim), list(image_size)
        self.generator = self.generator_factory(feat_dim=feat_dim, image_size=self.image_size)
        self.discriminator = self.discriminator_factory(feat_dim=feat_dim, image_size=self.image_size)

    def build_optimizers(self):
        return [
            self.g_optimizer_factory(params=list(self.generator.parameters())),
            self.d_optimizer_factory(params=list(self.discriminator.parameters())),
        ]

    def bind(self, optimizers, minimize) -> None:
        super().bind(optimizers, minimize)
        clock = self.step.clock
        self.step = ReversalStep(
            self.generator, self.discriminator, *optimizers, minimize=minimize, **self.step_options
        )
        self.step.clock = self.clock = clock

    def adversary_step(self, feat, real):
        return self.step(feat, real)

    def privacy_loss(self, feat, real, pids, blind):
        modes = [m.training for m in (self.generator, self.discriminator)]
        self.generator.eval()
        self.discriminator.eval()
        try:
            recon = self.generator(feat)
            if self.privacy_loss_kind == "realism":
                with frozen(self.discriminator):
                    loss = fake_realism(self.gan_loss, self.discriminator(recon, feat.detach()))
            else:
                loss = reconstruction_privacy(self.privacy_loss_kind, recon, real, blind, self.neg_pixel_kind)
        finally:
            self.generator.train(modes[0])
            self.discriminator.train(modes[1])
        return loss, {}

    @torch.no_grad()
    def reconstruct(self, feat):
        return {"G": self.generator(feat)}

    # spectral-norm parametrizations cannot be pickled (trainer=ddp_spawn / ddp_sim): D travels as its
    # state dict and is rebuilt
    def __getstate__(self):
        state = self.__dict__.copy()
        if "discriminator" in self._modules:
            state["_modules"] = {k: v for k, v in self._modules.items() if k != "discriminator"}
            state["_discriminator_state"] = self.discriminator.state_dict()
        state["step"] = None
        return state

    def __setstate__(self, state):
        disc_state = state.pop("_discriminator_state", None)
        super().__setstate__(state)
        if disc_state is not None:
            self.discriminator = self.discriminator_factory(feat_dim=self.feat_dim, image_size=self.image_size)
            self.discriminator.load_state_dict(disc_state)
        self.step = ReversalStep(nn.Identity(), None, None, **self.step_options)
        self.step.clock = self.clock


class DependenceDefence(Defence):
    """No adversary: the dependence (``measure``: dcor = distance correlation, NoPeek; hsic = normalized
    HSIC with Gaussian kernels, BiDO) between the stored feature and the image, within each identity of
    the P x K batch (ppreid.losses.dependence). ``sigma``: HSIC's kernel width (null: median heuristic)."""

    def __init__(self, measure: str = "dcor", sigma: float | None = None) -> None:
        super().__init__()
        if measure not in DEPENDENCE_MEASURES:
            raise ConfigValueError(
                f"model.dependence.measure={measure!r} is unknown; use one of {', '.join(DEPENDENCE_MEASURES)}."
            )
        self.measure, self.sigma = measure, None if sigma is None else float(sigma)

    def privacy_loss(self, feat, real, pids, blind):
        return within_identity_dependence(feat, real, pids, self.measure, self.sigma), {}
