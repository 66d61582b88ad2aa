"""``status.json`` of a run folder, and errors written into the run's own log.

A run folder says how its run ended, so a folder without ``results.json`` is never a mystery:
``{"status": "running" | "completed" | "failed" | "interrupted", "started": ..., "finished": ...,
"error": "<one line>"}``. ``running`` left behind means the process was killed (or still runs).
``experiments/tables.py`` reads it to say why it skips a folder.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ppreid.utils.fileops import atomic_write_json

STATUS_FILE = "status.json"


def is_main_process() -> bool:
    """Rank 0 of node 0 (the only process that writes a run folder's own files)."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class RunStatus:
    """Writes ``<run dir>/status.json`` at the start and at the end of a run (main process only)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / STATUS_FILE
        self.started = _now()
        self.enabled = is_main_process()

    def _write(self, status: str, error: str | None = None) -> None:
        if not self.enabled:
            return
        record = {"status": status, "started": self.started}
        if status != "running":
            record["finished"] = _now()
        if error:
            record["error"] = error
        try:
            atomic_write_json(self.path, record)
        except OSError:  # an unwritable folder must not hide the run's own error
            pass

    def running(self) -> None:
        self._write("running")

    def completed(self) -> None:
        self._write("completed")

    def failed(self, error: str) -> None:
        self._write("failed", " ".join(str(error).split()))

    def interrupted(self) -> None:
        self._write("interrupted", "stopped by the user (KeyboardInterrupt)")


def log_to_files(message: str, level: int = logging.ERROR, exc_info=None) -> None:
    """Write ``message`` (with a traceback if ``exc_info``) into the log *files* only (the run's
    ``train.log``): the console already shows the one-line error, and must not show it twice."""
    root = logging.getLogger()
    if isinstance(exc_info, BaseException):  # makeRecord wants the (type, value, traceback) triple
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    record = root.makeRecord("train", level, __file__, 0, message, (), exc_info)
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)
