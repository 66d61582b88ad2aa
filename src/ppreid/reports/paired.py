"""Paired-by-seed differences between two configurations' runs (their ``results.json`` files only).

    python experiments/paired.py logs/dppp_sandbox/pdm_aligned logs/dppp_sandbox/clipreid_aligned
    python experiments/paired.py A B --metric R1 --targets night_cctv station_indoor --format csv

Two folders (or run files), A and B, each searched recursively for ``results.json`` like
``experiments/tables.py`` does (the same rules: debug, partial, evaluation-only and untrained runs are
left out). Each side must hold runs of **one** configuration (one ``identity.config_hash``) and at most
one run per seed. Runs are paired by their seed; seeds present on one side only are named and left
out. Per seed the table gives A, B and A - B for each target and for ``mean`` (the mean over the
targets, per run), then the mean ± sample standard deviation of each column over the paired seeds, in
percent. The last line gives the mean difference in units of its spread and its 95% confidence interval
(t over the paired seeds, :mod:`ppreid.reports.stats`): the studies' goals ask for an interval above 0.
``tables.py --pairs`` gives the same interval for several pairs of a study's rows at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ppreid.reports.run_results import (
    METRICS,
    Run,
    TableInputError,
    find_results,
    load_result,
    mean_std,
    select_runs,
)
from ppreid.reports.stats import paired_ci
from ppreid.reports.table_build import render


def load_side(path: str, name: str) -> dict[str, Run]:
    """seed -> run of one configuration under ``path``; one-line errors for mixed configs or repeats."""
    runs = select_runs([load_result(p) for p in find_results([path])])
    if not runs:
        raise TableInputError(
            f"{name} ({path}): no finished training run (debug, partial, evaluation-only and "
            "untrained runs are left out)"
        )
    hashes = sorted({r.result["identity"]["config_hash"] for r in runs})
    if len(hashes) > 1:
        raise TableInputError(
            f"{name} ({path}) holds {len(hashes)} configurations ({', '.join(h[:8] for h in hashes)}); "
            "point at the folder of one configuration's seeds"
        )
    by_seed: dict[str, Run] = {}
    for run in runs:
        seed = str(run.result.get("seed"))
        if seed in by_seed:
            raise TableInputError(
                f"{name} ({path}): two runs with seed {seed} ({by_seed[seed].path.parent}, {run.path.parent}); keep one"
            )
        by_seed[seed] = run
    return by_seed


def _value(run: Run, target: str, metric: str) -> float | None:
    v = run.result["test"].get(target, {}).get(metric)
    return None if v is None else float(v) * 100


def paired_table(
    a: dict[str, Run], b: dict[str, Run], metric: str = "mAP", targets: Sequence[str] | None = None
) -> dict[str, object]:
    """{header, rows, summary, seeds, unpaired}: per paired seed A, B, A - B per target and their mean."""
    seeds = sorted(
        set(a) & set(b), key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s)
    )
    if not seeds:
        raise TableInputError(f"no seed is on both sides (A: {sorted(a)}, B: {sorted(b)})")
    if targets is None:
        targets = sorted(set.intersection(*(set(r.result["test"]) for r in [*a.values(), *b.values()])))
    if not targets:
        raise TableInputError("the two sides share no target; name them with --targets")
    columns = [*targets, "mean"]
    header = ["seed"] + [f"{c}/{side}" for c in columns for side in ("A", "B", "A-B")]
    rows: list[list[str]] = []
    cells: dict[str, list[float]] = {h: [] for h in header[1:]}
    for seed in seeds:
        row = [seed]
        values = {}
        for side, run in (("A", a[seed]), ("B", b[seed])):
            per = [_value(run, t, metric) for t in targets]
            if any(v is None for v in per):
                missing = [t for t, v in zip(targets, per) if v is None]
                raise TableInputError(f"{run.path}: no test.{missing[0]}.{metric}")
            values[side] = per + [sum(per) / len(per)]
        for i, c in enumerate(columns):
            trio = (values["A"][i], values["B"][i], values["A"][i] - values["B"][i])
            for side, v in zip(("A", "B", "A-B"), trio):
                cells[f"{c}/{side}"].append(v)
                row.append(f"{v:+.1f}" if side == "A-B" else f"{v:.1f}")
        rows.append(row)
    summary = ["mean ± std"]
    for h in header[1:]:
        m, s = mean_std(cells[h])
        summary.append(
            f"{m:+.1f} ± {s:.1f}"
            if h.endswith("A-B") and s is not None
            else (f"{m:.1f} ± {s:.1f}" if s is not None else f"{m:.1f}")
        )
    diff_mean, diff_std = mean_std(cells["mean/A-B"])
    unpaired = sorted(set(a) ^ set(b))
    return {
        "header": header,
        "rows": rows + [summary],
        "seeds": seeds,
        "unpaired": unpaired,
        "differences": cells["mean/A-B"],
        "mean_difference": diff_mean,
        "std_difference": diff_std,
    }


def verdict(table: dict[str, object], metric: str) -> str:
    """The mean difference, its spread and its 95% t interval over the paired seeds (ppreid.reports.stats)."""
    m, s = table["mean_difference"], table["std_difference"]
    n = len(table["seeds"])
    if s is None or n < 2:
        return f"mean/{metric} A - B = {m:+.1f} points on {n} seed: no spread, no verdict"
    ci = paired_ci(table["differences"])
    interval = f"95% CI [{ci.low:+.1f}, {ci.high:+.1f}] ({ci.verdict()})"
    side = "above" if m > 0 else "below"
    return (
        f"mean/{metric} A - B = {m:+.1f} ± {s:.1f} points over {n} paired seeds: A is {side} B by "
        f"{abs(m) / s:.1f}x the paired standard deviation; {interval}"
        if s > 0
        else f"mean/{metric} A - B = {m:+.1f} points in every one of {n} seeds"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="runs of configuration A (a folder of its seeds)")
    parser.add_argument("b", help="runs of configuration B")
    parser.add_argument("--metric", default="mAP", choices=sorted(METRICS))
    parser.add_argument("--targets", nargs="+", default=None, help="targets to use (default: those both share)")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    args = parser.parse_args(argv)
    try:
        a, b = load_side(args.a, "A"), load_side(args.b, "B")
        table = paired_table(a, b, args.metric, args.targets)
    except TableInputError as err:
        print(f"paired.py: {err}", file=sys.stderr)
        return 2
    print(f"A = {args.a}, B = {args.b}; {args.metric} in %, paired by seed")
    if table["unpaired"]:
        print(f"left out (a seed on one side only): {', '.join(table['unpaired'])}")
    print(render(table["header"], table["rows"], args.format))
    print(verdict(table, args.metric))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
