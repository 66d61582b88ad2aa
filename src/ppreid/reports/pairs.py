"""Paired-by-seed differences between rows of a study, with a 95% confidence interval
(``python experiments/tables.py <study> --pairs "pdm_aligned-clipreid_aligned,..."``).

A **row** is the folder a run sits in: ``<study>/<row>/s<seed>/results.json`` as the study scripts write
them, or ``<bundle>/<row>/s<seed>.json`` in a results bundle (``experiments/bundle.py``, which records
the row). ``A-B`` pairs the runs of rows A and B by seed; per seed the difference is A's value minus B's:
for a per-target metric (``mAP`` by default) the mean over the targets both rows have (or ``--targets``),
for a run-level one (``val:mAP``, ``loss:<term>``, ``run:<path>``) the value itself. The table gives,
per pair, the seeds, each seed's difference, their mean and the 95% t interval over the paired seeds
(:mod:`ppreid.reports.stats`), and whether the interval lies above 0, below 0 or includes it.

``--pair-share-of`` scales each seed's difference, in percent: ``B`` divides A - B by B's own value (a
defence's relative change: "cuts the gain by 40%"), ``C-D`` by the difference of the control pair C - D
at the same seed ("removes 100% of what the leak adds": ``ridge_leak-unprotected_leak`` over
``unprotected_leak-bot``). The interval is then the t interval of the per-seed ratios (seeds whose
denominator is 0 are named and left out), so a ratio is only read where its denominator stands well
clear of its own noise.
"""

from __future__ import annotations

from collections.abc import Sequence

from ppreid.reports.columns import metric_value, run_value
from ppreid.reports.run_results import (
    METRICS,
    Run,
    TableInputError,
    _decimals,
    group_key,
    is_run_level,
    is_target_field,
)
from ppreid.reports.stats import CONFIDENCE, paired_ci

HEADER = ["A - B", "seeds", "per seed", "mean", "95% CI", "CI"]


class MissingRow(TableInputError):
    """A ``--pairs`` item names a row the runs do not have (not run yet, or misspelt)."""


def row_name(run: Run) -> str:
    """The study row of a run: a bundle file's recorded ``row``, else the folder above the run folder."""
    row = run.result.get("row")
    return row if isinstance(row, str) and row else run.path.parent.parent.name


def parse_pairs(spec: str, rows: Sequence[str]) -> list[tuple[str, str]]:
    """``"A-B,C-D"`` -> [(A, B), (C, D)]; a row name may itself hold ``-``: the split must name two rows."""
    known = set(rows)
    out = []
    for item in (x.strip() for x in spec.split(",")):
        if not item:
            continue
        splits = [
            (item[:i].strip(), item[i + 1 :].strip())
            for i, ch in enumerate(item)
            if ch == "-" and item[:i].strip() in known and item[i + 1 :].strip() in known
        ]
        if len(splits) != 1:
            why = "names no two rows" if not splits else "splits into two rows in more than one way"
            raise (MissingRow if not splits else TableInputError)(
                f"--pairs item {item!r} {why}; write A-B with the rows: {', '.join(sorted(known)) or 'none'}"
            )
        out.append(splits[0])
    if not out:
        raise TableInputError('--pairs is empty; write e.g. --pairs "pdm_aligned-clipreid_aligned"')
    return out


def _by_seed(runs: Sequence[Run], row: str) -> dict[str, Run]:
    hashes = sorted({group_key(r) for r in runs})  # an audit: the audited config + the attack's
    if len(hashes) > 1:
        raise TableInputError(
            f"row {row!r} holds {len(hashes)} configurations ({', '.join(h[:8] for h in hashes)}); "
            "a row is one configuration's seeds"
        )
    out: dict[str, Run] = {}
    for run in runs:
        seed = str(run.result.get("seed"))
        if seed in out:
            raise TableInputError(f"row {row!r}: two runs with seed {seed} ({out[seed].path}, {run.path}); keep one")
        out[seed] = run
    return out


def _seed_order(seed: str) -> tuple[bool, int, str]:
    digit = seed.lstrip("-").isdigit()
    return (not digit, int(seed) if digit else 0, seed)


def _seed_value(run: Run, metric: str, shown: list[str] | None) -> float:
    """One run's value: the run-level metric, or the per-target metric's mean over ``shown``."""
    if shown is None:
        v, missing = run_value(run, metric), metric
    else:
        per = [metric_value(run, t, metric) for t in shown]
        v = None if None in per else sum(per) / len(per)
        missing = f"{metric} at {', '.join(t for t, x in zip(shown, per) if x is None)}"
    if v is None:
        raise TableInputError(f"{run.path}: no {missing}")
    return v


