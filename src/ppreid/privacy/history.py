"""Epoch means of every loss term per phase: ``loss_history`` for loss_curves.png (src/ppreid/callbacks/reid_media.py)."""

from __future__ import annotations

from collections import defaultdict


class LossHistory:
    """``add(term, value)`` during an epoch; ``close(phase, epoch)`` appends each term's mean to
    ``history[phase][term]`` as (epoch, mean)."""

    def __init__(self) -> None:
        self.history: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self._epoch: dict[str, list[float]] = defaultdict(list)

    def add(self, term: str, value: float) -> None:
        self._epoch[term].append(float(value))

    def close(self, phase: str, epoch: int) -> None:
        for term, values in self._epoch.items():
            if values:
                self.history.setdefault(phase, {}).setdefault(term, []).append((int(epoch), sum(values) / len(values)))
        self._epoch = defaultdict(list)
