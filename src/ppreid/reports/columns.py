"""The metric columns of a results table: one run's value of a metric at a target (the test metrics and
the privacy audit's columns, read from its ``privacy`` section), the baseline ``nURR`` divides by, and
the columns a table shows when none are asked for.

Values are in the table's units: test metrics and leakage in %, SSIM in [0, 1], PSNR in dB, URR / nURR
ratios (``run_results.PRIVACY_KINDS`` / ``PRIVACY_SCALARS`` give each one's scale).
"""

from __future__ import annotations

from collections.abc import Sequence

from ppreid.reports.run_results import (
    METRICS,
    PRIVACY_KINDS,
    PRIVACY_SCALARS,
    RUN_SCALARS,
    Run,
    TableInputError,
    group_key,
    is_audit,
    is_target_field,
)

DEFAULT_METRICS = ("R1", "mAP")


def _privacy(run: Run, target: str) -> dict | None:
    p = (run.result.get("privacy") or {}).get(target)
    return p if isinstance(p, dict) else None


def _strongest_ssim(p: dict) -> float | None:
    row = (p.get("attackers") or {}).get(p.get("strongest")) or {}
    return row.get("ssim")


def metric_value(
    run: Run, target: str, metric: str, baseline: dict[str, tuple[float, float]] | None = None
) -> float | None:
    if metric in METRICS:
        v = run.result["test"].get(target, {}).get(metric)
        return None if v is None else float(v) * 100
    if is_target_field(metric):
        section, _, key = metric.partition(".")
        per_target = run.result.get(section)
        v = _walk(per_target.get(target) if isinstance(per_target, dict) else None, key)
        return v if v is None or section == "privacy" else v * 100  # privacy.<path>: as the audit writes it
    p = _privacy(run, target)
    if p is None:
        return None
    if metric == "nURR":
        m_ap, ssim = run.result["test"].get(target, {}).get("mAP"), _strongest_ssim(p)
        if baseline is None or target not in baseline or m_ap is None or not ssim:
            return None
        base_map, base_ssim = baseline[target]
        return (float(m_ap) / base_map) / (float(ssim) / base_ssim)
    if metric in PRIVACY_SCALARS:
        path, scale, _ = PRIVACY_SCALARS[metric]
        v = p
        for key in path.split("."):
            v = v.get(key) if isinstance(v, dict) else None
        return None if v is None else float(v) * scale
    kind, _, who = metric.partition(":")
    key, scale, _ = PRIVACY_KINDS[kind]
    if who == "mean_image":
        v = p.get(f"mean_image_{key}")
    else:
        v = ((p.get("attackers") or {}).get(p.get("strongest") if who == "strongest" else who) or {}).get(key)
    return None if v is None else float(v) * scale


def _walk(tree, dotted: str) -> float | None:
    """The number at ``dotted`` (keys separated by dots) inside ``tree``; None if absent or not a number."""
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    if isinstance(tree, bool) or not isinstance(tree, (int, float)):
        return None
    return float(tree)


def run_value(run: Run, metric: str) -> float | None:
    """A run-level value (``run_results.is_run_level``): validation in %, a training loss's epoch mean,
    any number of results.json by its dotted path, or the wall time in minutes; None where the run lacks it."""
    if metric in RUN_SCALARS:
        v = run.result.get("wall_time_s")
        return None if v is None else float(v) / 60
    kind, _, rest = metric.partition(":")
    if kind == "val":
        v = _walk(run.result.get("val"), rest)
        return None if v is None else v * 100
    if kind == "run":
        return _walk(run.result, rest)
    term, _, at = rest.partition("@")
    curve = (((run.result.get("training") or {}).get("loss")) or {}).get(term)
    if not isinstance(curve, list) or not curve:
        return None
    if at in ("", "last"):
        point = curve[-1]
    elif at == "first":
        point = curve[0]
    else:
        point = next((p for p in curve if int(p[0]) == int(at)), None)
    return None if point is None else float(point[1])


def privacy_baseline(runs: Sequence[Run]) -> dict[str, tuple[float, float]]:
    """target -> (mean mAP, mean SSIM of the strongest attacker) over the baseline's audit runs (one config)."""
    audits = [r for r in runs if is_audit(r)]
    if not audits:
        raise TableInputError(
            "--baseline: no privacy audit (model=attack results.json) found there; give the "
            "folder of the unprotected model's audits"
        )
    keys = {group_key(r) for r in audits}
    if len(keys) > 1:
        raise TableInputError(
            f"--baseline holds the audits of {len(keys)} configs; give a folder with the audits "
            "of one config (the unprotected model, its seeds)"
        )
    out = {}
    for target in sorted({t for r in audits for t in r.result["privacy"]}):
        pairs = [
            (r.result["test"].get(target, {}).get("mAP"), _strongest_ssim(_privacy(r, target) or {})) for r in audits
        ]
        pairs = [(float(m), float(s)) for m, s in pairs if m is not None and s]
        if pairs:
            out[target] = (sum(m for m, _ in pairs) / len(pairs), sum(s for _, s in pairs) / len(pairs))
    return out


def default_metrics(runs: Sequence[Run], baseline: bool = False) -> list[str]:
    """R1 and mAP; for audits also SSIM and its gain over the null per attacker, the mean-image control,
    the strongest gain and the normalized leakage (cross-domain and in-domain), the probes' gains, URR
    (and nURR with a baseline)."""
    metrics = list(DEFAULT_METRICS)
    audits = [r for r in runs if is_audit(r)]
    if not audits:
        return metrics
    attackers = list(
        dict.fromkeys(
            a
            for r in audits
            for p in r.result["privacy"].values()
            if isinstance(p, dict)
            for a in p.get("attackers") or {}
        )
    )
    metrics += [f"{k}:{a}" for a in attackers for k in ("SSIM", "gain")]
    metrics += ["SSIM:mean_image", "gain", "gain_in", "nleak", "nleak_in", "probe_nuis", "probe_soft", "URR"]
    return metrics + (["nURR"] if baseline else [])
