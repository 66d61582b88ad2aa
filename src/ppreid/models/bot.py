"""Bag of Tricks baseline (Luo et al., CVPR-W 2019): backbone -> pooling -> BNNeck -> classifier.

Training: every configured loss term on its input (ID losses on logits, metric losses on the
pre-BN pooled feature), summed with its weight. Test feature: after (or before) the BNNeck.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ppreid.losses.terms import build_loss_terms
from ppreid.models.reid_module import ReIDModule, check_neck_feat
from ppreid.nn.heads import BNNeck
from ppreid.nn.pooling import build_pooling


class BoTModel(ReIDModule):
    # The ID classifier is sized when training starts (number of source identities); a checkpoint's
    # classifier is therefore no architecture mismatch for a model built without one.
    lazy_state_prefixes = ("neck.classifier.",)

    def __init__(
        self,
        backbone: nn.Module,
        losses: dict[str, dict[str, Any]],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        pooling: str = "avg",
        neck_feat: str = "after",
        eval_metric: str = "cosine",
        max_rank: int = 50,
        num_classes: int | None = None,
        name: str = "bot",
    ) -> None:
        super().__init__(eval_metric=eval_metric, max_rank=max_rank)
        self.save_hyperparameters(ignore=["backbone", "losses", "optimizer", "scheduler"], logger=False)
        self.neck_feat = check_neck_feat(neck_feat)
        self.backbone = backbone
        self.pool = build_pooling(pooling)
        self.neck = BNNeck(backbone.out_dim, num_classes or 0)
        self.loss_fns, self.loss_weights = build_loss_terms(losses)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return  # evaluation needs no classifier, and no training data
        self.ensure_classifier(self.neck, self.trainer.datamodule.num_classes)

    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,D) pooled backbone feature, before the BNNeck."""
        return self.pool(self.backbone(images))

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        feat = self.pooled_features(images)
        if self.neck_feat == "before":
            return feat
        return self.neck.bn(feat)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pids = batch["pid"]
        feat = self.pooled_features(batch["image"])
        _, logits = self.neck(feat)
        terms = self.reid_loss_terms({"logits": logits, "features": feat}, pids)
        return self.log_loss_terms(terms, logits=logits, pids=pids)

    def configure_optimizers(self):
        return self.build_optimization(
            [p for p in self.parameters() if p.requires_grad], self.optimizer_factory, self.scheduler_factory
        )
