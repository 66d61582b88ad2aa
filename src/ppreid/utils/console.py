"""What a run prints: library adverts and plugin noise silenced, our own results table instead of Lightning's."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

NOISE = (
    "💡 Tip",
    "litlogger",
    "LitLogger",
    "TPU available",
    "GPU available",
    "HPU available",
    "`Trainer(val_check_interval",
    "Logging and checkpointing is suppressed",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in NOISE)


def quiet_libraries() -> None:
    """Drop Lightning's adverts and hardware banners and known-harmless third-party warnings."""
    for name in (
        "pytorch_lightning.utilities.rank_zero",
        "lightning.pytorch.utilities.rank_zero",
        "lightning_fabric.utilities.rank_zero",
        "pytorch_lightning.accelerators.cuda",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*The number of training batches.*log_every_n_steps.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true but no accelerator.*")
    warnings.filterwarnings("ignore", message=".*This DataLoader will create .* worker processes.*")


def results_table(metrics: Mapping[str, Mapping[str, float]], title: str = "test", note: str = "") -> str:
    """Per-target metrics (fractions) as a fixed-width table in percent, with the mean over targets;
    ``note`` (e.g. the evaluation options) follows the title."""
    names = ("R1", "R5", "R10", "mAP", "mINP")
    rows: dict[str, Mapping[str, float]] = dict(metrics)
    if len(rows) > 1:
        rows["mean"] = {k: sum(m.get(k, 0.0) for m in metrics.values()) / len(metrics) for k in names}
    width = max([len(t) for t in rows] + [6])
    lines = [
        f"{title} results (%)" + (f", {note}" if note else ""),
        f"{'target':<{width}}" + "".join(f"{n:>8}" for n in names),
    ]
    for target, m in rows.items():
        lines.append(f"{target:<{width}}" + "".join(f"{100 * m[n]:>8.1f}" if n in m else f"{'-':>8}" for n in names))
    return "\n".join(lines)
