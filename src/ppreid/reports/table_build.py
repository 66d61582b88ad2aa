"""One results table from finished runs: group runs by config, one cell per (target, metric) as mean ± std
over the group's seeds, a line saying what the numbers are, markdown or csv. The command line around it
(run folders, bundles, published rows, pairs, docs blocks) is :mod:`ppreid.reports.tables`, whose
docstring describes the columns."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ppreid.reports.columns import DEFAULT_METRICS, metric_value, run_value
from ppreid.reports.run_results import (
    FLAG_DEFAULTS,
    METRICS,
    Run,
    TableInputError,
    _decimals,
    _flag,
    _fmt_value,
    _kinds,
    _warn_stderr,
    check_metrics,
    group_key,
    is_audit,
    is_run_level,
    is_target_field,
    kind_cell,
    mean_std,
)

DEFAULT_LABEL = ("model", "backbone", "data", "experiment")
SHORT_HASH = 8
PRIVACY_LABEL = ("extractor.model", "extractor.experiment")


def _cell(values: list[float] | None, decimals: int = 1) -> str:
    if not values:
        return "-"
    mu, sd = mean_std(values)
    return f"{mu:.{decimals}f}" if sd is None else f"{mu:.{decimals}f} ± {sd:.{decimals}f}"


def _label_value(run: Run, key: str) -> str:
    ident = run.result["identity"]
    if key.startswith("extractor.") and key not in ident:
        if not is_audit(run):  # a training run is its own extractor
            return _label_value(run, key[len("extractor.") :])
        return _fmt_value(((run.result.get("audit") or {}).get("extractor") or {}).get(key[len("extractor.") :]))
    return _fmt_value(ident[key] if key in ident else run.result.get(key))


def _label_keys(runs: Sequence[Run]) -> set:
    keys = {k for r in runs for k in r.result["identity"]} | {k for r in runs for k in r.result}
    return keys | {f"extractor.{k}" for r in runs if is_audit(r) for k in r.result["audit"].get("extractor") or {}}


def _check_group(runs: list[Run]) -> None:
    """Runs sharing a config_hash must share their identity and kind; otherwise the hash is wrong."""
    first = runs[0]
    skip = {"config_hash"} if is_audit(first) else set()  # audits of different checkpoints hash apart
    for run in runs[1:]:
        for prefix, a, b in [
            (
                "identity.",
                {k: v for k, v in first.result["identity"].items() if k not in skip},
                {k: v for k, v in run.result["identity"].items() if k not in skip},
            ),
            ("", {k: _flag(first, k) for k in FLAG_DEFAULTS}, {k: _flag(run, k) for k in FLAG_DEFAULTS}),
        ]:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            if diff:
                k = diff[0]
                raise TableInputError(
                    f"{first.path} and {run.path} share config_hash {group_key(first)} "
                    f"but differ in {prefix}{k} ({a.get(k)!r} vs {b.get(k)!r}); the run writer's hash is "
                    "wrong, tabulate these folders separately"
                )


def build_table(
    runs: Sequence[Run],
    metrics: Sequence[str] = DEFAULT_METRICS,
    label: Sequence[str] = DEFAULT_LABEL,
    targets: Sequence[str] | None = None,
    show_hash: bool = False,
    warn: Callable[[str], None] = _warn_stderr,
    baseline: dict[str, tuple[float, float]] | None = None,
    mean_only: bool = False,
) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per ``identity.config_hash``, cells "mean ± std" in %.

    Columns: ``label`` values, ``config`` (short hash; when labels collide or ``show_hash``),
    ``kind`` (only when debug / eval-only / partial runs are in), ``runs``, ``seeds``, one column per
    (target, metric), then ``mean/<metric>``. A cell is "-" unless every run of the group has the value.
    Run-level metrics (``val:``, ``loss:``, ``run:``, ``minutes``; ``run_results.is_run_level``) get one
    column each, after the per-target ones.
    ``runs`` must carry an identity block (see ``select_runs``). Audits are grouped by ``group_key``;
    privacy metrics (``check_metrics``) read their ``privacy`` section, ``nURR`` needs ``baseline``
    (``privacy_baseline``); ``mean_only`` keeps only the ``mean/<metric>`` columns.
    """
    check_metrics(metrics)
    metrics = list(dict.fromkeys(metrics))
    run_metrics = [m for m in metrics if is_run_level(m)]
    metrics = [m for m in metrics if not is_run_level(m)]
    if not runs:
        raise TableInputError("no runs to tabulate")
    known = _label_keys(runs)
    for key in label:
        if key not in known:
            ident_keys = sorted({k for r in runs for k in r.result["identity"]})
            raise TableInputError(
                f"unknown label key {key!r}; identity keys: {', '.join(ident_keys)} "
                "(or any top-level key of results.json)"
            )
    present = sorted({t for r in runs for t in r.result["test"]})
    if targets is None:
        shown = present
    else:
        missing = [t for t in targets if t not in present]
        if missing:
            raise TableInputError(f"unknown target {missing[0]!r}; the runs have: {', '.join(present) or 'none'}")
        shown = list(dict.fromkeys(targets))

    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run), []).append(run)
    for group in groups.values():
        _check_group(group)
    labels = {h: tuple(_label_value(g[0], k) for k in label) for h, g in groups.items()}
    collide = len(set(labels.values())) < len(labels)
    with_hash = show_hash or collide
    short = SHORT_HASH
    while len({h[:short] for h in groups}) < len(groups):
        short += 1
    with_kind = any(_kinds(r) for r in runs) or len({is_audit(r) for r in runs}) > 1

    header = list(label) + (["config"] if with_hash else []) + (["kind"] if with_kind else []) + ["runs", "seeds"]
    per_target = [] if mean_only else shown
    header += [f"{t}/{m}" for t in per_target for m in metrics] + [f"mean/{m}" for m in metrics] + run_metrics
    rows = []
    for h in sorted(groups, key=lambda h: (labels[h], h)):
        group = groups[h]
        seeds = [r.result.get("seed") for r in group]
        for s in dict.fromkeys(s for s in seeds if seeds.count(s) > 1):
            paths = ", ".join(str(r.path) for r in group if r.result.get("seed") == s)
            warn(
                f"warning: config {h[:short]} has {seeds.count(s)} runs with seed {s} "
                f"(repeated run?); all are kept: {paths}"
            )
        row = list(labels[h]) + ([h[:short]] if with_hash else [])
        row += [kind_cell(group[0])] if with_kind else []
        row += [str(len(group)), ",".join("?" if s is None else str(s) for s in sorted(seeds, key=_seed_key))]
        for t in per_target:
            for m in metrics:
                vals = [metric_value(r, t, m, baseline) for r in group]
                row.append(_cell(None if None in vals else vals, _decimals(m)))
        for m in metrics:
            per_run = []
            for r in group:
                vals = [metric_value(r, t, m, baseline) for t in shown]
                per_run.append(None if not vals or None in vals else sum(vals) / len(vals))
            row.append(_cell(None if None in per_run else per_run, _decimals(m)))
        for m in run_metrics:
            vals = [run_value(r, m) for r in group]
            row.append(_cell(None if None in vals else vals, _decimals(m)))
        rows.append(row)
    return header, rows


