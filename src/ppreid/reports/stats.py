"""The statistics of the study tables: a mean difference over paired seeds with its t confidence interval.

A study runs every configuration with the same seeds, so two rows are compared seed by seed: the
differences d_1..d_n (one per seed both rows ran) are what varies, and their mean has the interval

    mean(d) ± t_{(1 + level) / 2, n - 1} * sd(d) / sqrt(n)        (sd: the sample standard deviation)

Student's t with n - 1 degrees of freedom (``scipy.stats.t``), as for a paired t-test: the interval
excludes 0 exactly when that test rejects "no difference" at 1 - level. With 5 seeds t is 2.776, so an
interval above 0 needs a mean difference above 1.24 paired standard deviations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

CONFIDENCE = 0.95


class PairedCI(NamedTuple):
    n: int
    mean: float
    sd: float | None  # sample standard deviation of the differences (None for n = 1)
    low: float | None  # the interval's ends (None for n = 1: no spread, no interval)
    high: float | None

    def verdict(self) -> str:
        """``above 0`` / ``below 0`` when the interval excludes 0, else ``includes 0`` (undecided)."""
        if self.low is None:
            return "one seed: no interval"
        if self.low > 0:
            return "above 0"
        if self.high < 0:
            return "below 0"
        return "includes 0"


def paired_ci(differences: Sequence[float], confidence: float = CONFIDENCE) -> PairedCI:
    """Mean of per-seed differences (n,) and its t interval at ``confidence`` (see the module docstring)."""
    from scipy import stats

    if not differences:
        raise ValueError("paired_ci: no paired differences (the two rows share no seed)")
    if not 0 < confidence < 1:
        raise ValueError(f"paired_ci: confidence={confidence} must lie in (0, 1)")
    d = [float(x) for x in differences]
    n = len(d)
    mean = sum(d) / n
    if n < 2:
        return PairedCI(n, mean, None, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return PairedCI(n, mean, sd, mean - half, mean + half)