def pairs_table(
    runs: Sequence[Run],
    spec: str,
    metric: str = "mAP",
    targets: Sequence[str] | None = None,
    confidence: float = CONFIDENCE,
    share_of: str | None = None,
) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes): one row per pair A-B of ``spec`` (see the module docstring); with
    ``share_of`` (``B`` or a control pair ``C-D``) each seed's difference in percent of that denominator."""
    by_row: dict[str, list[Run]] = {}
    for run in runs:
        by_row.setdefault(row_name(run), []).append(run)
    pairs = parse_pairs(spec, list(by_row))
    control = None  # with a control pair C-D: (C's runs by seed, D's runs by seed), parsed once
    if share_of is not None and share_of.strip() != "B":
        control_pairs = parse_pairs(share_of, list(by_row))
        if len(control_pairs) != 1:
            raise TableInputError(f"--pair-share-of {share_of!r}: give B or one control pair C-D")
        ((c, d),) = control_pairs
        control = (_by_seed(by_row[c], c), _by_seed(by_row[d], d))
    decimals = 0 if share_of is not None else _decimals(metric)
    header = [*HEADER]
    if confidence != CONFIDENCE:
        header[4] = f"{confidence:.0%} CI"
    rows, notes, over = [], [], {}
    for a, b in pairs:
        side_a, side_b = _by_seed(by_row[a], a), _by_seed(by_row[b], b)
        sides = [side_a, side_b, *(control or ())]
        seeds = sorted(set.intersection(*(set(side) for side in sides)), key=_seed_order)
        if not seeds:
            raise TableInputError(f"{a}-{b}: no seed on both sides ({a}: {sorted(side_a)}, {b}: {sorted(side_b)})")
        alone = sorted(set.union(*(set(side) for side in sides)) - set(seeds), key=_seed_order)
        if alone:
            where = "on one side only" if len(sides) == 2 else "not on every side"
            notes.append(f"{a}-{b}: seeds {where}, left out: {', '.join(alone)}")
        if is_run_level(metric):
            shown = None
        elif targets is not None:
            shown = list(targets)
        else:
            shown = sorted(set.intersection(*(set(side[s].result["test"]) for side in sides for s in seeds)))
            if not shown:
                raise TableInputError(f"{a}-{b}: the runs share no target; name them with --targets")
        diffs, zero = [], []
        for s in seeds:
            diff = _seed_value(side_a[s], metric, shown) - _seed_value(side_b[s], metric, shown)
            if share_of is not None:
                if control is None:
                    denominator = _seed_value(side_b[s], metric, shown)
                else:
                    denominator = _seed_value(control[0][s], metric, shown) - _seed_value(control[1][s], metric, shown)
                if denominator == 0:
                    zero.append(s)
                    continue
                diff = 100.0 * diff / abs(denominator)
            diffs.append(diff)
        if zero:
            notes.append(f"{a}-{b}: the denominator is 0 at seeds {', '.join(zero)}, left out")
            seeds = [s for s in seeds if s not in zero]
        if not diffs:
            raise TableInputError(f"{a}-{b}: --pair-share-of {share_of}: the denominator is 0 at every seed")
        ci = paired_ci(diffs, confidence)
        fmt = f"{{:+.{decimals}f}}" + ("%" if share_of is not None else "")
        interval = "-" if ci.low is None else f"[{fmt.format(ci.low)}, {fmt.format(ci.high)}]"
        rows.append(
            [
                f"{a} - {b}",
                ",".join(seeds),
                ", ".join(fmt.format(d) for d in diffs),
                fmt.format(ci.mean),
                interval,
                ci.verdict(),
            ]
        )
        if shown is not None:
            over.setdefault(", ".join(shown), []).append(f"{a}-{b}")
    for shown, which in over.items():
        whose = "" if len(over) == 1 else f" ({'; '.join(which)})"
        notes.append(f"{metric}: the mean over the targets {shown}{whose}")
    return header, rows, notes


def pairs_note(metric: str, confidence: float = CONFIDENCE, share_of: str | None = None) -> str:
    """What a pairs table's numbers are."""
    percent = metric in METRICS or metric.startswith("val:") or is_target_field(metric)
    unit = "points (%)" if percent else "the metric's own units"
    if share_of is not None:
        of = "row B's own value" if share_of.strip() == "B" else f"the same seed's {share_of.strip()} difference"
        unit = f"percent of {of} (its absolute value)"
    return (
        f"Paired by seed: per seed, row A's {metric} minus row B's, in {unit}; mean and {confidence:.0%} "
        "confidence interval t over the paired seeds (n - 1 degrees of freedom); CI: whether it lies above 0, "
        "below 0 or includes 0."
    )
