"""What a run prints: library adverts and plugin noise silenced, our own results table instead of Lightning's."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping

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


# Known-harmless library warnings (message regexes): Lightning's advice for tiny CPU runs and its own
# deprecated pytree use, raised inside Trainer.fit / validate / test.
LIBRARY_WARNINGS = (
    ".*LeafSpec.*",
    ".*does not have many workers.*",
    ".*The number of training batches.*log_every_n_steps.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*'pin_memory' argument is set as true but no accelerator.*",
    ".*This DataLoader will create .* worker processes.*",
)


def quiet_libraries() -> None:
    """Drop Lightning's adverts and hardware banners from its loggers (warnings: library_warnings_ignored)."""
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


@contextlib.contextmanager
def library_warnings_ignored(*expected: str) -> Iterator[None]:
    """Ignore LIBRARY_WARNINGS and ``expected`` (a model's own, message regexes) inside the block only:
    wrap the Lightning call that raises them, so that no one else's warning is hidden."""
    with warnings.catch_warnings():
        for message in (*LIBRARY_WARNINGS, *expected):
            warnings.filterwarnings("ignore", message=message)
        yield


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
