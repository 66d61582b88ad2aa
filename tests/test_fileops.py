"""file_lock (filelock's native lock): the same exclusion as the ``fcntl.flock`` it replaced, held across
processes, released on exit and by the kernel when the holder is killed."""

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

from ppreid.utils.errors import ConfigValueError
from ppreid.utils.fileops import file_lock

HOLD = """
import sys, time
from ppreid.utils.fileops import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(code: str, path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_while_held_and_admitted_after(tmp_path):
    lock = tmp_path / "sub" / "x.lock"
    with file_lock(lock):
        assert lock.is_file()  # parent folder and file created
        refused = pytest.raises(ConfigValueError, match=r"^the mini data is in use by another running process \(lock ")
        with refused, file_lock(lock, blocking=False, what="the mini data"):
            pass
    with file_lock(lock, blocking=False):  # released on exit
        pass
    assert lock.is_file()  # the file stays: later holders lock the same inode


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    lock = tmp_path / "x.lock"
    proc = _holder(HOLD, lock)
    try:
        with (
            pytest.raises(ConfigValueError, match="in use by another running process"),
            file_lock(lock, blocking=False),
        ):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with file_lock(lock, blocking=False):
        pass


def test_excludes_and_waits_for_a_plain_flock_holder(tmp_path):
    """A process holding the old lock (``fcntl.flock`` on the same file, e.g. an older checkout writing the
    same data) excludes us, and a blocking ``file_lock`` waits for it."""
    lock = tmp_path / "x.lock"
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(1.0)\n"
    )
    proc = _holder(code, lock)
    with pytest.raises(ConfigValueError), file_lock(lock, blocking=False):
        pass
    start = time.monotonic()
    with file_lock(lock):  # blocks until the holder exits (it holds the lock for 1 s)
        fd = os.open(lock, os.O_RDWR)
        try:  # and while we hold it, a plain flock is refused
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert time.monotonic() - start > 0.5
    proc.wait()
