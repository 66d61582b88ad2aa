"""Crash-safe file operations shared by the GenePerson writer and the embedded mini data.

A file is written whole or not at all (temp name in the same folder, fsync, ``os.replace``), and
cross-process critical sections use ``fcntl.flock`` locks, which the kernel drops when a process
dies, so a ``kill -9`` never leaves a stale lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator

from src.utils.errors import ConfigValueError


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` via ``.<name>.tmp-<pid>`` + rename (readers never see half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Indented JSON, keys in insertion order (configs keep their order: it is the sampling order)."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True, what: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed).

    ``blocking=False``: if another process holds it, raise ConfigValueError naming ``what``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ConfigValueError(
                f"{what or path} is in use by another running process (lock {path}); wait for it to finish "
                "or stop it, then run again.") from None
        yield
    finally:
        os.close(fd)
