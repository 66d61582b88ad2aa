"""Epoch means of every loss term per phase, and the panels of the privacy models' ``loss_curves.png``
(one per module: the extractor, the defence's adversaries; drawn by src/ppreid/callbacks/loss_curves.py)."""

from __future__ import annotations

from collections import defaultdict

# the module each logged term trains (every other term is the extractor's)
ADVERSARY_TERMS = {
    "loss_g_pixel": "generator",
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
