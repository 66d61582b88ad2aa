"""Lightning's CSVLogger, safe when a *fresh process* appends to an existing ``metrics.csv``.

Under ``ddp_spawn`` the test stage runs in new processes whose writer does not know the header that
the fit stage wrote; Lightning's writer then fails when rewriting the file ("dict contains fields not
in fieldnames"). This writer first merges the file's header into its known keys.
"""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class ResumingExperimentWriter(ExperimentWriter):
    def save(self) -> None:
        if self.metrics and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            if set(header) - set(self.metrics_keys):
                self.metrics_keys = sorted(set(self.metrics_keys) | set(header))
        super().save()


class CSVLogger(_LightningCSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ResumingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
