"""What the extractor E is trained against in the joint phase (``model.defence``).

Every defence has the same small interface, used by src/ppreid/models/privacy_gan.py:

- ``build_optimizers()``: its optimizers (after E's in ``configure_optimizers``);
- ``bind(optimizers, minimize)``: the (Lightning-wrapped) optimizers and the step function of this run;
- ``adversary_step(feat, real)``: step 1, its adversaries learn from (detached feature, image) pairs
  (the caller runs ``model.adversary.steps_per_batch`` of them per extractor step);
- ``privacy_loss(feat, real, pids, blind, mask)``: step 2, a differentiable loss of E's feature (the caller
  multiplies it by ``model.privacy_weight``);
- ``on_joint_epoch_start(epoch)``, ``reconstruct(feat)`` (pictures), ``clock`` (saved counters).

``feat`` is the stored feature (B,D), ``real`` the clean (un-augmented) input (B,3,h,w) in [0, 1] at the
reconstruction size, ``blind`` a feature-blind prediction of it (the running mean image, (1,3,h,w)),
``mask`` an optional person mask (B,1,h,w) (1 = person; None: a border proxy of the background).

The adversaries are built as the audit's attackers are (after ResSFL, Li et al. CVPR 2022): decoders
with BatchNorm, on features **standardized over the batch** (``FeatureStandardizer``: each dimension to
mean 0 and std 1, the gradient flowing through the statistics, so E cannot hide by rescaling dimensions
that the audit standardizes back), trained on L1 + SSIM. E's privacy loss (``PrivacyTerms``) is a
weighted sum of terms aimed at what ReID does not need: ``swap`` (what the feature says about this photo
beyond its identity), ``background`` (the SSIM gain inside the background) and ``image`` (the whole
image, ``model.privacy_loss``), none floored at 0 per image.

- ``GANDefence``: the reversal GAN of the paper (our reading), one G and one D (``ReversalStep``);
- ``DependenceDefence``: no adversary, a within-identity dependence penalty (NoPeek / BiDO);
- ``NoDefence``: nothing (the unprotected extractor, or a stochastic bottleneck alone);
- the decoder pool with restarts lives in ``pool.py``; ``build.py`` picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ppreid.losses.adversarial import (
    RECONSTRUCTION_LOSSES,
    background_gain_loss,
    background_mask,
    fake_realism,
    neg_pixel_similarity,
    ssim_gain_loss,
    swap_gain_loss,
    swap_partners,
)
from ppreid.losses.dependence import DEPENDENCE_MEASURES, within_identity_dependence
from ppreid.metrics.privacy import ssim
from ppreid.privacy.reversal import ReversalStep, frozen, non_negative, plain_minimize
from ppreid.utils.errors import ConfigValueError

RECON_PRIVACY_LOSSES = ("neg_pixel", "ssim", "ssim_gain")
PRIVACY_TERMS = ("image", "swap", "background")


def reconstruction_privacy(
    kind: str, recon: torch.Tensor, real: torch.Tensor, blind: torch.Tensor, neg_pixel_kind: str = "l1"
) -> torch.Tensor:
    """A privacy loss of a decoder's reconstruction (lower = the reconstruction leaks less)."""
    if kind == "neg_pixel":
        return neg_pixel_similarity(recon, real, neg_pixel_kind)
    if kind == "ssim":
        return ssim(recon, real, check_range=False).mean()
    return ssim_gain_loss(recon, real, blind)


class FeatureStandardizer(nn.Module):
    """(B,D) -> (B,D): each dimension to mean 0 and std 1 over the batch, the gradient flowing through the
    statistics (E cannot rescale a dimension away from its decoders). Running statistics (momentum 0.1,
    updated by training-mode calls of ``track``) standardize the small batches of pictures
    (``batch=False``)."""

    def __init__(self, dim: int, eps: float = 1e-6, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = float(eps), float(momentum)
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_std", torch.ones(dim))

    def forward(self, feat: torch.Tensor, batch: bool = True, track: bool = False) -> torch.Tensor:
        if batch and feat.shape[0] > 1:
            mean, std = feat.mean(0, keepdim=True), feat.std(0, keepdim=True)
            if track and self.training:
                with torch.no_grad():
                    # the buffers stay fp32 whatever the feature's dtype (bf16 under autocast)
                    self.running_mean.lerp_(mean[0].detach().to(self.running_mean.dtype), self.momentum)
                    self.running_std.lerp_(std[0].detach().to(self.running_std.dtype), self.momentum)
        else:
            mean, std = self.running_mean[None], self.running_std[None]
        return (feat - mean) / (std + self.eps)


def standardise(feat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B,D) -> (B,D), every dimension to mean 0 and std 1 over the batch."""
    return (feat - feat.mean(0, keepdim=True)) / (feat.std(0, keepdim=True) + eps)


class PrivacyTerms:
    """E's privacy loss of one decoder: ``weights[name]`` x each term of ``PRIVACY_TERMS``:

    - ``image``: ``reconstruction_privacy(kind)`` of the whole image (or the caller's ``image_term``);
    - ``swap``: SSIM(G(f_i), x_i) - SSIM(G(f_j), x_i), j another image of i's identity in the batch
      (``ppreid.losses.adversarial.swap_gain_loss``);
    - ``background``: the SSIM gain over the blind guess inside the background (the person mask's
      complement, else the outer ``border`` fraction of the width on each side).

    Terms of weight 0 are not computed."""

    def __init__(self, weights: dict | None, kind: str, neg_pixel_kind: str = "l1", border: float = 0.25) -> None:
        weights = dict(weights or {"image": 1.0})
        unknown = sorted(set(weights) - set(PRIVACY_TERMS))
        if unknown:
            raise ConfigValueError(
                f"model.privacy_terms: unknown term(s) {', '.join(unknown)}; known: {', '.join(PRIVACY_TERMS)}."
            )
        self.weights = {k: non_negative(f"model.privacy_terms.{k}", weights.get(k, 0.0)) for k in PRIVACY_TERMS}
        self.kind, self.neg_pixel_kind = kind, neg_pixel_kind
        background_mask(8, 8, border)  # a bad border stops here
        self.border = float(border)

    def __call__(
        self,
        recon: torch.Tensor,
        real: torch.Tensor,
        pids: torch.Tensor,
        blind: torch.Tensor,
        mask: torch.Tensor | None = None,
        image_term: Callable[[], torch.Tensor] | None = None,
        keep_graph: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """recon, real (B,3,h,w), pids (B,), blind (1,3,h,w), mask (B,1,h,w) or None -> (loss, its terms);
        the terms detached unless ``keep_graph`` (a caller that weighs them itself)."""
        terms = {}
        if self.weights["image"] > 0:
            terms["image"] = (
                image_term()
                if image_term is not None
                else reconstruction_privacy(self.kind, recon, real, blind, self.neg_pixel_kind)
            )
        if self.weights["swap"] > 0:
            terms["swap"] = swap_gain_loss(recon, real, swap_partners(pids))
        if self.weights["background"] > 0:
            background = (
                background_mask(*real.shape[2:], self.border, device=real.device) if mask is None else 1.0 - mask
            )
            terms["background"] = background_gain_loss(recon, real, blind, background)
        loss = sum((self.weights[k] * v for k, v in terms.items()), recon.sum() * 0.0)
        return loss, {f"privacy_{k}": v if keep_graph else v.detach() for k, v in terms.items()}


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
        self,
        feat: torch.Tensor,
        real: torch.Tensor,
        pids: torch.Tensor,
        blind: torch.Tensor,
        mask: torch.Tensor | None = None,
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
    """One reversal GAN (G + D), both reading the standardized feature. Step 1: ``ReversalStep`` (D with
    lazy updates and lazy R1, G on L1 + ``ssim_weight`` x (1 - SSIM)) on the detached feature. Step 2:
    ``PrivacyTerms`` of G's reconstruction (G and D in eval mode); the ``image`` term is ``privacy_loss``:
    ``neg_pixel``, ``ssim``, ``ssim_gain`` or ``realism`` (D's fake loss, D given the *detached* feature:
    E may only win by changing G's image, not by moving D's condition)."""

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
        ssim_weight: float = 0.0,
        gan_loss: str = "hinge",
        d_weight: float = 0.05,
        r1_gamma: float = 1.0,
        d_every: int = 4,
        r1_every: int = 16,
        g_every: int = 1,
        privacy_terms: dict | None = None,
        background_border: float = 0.25,
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
        self.terms = PrivacyTerms(privacy_terms, privacy_loss, neg_pixel_kind, background_border)
        self.generator_factory, self.discriminator_factory = generator, discriminator
        self.g_optimizer_factory, self.d_optimizer_factory = g_optimizer, d_optimizer
        self.step_options = dict(
            gan_loss=gan_loss,
            pixel_loss=pixel_loss,
            pixel_weight=pixel_weight,
            ssim_weight=ssim_weight,
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
        self.standardizer = FeatureStandardizer(self.feat_dim)
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
        return self.step(self.standardizer(feat.detach(), track=True), real)

    def privacy_loss(self, feat, real, pids, blind, mask=None):
        modes = [m.training for m in (self.generator, self.discriminator)]
        self.generator.eval()
        self.discriminator.eval()
        try:
            z = self.standardizer(feat)
            recon = self.generator(z)

            def realism() -> torch.Tensor:
                with frozen(self.discriminator):
                    return fake_realism(self.gan_loss, self.discriminator(recon, z.detach()))

            image_term = realism if self.privacy_loss_kind == "realism" else None
            return self.terms(recon, real, pids, blind, mask, image_term=image_term)
        finally:
            self.generator.train(modes[0])
            self.discriminator.train(modes[1])

    @torch.no_grad()
    def reconstruct(self, feat):
        return {"G": self.generator(self.standardizer(feat, batch=False))}

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

    def privacy_loss(self, feat, real, pids, blind, mask=None):
        return within_identity_dependence(feat, real, pids, self.measure, self.sigma), {}
