"""Feature-privacy models: a BoT extractor E trained against a defence (``model.defence``), optionally with
a stochastic bottleneck after its BNNeck (``model.bottleneck``) and a positive-control leak (``model.leak``;
both in src/ppreid/models/privacy_extractor.py).

- ``gan`` (our reading of "Protecting Feature Privacy in Person Re-identification"): a reversal GAN,
  G: feature -> image and D: (image, feature) -> score, trained by two-step training with lazy updates;
- ``pool``: a pool of decoders, the oldest restarted at every joint epoch (src/ppreid/privacy/pool.py);
- ``ridge``: a closed-form kernel ridge decoder solved again on every batch (src/ppreid/privacy/ridge.py);
- ``dependence``: a within-identity dependence penalty, no adversary (NoPeek / BiDO);
- ``none``: nothing (with ``bottleneck``: the variational bottleneck alone, src/ppreid/nn/bottleneck.py).

Training (manual optimization) runs in phases (src/ppreid/privacy/phases.py): E alone, the defence's
adversaries alone on E's frozen features, then joint: per batch **step 1** trains the adversaries
(``model.adversary.steps_per_batch`` steps on detached features; src/ppreid/privacy/reversal.py for the
GAN), **step 2** trains E on its ReID losses + ``privacy_weight`` x the defence's privacy loss (+ ``beta``
x the bottleneck's KL). At the start of the joint phase the adversaries are first pre-trained for
``model.adversary.pretrain_steps`` steps on E's frozen features of every clean training image, as an
audit attacker is trained.

The adversaries and E's privacy loss see what the audit attacks: E's stored feature in eval mode of the
**clean** image, with that image as the target (src/ppreid/models/privacy_extractor.py); E's ReID losses see
the augmented batch as BoT's do. Privacy terms (``model.privacy_terms``, src/ppreid/privacy/defences.py): the
whole image (``privacy_loss``: ``neg_pixel``, ``ssim``, ``ssim_gain`` over the running mean clean image, or
``realism``), ``swap`` and ``background``, none floored. ``privacy_weight=0`` is the unprotected model,
``d_weight=0 privacy_loss=neg_pixel privacy_terms={image: 1, swap: 0, background: 0}`` the conventional
defence (an L1 decoder, Xiao et al. AAAI 2020).

``configure_optimizers`` returns E, then the defence's (GAN: G, D; pool: one for its decoders), so a
checkpoint's optimizer states show how many steps each took. The counters, phase and boundaries are
saved under the checkpoint key ``privacy_gan`` (src/ppreid/privacy/saved_state.py); every epoch starts
from an RNG seeded by (seed, epoch), so a run resumed inside any phase trains exactly as an uninterrupted
one. A NaN / inf loss stops the run with ``TrainingDivergedError``. Outputs beside BoT's: ``loss_curves.png`` (epoch means of every module's
losses, the phases shaded: ``loss_curve_panels`` in src/ppreid/privacy/history.py)
and ``own_reconstructions.png`` (the defence's own decoders on held-out source images).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ppreid.metrics.images import to_unit_images
from ppreid.metrics.privacy import ssim
from ppreid.models.privacy_extractor import PrivacyExtractor
from ppreid.privacy.build import build_defence
from ppreid.privacy.guards import check_finite, check_ranks_in_step
from ppreid.privacy.history import loss_curve_panels
from ppreid.privacy.phases import (
    PHASES,
    apply_phase_modes,
    fit_boundaries,
    phase_of,
    phase_values,
    resolve_boundaries,
    seed_epoch,
)
from ppreid.privacy.pretrain import AdversaryOptions, feature_bank, pretrain_on_bank, share_adversaries
from ppreid.privacy.reversal import non_negative
from ppreid.privacy.saved_state import (
    CKPT_KEY,
    all_counters,
    checkpoint_state,
    restore_counters,
    upgrade_legacy_keys,
)

log = logging.getLogger(__name__)

# the constructor's arguments that are modules or factories (the config holds them), not hyper-parameters
BUILT_FROM_CONFIG = ("backbone", "losses", "optimizer", "scheduler", "generator", "discriminator")
BUILT_FROM_CONFIG += ("g_optimizer", "d_optimizer", "pool")


class PrivacyGANModel(PrivacyExtractor):
    """BoT extractor E + a privacy defence (+ an optional stochastic bottleneck); see the module docstring."""

    ddp_find_unused_parameters = True  # each step trains one module; the others take no gradient

    def __init__(
        self,
        backbone: nn.Module,
        losses: dict[str, dict[str, Any]],
        optimizer: Callable[..., torch.optim.Optimizer],
        generator: Callable[..., nn.Module] | None = None,
        discriminator: Callable[..., nn.Module] | None = None,
        g_optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        d_optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        image_size: Sequence[int] = (64, 32),
        scheduler: Callable[..., Any] | None = None,
        phases: dict[str, Any] | None = None,
        defence: str = "gan",
        privacy_loss: str = "ssim_gain",
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
        pool: dict[str, Any] | None = None,
        dependence: dict[str, Any] | None = None,
        ridge: dict[str, Any] | None = None,
        bottleneck: dict[str, Any] | None = None,
        adversary: dict[str, Any] | None = None,
        privacy_terms: dict[str, float] | None = None,
        background_border: float = 0.25,
        leak: str = "none",
        leak_branch: dict[str, Any] | None = None,
        pooling: str = "avg",
        neck_feat: str = "after",
        eval_metric: str = "cosine",
        max_rank: int = 50,
        num_classes: int | None = None,
        name: str = "privacy_gan",
    ) -> None:
        super().__init__(
            backbone=backbone,
            losses=losses,
            optimizer=optimizer,
            scheduler=scheduler,
            pooling=pooling,
            neck_feat=neck_feat,
            eval_metric=eval_metric,
            max_rank=max_rank,
            num_classes=num_classes,
            name=name,
        )
        self.save_hyperparameters(ignore=list(BUILT_FROM_CONFIG), logger=False)
        self.automatic_optimization = False
        self.privacy_weight = non_negative("model.privacy_weight", privacy_weight)
        self.image_size = tuple(int(s) for s in image_size)
        self.defence_name = defence
        adv = AdversaryOptions.from_config(adversary)
        self.steps_per_batch, self.pretrain_steps = adv.steps_per_batch, adv.pretrain_steps
        self.pretrain_batch_size = adv.pretrain_batch_size
        shared = dict(privacy_terms=privacy_terms, background_border=background_border)
        self.defence = build_defence(
            defence,
            gan=dict(
                **shared,
                ssim_weight=adv.ssim_weight,
                generator=generator,
                discriminator=discriminator,
                g_optimizer=g_optimizer,
                d_optimizer=d_optimizer,
                privacy_loss=privacy_loss,
                neg_pixel_kind=neg_pixel_kind,
                pixel_loss=pixel_loss,
                pixel_weight=pixel_weight,
                gan_loss=gan_loss,
                d_weight=d_weight,
                r1_gamma=r1_gamma,
                d_every=d_every,
                r1_every=r1_every,
                g_every=g_every,
            ),
            pool=dict(
                pool or {},
                **shared,
                privacy_loss=privacy_loss,
                neg_pixel_kind=neg_pixel_kind,
                ssim_weight=adv.ssim_weight,
            ),
            ridge=dict(ridge or {}, **shared, privacy_loss=privacy_loss, neg_pixel_kind=neg_pixel_kind),
            dependence=dict(dependence or {}),
        )
        self.defence.build(feat_dim=backbone.out_dim, image_size=self.image_size)
        self.build_extractor_parts(backbone.out_dim, self.image_size, leak, leak_branch, bottleneck, neck_feat)
        self.phase_values = phase_values(phases)
        self.boundaries: dict[str, int] | None = None  # resolved at fit start, or restored from a checkpoint
        # e_steps: E's steps; r_batches: adversary steps (steps_per_batch per batch, and the pre-training)
        self.counters = {"e_steps": 0, "r_batches": 0, "pretrain_steps": 0}
        self.phase = "extractor"
        self.base_seed = 0
        self._started_epoch: int | None = None
        self._first_epoch: int | None = None

    def configure_optimizers(self):
        """E (with its epoch schedule; the leak branch without weight decay), then the defence's optimizers."""
        e = self.build_optimization(self.extractor_param_groups(), self.optimizer_factory, self.scheduler_factory)
        others = self.defence.build_optimizers()
        if isinstance(e, dict):
            return [e["optimizer"], *others], [e["lr_scheduler"]]
        return [e, *others]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Also reads checkpoints written before the defences were modules (generator / discriminator at the
        top level, no running mean image, no feature standardizers)."""
        state_dict = upgrade_legacy_keys(state_dict, self.state_dict())
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ----------------------------------------------------------------- phases
    def on_fit_start(self) -> None:
        self.base_seed = int(torch.initial_seed()) % (2**31)
        self._started_epoch = self._first_epoch = None
        resolved = resolve_boundaries(self.phase_values, self.schedule_length(), self.defence.has_adversary)
        quiet = bool(self.trainer.fast_dev_run)
        self.boundaries = fit_boundaries(self.boundaries, resolved, self.defence_name, self.trainer.max_epochs, quiet)

    def phase_of(self, epoch: int) -> str:
        """The phase of ``epoch`` (a fast dev run too: its epoch 0; ``model.phases.reversal_from=0
        model.phases.joint_from=0 debug=fdr`` checks the joint step)."""
        return phase_of(
            epoch,
            self.boundaries
            or resolve_boundaries(self.phase_values, self.schedule_length(), self.defence.has_adversary),
        )

    def on_train_start(self) -> None:
        self._start_epoch()  # Lightning skips on_train_epoch_start for the first epoch of some resumed runs

    def on_train_epoch_start(self) -> None:
        self._start_epoch()

    def _start_epoch(self) -> None:
        """An RNG seeded by (seed, epoch) (again at every call: the last one comes right before the epoch's
        data), and once per epoch the phase, its module modes and the defence's epoch start."""
        epoch = self.current_epoch
        seed_epoch(self.base_seed, epoch)
        if self._first_epoch is None:
            self._first_epoch = epoch
        if epoch == self._first_epoch:
            # a loader's iterator takes one number from the RNG when it is made: after this hook in later
            # epochs, before it in the first epoch of a fit (fresh or resumed); take it here instead
            torch.empty((), dtype=torch.int64).random_()
        if self._started_epoch == epoch:
            return
        self._started_epoch = epoch
        self.phase = self.phase_of(epoch)
        apply_phase_modes(self.phase, self.extractor_modules(), [self.defence])
        if self.phase == "joint":
            self.defence.bind(self._optimizers()[1:], self._optimize)
            self.defence.on_joint_epoch_start(epoch)
            self._pretrain_adversaries(epoch)

    # ----------------------------------------------------------------- checkpoint state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[CKPT_KEY] = checkpoint_state(self.counters, self.defence.clock, self.phase, self.boundaries)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get(CKPT_KEY)
        if not state:
            return
        restore_counters(state, self.counters, self.defence.clock)
        self.phase = state.get("phase", self.phase)
        if state.get("boundaries"):
            self.boundaries = {k: int(v) for k, v in state["boundaries"].items()}

    # ----------------------------------------------------------------- training
    def _optimizers(self) -> list:
        """E's optimizer, then the defence's (Lightning returns a lone optimizer unwrapped)."""
        optimizers = self.optimizers()
        return list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]

    def _check_finite(self, name: str, value: torch.Tensor) -> None:
        where = f"epoch {self.current_epoch}, phase {self.phase}, {self.counters['r_batches']} adversary batches"
        check_finite(self.trainer, name, value, where)

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

    def _adversary_step(self, stored: torch.Tensor, real: torch.Tensor, record: bool = True) -> None:
        self.counters["r_batches"] += 1
        out = self.defence.adversary_step(stored.detach(), real)
        recon = out.pop("recon", None)
        for name, value in out.items():
            self._check_finite(name, value)
            if record:
                self._record(name, value)
        if recon is not None and record:
            with torch.no_grad():
                self._record("recon_ssim", ssim(recon.detach(), real, check_range=False).mean(), prog_bar=True)

    def _adversary_steps(self, stored: torch.Tensor, real: torch.Tensor) -> None:
        """Step 1: ``steps_per_batch`` adversary steps on this batch (the last one's losses are logged)."""
        if not self.defence.has_adversary:
            return
        for k in range(self.steps_per_batch):
            self._adversary_step(stored, real, record=k == self.steps_per_batch - 1)

    def _pretrain_adversaries(self, epoch: int) -> None:
        """Before the first joint step: ``pretrain_steps`` adversary steps on random batches of E's frozen
        features of every clean training image (this rank's shard), as the audit trains a fresh attacker;
        the blind guess becomes the mean of those images. Once per run (the counter is in the checkpoint);
        a fast dev run takes one step."""
        todo = self.pretrain_steps - self.counters["pretrain_steps"]
        if self.trainer.fast_dev_run:
            todo = min(todo, 1)
        loader = getattr(self.trainer.datamodule, "train_feature_loader", None)
        if not self.defence.has_adversary or todo <= 0:
            return
        if loader is None:
            log.warning("model.adversary.pretrain_steps: the datamodule has no train_feature_loader; not pre-trained")
            return
        feats, reals = feature_bank(
            loader(),
            lambda inputs: self._audited_features(inputs, grad=False),
            lambda inputs: to_unit_images(inputs, self.input_mean, self.input_std, self.image_size),
            self.device,
            first_only=bool(self.trainer.fast_dev_run),
        )
        with torch.no_grad():
            self.mean_image.copy_(reals.float().mean(0, keepdim=True) / 255.0)
            self.images_seen.fill_(reals.shape[0])

        def counted(_: int) -> None:
            self.counters["pretrain_steps"] += 1

        seed = self.base_seed * 7919 + epoch + 1
        step = self._adversary_step
        pretrain_on_bank(step, feats, reals, todo, self.pretrain_batch_size, seed, counted, self.defence_name)
        if self.trainer.world_size > 1:
            share_adversaries(self.trainer.strategy, self.defence, self._optimizers()[1:], self.mean_image)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        optimizers = self._optimizers()
        self.defence.bind(optimizers[1:], self._optimize)
        images, pids = batch["image"], batch["pid"]
        protect = self.phase == "joint" and self.privacy_weight > 0 and self.defence_name != "none"
        if self.phase == "extractor" or not (protect or self.defence.has_adversary):
            out = self._forward_extractor(images)
            loss = self._optimize(optimizers[0], "extractor", lambda: self._reid_loss(out, pids))
            self.counters["e_steps"] += 1
            self._record("loss", loss.detach(), prog_bar=True)
            return
        clean = self._clean_inputs(batch)
        real = to_unit_images(clean, self.input_mean, self.input_std, self.image_size)
        mask = self._person_masks(batch)
        self._update_mean_image(real)
        if self.phase == "reversal":
            self._adversary_steps(self._audited_features(clean, grad=False), real)
            return
        stored = self._audited_features(clean, grad=protect)
        self._adversary_steps(stored, real)
        out = self._forward_extractor(images)

        def e_loss() -> torch.Tensor:
            total = self._reid_loss(out, pids)
            if protect:
                privacy, extra = self.defence.privacy_loss(stored, real, pids, self.mean_image, mask)
                self._check_finite("privacy", privacy)
                self._record("loss_privacy", privacy)
                for name, value in extra.items():
                    self.log(f"train/{name}", value)
                total = total + self.privacy_weight * privacy
            return total

        loss = self._optimize(optimizers[0], "extractor", e_loss)
        self.counters["e_steps"] += 1
        self._record("loss", loss.detach(), prog_bar=True)

    def on_train_epoch_end(self) -> None:
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # E's schedule follows the epoch, also while E is frozen
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*before.*optimizer.step")
                scheduler.step()
        for name, value in all_counters(self.counters, self.defence.clock).items():
            self.log(f"train/{name}", float(value))
        self.history.close(f"{PHASES.index(self.phase) + 1} {self.phase}", self.current_epoch)  # panels in order
        if self.trainer.world_size > 1:
            check_ranks_in_step(all_counters(self.counters, self.defence.clock), self.all_gather, self.device)

    def loss_curve_panels(self) -> dict[str, Any]:
        """loss_curves.png (src/ppreid/callbacks/loss_curves.py), see ``ppreid.privacy.history.loss_curve_panels``."""
        t = self.trainer
        return loss_curve_panels(
            self.history, self.defence.adversaries, self.defence_name, self.boundaries, t.max_epochs, t.fast_dev_run
        )

    # ----------------------------------------------------------------- pictures
    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero or self.trainer.fast_dev_run:
            return
        from ppreid.callbacks.privacy_pictures import save_own_reconstructions

        path = Path(self.trainer.default_root_dir) / "own_reconstructions.png"
        save_own_reconstructions(self, self.trainer.datamodule, path)
