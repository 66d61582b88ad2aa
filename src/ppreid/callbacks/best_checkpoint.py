"""``checkpoints/best.ckpt``: the weights of the best validation epoch, beside ``last.ckpt``.

Where fast-reid (``model_best.pth``) and torchreid users look for the model to keep. The monitored value
is a validation metric on held-out *source* identities (``val/mAP`` by default), never a target's, so
choosing this file is honest model selection. A run without a validation split has no best epoch:
then no file is written and the log says so once (Lightning's ModelCheckpoint would warn every epoch).
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class BestCheckpoint(ModelCheckpoint):
    def __init__(self, dirpath: str, monitor: str = "val/mAP", mode: str = "max", filename: str = "best") -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            save_on_train_epoch_end=False,
        )
        self._said_no_val = False

    def _save_topk_checkpoint(self, trainer: pl.Trainer, monitor_candidates) -> None:
        if monitor_candidates.get(self.monitor) is None:
            if not self._said_no_val and trainer.is_global_zero:
                log.info("no %s logged (no validation split?): no %s.ckpt written", self.monitor, self.filename)
                self._said_no_val = True
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
