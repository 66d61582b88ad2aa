"""The training-loss logging interval follows the run's length.

Lightning logs a step's metrics only every ``trainer.log_every_n_steps`` optimizer steps (counted over
the whole run). A run shorter than that (a debug run, a one-epoch check, a small data set) would log no
training loss at all, in CSV or wandb. At the start of training this callback lowers the interval to
``min(log_every_n_steps, steps per epoch, total steps // min_points)`` (at least 1), so every epoch
logs at least once and the run at least ``min_points`` times when it has that many steps.
"""

from __future__ import annotations

import logging
import math

import pytorch_lightning as pl

log = logging.getLogger(__name__)


def log_interval(configured: int, steps_per_epoch: int, max_epochs: int, min_points: int = 20) -> int:
    """The interval for a run of ``max_epochs`` epochs of ``steps_per_epoch`` steps."""
    total = max(1, steps_per_epoch) * max(1, max_epochs)
    return max(1, min(int(configured), max(1, steps_per_epoch), total // max(1, min_points)))


class LogIntervalCallback(pl.Callback):
    def __init__(self, min_points: int = 20) -> None:
        self.min_points = int(min_points)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batches = trainer.num_training_batches
        if not isinstance(batches, (int, float)) or math.isinf(batches) or trainer.max_epochs is None:
            return
        configured = int(trainer.log_every_n_steps)
        if configured <= 0:  # logging switched off on purpose
            return
        interval = log_interval(configured, int(batches), int(trainer.max_epochs), self.min_points)
        if interval != configured:
            trainer.log_every_n_steps = interval
            log.info(
                "training losses logged every %d steps (trainer.log_every_n_steps=%d; this run has %d steps "
                "per epoch, %d epochs)",
                interval,
                configured,
                int(batches),
                int(trainer.max_epochs),
            )
