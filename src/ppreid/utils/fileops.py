"""Crash-safe file operations: run outputs (results.json), the GenePerson writer, the mini data.

A file is written whole or not at all (temp name in the same folder, fsync, ``os.replace``), and
cross-process critical sections use ``filelock``'s native lock (``fcntl.flock`` on Linux), which the
kernel drops when a process dies, so a ``kill -9`` never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ppreid.utils.errors import ConfigValueError


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


def cut_torn_tail(path: Path) -> None:
    """Truncate an append-only text file after its last newline (a ``kill -9`` may tear the last line),
    so the next append starts a fresh line."""
    path = Path(path)
    if not path.is_file():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Indented JSON, keys in insertion order (configs keep their order: it is the sampling order)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed; the file stays after release).

    ``blocking=False``: if another process holds it, raise ConfigValueError naming ``what``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, blocking=blocking)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigValueError(
            f"{what or path} is in use by another running process (lock {path}); wait for it to finish "
            "or stop it, then run again."
        ) from None
    try:
        yield
    finally:
        lock.release()


def replace_dir(tmp: Path, root: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``root`` (which may exist): two renames on one file
    system, so readers see the old folder or the new one, never a half-written one."""
    import os
    import shutil

    if root.exists():
        old = root.parent / f"{root.name}.old-{os.getpid()}"
        os.rename(root, old)
        os.rename(tmp, root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, root)
