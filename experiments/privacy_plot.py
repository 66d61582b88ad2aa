"""Utility vs reversibility trade-off of privacy audits (``model=attack`` runs), as a PNG and a text table.

    python experiments/privacy_plot.py logs/audits --baseline logs/audits/unprotected --out tradeoff.png

Every folder is searched for results.json; audits are pooled per config exactly as ``tables.py`` pools
them (``audit.group_hash``: the audited model's config and the attack config, any seed). One point per
config: x = SSIM of the strongest attacker, y = mAP (%), both means over the targets, then mean ± std
over the seeds (error bars); the label is the audited model's experiment, privacy loss and weight; a dotted
line marks the mean-image control (predicting the mean training image). With
``--baseline`` (the audits of the unprotected model) the plot marks the goal region, SSIM at most
``(1 - --ssim-drop)`` x the baseline's and mAP at most ``--map-cost`` points below it, and the table names
the best point: the lowest SSIM within the mAP cost.

The table also gives the SSIM *above the control* (strongest SSIM minus the mean-image SSIM, our
addition): the part of the reversal that comes from the feature. An attacker trained from scratch can
always fall back to the mean image, so a relative SSIM goal whose target lies below the control cannot be
reached by any extractor; the script says so when it happens.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables  # noqa: E402


def _mean_over_targets(run: tables.Run, metric: str) -> Optional[float]:
    targets = sorted(run.result["privacy"])
    vals = [tables._metric_value(run, t, metric) for t in targets]
    return None if not vals or None in vals else sum(vals) / len(vals)


def points(runs: Sequence[tables.Run]) -> List[Dict]:
    """One dict per audited config: label, runs, (mean, std) of strongest SSIM and of mAP (%)."""
    groups: Dict[str, List[tables.Run]] = {}
    for run in runs:
        if tables.is_audit(run):
            groups.setdefault(tables.group_key(run), []).append(run)
    out = []
    for key, group in groups.items():
        ssim = [_mean_over_targets(r, "SSIM:strongest") for r in group]
        m_ap = [_mean_over_targets(r, "mAP") for r in group]
        if None in ssim or None in m_ap:
            continue
        ext = group[0].result["audit"]["extractor"]
        weight = (ext.get("privacy") or {}).get("privacy_weight")
        loss = (ext.get("privacy") or {}).get("privacy_loss")
        label = (f"{ext.get('experiment') or ext.get('model')}" + (f" {loss}" if loss and weight else "")
                 + (f" w={weight:g}" if weight is not None else ""))
        control = [_mean_over_targets(r, "SSIM:mean_image") for r in group]
        out.append({"key": key, "label": label, "runs": len(group), "ssim": tables.mean_std(ssim),
                    "mAP": tables.mean_std(m_ap), "control": None if None in control else sum(control) / len(control)})
    return sorted(out, key=lambda p: p["ssim"][0])


def best_point(pts: Sequence[Dict], base: Tuple[float, float], map_cost: float,
               base_key: Optional[str] = None) -> Optional[Dict]:
    """The lowest-SSIM point (other than the baseline's) whose mAP is at most ``map_cost`` points below
    the baseline's."""
    ok = [p for p in pts if p["mAP"][0] >= base[1] - map_cost and p["key"] != base_key]
    return min(ok, key=lambda p: p["ssim"][0]) if ok else None


def plot(pts: Sequence[Dict], path: Path, base: Optional[Tuple[float, float]], ssim_drop: float,
         map_cost: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.2), dpi=130)
    markers = "osD^vP*Xh<>"
    for i, p in enumerate(pts):  # one legend entry per config: labels next to close points would overlap
        runs = f"{p['runs']} run" + ("s" if p["runs"] != 1 else "")
        ax.errorbar(p["ssim"][0], p["mAP"][0], xerr=p["ssim"][1] or 0, yerr=p["mAP"][1] or 0,
                    fmt=markers[i % len(markers)], capsize=3, label=f"{p['label']} ({runs})")
    controls = [p["control"] for p in pts if p["control"] is not None]
    xs = [p["ssim"][0] for p in pts] + controls + ([base[0] * (1 - ssim_drop)] if base is not None else [])
    left, right = min(xs) - 0.02, max(xs) + 0.03
    if controls:
        ax.axvline(sum(controls) / len(controls), color="black", ls=":", lw=1,
                   label="mean-image control (an attacker counts only to its right)")
    if base is not None:
        ax.axvline(base[0] * (1 - ssim_drop), color="grey", ls="--", lw=0.8)
        ax.axhline(base[1] - map_cost, color="grey", ls="--", lw=0.8)
        ax.fill_betweenx([base[1] - map_cost, max(base[1], *(p["mAP"][0] for p in pts)) + 1],
                         left, base[0] * (1 - ssim_drop), color="green", alpha=0.08,
                         label=f"goal: SSIM -{100 * ssim_drop:.0f}%, mAP -{map_cost:g} pt at most")
    ax.set_xlim(left, right)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax.set_xlabel("SSIM of the strongest attacker (lower = more private)")
    ax.set_ylabel("mAP (%) (higher = more useful)")
    ax.set_title("utility vs reversibility (mean over targets, ± std over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _mean_std_text(value: Tuple[float, Optional[float]], decimals: int) -> str:
    mean, std = value
    return f"{mean:.{decimals}f}" + ("" if std is None else f" ± {std:.{decimals}f}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="folders with the audits' results.json")
    ap.add_argument("--baseline", metavar="RUN_DIR", help="audits of the unprotected model")
    ap.add_argument("--out", default="privacy_tradeoff.png", help="the PNG to write")
    ap.add_argument("--ssim-drop", type=float, default=0.3, help="goal: relative SSIM reduction (0.3 = 30%%)")
    ap.add_argument("--map-cost", type=float, default=2.0, help="goal: largest mAP loss in points")
    ap.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                    help="only audits of extractors trained with these seeds (compare a one-seed sweep with the "
                         "baseline's same seed, not with its mean over seeds)")
    ap.add_argument("--include-debug", action="store_true")
    args = ap.parse_args(argv)

    def audit_points(paths: Sequence[str]) -> List[Dict]:
        """The points of the runs under ``paths``, kept to ``--seeds`` (the audited extractor's seed)."""
        runs = tables.select_runs([tables.load_result(p) for p in tables.find_results(paths)],
                                  include_debug=args.include_debug)
        if args.seeds:
            runs = [r for r in runs if (r.result.get("audit") or {}).get("extractor", {}).get("seed") in args.seeds]
        return points(runs)

    try:
        pts = audit_points(args.paths)
        if not pts:
            raise tables.TableInputError("no privacy audits (model=attack results.json) among the runs given"
                                         + (f" with extractor seeds {args.seeds}" if args.seeds else ""))
        base, base_key, base_control = None, None, None
        if args.baseline:
            base_pts = audit_points([args.baseline])
            if len(base_pts) != 1:
                raise tables.TableInputError(f"--baseline holds {len(base_pts)} audited configs; give one")
            base = (base_pts[0]["ssim"][0], base_pts[0]["mAP"][0])
            base_key = base_pts[0]["key"]
            base_control = base_pts[0]["control"]
    except tables.TableInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plot(pts, Path(args.out), base, args.ssim_drop, args.map_cost)
    base_excess = None if base is None or base_control is None else base[0] - base_control
    print("| config | runs | SSIM (strongest) | SSIM above control | mAP (%) |"
          + (" SSIM change | above-control change | mAP change (pt) |" if base else ""))
    print("|---|---|---|---|---|" + ("---|---|---|" if base else ""))
    for p in pts:
        excess = None if p["control"] is None else p["ssim"][0] - p["control"]
        row = (f"| {p['label']} | {p['runs']} | {_mean_std_text(p['ssim'], 3)} | "
               f"{'n/a' if excess is None else f'{excess:.3f}'} | {_mean_std_text(p['mAP'], 1)} |")
        if base:
            excess_change = "n/a" if excess is None or not base_excess else f"{100 * (excess / base_excess - 1):+.0f}%"
            row += f" {100 * (p['ssim'][0] / base[0] - 1):+.0f}% | {excess_change} | {p['mAP'][0] - base[1]:+.1f} |"
        print(row)
    if base:
        best = best_point(pts, base, args.map_cost, base_key)
        if best is None:
            print(f"no point other than the baseline within {args.map_cost:g} mAP points of it")
        else:
            change = best["ssim"][0] / base[0] - 1
            verdict = "reached" if -change >= args.ssim_drop else "not reached"
            print(f"best point within {args.map_cost:g} mAP points: {best['label']}: SSIM {100 * change:+.0f}%, mAP "
                  f"{best['mAP'][0] - base[1]:+.1f} points vs the baseline (goal: SSIM -{100 * args.ssim_drop:.0f}%: "
                  f"{verdict})")
        controls = [p["control"] for p in pts if p["control"] is not None]
        goal_ssim = base[0] * (1 - args.ssim_drop)
        if controls and goal_ssim < min(controls):
            print(f"note: the goal's SSIM ({goal_ssim:.3f}) lies below the mean-image control ({min(controls):.3f}): "
                  "an attacker that ignores the feature already scores above it, so no extractor can reach the goal "
                  "on this data; the 'above control' column measures what the feature leaks")
    print(f"plot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
