"""The timing callback that ``benchmarks/bench_default_run.py`` adds to the ``python train.py`` it measures.

It runs inside the measured checkout's train.py (``+callbacks.bench_timer._target_=bench_run_timer.PhaseTimer``,
this folder on ``PYTHONPATH``), records when each phase of the run starts and ends and the time spent in the
other callbacks, and writes them as JSON to the file named by ``$BENCH_DEFAULT_RUN_TIMINGS`` when fit and
test end.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TIMINGS_ENV = "BENCH_DEFAULT_RUN_TIMINGS"


def _timer_callback_class():
    import pytorch_lightning as pl

    hooks = (
        "setup",
        "on_fit_start",
        "on_train_start",
        "on_train_epoch_start",
        "on_train_batch_end",
        "on_train_epoch_end",
        "on_validation_start",
        "on_validation_end",
        "on_validation_epoch_end",
        "on_train_end",
        "on_test_start",
        "on_test_epoch_end",
        "on_test_end",
        "on_save_checkpoint",
        "on_fit_end",
        "teardown",
    )

    class PhaseTimer(pl.Callback):
        """Records when each phase of a run starts and ends, and the time spent in the other callbacks."""

        def __init__(self) -> None:
            self.t_built = time.time()
            self.t: dict[str, float] = {}
            self.acc: dict[str, float] = {"data_wait": 0.0, "step": 0.0, "val": 0.0, "test": 0.0}
            self.counts: dict[str, int] = {"steps": 0, "val": 0, "epochs": 0}
            self.callback_time: dict[str, float] = {}
            self.callback_in_val = self.callback_in_test = 0.0
            self._phase = None
            self._last = None
            self._wrapped = False
            self._in_fit = False
            self.val_in_fit = 0.0

        def _wrap_others(self, trainer) -> None:
            if self._wrapped:
                return
            self._wrapped = True
            for cb in trainer.callbacks:
                if cb is self:
                    continue
                name = type(cb).__name__
                for hook in hooks:
                    if getattr(type(cb), hook, None) is getattr(pl.Callback, hook, None):
                        continue
                    setattr(cb, hook, self._timed(name, getattr(cb, hook)))

        def _timed(self, name, fn):
            def wrapper(*args, **kwargs):
                t0 = time.time()
                try:
                    return fn(*args, **kwargs)
                finally:
                    dt = time.time() - t0
                    self.callback_time[name] = self.callback_time.get(name, 0.0) + dt
                    if self._phase == "val":
                        self.callback_in_val += dt
                    elif self._phase == "test":
                        self.callback_in_test += dt

            return wrapper

        def setup(self, trainer, pl_module, stage):
            self.t.setdefault(f"setup_{getattr(stage, 'value', stage)}", time.time())
            self._wrap_others(trainer)

        def on_fit_start(self, trainer, pl_module):
            self._in_fit = True

        def on_train_epoch_start(self, trainer, pl_module):
            self.t.setdefault("first_epoch", time.time())
            self._last = time.time()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            now = time.time()
            self.acc["data_wait"] += now - self._last
            self._step_start = now

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.acc["step"] += time.time() - self._step_start
            self.counts["steps"] += 1
            self._last = time.time()

        def on_train_epoch_end(self, trainer, pl_module):
            self.counts["epochs"] += 1

        def on_validation_start(self, trainer, pl_module):
            self._phase, self._v0 = "val", time.time()

        def on_validation_end(self, trainer, pl_module):
            elapsed = time.time() - self._v0
            self.acc["val"] += elapsed
            if self._in_fit:
                self.val_in_fit += elapsed
            self.counts["val"] += 1
            self._phase = None
            self._last = time.time()

        def on_test_start(self, trainer, pl_module):
            self._phase, self._t0 = "test", time.time()

        def on_test_end(self, trainer, pl_module):
            self.acc["test"] += time.time() - self._t0
            self._phase = None
            self.t["test_end"] = time.time()
            self._dump()

        def on_fit_end(self, trainer, pl_module):
            self.t["fit_end"] = time.time()
            self._in_fit = False
            self._dump()

        def _dump(self) -> None:
            path = os.environ.get(TIMINGS_ENV)
            if path:
                Path(path).write_text(
                    json.dumps(
                        {
                            "t_built": self.t_built,
                            "t": self.t,
                            "acc": self.acc,
                            "counts": self.counts,
                            "callbacks": self.callback_time,
                            "callback_in_val": self.callback_in_val,
                            "val_in_fit": self.val_in_fit,
                            "callback_in_test": self.callback_in_test,
                        }
                    )
                )

    return PhaseTimer


def PhaseTimer():  # noqa: N802  (Hydra's _target_ for +callbacks.bench_timer)
    return _timer_callback_class()()
