"""Facts about a run recorded in results.json: git commit, metrics pulled out of the trainer."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

METRIC_NAMES = ("R1", "R5", "R10", "mAP", "mINP")


def git_commit(repo_dir: str | Path) -> Optional[str]:
    """The HEAD commit of ``repo_dir`` (suffixed ``-dirty`` with uncommitted changes), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def metrics_by_target(callback_metrics: Mapping[str, Any], stage: str = "test") -> Dict[str, Dict[str, float]]:
    """``{"test/<target>/R1": t, ...}`` -> ``{"<target>": {"R1": float, ...}}`` (fractions in [0, 1])."""
    out: Dict[str, Dict[str, float]] = {}
    prefix = stage + "/"
    for key, value in callback_metrics.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].rsplit("/", 1)
        if len(parts) != 2 or parts[1] not in METRIC_NAMES:
            continue
        out.setdefault(parts[0], {})[parts[1]] = float(value)
    return {k: dict(sorted(v.items(), key=lambda kv: METRIC_NAMES.index(kv[0]))) for k, v in sorted(out.items())}
