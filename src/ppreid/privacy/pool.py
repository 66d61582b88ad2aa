"""A pool of decoders with restarts (Wu et al., ECCV 2018 / TPAMI 2021: model restarting and model
ensembles protect against an attacker that is trained later and from scratch).

One adversary that E learns to fool is a lagging target: E moves its features to where *that*
decoder fails, and a fresh decoder simply learns the new features. The pool keeps ``size`` decoders of
different ages: at the start of every epoch of the joint phase the **oldest** is re-initialised (seeded
by ``restart_seed`` and the epoch, so a resumed run restarts the same way) and its optimizer state is
cleared; it then counts only after ``warmup_batches`` steps. E's privacy loss is taken over the
warmed-up decoders (``aggregate``: max, the best attacker of the pool, or mean).

Decoders see features **standardized** over the batch (``FeatureStandardizer``: each dimension to mean
0, std 1, with the gradient through the statistics), as the audit's attackers see them over their training
set: E cannot hide by rescaling its features, which a scale-sensitive decoder would take time to follow.

Step 1 trains every decoder one step of ``pixel_loss`` (L1) + ``ssim_weight`` x (1 - SSIM) on the
detached features; one optimizer holds one parameter group per decoder. E's loss of one decoder is
``PrivacyTerms`` (``image`` / ``swap`` / ``background``), taken over the warmed-up decoders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ppreid.losses.adversarial import RECONSTRUCTION_LOSSES, ssim_reconstruction
from ppreid.privacy.defences import RECON_PRIVACY_LOSSES, Defence, FeatureStandardizer, PrivacyTerms
from ppreid.privacy.reversal import non_negative
from ppreid.utils.errors import ConfigValueError

AGGREGATES = ("max", "mean")


class DecoderPoolDefence(Defence):
    has_adversary = True
    adversaries = ("decoder pool",)

    def __init__(
        self,
        decoder: Callable[..., nn.Module],
        optimizer: Callable,
        size: int = 3,
        warmup_batches: int = 20,
        aggregate: str = "max",
        privacy_loss: str = "ssim_gain",
        neg_pixel_kind: str = "l1",
        pixel_loss: str = "l1",
        ssim_weight: float = 0.0,
        restart_seed: int = 0,
        privacy_terms: dict | None = None,
        background_border: float = 0.25,
    ) -> None:
        super().__init__()
        if isinstance(size, bool) or int(size) < 1:
            raise ConfigValueError(f"model.pool.size={size!r}: give the number of decoders, an int >= 1.")
        if int(warmup_batches) < 0:
            raise ConfigValueError(f"model.pool.warmup_batches={warmup_batches}: give an int >= 0.")
        if aggregate not in AGGREGATES:
            raise ConfigValueError(
                f"model.pool.aggregate={aggregate!r} is unknown; use one of {', '.join(AGGREGATES)}."
            )
        if privacy_loss not in RECON_PRIVACY_LOSSES:
            raise ConfigValueError(
                f"model.privacy_loss={privacy_loss!r} does not fit model.defence=pool; use one "
                f"of {', '.join(RECON_PRIVACY_LOSSES)}."
            )
        if pixel_loss not in RECONSTRUCTION_LOSSES:
            raise ConfigValueError(
                f"model.pool.pixel_loss={pixel_loss!r} is unknown; use one of {', '.join(RECONSTRUCTION_LOSSES)}."
            )
        self.decoder_factory, self.optimizer_factory = decoder, optimizer
        self.size, self.warmup_batches, self.aggregate = int(size), int(warmup_batches), aggregate
        self.privacy_loss_kind, self.neg_pixel_kind = privacy_loss, neg_pixel_kind
        self.pixel_fn, self.restart_seed = RECONSTRUCTION_LOSSES[pixel_loss], int(restart_seed)
        self.ssim_weight = non_negative("model.adversary.ssim_weight", ssim_weight)
        self.terms = PrivacyTerms(privacy_terms, privacy_loss, neg_pixel_kind, background_border)
        # per decoder: the epoch it was (re)born at and the steps it took since (saved in the state dict)
        self.register_buffer("born", torch.zeros(self.size, dtype=torch.long))
        self.register_buffer("steps", torch.zeros(self.size, dtype=torch.long))
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.feat_dim, self.image_size = int(feat_dim), list(image_size)
        self.standardizer = FeatureStandardizer(self.feat_dim)
        self.decoders = nn.ModuleList(
            self.decoder_factory(feat_dim=feat_dim, image_size=self.image_size) for _ in range(self.size)
        )

    def build_optimizers(self):
        return [self.optimizer_factory(params=[{"params": list(d.parameters())} for d in self.decoders])]

    @property
    def warm(self) -> list:
        return [k for k in range(self.size) if int(self.steps[k]) >= self.warmup_batches]

    def adversary_step(self, feat, real):
        z, real = self.standardizer(feat.detach(), track=True), real.detach()
        out = {}

        def loss() -> torch.Tensor:
            losses = []
            for decoder in self.decoders:
                recon = decoder(z)
                value = self.pixel_fn(recon, real)
                if self.ssim_weight > 0:
                    value = value + self.ssim_weight * ssim_reconstruction(recon, real)
                losses.append(value)
            out["loss_pool_pixel"] = torch.stack(losses).detach().mean()  # the mean decoder loss (L1 + SSIM)
            return sum(losses)

        self.minimize(self.optimizers_[0], "pool", loss)
        self.steps += 1
        return out

    def privacy_loss(self, feat, real, pids, blind, mask=None):
        warm = self.warm
        if not warm:
            return feat.new_zeros(()), {}
        z = self.standardizer(feat)
        modes = [d.training for d in self.decoders]
        self.decoders.eval()  # BatchNorm's running statistics: E's step leaves them as step 1 left them
        try:

            def value(k: int) -> tuple[torch.Tensor, dict]:
                return self.terms(self.decoders[k](z), real, pids, blind, mask)

            if self.aggregate == "mean":
                values = [value(k) for k in warm]
                loss, extra = torch.stack([v[0] for v in values]).mean(), values[0][1]
            else:  # the gradient of a max is its argmax's: find it without a graph, then one decoder with one
                with torch.no_grad():
                    strongest = warm[int(torch.stack([value(k)[0] for k in warm]).argmax())]
                loss, extra = value(strongest)
        finally:
            for decoder, mode in zip(self.decoders, modes):
                decoder.train(mode)
        return loss, {**extra, "pool_warm": torch.tensor(float(len(warm)))}

    def on_joint_epoch_start(self, epoch: int) -> None:
        """Re-initialise the oldest decoder (the lowest index among equals) and clear its optimizer state."""
        oldest = int(torch.argmin(self.born * (self.size + 1) + torch.arange(self.size, device=self.born.device)))
        decoder = self.decoders[oldest]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.restart_seed * 100003 + epoch * 101 + oldest)
            fresh = self.decoder_factory(feat_dim=self.feat_dim, image_size=self.image_size)
        decoder.load_state_dict(fresh.state_dict())
        optimizer = getattr(self.optimizers_[0], "optimizer", self.optimizers_[0])
        for p in decoder.parameters():
            optimizer.state.pop(p, None)
        self.born[oldest], self.steps[oldest] = epoch, 0
        self.restarts += 1

    @torch.no_grad()
    def reconstruct(self, feat):
        z = self.standardizer(feat, batch=False)
        return {f"d{k}": self.decoders[k](z) for k in range(self.size)}