def _seed_key(seed) -> tuple[bool, float, str]:
    """Numbers in numeric order, then anything else (a missing seed) by its text."""
    number = isinstance(seed, (int, float)) and not isinstance(seed, bool)
    return (not number, seed if number else 0.0, str(seed))


def units_note(metrics: Sequence[str]) -> str:
    """One line saying what the table's numbers are (which are %, which are not)."""
    percent = [
        m
        for m in metrics
        if m in METRICS
        or m == "chance"
        or m.partition(":")[0] in ("leak", "leakref", "val")
        or (is_target_field(m) and not m.startswith("privacy."))
    ]
    other = {
        "SSIM": "SSIM in [0, 1]",
        "PSNR": "PSNR in dB",
        "URR": "URR a ratio",
        "nURR": "nURR a ratio",
        "loss": "loss:<term> the training loss's epoch mean",
        "run": "run:<path> as results.json writes it",
        "minutes": "minutes of wall time",
        "privacy.": "privacy.<path> as the audit writes it",
    }
    parts = [f"{', '.join(percent)} in %"] if percent else []
    parts += list(dict.fromkeys(other[m.partition(":")[0]] for m in metrics if m.partition(":")[0] in other))
    parts += [other["privacy."]] if any(m.startswith("privacy.") for m in metrics) else []
    return (
        "Numbers: " + "; ".join(parts) + ". A cell is the mean ± sample std over the row's runs (seeds); "
        "mean/<metric>: per run the mean over the targets shown."
    )


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
