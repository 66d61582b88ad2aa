"""Epoch means of every loss term per phase, and the panels of the privacy models' ``loss_curves.png``
(one per module: the extractor, the defence's adversaries; drawn by src/ppreid/callbacks/loss_curves.py)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

# the module each logged term trains (every other term is the extractor's)
ADVERSARY_TERMS = {
    "loss_g_pixel": "generator",
    "loss_g_ssim": "generator",
    "loss_g_adv": "generator",
    "loss_d": "discriminator",
    "r1": "discriminator",
    "loss_pool_pixel": "decoder pool",
}
RECONSTRUCTION = "adversary's reconstruction SSIM (higher: more leaked)"
TERM_PANELS = {**ADVERSARY_TERMS, "recon_ssim": RECONSTRUCTION}


class LossHistory:
    """``add(term, value)`` during an epoch; ``close(phase, epoch)`` appends each term's mean to
    ``history[phase][term]`` as (epoch, mean) and remembers the epoch's phase."""

    def __init__(self) -> None:
        self.history: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self.phase_of_epoch: dict[int, str] = {}
        self._epoch: dict[str, list[float]] = defaultdict(list)

    def add(self, term: str, value: float) -> None:
        self._epoch[term].append(float(value))

    def close(self, phase: str, epoch: int) -> None:
        for term, values in self._epoch.items():
            if values:
                self.history.setdefault(phase, {}).setdefault(term, []).append((int(epoch), sum(values) / len(values)))
        self.phase_of_epoch[int(epoch)] = phase
        self._epoch = defaultdict(list)

    def by_module(self, modules: tuple[str, ...] = ()) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """Panel name -> term -> [(epoch, mean)] over every phase: ``extractor``, then each of ``modules``
        (the defence's adversaries; empty when they never trained), then the reconstruction SSIM."""
        panels: dict[str, dict[str, list[tuple[int, float]]]] = {"extractor": {}}
        panels.update({m: {} for m in modules})
        for phase in self.history.values():
            for term, points in phase.items():
                panel = panels.setdefault(TERM_PANELS.get(term, "extractor"), {})
                panel.setdefault(term, []).extend(points)
        for terms in panels.values():
            for points in terms.values():
                points.sort()
        return panels


def loss_curve_panels(
    history: LossHistory,
    adversaries: tuple[str, ...],
    defence_name: str,
    boundaries: dict[str, int] | None,
    max_epochs: int | None,
    fast_dev_run: Any,
) -> dict[str, Any]:
    """loss_curves.png (src/ppreid/callbacks/loss_curves.py): one panel per module, the extractor and
    each of the defence's adversaries (a note where one never trained), with the phases shaded."""
    panels = history.by_module(adversaries)
    end = int(max_epochs or 1)
    if fast_dev_run or boundaries is None:
        spans = [(0, 1, "joint (fast dev run: every step once)")] if fast_dev_run else []
    else:
        rev, joint = boundaries["reversal_from"], boundaries["joint_from"]
        named = [(0, rev, "extractor alone"), (rev, joint, "adversaries alone"), (joint, end, "joint")]
        spans = [(a, min(b, end), name) for a, b, name in named if min(b, end) > a]
    trains_from = (boundaries or {}).get("reversal_from", 0)
    why = (
        f"trains from epoch {trains_from}; this run has {end} epoch(s)"
        if trains_from >= end and not fast_dev_run
        else "took no step in this run"
    )
    notes = {m: f"{m}: not trained ({why})" for m in adversaries if not any(panels[m].values())}
    return {
        "panels": {(f"{m} losses" if m in ("extractor", *adversaries) else m): t for m, t in panels.items()},
        "phases": spans,
        "notes": {f"{m} losses": n for m, n in notes.items()},
        "title": f"model=privacy_gan, defence {defence_name}: epoch means of every module's losses",
    }
