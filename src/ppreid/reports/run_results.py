"""What a finished run left behind, for the tables: find and read ``results.json`` files, tell the kinds
of runs apart (training, audit, debug, evaluation-only, untrained, partial), say why a run folder has
none, select the runs a table shows, and the metric names a table may ask for.

``experiments/tables.py``, ``experiments/paired.py`` and ``experiments/privacy_plot.py`` build on it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
# (results.json flag, value that marks the kind, name, --include flag)
RUN_KINDS = (
    ("debug", True, "debug", "--include-debug"),
    ("train", False, "eval-only", "--include-eval-only"),
    ("partial", True, "partial", "--include-partial"),
)
FLAG_DEFAULTS = {"debug": False, "train": True, "partial": False}
KIND_FLAGS = {
    "debug": "--include-debug",
    "eval-only": "--include-eval-only",
    "untrained": "--include-eval-only",
    "partial": "--include-partial",
}
KIND_WHY = {
    "debug": "debug=... or fast_dev_run",
    "eval-only": "train=false",
    "untrained": "trained 0 epochs",
    "partial": "limit_*_batches: part of a set",
}
MAX_LISTED = 10
# Privacy metrics of audit runs: "<kind>:<attacker>" (attacker, "strongest" or, for SSIM / PSNR, "mean_image")
# and run-level values. (results.json key, scale, decimals).
PRIVACY_KINDS = {
    "SSIM": ("ssim", 1, 3),
    "PSNR": ("psnr", 1, 2),
    "null": ("null_ssim", 1, 3),
    "gain": ("ssim_gain", 1, 3),
    "leak": ("leakage_r1", 100, 1),
    "leakref": ("leakage_r1_ref", 100, 1),
    "nleak": ("leakage_norm", 100, 1),
}
# run-level values: (dotted path in the target's privacy entry, scale, decimals)
PRIVACY_SCALARS = {
    "URR": ("urr", 1, 3),
    "nURR": (None, 1, 3),
    "chance": ("chance_r1", 100, 1),
    "gain": ("ssim_gain", 1, 3),
    "gain_in": ("in_domain.ssim_gain", 1, 3),
    "nleak": ("leakage_norm", 100, 1),
    "nleak_in": ("in_domain.leakage_norm", 100, 1),
    "probe_nuis": ("probes.nuisance.mean_gain", 100, 1),
    "probe_soft": ("probes.soft_biometric.mean_gain", 100, 1),
}
# Run-level values (one per run, whatever the targets): shown once per row, after the per-target columns.
#   val:<metric>              the source validation split's metric at the end of training (results.json "val"), %
#   loss:<term>[@<at>]        a training loss's epoch mean (results.json "training.loss"; at: first, last (the
#                             default) or an epoch number)
#   run:<dotted.path>         any number in results.json, as written (e.g. run:privacy.cross_domain.background_gain)
#   minutes                   the run's wall time (wall_time_s / 60)
RUN_PREFIXES = {"val": 1, "loss": 3, "run": 3}  # prefix -> decimals
RUN_SCALARS = {"minutes": 1}
LOSS_AT = ("first", "last")


class TableInputError(ValueError):
    """A path, results.json file or option that cannot be used; the message says which and why."""


class Run(NamedTuple):
    path: Path
    result: dict


def _warn_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


# Files that make a folder a train.py run folder (train.py writes status.json and config_resolved.yaml;
# Hydra writes .hydra/hydra.yaml, whose job name tells train.py's runs from synth.py's).
RUN_FOLDER_MARKERS = ("status.json", "config_resolved.yaml", "hydra.yaml")


def _is_train_run(marker: Path) -> bool:
    if marker.name != "hydra.yaml":
        return True
    if marker.parent.name != ".hydra":
        return False
    try:
        text = marker.read_text(errors="replace")
    except OSError:
        return False
    return "\n  job:\n    name: train\n" in text


def skip_reason(folder: Path) -> str:
    """Why a run folder has no results.json, from its status.json (or, for older runs, its log's end)."""
    try:
        status = json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        status = None
    if isinstance(status, dict) and status.get("status") == "failed":
        return f"failed: {status.get('error') or 'no error recorded'}"
    if isinstance(status, dict) and status.get("status") == "running":
        return f"no results.json: started {status.get('started')} and never finished (killed, or still running)"
    if isinstance(status, dict) and status.get("status") == "interrupted":
        return "interrupted by the user before it wrote results.json"
    logs = sorted(folder.glob("*.log"))
    tail = ""
    if logs:
        lines = [ln.strip() for ln in logs[0].read_text(errors="replace").splitlines() if ln.strip()]
        tail = f"; {logs[0].name} ends: {lines[-1][:160]!r}" if lines else f"; {logs[0].name} is empty"
    return f"no results.json (failed or stopped before the end; no status.json, an older run){tail}"


# A results bundle (experiments/bundle.py): <bundle>/bundle.json and <bundle>/<row>/s<seed>.json, each the
# part of one run's results.json that the tables read.
BUNDLE_MANIFEST = "bundle.json"


def is_bundle_file(path: Path) -> bool:
    """``<bundle>/<row>/s<seed>.json`` beside a ``<bundle>/bundle.json``."""
    return path.suffix == ".json" and path.name.startswith("s") and (path.parent.parent / BUNDLE_MANIFEST).is_file()


def bundle_files(folder: Path) -> list[Path]:
    """The run files of every bundle at, under or (a row folder) just above ``folder``."""
    manifests = list(folder.rglob(BUNDLE_MANIFEST))
    if (folder.parent / BUNDLE_MANIFEST).is_file():  # one row of a bundle
        return sorted(f for f in folder.glob("s*.json") if is_bundle_file(f))
    return sorted(f for m in manifests for f in m.parent.glob("*/s*.json") if is_bundle_file(f))


def find_results(paths: Iterable[str], warn: Callable[[str], None] = _warn_stderr) -> list[Path]:
    """All ``results.json`` under the given files/folders, sorted; ``warn`` gets one line per run folder
    without one, saying why (its status.json). Error if a path is missing or no results.json is found."""
    paths = list(paths)
    found: list[Path] = []
    skipped: dict[Path, str] = {}
    for raw in paths:
        p = Path(raw)
        if p.is_file() and (p.name == "results.json" or is_bundle_file(p)):
            found.append(p)
        elif p.is_dir():
            found.extend(p.rglob("results.json"))
            found.extend(bundle_files(p))
            for marker in RUN_FOLDER_MARKERS:
                for m in p.rglob(marker):
                    folder = m.parent.parent if m.name == "hydra.yaml" else m.parent
                    if _is_train_run(m) and not (folder / "results.json").is_file() and folder not in skipped:
                        skipped[folder] = skip_reason(folder)
        else:
            raise TableInputError(f"{p}: no such results.json file or run folder")
    for folder in sorted(skipped):
        warn(f"skipped {folder}: {skipped[folder]}")
    if not found:
        failed = f" ({len(skipped)} run folder(s) without one, listed above)" if skipped else ""
        raise TableInputError(
            f"no results.json found under {', '.join(map(str, paths))}{failed}; "
            "point at finished run folders (each run writes <run dir>/results.json) or a results bundle "
            "(experiments/results/<study>)"
        )
    return sorted(set(found))


def load_result(path: Path) -> Run:
    """Read one results.json; error if it is unreadable or malformed (a missing identity is allowed:
    ``select_runs`` leaves such legacy files out)."""
    path = Path(path)
    try:
        res = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TableInputError(f"{path}: not a readable results.json ({err})") from err
    if (
        not isinstance(res, dict)
        or not isinstance(res.get("test"), dict)
        or not all(isinstance(m, dict) for m in res["test"].values())
    ):
        keys = list(res)[:8] if isinstance(res, dict) else type(res).__name__
        raise TableInputError(f"{path}: expected a 'test' map of target -> metrics, got {keys}")
    for target, metrics in res["test"].items():
        for name, v in metrics.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise TableInputError(f"{path}: test.{target}.{name} is {v!r}, expected a number")
    ident = res.get("identity")
    if ident is not None and not (
        isinstance(ident, dict) and isinstance(ident.get("config_hash"), str) and ident["config_hash"]
    ):
        raise TableInputError(f"{path}: 'identity' has no 'config_hash' string; re-run it with the current train.py")
    return Run(path, res)


def is_audit(run: Run) -> bool:
    """A privacy audit (model=attack): it evaluates a checkpoint (train=false) but trains its attackers."""
    return isinstance(run.result.get("privacy"), dict) and isinstance(run.result.get("audit"), dict)


def is_untrained(run: Run) -> bool:
    """train=true with 0 epochs (older train.py allowed it): the initial weights' numbers, not a training run."""
    return (
        not is_audit(run)
        and bool(run.result.get("train", True))
        and (run.result.get("identity") or {}).get("epochs") == 0
    )


def _flag(run: Run, key: str):
    if key == "train" and is_audit(run):
        return True  # not an evaluation-only copy of a training run: the audit's own numbers
    if key == "train" and is_untrained(run):
        return False
    return run.result.get(key, FLAG_DEFAULTS[key])


def group_key(run: Run) -> str:
    """Runs with equal keys differ only in their seed: ``identity.config_hash``, or for an audit
    ``audit.group_hash`` (its config_hash includes the audited checkpoint's path, which differs per seed)."""
    if is_audit(run) and run.result["audit"].get("group_hash"):
        return str(run.result["audit"]["group_hash"])
    return run.result["identity"]["config_hash"]


def _kinds(run: Run) -> list[tuple[str, str]]:
    """(kind name, --include flag) of every left-out-by-default kind this run is."""
    return [
        ("untrained" if name == "eval-only" and is_untrained(run) else name, flag)
        for key, marker, name, flag in RUN_KINDS
        if bool(_flag(run, key)) == marker
    ]


def kind_cell(run: Run) -> str:
    """The ``kind`` column: ``audit`` or ``trained`` (or ``eval-only`` / ``untrained``), ``+debug``, ``+partial``."""
    kinds = [name for name, _ in _kinds(run)]
    base = "audit" if is_audit(run) else ("trained" if bool(_flag(run, "train")) else None)
    return "+".join(([base] if base else []) + kinds)


def select_runs(
    runs: Sequence[Run],
    include_debug: bool = False,
    include_eval_only: bool = False,
    include_partial: bool = False,
    warn: Callable[[str], None] = _warn_stderr,
) -> list[Run]:
    """The runs to tabulate; ``warn`` gets one line per legacy file and per kind of left-out run.

    Error if nothing is left, naming the flags that would include the left-out runs.
    """
    included = {
        "debug": include_debug,
        "eval-only": include_eval_only,
        "untrained": include_eval_only,
        "partial": include_partial,
    }
    kept: list[Run] = []
    n_legacy = 0
    left_out: dict[tuple[str, ...], list[Path]] = {}  # the kinds of a run (each run counted once) -> folders
    needed: dict[str, None] = {}
    for run in runs:
        if run.result.get("identity") is None:
            n_legacy += 1
            warn(
                f"warning: {run.path}: no 'identity' block (written by an older train.py); "
                "left out, re-run it to tabulate it"
            )
            continue
        kinds = _kinds(run)
        blocking = [flag for name, flag in kinds if not included[name]]
        if blocking:
            left_out.setdefault(tuple(name for name, _ in kinds), []).append(run.path.parent)
            needed.update(dict.fromkeys(blocking))
        else:
            kept.append(run)
    for combo, folders in left_out.items():
        n = len(folders)
        flags = " ".join(dict.fromkeys(KIND_FLAGS[k] for k in combo if not included[k]))
        shown = ", ".join(map(str, folders[:MAX_LISTED])) + (f" (+{n - MAX_LISTED} more)" if n > MAX_LISTED else "")
        warn(
            f"note: left out {n} {'+'.join(combo)} run{'s' if n != 1 else ''} "
            f"({'; '.join(KIND_WHY[k] for k in combo)}); add {flags} to include {'them' if n != 1 else 'it'}: {shown}"
        )
    if not kept:
        why = []
        if needed:
            why.append(f"add {' '.join(needed)} to include the left-out runs")
        if n_legacy:
            why.append(f"re-run the {n_legacy} run(s) without an identity block")
        raise TableInputError("no runs left to tabulate: " + "; ".join(why or ["no runs given"]))
    return kept


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _fmt_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt_value(x) for x in v) or "-"
    if isinstance(v, dict):
        return ",".join(f"{k}={_fmt_value(x)}" for k, x in v.items()) or "-"
    return str(v)


