"""Two-stage CLIP prompt models (CLIP-ReID, PDM) in one Lightning run: the shared machinery.

One CLIP model gives both towers: its image tower is the image encoder (``backbone.``), its text
tower the frozen text encoder (``text_encoder.``). Training has two stages, one after the other in
the same run (``trainer.max_epochs = model.stage1.epochs + model.stage2.epochs``):

- **stage 1** (epochs ``[0, stage1.epochs)``): the image encoder is frozen, so its features of the
  training set (test transforms) are computed once and cached; batches carry indices only (a fresh
  random permutation of *all* training images in chunks of ``model.stage1.batch_size``, as CLIP-ReID;
  null = P x K batches) and the text-side modules (prompt learner / inversion networks) train on the
  cached features. Validation has no work to do (:attr:`validation_due` is False: the datamodule gives no
  validation batches): the image encoder, hence its result, cannot change;
- **stage 2**: the text side is frozen; at its start the model builds its stage-2 text targets (a
  persistent buffer, so a run resumed inside stage 2 does not rebuild them from a changed encoder);
  the image encoder trains with CLIP-ReID's structure: three image features (``intermediate``,
  ``final``, ``proj``: see :meth:`OpenCLIPVisual.forward_features`), two BNNecks with classifiers (on
  ``final`` and ``proj``), the ``loss`` group's ID terms summed over both classifiers and its metric
  terms over all three features, plus the model's text losses on ``proj``. With
  ``grad_norm_interval`` N > 0, every N stage-2 steps the gradient norm each term sends to the image
  encoder is logged (``train/grad_norm_image/<term>``) and summarised in results.json (``grad_norm_image``).

Test feature (``model.test_feature``): ``concat`` = [final, proj] (CLIP-ReID: 1280-d for ViT-B/16,
3072-d for RN50), or ``final`` / ``proj`` alone; ``model.neck_feat`` takes them before (CLIP-ReID) or
after their BNNecks.

Manual optimization: optimizer 1 holds the stage-1 modules, optimizer 2 the image encoder and the
necks (biases at ``stage2.bias_lr_factor`` x the learning rate with ``stage2.weight_decay_bias``, as
CLIP-ReID); each stage steps only its own optimizer and scheduler (epochs of a schedule count within
its stage). ``checkpoints/stage1.ckpt`` is written at the end of stage 1. The stage is a function of
the epoch, so a checkpoint resumes inside either stage. Under DDP the cache is sharded, gathered and
put back in index order: every rank holds the single-process cache. A fast dev run (``debug=fdr``)
runs the real step of the stage of epoch 0 (stage 1: the cache, then one step on cached features);
``model.stage1.epochs=0 debug=fdr`` checks stage 2 the same way.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ppreid.losses.terms import build_loss_terms
from ppreid.models.reid_module import ReIDModule, check_neck_feat
from ppreid.nn.heads import BNNeck
from ppreid.nn.text import TextEncoder
from ppreid.training.feature_cache import cache_training_features
from ppreid.training.grad_norms import grad_norm_summary, term_grad_norms
from ppreid.utils.errors import ConfigValueError, TrainingDivergedError, check_known_keys

log = logging.getLogger(__name__)

STAGE_KEYS = ("epochs", "optimizer", "scheduler")
STAGE_OPTIONAL = {1: {"batch_size": 64}, 2: {"bias_lr_factor": 1.0, "weight_decay_bias": None}}
TEST_FEATURES = ("concat", "final", "proj")


class TwoStageCLIPModule(ReIDModule):
    """Base of the CLIP prompt models. Subclasses define the stage-1 modules and losses and the stage-2
    text targets / losses (see :class:`ppreid.models.clipreid.CLIPReIDModel`, :class:`ppreid.models.pdm.PDMModel`)."""

    ddp_find_unused_parameters = True  # stage 1 leaves the image encoder unused, stage 2 the text side
    lazy_state_prefixes = ("neck.classifier.", "neck_proj.classifier.")
    # Lightning warns about modules in eval mode at the start of training: the frozen text encoder is, by design
    expected_warnings = (r".*module\(s\) in eval mode.*",)

    def __init__(
        self,
        backbone: nn.Module,
        losses: dict[str, dict[str, Any]],
        stage1: dict[str, Any],
        stage2: dict[str, Any],
        neck_feat: str = "before",
        test_feature: str = "concat",
        eval_metric: str = "cosine",
        max_rank: int = 50,
        num_classes: int | None = None,
        restyle_strength: float = 1.0,
        text_batch_size: int = 256,
        grad_norm_interval: int = 0,
        name: str = "clip",
    ) -> None:
        super().__init__(eval_metric=eval_metric, max_rank=max_rank)
        self.save_hyperparameters(ignore=["backbone", "losses", "stage1", "stage2"], logger=False)
        if not hasattr(backbone, "text_tower") or not hasattr(backbone, "forward_features"):
            raise ConfigValueError(
                f"model={name} needs a CLIP backbone (its text tower builds the prompts), but the backbone is "
                f"{type(backbone).__name__}; use backbone=clip_tiny, clip_vit_b16 or clip_rn50."
            )
        if backbone.text_tower_loaded is False:
            raise ConfigValueError(
                f"model={name}: backbone.pretrained={backbone.pretrained} holds image-tower weights only, but the "
                "prompts need CLIP's text tower too; give a full CLIP weights file (image + text towers, e.g. "
                "open_clip's state dict) or an open_clip tag."
            )
        if test_feature not in TEST_FEATURES:
            raise ConfigValueError(
                f"model.test_feature={test_feature!r}: choose {', '.join(TEST_FEATURES)} "
                "(concat = CLIP-ReID's [final, proj])."
            )
        self.stage_cfg = {}
        for k, stage in ((1, stage1), (2, stage2)):
            stage = dict(stage)
            check_known_keys(stage, STAGE_KEYS + tuple(STAGE_OPTIONAL[k]), f"model.stage{k}")
            missing = [key for key in STAGE_KEYS if key not in stage]
            if missing:
                raise ConfigValueError(
                    f"model.stage{k} lacks {', '.join(missing)}; each stage needs epochs, "
                    "optimizer and scheduler (null for a constant learning rate)."
                )
            if int(stage["epochs"]) < 0:
                raise ConfigValueError(f"model.stage{k}.epochs={stage['epochs']} must be >= 0.")
            self.stage_cfg[k] = {**STAGE_OPTIONAL[k], **stage}
        if self.stage_cfg[1]["batch_size"] is not None and int(self.stage_cfg[1]["batch_size"]) < 1:
            raise ConfigValueError(
                f"model.stage1.batch_size={self.stage_cfg[1]['batch_size']} must be >= 1 (or null for P x K batches)."
            )
        self.automatic_optimization = False
        self.backbone = backbone
        self.text_encoder = TextEncoder(backbone.text_tower())
        self.embed_dim = int(backbone.out_dim)
        self.feature_dims = tuple(int(d) for d in backbone.feature_dims)  # (intermediate, final, proj)
        self.neck = BNNeck(self.feature_dims[1], num_classes or 0)
        self.neck_proj = BNNeck(self.feature_dims[2], num_classes or 0)
        self.loss_fns, self.loss_weights = build_loss_terms(losses)
        self.stage1_epochs = int(self.stage_cfg[1]["epochs"])
        self.stage2_epochs = int(self.stage_cfg[2]["epochs"])
        self.neck_feat = check_neck_feat(neck_feat)
        self.test_feature = test_feature
        self.restyle_strength = float(restyle_strength)
        self.text_batch_size = int(text_batch_size)
        if int(grad_norm_interval) < 0:
            raise ConfigValueError(
                f"model.grad_norm_interval={grad_norm_interval} must be >= 0 (0: off; N: every N stage-2 steps)."
            )
        self.grad_norm_interval = int(grad_norm_interval)
        self._grad_norms: dict[str, list[float]] = defaultdict(list)
        # 1 once the stage-2 text targets are built; saved, so resuming inside stage 2 keeps them
        self.register_buffer("stage2_ready", torch.zeros((), dtype=torch.long))
        self._cache: dict[str, torch.Tensor] | None = None
        self._epoch_losses: dict[str, list] = defaultdict(list)
        # stage name -> term -> [(epoch, epoch-mean value)], for the loss-curve picture
        self.loss_history: dict[str, dict[str, list]] = {}

    # ----------------------------------------------------------------- stages
    @property
    def stage(self) -> int:
        return 1 if self.current_epoch < self.stage1_epochs else 2

    @property
    def train_inputs(self) -> str:
        """What the training batches must hold now: ``indices`` (stage 1, cached features) or ``images`` (stage 2)."""
        return "indices" if self.stage == 1 else "images"

    @property
    def validation_due(self) -> bool:
        """No validation during stage 1 of a fit: the image encoder is frozen, so its result cannot change."""
        trainer = self._trainer
        fitting = trainer is not None and trainer.state.fn == "fit"
        return not (fitting and self.stage == 1)

    @property
    def index_batch_size(self) -> int | None:
        """Stage-1 chunk of the permutation of all training images (None: P x K batches)."""
        size = self.stage_cfg[1]["batch_size"]
        return None if size is None else int(size)

    @property
    def cache_restyled(self) -> bool:
        """Whether the stage-1 cache also holds a photometrically re-styled view of every image."""
        return False

    def stage1_modules(self) -> dict[str, nn.Module]:
        """The modules stage 1 trains (and stage 2 freezes), by name."""
        raise NotImplementedError

    def stage1_losses(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted stage-1 loss terms from cached image features (B, E) of the batch."""
        raise NotImplementedError

    def build_stage2_targets(self) -> None:
        """Build the stage-2 text targets (buffers) from the trained stage-1 modules (and the cache)."""
        raise NotImplementedError

    def stage2_text_losses(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted stage-2 text losses of projected image features (B, E) with gradient."""
        raise NotImplementedError

    # ----------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        trainer, dm = self.trainer, self.trainer.datamodule
        total = self.stage1_epochs + self.stage2_epochs
        if not trainer.fast_dev_run and trainer.max_epochs != total:
            raise ConfigValueError(
                f"trainer.max_epochs={trainer.max_epochs}, but model.stage1.epochs + model.stage2.epochs = "
                f"{self.stage1_epochs} + {self.stage2_epochs} = {total}; set the stage epochs instead "
                f"(trainer.max_epochs follows them)."
            )
        self.ensure_classifier(self.neck, dm.num_classes)
        self.ensure_classifier(self.neck_proj, dm.num_classes)
        self.setup_identities(dm)
        frozen = sum(1 for m in self.modules() if not m.training)
        log.info(
            "stage 1 trains %s; the frozen text encoder (%d modules) stays in eval mode throughout",
            ", ".join(self.stage1_modules()),
            frozen,
        )

    def setup_identities(self, dm) -> None:
        """Build modules sized by the training identities (``dm.num_classes``)."""

    def stage2_parameter_groups(self) -> list[dict[str, Any]]:
        """Image encoder + necks; biases at ``bias_lr_factor`` x lr with ``weight_decay_bias`` (CLIP-ReID)."""
        cfg = self.stage_cfg[2]
        factory = cfg["optimizer"]
        base = dict(getattr(factory, "keywords", {}) or {})
        if "lr" not in base:
            raise ConfigValueError("model.stage2.optimizer needs an explicit lr (the bias groups scale it).")
        named = [
            (n, p)
            for module in (self.backbone, self.neck, self.neck_proj)
            for n, p in module.named_parameters()
            if p.requires_grad
        ]
        weights = [p for n, p in named if not n.endswith("bias")]
        biases = [p for n, p in named if n.endswith("bias")]
        bias_group: dict[str, Any] = {"params": biases, "lr": float(base["lr"]) * float(cfg["bias_lr_factor"])}
        if cfg["weight_decay_bias"] is not None:
            bias_group["weight_decay"] = float(cfg["weight_decay_bias"])
        return [{"params": weights}, bias_group] if biases else [{"params": weights}]

    def configure_optimizers(self):
        stage1_params = [p for m in self.stage1_modules().values() for p in m.parameters() if p.requires_grad]
        opt1 = self.stage_cfg[1]["optimizer"](params=stage1_params)
        opt2 = self.stage_cfg[2]["optimizer"](params=self.stage2_parameter_groups())
        schedules = [
            self.build_schedule(
                self.stage_cfg[k].get("scheduler"),
                opt,
                max(1, int(self.stage_cfg[k]["epochs"])),
                key=f"model.stage{k}.scheduler",
                length_key=f"model.stage{k}.epochs",
            )
            for k, opt in ((1, opt1), (2, opt2))
        ]
        return [opt1, opt2], [{"scheduler": sch, "interval": "epoch"} for sch in schedules]

    # ----------------------------------------------------------------- cache
    def build_cache(self, indices: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """The frozen image encoder's features of the training images (see
        :func:`ppreid.training.feature_cache.cache_training_features`); ``indices``: only these images."""
        return cache_training_features(
            self.backbone,
            self.trainer.datamodule,
            self.device,
            self.embed_dim,
            self.cache_restyled,
            self.restyle_strength,
            indices,
        )

    @property
    def cache(self) -> dict[str, torch.Tensor]:
        if self._cache is None:
            self._cache = self.build_cache()
        return self._cache

    def cached(self, name: str, indices: torch.Tensor) -> torch.Tensor:
        """Cached ``name`` features (B, E) of training images ``indices`` (B,)."""
        cache = self.cache
        return cache[name][cache["row"][indices]]

    # ----------------------------------------------------------------- training
    def _enter_stage2(self) -> None:
        if int(self.stage2_ready) == 0:
            with torch.no_grad():
                self.build_stage2_targets()
            self.stage2_ready.fill_(1)
            log.info(
                "stage 2: text targets built; training the image encoder (epochs %d..%d)",
                self.stage1_epochs,
                self.stage1_epochs + self.stage2_epochs - 1,
            )
        self.release_cache()

    def release_cache(self) -> None:
        """The image encoder trains from stage 2 on: drop the (now stale) cache."""
        self._cache = None

    def on_train_epoch_start(self) -> None:
        if self.stage == 2:
            self._enter_stage2()
        for module in self.stage1_modules().values():
            module.train(self.stage == 1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        stage = self.stage
        if stage == 1:
            terms = self.stage1_losses(self.cached("feats", batch["index"]), batch)
        else:
            terms = self._stage2_losses(batch)
        return self._step(stage, terms)

    def _step(self, stage: int, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        opt = self.optimizers()[stage - 1]
        if not terms:
            raise ConfigValueError(
                f"model.stage{stage}: every loss term is off; enable at least one"
                + (", or set model.stage1.epochs=0." if stage == 1 else ".")
            )
        total = sum(terms.values())
        if not torch.isfinite(total):
            bad = [k for k, v in terms.items() if not torch.isfinite(v)]
            raise TrainingDivergedError(
                f"stage {stage} loss {', '.join(bad) or 'total'} is {float(total)} at global step {self.global_step} "
                f"(epoch {self.current_epoch}); lower the learning rate (model.stage{stage}.optimizer.lr) or the loss "
                f"weights. checkpoints/last.ckpt still holds the last good epoch."
            )
        if stage == 2 and self.grad_norm_interval and self.global_step % self.grad_norm_interval == 0:
            self._log_image_grad_norms(terms)
        opt.zero_grad()
        self.manual_backward(total)
        opt.step()
        self.log_loss_terms({k: v.detach() for k, v in terms.items()}, prefix=f"train/stage{stage}")
        for name, value in terms.items():
            self._epoch_losses[name].append(float(value.detach()))
        self._epoch_losses["total"].append(float(total.detach()))
        return total.detach()

    def _log_image_grad_norms(self, terms: dict[str, torch.Tensor]) -> None:
        """The L2 norm of the gradient each weighted stage-2 term sends to the image encoder's parameters
        (src/ppreid/training/grad_norms.py, the graph kept for the step's backward): logged as
        ``train/grad_norm_image/<term>`` (per epoch, the mean of its measured steps) and summarised (last,
        mean, count over the run) in ``extra_results``."""
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        if not params:
            return
        for name, norm in term_grad_norms(terms, params).items():
            # the epoch's mean over its measured steps: written at epoch end, whatever log_every_n_steps is
            self.log(f"train/grad_norm_image/{name}", norm, on_step=False, on_epoch=True)
            self._grad_norms[name].append(norm)
        self.extra_results["grad_norm_image"] = grad_norm_summary(self._grad_norms, self.grad_norm_interval)

    def _stage2_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for module in self.stage1_modules().values():
            module.eval()
        pids = batch["pid"]
        feats = self.backbone.forward_features(batch["image"])
        _, logits = self.neck(feats["final"])
        _, logits_proj = self.neck_proj(feats["proj"])
        terms = self.reid_loss_terms(
            {"logits": [logits, logits_proj], "features": [feats["intermediate"], feats["final"], feats["proj"]]}, pids
        )
        terms.update(self.stage2_text_losses(feats["proj"], batch))
        self.log("train/acc", (logits_proj.argmax(1) == pids).float().mean(), prog_bar=True)
        return terms

    def on_train_epoch_end(self) -> None:
        stage = self.stage
        self.lr_schedulers()[stage - 1].step()
        name = f"stage{stage}"
        for term, values in self._epoch_losses.items():
            if values:
                self.loss_history.setdefault(name, {}).setdefault(term, []).append(
                    (int(self.current_epoch), sum(values) / len(values))
                )
        self._epoch_losses = defaultdict(list)
        if stage == 1 and self.current_epoch == self.stage1_epochs - 1:
            self._save_stage1_checkpoint()

    def _save_stage1_checkpoint(self) -> None:
        from pytorch_lightning.callbacks import ModelCheckpoint

        ckpt_cb = next((c for c in self.trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if ckpt_cb is None or self.trainer.fast_dev_run or ckpt_cb.dirpath is None:
            return
        path = Path(ckpt_cb.dirpath) / "stage1.ckpt"
        self.trainer.save_checkpoint(str(path), weights_only=False)
        log.info("stage 1 finished: %s", path)

    # ----------------------------------------------------------------- evaluation
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> the test feature: [final, proj] (``concat``), ``final`` or ``proj``, before or after
        their BNNecks (``neck_feat``)."""
        feats = self.backbone.forward_features(images)
        parts = {"final": (feats["final"], self.neck), "proj": (feats["proj"], self.neck_proj)}
        chosen = ("final", "proj") if self.test_feature == "concat" else (self.test_feature,)
        out = [parts[k][0] if self.neck_feat == "before" else parts[k][1].bn(parts[k][0]) for k in chosen]
        return out[0] if len(out) == 1 else torch.cat(out, dim=1)
