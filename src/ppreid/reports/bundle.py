"""A study's results bundle: the part of each run's ``results.json`` the tables read, small enough to commit.

    python experiments/bundle.py logs/dppp_sandbox --study dppp_sandbox
    python experiments/bundle.py logs/privacy_sandbox/audit --study privacy_sandbox
    python experiments/bundle.py logs/x/runs/2026-12-07_10-00-00 --study mine --row pdm_long

Every path is searched recursively for ``results.json`` (debug, partial, evaluation-only and untrained
runs are left out, as in the tables). Each run is written to ``<out>/<study>/<row>/s<seed>.json``
(``--out`` default ``experiments/results``): its row is ``--row`` or the name of the folder above the
run folder (``logs/dppp_sandbox/pdm_aligned/s1`` -> ``pdm_aligned``, the layout the study scripts
write). A file keeps only :data:`KEEP` (the test and source-validation metrics, the identity block,
the training losses' epoch means, the scene-sensitivity, privacy and image-encoder gradient-norm
sections, seed, kind flags, times, commit, overrides) plus any ``--keep`` key, less :data:`DROP` (the
audit's attacker curves), numbers rounded to 6 significant digits: a few KB per run.
``<out>/<study>/bundle.json`` lists the rows and seeds. Bundling a run again replaces its file, so a
study can be bundled as its seeds finish. ``experiments/tables.py <out>/<study>`` then reads the bundle
like run folders (label column ``row``), and the docs' tables are rendered from it
(``tables.py --update-docs``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ppreid.reports.run_results import (
    BUNDLE_MANIFEST,
    TableInputError,
    _warn_stderr,
    find_results,
    load_result,
    select_runs,
)

KEEP = (
    "test",
    "val",
    "identity",
    "training",
    "scene_sensitivity",
    "privacy",
    "privacy_source_val",
    "audit",
    "grad_norm_image",
    "seed",
    "debug",
    "partial",
    "train",
    "model",
    "data",
    "git_commit",
    "environment",
    "wall_time_s",
    "run_time_s",
    "overrides",
)
# inside the kept keys, what no table reads and would weigh most: the attackers' loss curves (step by step)
DROP = ("audit.curves",)
SIGNIFICANT = 6
LARGE_BYTES = 16_000  # above this a file is no longer "a few KB": say which keys weigh


def _round(tree):
    """Floats to SIGNIFICANT digits, recursively (the tables show at most 3 decimals)."""
    if isinstance(tree, float):
        return float(f"{tree:.{SIGNIFICANT}g}")
    if isinstance(tree, dict):
        return {k: _round(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_round(v) for v in tree]
    return tree


def _dumps(obj, depth: int = 0) -> str:
    """Indented JSON (keys sorted) with every list of plain values on one line (an epoch's [epoch, value],
    a row's seeds): small files whose diffs read line by line."""
    pad, inner = " " * depth, " " * (depth + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(obj[k], depth + 1)}" for k in sorted(obj)]
        text = "{\n" + ",\n".join(items) + f"\n{pad}}}"
    elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        text = "[\n" + ",\n".join(f"{inner}{_dumps(v, depth + 1)}" for v in obj) + f"\n{pad}]"
    else:
        text = json.dumps(obj)
    return text + ("\n" if depth == 0 else "")


def _without(tree: dict, path: list[str]) -> dict:
    """``tree`` less the key at ``path`` (copies on the way: the loaded results.json stays intact)."""
    head, rest = path[0], path[1:]
    if head not in tree:
        return tree
    if not rest:
        return {k: v for k, v in tree.items() if k != head}
    return {**tree, head: _without(tree[head], rest)} if isinstance(tree[head], dict) else tree


def _safe(name: str, what: str) -> str:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise TableInputError(f"{what} {name!r} cannot be a folder name")
    return name


def bundle(
    paths: Sequence[str],
    study: str,
    out: Path = Path("experiments/results"),
    row: str | None = None,
    keep: Sequence[str] = (),
    warn: Callable[[str], None] = _warn_stderr,
) -> list[Path]:
    """Write the bundle files of the finished runs under ``paths``; returns them (see the module docstring)."""
    folder = Path(out) / _safe(study, "--study")
    runs = select_runs([load_result(p) for p in find_results(paths, warn)], warn=warn)
    keys = tuple(dict.fromkeys([*KEEP, *keep]))
    planned: dict[Path, Path] = {}
    records = []
    for run in runs:
        name = _safe(row or run.path.parent.parent.name, "row")
        seed = run.result.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TableInputError(f"{run.path}: seed {seed!r} is not an integer; a bundle file is s<seed>.json")
        target = folder / name / f"s{seed}.json"
        if target in planned:
            raise TableInputError(
                f"{planned[target]} and {run.path} are both row {name!r}, seed {seed}; bundle one of them "
                "(or give the rows apart with --row)"
            )
        planned[target] = run.path
        record = {k: run.result[k] for k in keys if k in run.result}
        for dotted in DROP:
            record = _without(record, dotted.split("."))
        record.update({"study": study, "row": name, "source": str(run.path.parent)})
        records.append((target, _round(record)))
    for target, record in records:
        text = _dumps(record)
        if len(text) > LARGE_BYTES:
            sizes = sorted(((len(json.dumps(v)), k) for k, v in record.items()), reverse=True)[:3]
            warn(
                f"warning: {target} is {len(text) / 1000:.0f} KB (largest keys: "
                f"{', '.join(f'{k} {n / 1000:.0f} KB' for n, k in sizes)})"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    write_manifest(folder, study)
    return [t for t, _ in records]


def write_manifest(folder: Path, study: str) -> dict:
    """``bundle.json``: the study, its rows and each row's seeds (from the files present)."""
    rows = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        seeds = sorted(int(f.stem[1:]) for f in sub.glob("s*.json") if f.stem[1:].lstrip("-").isdigit())
        if seeds:
            rows[sub.name] = seeds
    manifest = {
        "study": study,
        "about": "one file per run: <row>/s<seed>.json, the keys of its results.json the tables read "
        "(experiments/bundle.py); render with experiments/tables.py",
        "rows": rows,
    }
    (folder / BUNDLE_MANIFEST).write_text(_dumps(manifest))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bundle.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("paths", nargs="+", help="run folders (searched recursively for results.json)")
    ap.add_argument("--study", required=True, help="the bundle's name: <out>/<study>/")
    ap.add_argument("--out", default="experiments/results", help="where bundles live (default: experiments/results)")
    ap.add_argument("--row", help="the row of every run given (default: the folder above each run folder)")
    ap.add_argument("--keep", nargs="+", default=[], help="more top-level results.json keys to keep")
    args = ap.parse_args(argv)
    try:
        files = bundle(args.paths, args.study, Path(args.out), args.row, args.keep)
    except TableInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    total = sum(f.stat().st_size for f in files)
    print(f"{len(files)} run(s) written under {Path(args.out) / args.study} ({total / 1000:.1f} KB)")
    return 0