def is_run_level(metric: str) -> bool:
    """A value a run has once (validation, training losses, ``run:`` paths, minutes), not per target."""
    prefix, sep, rest = metric.partition(":")
    return metric in RUN_SCALARS or bool(sep and prefix in RUN_PREFIXES and rest)


def is_target_field(metric: str) -> bool:
    """``<section>.<key>``: a per-target value in another section of results.json, e.g.
    ``scene_sensitivity.diff_bg_ap`` reads ``scene_sensitivity[<target>]["diff_bg_ap"]``: a fraction, shown
    in %; ``privacy.<dotted.path>`` reads the audit's entry of the target as written (SSIM units), e.g.
    ``privacy.in_domain.image_specific_gain``."""
    section, dot, key = metric.partition(".")
    return bool(dot and section and key and ":" not in metric and section not in ("test", "val", "identity"))


def _valid_loss(rest: str) -> bool:
    term, at_sep, at = rest.partition("@")
    return bool(term) and (not at_sep or at in LOSS_AT or at.isdigit())


def check_metrics(metrics: Sequence[str]) -> None:
    """Error naming the first metric that is neither a ReID, privacy, run-level nor per-target field metric."""
    for m in metrics:
        kind, sep, who = m.partition(":")
        if m in METRICS or m in PRIVACY_SCALARS or (sep and kind in PRIVACY_KINDS and who):
            continue
        if is_run_level(m) and (kind != "val" or who in METRICS) and (kind != "loss" or _valid_loss(who)):
            continue
        if is_target_field(m):
            continue
        raise TableInputError(
            f"unknown metric {m!r} in --metrics; choose from {', '.join(METRICS)}, or for privacy audits "
            f"{', '.join(PRIVACY_SCALARS)} and <kind>:<attacker> with kind {', '.join(PRIVACY_KINDS)} and attacker "
            "l1, gan, diffusion, optim, strongest (SSIM / PSNR also mean_image), e.g. gain:strongest; per run "
            f"val:<metric>, loss:<term>[@first|@last|@<epoch>], run:<dotted.path>, minutes; per target "
            "<section>.<key> (e.g. scene_sensitivity.diff_bg_ap)"
        )


def _decimals(metric: str) -> int:
    kind = metric.partition(":")[0]
    if kind in PRIVACY_KINDS and ":" in metric:
        return PRIVACY_KINDS[kind][2]
    if is_run_level(metric):
        return RUN_SCALARS.get(metric, RUN_PREFIXES.get(kind, 3))
    if is_target_field(metric):
        return 3 if metric.startswith("privacy.") else 1
    return PRIVACY_SCALARS[metric][2] if metric in PRIVACY_SCALARS else 1
