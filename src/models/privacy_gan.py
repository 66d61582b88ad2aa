"""Feature-privacy GAN (our reading of "Protecting Feature Privacy in Person Re-identification"):
a BoT extractor E trained against a GAN feature-reversal module R = generator G + discriminator D.

Training (manual optimization) runs in three phases, each boundary an epoch value (an int epoch or a
fraction of the run, ``model.phases``):

- ``extractor``: E alone, as BoT (ID + triplet on the BNNeck);
- ``reversal``: R alone on the features of the frozen E (eval mode: E's weights and BN statistics
  do not move);
- ``joint``: per batch, **step 1** updates R with E fixed (G: pixel + adversarial loss on detached
  features; D: real vs G's image given the feature), **step 2** updates E with R fixed: the ReID
  losses + ``privacy_weight`` x a privacy loss on G's reconstruction of the input (``neg_pixel``:
  minus the pixel error, ``ssim``: SSIM to the input, ``realism``: D's realism score).

**Lazy updates**: D steps every ``d_every`` batches of the reversal and joint phases, its R1 penalty
every ``r1_every`` D steps with the weight scaled by ``r1_every`` (StyleGAN2's lazy R1), G every
``g_every`` batches. ``configure_optimizers`` returns E, G, D in that order, so the optimizer states
of a checkpoint show how many steps each module took; the batch / step counters, the phase and the
resolved phase boundaries are saved in the checkpoint (key ``privacy_gan``), so a resumed run
continues the same schedule. ``privacy_weight=0`` is the unprotected model, ``d_weight=0`` with
``privacy_loss=neg_pixel`` the conventional defence (an L1/L2 decoder, Xiao et al., AAAI 2020).

Retrieval uses BoT's feature (``extract_features``): the reversal module attacks exactly the feature
a gallery stores. Images are reconstructed at ``image_size`` (the real input, un-normalized to
[0, 1] and resized to it).
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from src.data.datamodule import IMAGENET_MEAN, IMAGENET_STD
from src.losses.adversarial import RECONSTRUCTION_LOSSES, gan_losses, neg_pixel_similarity, r1_penalty
from src.metrics.privacy import ssim
from src.models.bot import BoTModel
from src.models.schedulers import resolve_epochs
from src.utils.errors import ConfigValueError, ReIDInputError

log = logging.getLogger(__name__)

PRIVACY_LOSSES = ("neg_pixel", "ssim", "realism")
PHASES = ("extractor", "reversal", "joint")
COUNTERS = ("e_steps", "g_steps", "d_steps", "r1_steps", "r_batches")
CKPT_KEY = "privacy_gan"


class NonFiniteLossError(ReIDInputError):
    """A loss became NaN or infinite: training stops before the step that would spread it."""


def fake_realism(kind: str, scores: torch.Tensor) -> torch.Tensor:
    """The fake half of D's loss of ``kind`` (hinge / lsgan / logistic): low when D calls the images fake.

    The extractor minimises it with ``privacy_loss=realism``: its features should decode to images the
    discriminator rejects as not being the person behind the feature.
    """
    if kind == "hinge":
        return F.relu(1.0 + scores).mean()
    if kind == "lsgan":
        return 0.5 * scores.pow(2).mean()
    return F.softplus(scores).mean()


def to_unit_images(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   size: Sequence[int]) -> torch.Tensor:
    """Normalized (B,3,H,W) -> (B,3,h,w) in [0, 1] at ``size`` (bilinear, antialiased when shrinking)."""
    unit = images * std + mean
    if tuple(unit.shape[-2:]) != tuple(size):
        unit = F.interpolate(unit, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return unit.clamp(0.0, 1.0)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigValueError(f"{key}={value!r}: give an int >= 1 (1 = every batch).")
    return value


def _non_negative(key: str, value: Any) -> float:
    value = float(value)
    if not value >= 0.0:
        raise ConfigValueError(f"{key}={value}: must be >= 0 (0 turns the term off).")
    return value


class PrivacyGANModel(BoTModel):
    """BoT extractor E + feature-reversal GAN (G: feature -> image, D: (image, feature) -> score)."""

    ddp_find_unused_parameters = True  # each step trains one module; the others take no gradient

    def __init__(
        self,
        backbone: nn.Module,
        losses: Dict[str, Dict[str, Any]],
        optimizer: Callable[..., torch.optim.Optimizer],
        generator: Callable[..., nn.Module],
        discriminator: Callable[..., nn.Module],
        g_optimizer: Callable[..., torch.optim.Optimizer],
        d_optimizer: Callable[..., torch.optim.Optimizer],
        image_size: Sequence[int] = (64, 32),
        scheduler: Optional[Callable[..., Any]] = None,
        phases: Optional[Dict[str, Any]] = None,
        privacy_loss: str = "ssim",
        privacy_weight: float = 1.0,
        neg_pixel_kind: str = "l1",
        pixel_loss: str = "l1",
        pixel_weight: float = 1.0,
        gan_loss: str = "hinge",
        d_weight: float = 0.05,
        r1_gamma: float = 1.0,
        d_every: int = 4,
        r1_every: int = 16,
        g_every: int = 1,
        pooling: str = "avg",
        neck_feat: str = "after",
        eval_metric: str = "cosine",
        max_rank: int = 50,
        num_classes: Optional[int] = None,
        name: str = "privacy_gan",
    ) -> None:
        super().__init__(backbone=backbone, losses=losses, optimizer=optimizer, scheduler=scheduler,
                         pooling=pooling, neck_feat=neck_feat, eval_metric=eval_metric, max_rank=max_rank,
                         num_classes=num_classes, name=name)
        self.save_hyperparameters(ignore=["backbone", "losses", "optimizer", "scheduler", "generator",
                                          "discriminator", "g_optimizer", "d_optimizer"], logger=False)
        self.automatic_optimization = False
        if privacy_loss not in PRIVACY_LOSSES:
            raise ConfigValueError(f"model.privacy_loss={privacy_loss!r} is unknown; use one of "
                                   f"{', '.join(PRIVACY_LOSSES)}.")
        if pixel_loss not in RECONSTRUCTION_LOSSES:
            raise ConfigValueError(f"model.pixel_loss={pixel_loss!r} is unknown; use one of "
                                   f"{', '.join(RECONSTRUCTION_LOSSES)}.")
        if neg_pixel_kind not in RECONSTRUCTION_LOSSES:
            raise ConfigValueError(f"model.neg_pixel_kind={neg_pixel_kind!r} is unknown; use one of "
                                   f"{', '.join(RECONSTRUCTION_LOSSES)}.")
        self.d_every = _positive_int("model.d_every", d_every)
        self.r1_every = _positive_int("model.r1_every", r1_every)
        self.g_every = _positive_int("model.g_every", g_every)
        self.privacy_weight = _non_negative("model.privacy_weight", privacy_weight)
        self.pixel_weight = _non_negative("model.pixel_weight", pixel_weight)
        self.d_weight = _non_negative("model.d_weight", d_weight)
        self.r1_gamma = _non_negative("model.r1_gamma", r1_gamma)
        if privacy_loss == "realism" and self.d_weight == 0:
            raise ConfigValueError("model.privacy_loss=realism needs the discriminator, but model.d_weight=0 "
                                   "turns it off; give d_weight > 0 or privacy_loss=neg_pixel / ssim.")
        self.privacy_loss, self.neg_pixel_kind, self.gan_loss = privacy_loss, neg_pixel_kind, gan_loss
        self.pixel_fn = RECONSTRUCTION_LOSSES[pixel_loss]
        self.d_loss_fn, self.g_loss_fn = gan_losses(gan_loss)
        self.image_size = tuple(int(s) for s in image_size)
        self.generator = generator(feat_dim=backbone.out_dim, image_size=self.image_size)
        self.discriminator_factory = discriminator
        self.discriminator = discriminator(feat_dim=backbone.out_dim, image_size=self.image_size)
        self.g_optimizer_factory, self.d_optimizer_factory = g_optimizer, d_optimizer
        phases = dict(phases or {})
        unknown = sorted(set(phases) - {"reversal_from", "joint_from"})
        if unknown:
            raise ConfigValueError(f"model.phases: unknown key(s) {', '.join(unknown)}; known: reversal_from, "
                                   "joint_from (epoch values: an int epoch or a fraction of the run).")
        self.phase_values = {"reversal_from": phases.get("reversal_from", 0.625),
                             "joint_from": phases.get("joint_from", 0.75)}
        self.boundaries: Optional[Dict[str, int]] = None  # resolved at fit start, or restored from a checkpoint
        self.counters = {k: 0 for k in COUNTERS}
        self.phase = "extractor"
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ----------------------------------------------------------------- pickling (trainer=ddp_spawn / ddp_sim)
    def __getstate__(self) -> Dict[str, Any]:
        """Spectral-norm parametrizations cannot be pickled: D travels as its state dict and is rebuilt."""
        state = self.__dict__.copy()
        state["_modules"] = {k: v for k, v in self._modules.items() if k != "discriminator"}
        state["_discriminator_state"] = self.discriminator.state_dict()
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        disc_state = state.pop("_discriminator_state")
        super().__setstate__(state)
        self.discriminator = self.discriminator_factory(feat_dim=self.backbone.out_dim, image_size=self.image_size)
        self.discriminator.load_state_dict(disc_state)

    # ----------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        mean, std = self.trainer.datamodule.normalization(train=True)
        self.input_mean.copy_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_std.copy_(torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def extractor_parameters(self):
        return [p for name, p in self.named_parameters()
                if p.requires_grad and not name.startswith(("generator.", "discriminator."))]

    def configure_optimizers(self):
        """E (with its epoch schedule), G, D: in this order, so checkpoint optimizer states read E, G, D."""
        e = self.build_optimization(self.extractor_parameters(), self.optimizer_factory, self.scheduler_factory)
        g_opt = self.g_optimizer_factory(params=list(self.generator.parameters()))
        d_opt = self.d_optimizer_factory(params=list(self.discriminator.parameters()))
        if isinstance(e, dict):
            return [e["optimizer"], g_opt, d_opt], [e["lr_scheduler"]]
        return [e, g_opt, d_opt]

    def _resolve_boundaries(self) -> Dict[str, int]:
        length = self.schedule_length()
        rev = resolve_epochs(self.phase_values["reversal_from"], length, "model.phases.reversal_from", allow_end=True)
        joint = resolve_epochs(self.phase_values["joint_from"], length, "model.phases.joint_from", allow_end=True)
        if joint < rev:
            raise ConfigValueError(
                f"model.phases: joint_from (epoch {joint}) comes before reversal_from (epoch {rev}); the order is "
                "extractor alone, then the reversal module alone, then joint. Set joint_from >= reversal_from.")
        return {"reversal_from": rev, "joint_from": joint}

    def on_fit_start(self) -> None:
        resolved = self._resolve_boundaries()
        if self.boundaries is None:
            self.boundaries = resolved
        elif self.boundaries != resolved and not self.trainer.fast_dev_run:
            log.warning("model.phases: the resumed checkpoint's phases %s are kept (this config gives %s)",
                        self.boundaries, resolved)
        if not self.trainer.fast_dev_run:
            b = self.boundaries
            log.info("phases: extractor alone for epochs [0, %d), reversal module alone [%d, %d), joint [%d, %d)",
                     b["reversal_from"], b["reversal_from"], b["joint_from"], b["joint_from"],
                     self.trainer.max_epochs)

    def phase_of(self, epoch: int) -> str:
        if self.trainer.fast_dev_run:
            return "joint"  # one batch: run every step once
        b = self.boundaries or self._resolve_boundaries()
        if epoch < b["reversal_from"]:
            return "extractor"
        return "reversal" if epoch < b["joint_from"] else "joint"

    # ----------------------------------------------------------------- checkpoint state
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CKPT_KEY] = {"counters": dict(self.counters), "phase": self.phase,
                                "boundaries": dict(self.boundaries) if self.boundaries else None}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        state = checkpoint.get(CKPT_KEY)
        if not state:
            return
        self.counters.update({k: int(v) for k, v in state.get("counters", {}).items() if k in COUNTERS})
        self.phase = state.get("phase", self.phase)
        if state.get("boundaries"):
            self.boundaries = {k: int(v) for k, v in state["boundaries"].items()}

    # ----------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        self.phase = self.phase_of(self.current_epoch)

    def _check_finite(self, name: str, value: torch.Tensor) -> None:
        """Stop on a NaN / inf loss (all ranks together under DDP) before it reaches a weight."""
        bad = (~torch.isfinite(value.detach())).any().float()
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="max")
        if bool(bad > 0):
            raise NonFiniteLossError(
                f"model=privacy_gan: loss {name} is {value.detach().float().item()} at global step "
                f"{self.trainer.global_step} (epoch {self.current_epoch}, phase {self.phase}, "
                f"{self.counters['r_batches']} reversal batches). Training stopped; checkpoints/last.ckpt holds the "
                "last finished epoch. Lower the GAN learning rates (model.g_optimizer.lr / model.d_optimizer.lr), "
                "raise model.r1_gamma, or resume with ckpt_path=... to retry.")

    def _optimize(self, optimizer, name: str, compute_loss: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One step of ``optimizer`` on ``compute_loss()``, run with only its own parameters requiring grad
        (the other modules' weights take no gradient and no DDP traffic)."""
        self.toggle_optimizer(optimizer)
        try:
            loss = compute_loss()
            self._check_finite(name, loss)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
        finally:
            self.untoggle_optimizer(optimizer)
        return loss

    def _reid_loss(self, feat: torch.Tensor, logits: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        inputs = {"logits": logits, "features": feat}
        total = feat.new_zeros(())
        for name, fn in self.loss_fns.items():
            value = fn(inputs[fn.input_kind], pids)
            self.log(f"train/loss_{name}", value)
            total = total + self.loss_weights[name] * value
        self.log("train/acc", (logits.argmax(1) == pids).float().mean(), prog_bar=True)
        return total

    def _privacy(self, recon: torch.Tensor, real: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        if self.privacy_loss == "neg_pixel":
            return neg_pixel_similarity(recon, real, self.neg_pixel_kind)
        if self.privacy_loss == "ssim":
            return ssim(recon, real, check_range=False).mean()
        return fake_realism(self.gan_loss, self.discriminator(recon, feat))

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> None:
        opt_e, opt_g, opt_d = self.optimizers()
        images, pids = batch["image"], batch["pid"]
        if self.phase == "reversal":
            for module in (self.backbone, self.pool, self.neck):
                module.eval()  # frozen: neither weights nor BN statistics move
            with torch.no_grad():
                bn_feat = self.neck.bn(self.pooled_features(images))
        else:
            feat = self.pooled_features(images)
            bn_feat, logits = self.neck(feat)
        if self.phase == "extractor":
            loss = self._optimize(opt_e, "reid", lambda: self._reid_loss(feat, logits, pids))
            self.counters["e_steps"] += 1
            self.log("train/loss", loss, prog_bar=True)
            return
        real = to_unit_images(images, self.input_mean, self.input_std, self.image_size)
        self._reversal_step(bn_feat.detach(), real, opt_g, opt_d)
        if self.phase == "joint":
            self._extractor_step(feat, bn_feat, logits, pids, real, opt_e)

    def _reversal_step(self, feat: torch.Tensor, real: torch.Tensor, opt_g, opt_d) -> None:
        """Step 1, E fixed: D (every d_every batches, R1 every r1_every D steps), then G (every g_every)."""
        batch = self.counters["r_batches"]
        self.counters["r_batches"] += 1
        use_d = self.d_weight > 0
        if use_d and batch % self.d_every == 0:
            do_r1 = self.r1_gamma > 0 and self.counters["d_steps"] % self.r1_every == 0

            def d_loss() -> torch.Tensor:
                with torch.no_grad():
                    fake = self.generator(feat)
                real_in = real.detach().requires_grad_(do_r1)
                real_scores = self.discriminator(real_in, feat)
                adv = self.d_loss_fn(real_scores, self.discriminator(fake, feat))
                self._check_finite("d_adv", adv)
                self.log("train/loss_d", adv)
                if not do_r1:
                    return adv
                r1 = r1_penalty(real_scores, real_in)
                self._check_finite("r1", r1)
                self.log("train/r1", r1)
                return adv + self.r1_gamma * self.r1_every * r1

            self._optimize(opt_d, "d", d_loss)
            self.counters["d_steps"] += 1
            self.counters["r1_steps"] += int(do_r1)
        if batch % self.g_every == 0:
            recon = {}

            def g_loss() -> torch.Tensor:
                recon["x"] = self.generator(feat)
                pixel = self.pixel_fn(recon["x"], real)
                self._check_finite("g_pixel", pixel)
                self.log("train/loss_g_pixel", pixel)
                if not use_d:
                    return self.pixel_weight * pixel
                adv = self.g_loss_fn(self.discriminator(recon["x"], feat))
                self._check_finite("g_adv", adv)
                self.log("train/loss_g_adv", adv)
                return self.pixel_weight * pixel + self.d_weight * adv

            self._optimize(opt_g, "g", g_loss)
            self.counters["g_steps"] += 1
            with torch.no_grad():
                self.log("train/recon_ssim", ssim(recon["x"].detach(), real, check_range=False).mean(), prog_bar=True)

    def _extractor_step(self, feat, bn_feat, logits, pids, real, opt_e) -> None:
        """Step 2, R fixed (its weights take no gradient, its modules run in eval mode): ReID losses +
        privacy_weight x the privacy loss of G's reconstruction of this batch."""

        def e_loss() -> torch.Tensor:
            reid = self._reid_loss(feat, logits, pids)
            if self.privacy_weight == 0:
                return reid
            modes = [m.training for m in (self.generator, self.discriminator)]
            self.generator.eval()
            self.discriminator.eval()
            privacy = self._privacy(self.generator(bn_feat), real, bn_feat)
            self.generator.train(modes[0])
            self.discriminator.train(modes[1])
            self._check_finite(f"privacy_{self.privacy_loss}", privacy)
            self.log("train/loss_privacy", privacy)
            return reid + self.privacy_weight * privacy

        loss = self._optimize(opt_e, "extractor", e_loss)
        self.counters["e_steps"] += 1
        self.log("train/loss", loss, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # E's schedule follows the epoch, also while E is frozen
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*before.*optimizer.step")
                scheduler.step()
        for name, value in self.counters.items():
            self.log(f"train/{name}", float(value))
        if self.trainer.world_size > 1:
            self._check_ranks_in_step()

    def _check_ranks_in_step(self) -> None:
        """Every rank must have taken the same E, G and D steps (the lazy-update clocks are per batch)."""
        mine = torch.tensor([self.counters[k] for k in COUNTERS], dtype=torch.float64, device=self.device)
        gathered = self.all_gather(mine).reshape(-1, len(COUNTERS))
        if not bool((gathered == gathered[0]).all()):
            raise RuntimeError(f"privacy_gan: ranks out of step, counters {COUNTERS} per rank: {gathered.tolist()}")

