"""Utility vs leakage trade-off of privacy audits (``model=attack`` runs), as a PNG and a text table.

    python experiments/privacy_plot.py logs/audits --baseline logs/audits/unprotected --out tradeoff.png

Every folder is searched for results.json; audits are pooled per config exactly as ``tables.py`` pools
them (``audit.group_hash``: the audited model's config and the attack config, any seed). One point per
config, means over the targets, then mean ± std over the seeds (error bars), in two panels:

- left: x = the strongest attacker's **SSIM gain** (its SSIM above its null, the same attacker trained on
  shuffled features: what the feature lets it reconstruct), cross-domain; y = mAP (%);
- right: x = the **normalized leakage** of the most-leaking attacker, (R1 - chance) / (the reference
  judge's R1 on real images - chance), in %; y = mAP (%).

The table adds the in-domain gain and leakage. With ``--baseline`` (the audits of the unprotected model)
the plot marks the goal region (each privacy figure at most ``--keep`` x the baseline's, mAP at most
``--map-cost`` points below it) and the table names the best point: within the mAP cost, the lowest of
the largest ratio to the baseline among the gains and leakages (cross-domain and in-domain).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ppreid.reports import columns, run_results

# point key -> (tables metric, heading)
PRIVACY = {
    "gain": ("gain", "gain"),
    "gain_in": ("gain_in", "gain in-domain"),
    "nleak": ("nleak", "nleak (%)"),
    "nleak_in": ("nleak_in", "nleak in-domain (%)"),
}


def _mean_over_targets(run: run_results.Run, metric: str) -> float | None:
    targets = sorted(run.result["privacy"])
    vals = [columns.metric_value(run, t, metric) for t in targets]
    return None if not vals or None in vals else sum(vals) / len(vals)


def _stat(values: list[float | None]) -> tuple[float, float | None] | None:
    return None if not values or None in values else run_results.mean_std(values)


def points(runs: Sequence[run_results.Run]) -> list[dict]:
    """One dict per audited config: label, runs, (mean, std) of mAP (%) and of each figure of ``PRIVACY``
    (None where an audit lacks it); configs without a cross-domain gain are left out."""
    groups: dict[str, list[run_results.Run]] = {}
    for run in runs:
        if run_results.is_audit(run):
            groups.setdefault(run_results.group_key(run), []).append(run)
    out = []
    for key, group in groups.items():
        stats = {k: _stat([_mean_over_targets(r, metric) for r in group]) for k, (metric, _) in PRIVACY.items()}
        m_ap = _stat([_mean_over_targets(r, "mAP") for r in group])
        if stats["gain"] is None or m_ap is None:
            continue
        ext = group[0].result["audit"]["extractor"]
        privacy = ext.get("privacy") or {}
        weight, loss, beta = (
            privacy.get("privacy_weight"),
            privacy.get("privacy_loss"),
            (privacy.get("bottleneck") or {}).get("beta"),
        )
        # the reversal loss only means something for the defences that train decoders (not the dependence penalty)
        decoders = privacy.get("defence", "gan") in ("gan", "pool")
        label = (
            f"{ext.get('experiment') or ext.get('model')}"
            + (f" {loss}" if loss and weight and decoders else "")
            + (f" w={weight:g}" if weight else "")
            + (f" beta={beta:g}" if beta else "")
        )
        out.append({"key": key, "label": label, "runs": len(group), "mAP": m_ap, **stats})
    return sorted(out, key=lambda p: p["gain"][0])


def worst_ratio(point: dict, base: dict) -> float | None:
    """The largest ratio point / baseline over the privacy figures both have (None if none)."""
    ratios = [
        point[k][0] / base[k][0]
        for k in PRIVACY
        if point.get(k) is not None and base.get(k) is not None and base[k][0] > 0
    ]
    return max(ratios) if ratios else None


def best_point(pts: Sequence[dict], base: dict, map_cost: float) -> dict | None:
    """Within ``map_cost`` mAP points of the baseline (the baseline itself left out): the lowest worst ratio."""
    ok = [
        p
        for p in pts
        if p["mAP"][0] >= base["mAP"][0] - map_cost and p["key"] != base["key"] and worst_ratio(p, base) is not None
    ]
    return min(ok, key=lambda p: worst_ratio(p, base)) if ok else None


def plot(pts: Sequence[dict], path: Path, base: dict | None, keep: float, map_cost: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legend_rows = -(-len(pts) // 3)
    height = 4.4 + 0.18 * legend_rows  # inches: the legend below the axes grows with the points
    fig, axes = plt.subplots(1, 2, figsize=(10, height), dpi=130, sharey=True)
    markers = "osD^vP*Xh<>"
    colours = plt.get_cmap("tab10" if len(pts) <= 10 else "tab20").colors  # no two points share a look
    gain_label = "SSIM gain of the strongest attacker over its null (lower = more private)"
    for ax, key, xlabel in (
        (axes[0], "gain", gain_label),
        (axes[1], "nleak", "normalized leakage of the most-leaking attacker (%)"),
    ):
        for i, p in enumerate(pts):
            if p.get(key) is None:
                continue
            runs = f"{p['runs']} run" + ("s" if p["runs"] != 1 else "")
            ax.errorbar(
                p[key][0],
                p["mAP"][0],
                xerr=p[key][1] or 0,
                yerr=p["mAP"][1] or 0,
                fmt=markers[i % len(markers)],
                color=colours[i % len(colours)],
                capsize=3,
                label=f"{p['label']} ({runs})",
            )
        ax.axvline(0.0, color="black", ls=":", lw=1)
        if base is not None and base.get(key) is not None:
            ax.axvline(base[key][0] * keep, color="grey", ls="--", lw=0.8)
            ax.axhline(base["mAP"][0] - map_cost, color="grey", ls="--", lw=0.8)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mAP (%) (higher = more useful)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.suptitle(
        "utility vs what the feature leaks (cross-domain; mean over targets, ± std over seeds); dashed: "
        f"goal, at most {keep:g} x the baseline and {map_cost:g} mAP points",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, (0.18 * legend_rows + 0.1) / height, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _text(value: tuple[float, float | None] | None, decimals: int) -> str:
    if value is None:
        return "n/a"
    mean, std = value
    return f"{mean:.{decimals}f}" + ("" if std is None else f" ± {std:.{decimals}f}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="folders with the audits' results.json")
    ap.add_argument("--baseline", metavar="RUN_DIR", help="audits of the unprotected model")
    ap.add_argument("--out", default="privacy_tradeoff.png", help="the PNG to write")
    ap.add_argument(
        "--keep",
        type=float,
        default=0.5,
        help="goal: each gain and leakage at most this fraction of the baseline's (0.5 = half)",
    )
    ap.add_argument("--map-cost", type=float, default=2.0, help="goal: largest mAP loss in points")
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="only audits of extractors trained with these seeds (compare a one-seed sweep with the "
        "baseline's same seed, not with its mean over seeds)",
    )
    ap.add_argument("--include-debug", action="store_true")
    args = ap.parse_args(argv)

    def audit_points(paths: Sequence[str]) -> list[dict]:
        """The points of the runs under ``paths``, kept to ``--seeds`` (the audited extractor's seed)."""
        runs = run_results.select_runs(
            [run_results.load_result(p) for p in run_results.find_results(paths)], include_debug=args.include_debug
        )
        if args.seeds:
            runs = [r for r in runs if (r.result.get("audit") or {}).get("extractor", {}).get("seed") in args.seeds]
        return points(runs)

    try:
        pts = audit_points(args.paths)
        if not pts:
            raise run_results.TableInputError(
                "no privacy audits with SSIM gains (model=attack results.json) among the "
                "runs given" + (f" with extractor seeds {args.seeds}" if args.seeds else "")
            )
        base = None
        if args.baseline:
            base_pts = audit_points([args.baseline])
            if len(base_pts) != 1:
                raise run_results.TableInputError(f"--baseline holds {len(base_pts)} audited configs; give one")
            base = base_pts[0]
    except run_results.TableInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plot(pts, Path(args.out), base, args.keep, args.map_cost)
    heads = [h for _, h in PRIVACY.values()]
    print(
        "| config | runs | mAP (%) | " + " | ".join(heads) + " |" + (" mAP change (pt) | worst ratio |" if base else "")
    )
    print("|---|---|---|" + "---|" * len(heads) + ("---|---|" if base else ""))
    for p in pts:
        cells = [_text(p[k], 3 if k.startswith("gain") else 1) for k in PRIVACY]
        row = f"| {p['label']} | {p['runs']} | {_text(p['mAP'], 1)} | " + " | ".join(cells) + " |"
        if base:
            ratio = worst_ratio(p, base)
            row += f" {p['mAP'][0] - base['mAP'][0]:+.1f} | {'n/a' if ratio is None else f'{ratio:.2f}'} |"
        print(row)
    if base:
        best = best_point(pts, base, args.map_cost)
        if best is None:
            print(f"no point other than the baseline within {args.map_cost:g} mAP points of it")
        else:
            ratio = worst_ratio(best, base)
            verdict = "reached" if ratio <= args.keep else "not reached"
            print(
                f"best point within {args.map_cost:g} mAP points: {best['label']}: every gain and leakage at most "
                f"{ratio:.2f} x the baseline's, mAP {best['mAP'][0] - base['mAP'][0]:+.1f} points (goal: at most "
                f"{args.keep:g} x: {verdict})"
            )
    print(f"plot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
