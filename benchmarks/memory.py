"""Process memory readings for the benchmarks (Linux /proc): current RSS and the peak of one call."""

from __future__ import annotations

import os


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def call_peak_bytes() -> int | None:
    """VmHWM: peak RSS since the last reset_call_peak() (Linux), or None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            kib = next(line for line in f if line.startswith("VmHWM")).split()[1]
        return int(kib) * 1024
    except (OSError, StopIteration):
        return None


def reset_call_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass
