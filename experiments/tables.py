"""Build a results table from finished runs (their ``results.json`` files only).

    python experiments/tables.py logs/train/multiruns/2026-11-23_10-00-00
    python experiments/tables.py logs/train/runs/* --metrics R1 R5 mAP --format csv --out table.csv
    python experiments/tables.py logs/ --label model loss epochs --targets night_cctv station_indoor
    python experiments/tables.py logs/ --include-debug --show-hash

Every folder given is searched recursively for ``results.json``. Runs are grouped by
``identity.config_hash`` alone (same resolved config, only the seed differs), so runs of different
configs are never pooled. A cell is the mean over the group's runs (seeds), with the sample standard
deviation when there are several, in percent; ``mean/<metric>`` is, per run, the mean over the
table's targets, then mean ± std over the runs. The label columns (``--label``) come from the
identity block (or the top level of results.json); when two configs share labels a ``config``
column with the short hash tells them apart. Debug, evaluation-only (``train=false``) and partial
(``limit_*_batches``) runs are left out unless their ``--include-*`` flag is given, and files
without an identity block (older run writer) are left out with a warning.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
DEFAULT_METRICS = ("R1", "mAP")
DEFAULT_LABEL = ("model", "backbone", "data", "experiment")
SHORT_HASH = 8
# (results.json flag, value that marks the kind, name, --include flag)
RUN_KINDS = (
    ("debug", True, "debug", "--include-debug"),
    ("train", False, "eval-only", "--include-eval-only"),
    ("partial", True, "partial", "--include-partial"),
)
FLAG_DEFAULTS = {"debug": False, "train": True, "partial": False}


class TableInputError(ValueError):
    """A path, results.json file or option that cannot be used; the message says which and why."""


class Run(NamedTuple):
    path: Path
    result: dict


def _warn_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def find_results(paths: Iterable[str]) -> List[Path]:
    """All ``results.json`` under the given files/folders, sorted; error if a path is missing or none found."""
    paths = list(paths)
    found: List[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.name == "results.json":
            found.append(p)
        elif p.is_dir():
            found.extend(p.rglob("results.json"))
        else:
            raise TableInputError(f"{p}: no such results.json file or run folder")
    if not found:
        raise TableInputError(f"no results.json found under {', '.join(map(str, paths))}; "
                              "point at finished run folders (each run writes <run dir>/results.json)")
    return sorted(set(found))


def load_result(path: Path) -> Run:
    """Read one results.json; error if it is unreadable or malformed (a missing identity is allowed:
    ``select_runs`` leaves such legacy files out)."""
    path = Path(path)
    try:
        res = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TableInputError(f"{path}: not a readable results.json ({err})") from err
    if not isinstance(res, dict) or not isinstance(res.get("test"), dict) \
            or not all(isinstance(m, dict) for m in res["test"].values()):
        keys = list(res)[:8] if isinstance(res, dict) else type(res).__name__
        raise TableInputError(f"{path}: expected a 'test' map of target -> metrics, got {keys}")
    for target, metrics in res["test"].items():
        for name, v in metrics.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise TableInputError(f"{path}: test.{target}.{name} is {v!r}, expected a number")
    ident = res.get("identity")
    if ident is not None and not (isinstance(ident, dict) and isinstance(ident.get("config_hash"), str)
                                  and ident["config_hash"]):
        raise TableInputError(f"{path}: 'identity' has no 'config_hash' string; re-run it with the current train.py")
    return Run(path, res)


def _flag(run: Run, key: str):
    return run.result.get(key, FLAG_DEFAULTS[key])


def _kinds(run: Run) -> List[Tuple[str, str]]:
    """(kind name, --include flag) of every left-out-by-default kind this run is."""
    return [(name, flag) for key, marker, name, flag in RUN_KINDS if bool(_flag(run, key)) == marker]


def select_runs(runs: Sequence[Run], include_debug: bool = False, include_eval_only: bool = False,
                include_partial: bool = False, warn: Callable[[str], None] = _warn_stderr) -> List[Run]:
    """The runs to tabulate; ``warn`` gets one line per legacy file and per kind of left-out run.

    Error if nothing is left, naming the flags that would include the left-out runs.
    """
    included = {"debug": include_debug, "eval-only": include_eval_only, "partial": include_partial}
    kept: List[Run] = []
    n_legacy = 0
    left_out: Dict[str, int] = {name: 0 for name in included}
    needed: Dict[str, None] = {}
    for run in runs:
        if run.result.get("identity") is None:
            n_legacy += 1
            warn(f"warning: {run.path}: no 'identity' block (written by an older train.py); "
                 "left out, re-run it to tabulate it")
            continue
        blocking = [(name, flag) for name, flag in _kinds(run) if not included[name]]
        for name, flag in blocking:
            left_out[name] += 1
            needed[flag] = None
        if not blocking:
            kept.append(run)
    for key, marker, name, flag in RUN_KINDS:
        n = left_out[name]
        if n:
            warn(f"note: left out {n} {name} run{'s' if n != 1 else ''} ({key}={json.dumps(marker)}); "
                 f"add {flag} to include {'them' if n != 1 else 'it'}")
    if not kept:
        why = []
        if needed:
            why.append(f"add {' '.join(needed)} to include the left-out runs")
        if n_legacy:
            why.append(f"re-run the {n_legacy} run(s) without an identity block")
        raise TableInputError("no runs left to tabulate: " + "; ".join(why or ["no runs given"]))
    return kept


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _cell(values: Optional[List[float]]) -> str:
    if not values:
        return "-"
    mu, sd = mean_std(values)
    return f"{mu:.1f}" if sd is None else f"{mu:.1f} ± {sd:.1f}"


def _fmt_value(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt_value(x) for x in v) or "-"
    if isinstance(v, dict):
        return ",".join(f"{k}={_fmt_value(x)}" for k, x in v.items()) or "-"
    return str(v)


def _label_value(run: Run, key: str) -> str:
    ident = run.result["identity"]
    return _fmt_value(ident[key] if key in ident else run.result.get(key))


def _check_group(runs: List[Run]) -> None:
    """Runs sharing a config_hash must share their identity and kind; otherwise the hash is wrong."""
    first = runs[0]
    for run in runs[1:]:
        for prefix, a, b in [("identity.", first.result["identity"], run.result["identity"]),
                             ("", {k: _flag(first, k) for k in FLAG_DEFAULTS},
                              {k: _flag(run, k) for k in FLAG_DEFAULTS})]:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            if diff:
                k = diff[0]
                raise TableInputError(
                    f"{first.path} and {run.path} share config_hash {first.result['identity']['config_hash']} "
                    f"but differ in {prefix}{k} ({a.get(k)!r} vs {b.get(k)!r}); the run writer's hash is "
                    "wrong, tabulate these folders separately")


def _metric_value(run: Run, target: str, metric: str) -> Optional[float]:
    v = run.result["test"].get(target, {}).get(metric)
    return None if v is None else float(v) * 100


def build_table(runs: Sequence[Run], metrics: Sequence[str] = DEFAULT_METRICS,
                label: Sequence[str] = DEFAULT_LABEL, targets: Optional[Sequence[str]] = None,
                show_hash: bool = False,
                warn: Callable[[str], None] = _warn_stderr) -> Tuple[List[str], List[List[str]]]:
    """Header and rows: one row per ``identity.config_hash``, cells "mean ± std" in %.

    Columns: ``label`` values, ``config`` (short hash; when labels collide or ``show_hash``),
    ``kind`` (only when debug / eval-only / partial runs are in), ``runs``, ``seeds``, one column per
    (target, metric), then ``mean/<metric>``. A cell is "-" unless every run of the group has the value.
    ``runs`` must carry an identity block (see ``select_runs``).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise TableInputError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    metrics = list(dict.fromkeys(metrics))
    if not runs:
        raise TableInputError("no runs to tabulate")
    known = {k for r in runs for k in r.result["identity"]} | {k for r in runs for k in r.result}
    for key in label:
        if key not in known:
            ident_keys = sorted({k for r in runs for k in r.result["identity"]})
            raise TableInputError(f"unknown label key {key!r}; identity keys: {', '.join(ident_keys)} "
                                  "(or any top-level key of results.json)")
    present = sorted({t for r in runs for t in r.result["test"]})
    if targets is None:
        shown = present
    else:
        missing = [t for t in targets if t not in present]
        if missing:
            raise TableInputError(f"unknown target {missing[0]!r}; the runs have: {', '.join(present) or 'none'}")
        shown = list(dict.fromkeys(targets))

    groups: Dict[str, List[Run]] = {}
    for run in runs:
        groups.setdefault(run.result["identity"]["config_hash"], []).append(run)
    for group in groups.values():
        _check_group(group)
    labels = {h: tuple(_label_value(g[0], k) for k in label) for h, g in groups.items()}
    collide = len(set(labels.values())) < len(labels)
    with_hash = show_hash or collide
    short = SHORT_HASH
    while len({h[:short] for h in groups}) < len(groups):
        short += 1
    with_kind = any(_kinds(r) for r in runs)

    header = list(label) + (["config"] if with_hash else []) + (["kind"] if with_kind else []) + ["runs", "seeds"]
    header += [f"{t}/{m}" for t in shown for m in metrics] + [f"mean/{m}" for m in metrics]
    rows = []
    for h in sorted(groups, key=lambda h: (labels[h], h)):
        group = groups[h]
        seeds = [r.result.get("seed") for r in group]
        for s in dict.fromkeys(s for s in seeds if seeds.count(s) > 1):
            paths = ", ".join(str(r.path) for r in group if r.result.get("seed") == s)
            warn(f"warning: config {h[:short]} has {seeds.count(s)} runs with seed {s} "
                 f"(repeated run?); all are kept: {paths}")
        row = list(labels[h]) + ([h[:short]] if with_hash else [])
        row += ([",".join(name for name, _ in _kinds(group[0])) or "-"] if with_kind else [])
        row += [str(len(group)), ",".join("?" if s is None else str(s) for s in sorted(seeds, key=_seed_key))]
        for t in shown:
            for m in metrics:
                vals = [_metric_value(r, t, m) for r in group]
                row.append(_cell(None if None in vals else vals))
        for m in metrics:
            per_run = []
            for r in group:
                vals = [_metric_value(r, t, m) for t in shown]
                per_run.append(None if not vals or None in vals else sum(vals) / len(vals))
            row.append(_cell(None if None in per_run else per_run))
        rows.append(row)
    return header, rows


def _seed_key(seed) -> Tuple[bool, float, str]:
    """Numbers in numeric order, then anything else (a missing seed) by its text."""
    number = isinstance(seed, (int, float)) and not isinstance(seed, bool)
    return (not number, seed if number else 0.0, str(seed))


def render(header: Sequence[str], rows: Sequence[Sequence[str]], fmt: str = "markdown") -> str:
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return buf.getvalue()
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same folder + ``os.replace``: a reader never sees half a table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("paths", nargs="+", help="run folders (searched recursively) or results.json files")
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help=f"any of {' '.join(METRICS)}")
    ap.add_argument("--label", nargs="+", default=list(DEFAULT_LABEL),
                    help="label columns: identity keys (or top-level results.json keys)")
    ap.add_argument("--targets", nargs="+", help="targets to show, in this order (default: all, sorted)")
    ap.add_argument("--show-hash", action="store_true", help="always add the config (short hash) column")
    ap.add_argument("--include-debug", action="store_true", help="include debug runs (debug=..., fast_dev_run)")
    ap.add_argument("--include-eval-only", action="store_true", help="include evaluation-only runs (train=false)")
    ap.add_argument("--include-partial", action="store_true", help="include runs evaluated on part of a target")
    ap.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--group", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        if args.group is not None:
            raise TableInputError("--group was removed: runs are grouped by identity.config_hash; "
                                  "use --label to choose the label columns")
        unknown = [m for m in args.metrics if m not in METRICS]
        if unknown:
            raise TableInputError(f"unknown metric {unknown[0]!r} in --metrics; choose from {', '.join(METRICS)}")
        runs = [load_result(p) for p in find_results(args.paths)]
        kept = select_runs(runs, args.include_debug, args.include_eval_only, args.include_partial)
        header, rows = build_table(kept, args.metrics, args.label, args.targets, args.show_hash)
        text = render(header, rows, fmt=args.format)
        if args.out:
            write_atomic(Path(args.out), text)
    except TableInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: cannot write {args.out}: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
