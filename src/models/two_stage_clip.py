"""Two-stage CLIP prompt models (CLIP-ReID, PDM) in one Lightning run: the shared machinery.

One CLIP model gives both towers: its image tower is the image encoder (``backbone.``), its text
tower the frozen text encoder (``text_encoder.``). Training has two stages, one after the other in
the same run (``trainer.max_epochs = model.stage1.epochs + model.stage2.epochs``):

- **stage 1** (epochs ``[0, stage1.epochs)``): the image encoder is frozen, so its features of the
  training set (test transforms) are computed once and cached; batches carry indices only and the
  text-side modules (prompt learner / inversion networks) train on the cached features;
- **stage 2**: the text side is frozen; at its start the model builds its stage-2 text targets (a
  persistent buffer, so a run resumed inside stage 2 does not rebuild them from a changed encoder);
  the image encoder trains with ID + triplet on a BNNeck (the ``loss`` group) plus the model's text
  losses.

Manual optimization: optimizer 1 holds the stage-1 modules, optimizer 2 the image encoder and the
BNNeck; each stage steps only its own optimizer and scheduler (epochs of a schedule count within its
stage). ``checkpoints/stage1.ckpt`` is written at the end of stage 1. The stage is a function of the
epoch, so a checkpoint resumes inside either stage. Under DDP the cache is sharded, gathered and put
back in index order: every rank holds the single-process cache.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
from torch import nn

from src.losses.terms import build_loss_terms
from src.models.reid_module import ReIDModule
from src.nn.heads import BNNeck
from src.nn.text import TextEncoder
from src.utils.errors import ConfigValueError, TrainingDivergedError

log = logging.getLogger(__name__)

STAGE_KEYS = ("epochs", "optimizer", "scheduler")


class TwoStageCLIPModule(ReIDModule):
    """Base of the CLIP prompt models. Subclasses define the stage-1 modules and losses and the stage-2
    text targets / losses (see :class:`src.models.clipreid.CLIPReIDModel`, :class:`src.models.pdm.PDMModel`)."""

    ddp_find_unused_parameters = True  # stage 1 leaves the image encoder unused, stage 2 the text side
    lazy_state_prefixes = ("neck.classifier.",)
    # whether the stage-1 cache also holds a photometrically re-styled view of every image
    cache_restyled = False

    def __init__(self, backbone: nn.Module, losses: Dict[str, Dict[str, Any]], stage1: Dict[str, Any],
                 stage2: Dict[str, Any], neck_feat: str = "before", eval_metric: str = "cosine", max_rank: int = 50,
                 num_classes: Optional[int] = None, restyle_strength: float = 1.0, name: str = "clip") -> None:
        super().__init__(eval_metric=eval_metric, max_rank=max_rank)
        self.save_hyperparameters(ignore=["backbone", "losses", "stage1", "stage2"], logger=False)
        if not hasattr(backbone, "text_tower"):
            raise ConfigValueError(
                f"model={name} needs a CLIP backbone (its text tower builds the prompts), but the backbone is "
                f"{type(backbone).__name__}; use backbone=clip_tiny, clip_vit_b16 or clip_rn50.")
        if neck_feat not in ("after", "before"):
            raise ConfigValueError(f"model.neck_feat={neck_feat!r}: use 'after' or 'before'.")
        for key, stage in (("stage1", stage1), ("stage2", stage2)):
            missing = [k for k in STAGE_KEYS if k not in stage]
            if missing:
                raise ConfigValueError(f"model.{key} lacks {', '.join(missing)}; each stage needs epochs, optimizer "
                                       "and scheduler (null for a constant learning rate).")
            if int(stage["epochs"]) < 0:
                raise ConfigValueError(f"model.{key}.epochs={stage['epochs']} must be >= 0.")
        self.automatic_optimization = False
        self.backbone = backbone
        self.text_encoder = TextEncoder(backbone.text_tower())
        self.embed_dim = int(backbone.out_dim)
        self.neck = BNNeck(self.embed_dim, num_classes or 0)
        self.loss_fns, self.loss_weights = build_loss_terms(losses)
        self.stage_cfg = {1: dict(stage1), 2: dict(stage2)}
        self.stage1_epochs = int(stage1["epochs"])
        self.stage2_epochs = int(stage2["epochs"])
        self.neck_feat = neck_feat
        self.restyle_strength = float(restyle_strength)
        # 1 once the stage-2 text targets are built; saved, so resuming inside stage 2 keeps them
        self.register_buffer("stage2_ready", torch.zeros((), dtype=torch.long))
        self._cache: Optional[Dict[str, torch.Tensor]] = None
        self._epoch_losses: Dict[str, list] = defaultdict(list)
        # stage name -> term -> [(epoch, epoch-mean value)], for the loss-curve picture
        self.loss_history: Dict[str, Dict[str, list]] = {}

    # ----------------------------------------------------------------- stages
    @property
    def stage(self) -> int:
        return 1 if self.current_epoch < self.stage1_epochs else 2

    @property
    def train_inputs(self) -> str:
        """What the training batches must hold now: ``indices`` (stage 1, cached features) or ``images``."""
        return "indices" if self.stage == 1 else "images"

    def stage1_modules(self) -> Dict[str, nn.Module]:
        """The modules stage 1 trains (and stage 2 freezes), by name."""
        raise NotImplementedError

    def stage1_losses(self, feats: torch.Tensor, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Weighted stage-1 loss terms from cached image features (B, E) of the batch."""
        raise NotImplementedError

    def build_stage2_targets(self) -> None:
        """Build the stage-2 text targets (buffers) from the trained stage-1 modules (and the cache)."""
        raise NotImplementedError

    def stage2_text_losses(self, feats: torch.Tensor, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Weighted stage-2 text losses of image features (B, E) with gradient."""
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
                f"(trainer.max_epochs follows them).")
        if self.neck.num_classes != dm.num_classes:
            self.neck.reset_classifier(dm.num_classes)
            self.hparams.num_classes = dm.num_classes
        self.setup_identities(dm)

    def setup_identities(self, dm) -> None:
        """Build modules sized by the training identities (``dm.num_classes``)."""

    def _stage_schedule(self, k: int, optimizer: torch.optim.Optimizer):
        factory = self.stage_cfg[k].get("scheduler")
        length = 10**6 if self.trainer.fast_dev_run else max(1, int(self.stage_cfg[k]["epochs"]))
        if factory is None:
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        return factory(optimizer=optimizer, max_epochs=length, key=f"model.stage{k}.scheduler",
                       length_key=f"model.stage{k}.epochs")

    def configure_optimizers(self):
        stage1_params = [p for m in self.stage1_modules().values() for p in m.parameters() if p.requires_grad]
        stage2_params = [p for p in list(self.backbone.parameters()) + list(self.neck.parameters()) if p.requires_grad]
        opt1 = self.stage_cfg[1]["optimizer"](params=stage1_params)
        opt2 = self.stage_cfg[2]["optimizer"](params=stage2_params)
        return ([opt1, opt2], [{"scheduler": self._stage_schedule(1, opt1), "interval": "epoch"},
                               {"scheduler": self._stage_schedule(2, opt2), "interval": "epoch"}])

    # ----------------------------------------------------------------- cache
    @torch.no_grad()
    def build_cache(self) -> Dict[str, torch.Tensor]:
        """Image-encoder features (N, E) of every training image (test transforms, eval mode), in index
        order, the same on every rank; with ``cache_restyled`` also ``restyled`` (N, E)."""
        dm = self.trainer.datamodule
        loader = dm.train_feature_loader(restyled=self.cache_restyled, restyle_strength=self.restyle_strength)
        was_training = self.backbone.training
        self.backbone.eval()
        views = ("image", "image_restyled") if self.cache_restyled else ("image",)
        parts: Dict[str, list] = {v: [] for v in views}
        indices = []
        for batch in loader:
            for v in views:
                parts[v].append(self.backbone(batch[v].to(self.device)).float())
            indices.append(batch["index"].to(self.device))
        self.backbone.train(was_training)
        n = len(dm.train_records)
        idx = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long, device=self.device)
        cache = {}
        for v in views:
            feats = torch.cat(parts[v]) if parts[v] else torch.zeros(0, self.embed_dim, device=self.device)
            cache["feats" if v == "image" else "restyled"] = self._gather_in_order(feats, idx, n)
        log.info("stage 1: cached image-encoder features of %d training images%s", n,
                 " (+ re-styled views)" if self.cache_restyled else "")
        return cache

    def _gather_in_order(self, feats: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
        """This rank's (rows, indices) -> the full (n, E) matrix in index order, on every rank."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            size = math.ceil(n / world)
            pad = size - len(idx)
            feats = torch.cat([feats, feats.new_zeros(pad, feats.shape[1])])
            idx = torch.cat([idx, idx.new_full((pad,), -1)])
            all_feats = [torch.empty_like(feats) for _ in range(world)]
            all_idx = [torch.empty_like(idx) for _ in range(world)]
            dist.all_gather(all_feats, feats.contiguous())
            dist.all_gather(all_idx, idx.contiguous())
            feats, idx = torch.cat(all_feats), torch.cat(all_idx)
            keep = idx >= 0
            feats, idx = feats[keep], idx[keep]
        out = feats.new_zeros(n, feats.shape[1])
        out[idx] = feats
        if len(torch.unique(idx)) != n:
            raise RuntimeError(f"feature cache covers {len(torch.unique(idx))} of {n} training images")
        return out

    @property
    def cache(self) -> Dict[str, torch.Tensor]:
        if self._cache is None:
            self._cache = self.build_cache()
        return self._cache

    # ----------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        if self.stage == 2 and int(self.stage2_ready) == 0:
            with torch.no_grad():
                self.build_stage2_targets()
            self.stage2_ready.fill_(1)
            self._cache = None  # the image encoder trains from here on: the cache goes stale
            log.info("stage 2: text targets built; training the image encoder (epochs %d..%d)",
                     self.stage1_epochs, self.stage1_epochs + self.stage2_epochs - 1)
        for module in self.stage1_modules().values():
            module.train(self.stage == 1)

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        stage = self.stage
        opt = self.optimizers()[stage - 1]
        if stage == 1:
            feats = self.cache["feats"][batch["index"]]
            terms = self.stage1_losses(feats, batch)
        else:
            for module in self.stage1_modules().values():
                module.eval()
            terms = self._stage2_losses(batch)
        total = sum(terms.values())
        if not torch.isfinite(total):
            bad = [k for k, v in terms.items() if not torch.isfinite(v)]
            raise TrainingDivergedError(
                f"stage {stage} loss {', '.join(bad) or 'total'} is {float(total)} at global step {self.global_step} "
                f"(epoch {self.current_epoch}); lower the learning rate (model.stage{stage}.optimizer.lr) or the loss "
                f"weights. checkpoints/last.ckpt still holds the last good epoch.")
        opt.zero_grad()
        self.manual_backward(total)
        opt.step()
        prefix = f"train/stage{stage}"
        for name, value in terms.items():
            self.log(f"{prefix}/loss_{name}", value.detach(), prog_bar=False)
            self._epoch_losses[name].append(float(value.detach()))
        self.log(f"{prefix}/loss", total.detach(), prog_bar=True)
        self.log("train/loss", total.detach(), prog_bar=False)
        self._epoch_losses["total"].append(float(total.detach()))
        return total.detach()

    def _stage2_losses(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        pids = batch["pid"]
        feats = self.backbone(batch["image"])
        _, logits = self.neck(feats)
        inputs = {"logits": logits, "features": feats}
        terms = {name: self.loss_weights[name] * fn(inputs[fn.input_kind], pids)
                 for name, fn in self.loss_fns.items()}
        terms.update(self.stage2_text_losses(feats, batch))
        self.log("train/acc", (logits.argmax(1) == pids).float().mean(), prog_bar=True)
        return terms

    def on_train_epoch_end(self) -> None:
        stage = self.stage
        self.lr_schedulers()[stage - 1].step()
        name = f"stage{stage}"
        for term, values in self._epoch_losses.items():
            if values:
                self.loss_history.setdefault(name, {}).setdefault(term, []).append(
                    (int(self.current_epoch), sum(values) / len(values)))
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
        feats = self.backbone(images)
        return feats if self.neck_feat == "before" else self.neck.bn(feats)
