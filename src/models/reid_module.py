"""Base LightningModule of every ReID model: cross-domain evaluation on all targets.

Subclasses implement :meth:`extract_features` (images (B,3,H,W) -> features (B,D)) and their own
``training_step``. Evaluation is shared: one :class:`ReIDEvaluator` per target, fed by the
datamodule's index-carrying loaders, so results are identical on 1 process or under DDP.
Logged as ``val/<target>/R1`` ... and ``test/<target>/{R1,R5,R10,mAP,mINP}``; ``<stage>/mAP`` and
``<stage>/R1`` are the means over targets (for checkpoint monitoring and sweeps).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

import pytorch_lightning as pl
import torch
from torch import nn

from src.metrics.reid_metric import ReIDEvaluator

log = logging.getLogger(__name__)

RANKS_LOGGED = (1, 5, 10)


class ReIDModule(pl.LightningModule):
    def __init__(self, eval_metric: str = "cosine", max_rank: int = 50) -> None:
        super().__init__()
        self.eval_metric = eval_metric
        self.max_rank = int(max_rank)
        self.evaluators = nn.ModuleList()
        self.target_names: List[str] = []
        # stage -> target -> full result dict (incl. the CMC curve), read by callbacks.
        self.eval_results: Dict[str, Dict[str, Dict[str, Any]]] = {}

    # ----------------------------------------------------------------- hooks
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if not self.target_names:
            trainer = self.trainer
            limited = bool(trainer.fast_dev_run) or any(
                not (isinstance(v, float) and v == 1.0)
                for v in (trainer.limit_val_batches, trainer.limit_test_batches))
            if limited:
                log.warning("evaluation batches are limited (fast_dev_run / limit_*_batches): "
                            "metrics cover only part of each target and are not comparable.")
            self.target_names = list(dm.target_names)
            for num_query, num_gallery in zip(dm.target_num_query, dm.target_num_gallery):
                self.evaluators.append(ReIDEvaluator(num_query=num_query, num_gallery=num_gallery,
                                                     metric=self.eval_metric, max_rank=self.max_rank,
                                                     strict=not limited))

    # ----------------------------------------------------------------- evaluation
    def _eval_step(self, batch: Dict[str, torch.Tensor], dataloader_idx: int) -> None:
        feats = self.extract_features(batch["image"])
        self.evaluators[dataloader_idx].update(feats.float(), batch["pid"], batch["camid"], batch["index"])

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def _eval_epoch_end(self, stage: str) -> None:
        results = {}
        for name, evaluator in zip(self.target_names, self.evaluators):
            res = evaluator.compute()
            evaluator.reset()
            results[name] = res
            cmc = res["cmc"]
            for k in RANKS_LOGGED:
                self.log(f"{stage}/{name}/R{k}", float(cmc[k - 1]), sync_dist=True)
            self.log(f"{stage}/{name}/mAP", float(res["mAP"]), sync_dist=True)
            self.log(f"{stage}/{name}/mINP", float(res["mINP"]), sync_dist=True)
        if results:
            self.log(f"{stage}/mAP", sum(float(r["mAP"]) for r in results.values()) / len(results),
                     sync_dist=True)
            self.log(f"{stage}/R1", sum(float(r["cmc"][0]) for r in results.values()) / len(results),
                     sync_dist=True)
        self.eval_results[stage] = results

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")
