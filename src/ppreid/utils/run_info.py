"""Facts about a run recorded in results.json: git commit, metrics, and the experiment identity.

The identity says *what* was run (model, backbone, data, loss terms, epochs, experiment, task) and
carries a hash of the fully resolved config minus the seed and minus run-local values (paths, loggers,
worker counts): two runs with the same hash differ only in their seed, so tables may pool them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRIC_NAMES = ("R1", "R5", "R10", "mAP", "mINP")
# Keys that do not change what a run computes (or are the seed itself), left out of the config hash.
HASH_EXCLUDED = (
    "seed",
    "paths",
    "hydra",
    "logger",
    "tags",
    "optimized_metric",
    "data.sampler_seed",
    "data.num_workers",
    "data.pin_memory",
    "data.test_batch_size",
    "data.prepare.progress",
    "callbacks.progress_bar",
    "callbacks.best_checkpoint",
    "callbacks.log_interval",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
)


def git_commit(repo_dir: str | Path) -> str | None:
    """The HEAD commit of ``repo_dir`` (suffixed ``-dirty`` with uncommitted changes), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`), or ``"unknown"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_environment(precision: Any) -> dict[str, Any]:
    """Where a run computed: CPU model, CUDA device, torch build, torch threads and trainer precision.

    The same configuration and seed give bit-identical figures only on the same CPU kernels, thread count
    and precision (a rebuilt sandbox CLIP on another CPU moved a PDM run by about a point of target mAP),
    so results.json records them and a study can tell runs from different machines apart.
    """
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cuda_device": cuda,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "precision": str(precision),
    }


def metrics_by_target(callback_metrics: Mapping[str, Any], stage: str = "test") -> dict[str, dict[str, float]]:
    """``{"test/<target>/R1": t, ...}`` -> ``{"<target>": {"R1": float, ...}}`` (fractions in [0, 1])."""
    out: dict[str, dict[str, float]] = {}
    prefix = stage + "/"
    for key, value in callback_metrics.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix) :].rsplit("/", 1)
        if len(parts) != 2 or parts[1] not in METRIC_NAMES:
            continue
        out.setdefault(parts[0], {})[parts[1]] = float(value)
    return {k: dict(sorted(v.items(), key=lambda kv: METRIC_NAMES.index(kv[0]))) for k, v in sorted(out.items())}


def stage_metrics(callback_metrics: Mapping[str, Any], stage: str = "val") -> dict[str, float]:
    """``{"val/R1": t, ...}`` -> ``{"R1": float, ...}`` (one evaluation set logged without a target name)."""
    return {m: float(callback_metrics[f"{stage}/{m}"]) for m in METRIC_NAMES if f"{stage}/{m}" in callback_metrics}


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(leaf, None)


def _relative_paths(obj: Any, prefixes: Sequence[tuple[str, str]]) -> Any:
    """Run- and machine-specific path prefixes -> placeholders (``<output_dir>/checkpoints``), so the
    same experiment hashes alike in every run folder and on every machine."""
    if isinstance(obj, dict):
        return {k: _relative_paths(v, prefixes) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative_paths(v, prefixes) for v in obj]
    if isinstance(obj, str):
        for prefix, name in prefixes:
            if obj == prefix or obj.startswith(prefix.rstrip("/") + "/"):
                return f"<{name}>" + obj[len(prefix) :]
    return obj


def config_hash(resolved: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over the resolved config minus :data:`HASH_EXCLUDED` (the seed among them)."""
    tree = copy.deepcopy(dict(resolved))
    paths = tree.get("paths") or {}
    for key in HASH_EXCLUDED:
        _drop(tree, key)
    prefixes = sorted(((str(v), k) for k, v in paths.items() if isinstance(v, str) and v), key=lambda kv: -len(kv[0]))
    tree = _relative_paths(tree, prefixes)
    blob = json.dumps(tree, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def experiment_identity(
    resolved: Mapping[str, Any], choices: Mapping[str, Any], arch: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What was run, for results.json. ``arch``: the model/backbone of an evaluated checkpoint's spec
    (an evaluation run is identified by the model it evaluated, not by the command's defaults)."""
    data = resolved.get("data") or {}
    model = resolved.get("model") or {}
    arch = arch or {}
    losses = model.get("losses") if isinstance(model.get("losses"), dict) else resolved.get("loss") or {}
    return {
        "model": model.get("name"),
        "backbone": arch.get("backbone") or _choice(choices.get("backbone")),
        "data": data.get("name"),
        "sources": [s.get("name", s.get("dataset")) for s in data.get("sources") or []],
        "targets": [t.get("name", t.get("dataset")) for t in data.get("targets") or []],
        "loss": {k: float((v or {}).get("weight", 1.0)) for k, v in (losses or {}).items()},
        "epochs": (resolved.get("trainer") or {}).get("max_epochs"),
        "experiment": _choice(choices.get("experiment")),
        "task_name": resolved.get("task_name"),
        "config_hash": config_hash(resolved),
    }


def _choice(value: Any) -> str | None:
    if value is None or value == "null":
        return None
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def evaluation_options(eval_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options that change evaluation numbers: ``{"flip": bool, "rerank": {k1, k2, lambda_value} | None}``."""
    eval_cfg = dict(eval_cfg or {})
    rerank = dict(eval_cfg.get("rerank") or {})
    return {
        "flip": bool(eval_cfg.get("flip", False)),
        "rerank": (
            {k: rerank[k] for k in ("k1", "k2", "lambda_value") if k in rerank} if rerank.get("enabled") else None
        ),
    }


def describe_evaluation(options: Mapping[str, Any]) -> str:
    """``flip-test off, re-ranking on (k1=20, k2=6, lambda_value=0.3)`` for logs and tables."""
    rerank = options.get("rerank")
    rr = "on (" + ", ".join(f"{k}={v}" for k, v in rerank.items()) + ")" if rerank else "off"
    return f"flip-test {'on' if options.get('flip') else 'off'}, re-ranking {rr}"


def checkpoint_training(spec: Mapping[str, Any] | None, ckpt_path: str | None) -> dict[str, Any] | None:
    """What trained an evaluated checkpoint: the ``training`` record its build spec carries (identity, seed,
    git commit), or, for checkpoints written before it did, its run folder's results.json; None if unknown."""
    training = (spec or {}).get("training")
    if isinstance(training, Mapping) and isinstance(training.get("identity"), Mapping):
        return dict(training)
    if not ckpt_path:
        return None
    results = Path(str(ckpt_path)).expanduser().resolve().parent.parent / "results.json"
    try:
        res = json.loads(results.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict) or not res.get("train") or not isinstance(res.get("identity"), dict):
        return None
    return {
        "identity": res["identity"],
        "seed": res.get("seed"),
        "git_commit": res.get("git_commit"),
        "run_dir": str(results.parent),
    }


def evaluation_identity(
    training: Mapping[str, Any],
    resolved: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    set_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """An evaluation-only run's identity: the checkpoint's training identity (model, data, epochs, ...) with
    the evaluated ``targets``; its ``config_hash`` joins the training's hash with the evaluation's (targets'
    data config, eval options, ``model.*`` values set on the command line), so evaluations of one training
    config's seeds under the same evaluation pool, and nothing else does."""
    ident = dict(training["identity"])
    data = resolved.get("data") or {}
    model_keys = {k: _select(resolved, k) for k in sorted(set_keys) if k.startswith(("model.", "backbone."))}
    eval_part = {
        "data": data,
        "evaluation": dict(evaluation),
        "model_keys": model_keys,
        "paths": resolved.get("paths") or {},
    }
    eval_hash = config_hash(eval_part)
    ident["targets"] = [t.get("name", t.get("dataset")) for t in data.get("targets") or []]
    ident["config_hash"] = hashlib.sha256(
        f"{training['identity'].get('config_hash')}+{eval_hash}".encode()
    ).hexdigest()[:16]
    return ident


def _select(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node
