"""Build a results table from finished runs (their ``results.json`` files only).

    python experiments/tables.py logs/train/multiruns/2026-11-23_10-00-00
    python experiments/tables.py logs/train/runs/* --metrics R1 mAP --format csv --out table.csv
    python experiments/tables.py logs/ --group model data experiment

Every folder given is searched recursively for ``results.json``. Runs are grouped by the
``--group`` keys of results.json (default: model, data) and each (group, target, metric) cell is
the mean over the group's runs (usually seeds), with the standard deviation when there are several
runs, in percent. The table is printed (markdown by default) and written to ``--out`` if given.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

DEFAULT_METRICS = ("R1", "mAP")
DEFAULT_GROUP = ("model", "data")


class TableInputError(ValueError):
    """A path or results.json file that cannot be used; the message says which and why."""


def find_results(paths: Iterable[str]) -> List[Path]:
    """All ``results.json`` under the given files/folders, sorted; error if a path is missing or none found."""
    found: List[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() and p.name == "results.json":
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob("results.json")))
        else:
            raise TableInputError(f"{p}: no such results.json file or run folder")
    if not found:
        raise TableInputError(f"no results.json found under {', '.join(map(str, paths))}; "
                              "point at finished run folders (each run writes <run dir>/results.json)")
    return sorted(set(found))


def load_result(path: Path) -> dict:
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TableInputError(f"{path}: not a readable results.json ({err})") from err
    if not isinstance(res, dict) or not isinstance(res.get("test"), dict):
        raise TableInputError(f"{path}: expected a 'test' map of target -> metrics, got keys {list(res)[:8]}")
    return res


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def build_table(results: Sequence[dict], metrics: Sequence[str] = DEFAULT_METRICS,
                group: Sequence[str] = DEFAULT_GROUP) -> Tuple[List[str], List[List[str]]]:
    """Header and rows: one row per group, one column per (target, metric), cells "mean ± std" in %."""
    groups: Dict[Tuple[str, ...], List[dict]] = {}
    for res in results:
        key = tuple(str(res.get(g, "-")) for g in group)
        groups.setdefault(key, []).append(res)
    targets = sorted({t for res in results for t in res["test"]})
    header = list(group) + ["runs"] + [f"{t}/{m}" for t in targets for m in metrics]
    rows = []
    for key in sorted(groups):
        runs = groups[key]
        row = list(key) + [str(len(runs))]
        for t in targets:
            for m in metrics:
                vals = [float(r["test"][t][m]) * 100 for r in runs if m in r["test"].get(t, {})]
                if not vals:
                    row.append("-")
                    continue
                mu, sd = mean_std(vals)
                row.append(f"{mu:.1f}" if sd is None else f"{mu:.1f} ± {sd:.1f}")
        rows.append(row)
    return header, rows


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="run folders (searched recursively) or results.json files")
    ap.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="e.g. R1 R5 R10 mAP mINP")
    ap.add_argument("--group", nargs="+", default=list(DEFAULT_GROUP), help="results.json keys to group runs by")
    ap.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args(argv)
    try:
        results = [load_result(p) for p in find_results(args.paths)]
    except TableInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = render(*build_table(results, args.metrics, args.group), fmt=args.format)
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
