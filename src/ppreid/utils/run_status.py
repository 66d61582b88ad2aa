"""``status.json`` of a run folder, and errors written into the run's own log.

A run folder says how its run ended, so a folder without ``results.json`` is never a mystery:
``{"status": "running" | "completed" | "failed" | "interrupted", "started": ..., "finished": ...,
"wall_time_s": ..., "error": "<one line>"}``. ``running`` left behind means the process was killed (or
still runs). ``experiments/tables.py`` reads it to say why it skips a folder.

A run's time counts from :func:`run_start_time` (the process start for its first run: imports and
composing the config included), the origin of ``results.json``'s ``wall_time_s`` too.
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


def _stamp(seconds: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def _process_start() -> float:
    """When this process started (before the interpreter imported anything), or now if unknown."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # no psutil or no access to the process table: count from this import
        return time.time()


_PROCESS_START = _process_start()
_runs_started = 0


def run_start_time() -> float:
    """When the current run started (seconds since the epoch): the process start for the first run of a
    process, so imports, composing the config and writing data count; the call time for the later runs
    of a multirun in the same process. Call it once per run, at its start."""
    global _runs_started
    _runs_started += 1
    return _PROCESS_START if _runs_started == 1 else time.time()


class RunStatus:
    """Writes ``<run dir>/status.json`` at the start and at the end of a run (main process only).

    started_at: the run's start (:func:`run_start_time`); ``finished`` - ``started`` = ``wall_time_s``."""

    def __init__(self, run_dir: str | Path, started_at: float | None = None) -> None:
        self.path = Path(run_dir) / STATUS_FILE
        self.started_at = time.time() if started_at is None else float(started_at)
        self.started = _stamp(self.started_at)
        self.enabled = is_main_process()

    def _write(self, status: str, error: str | None = None) -> None:
        if not self.enabled:
            return
        record = {"status": status, "started": self.started}
        if status != "running":
            now = time.time()
            record["finished"] = _stamp(now)
            record["wall_time_s"] = round(now - self.started_at, 2)
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

    def interrupted(self, reason: str = "stopped by the user (KeyboardInterrupt)") -> None:
        self._write("interrupted", reason)


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
