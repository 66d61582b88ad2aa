"""A validation split held out of the *source* training data, for honest model selection.

In the cross-domain protocol the target domains are the test: looking at them to choose epochs or
hyper-parameters leaks the test into the model. So validation uses identities of the source that
training never sees: a fraction (or a count) of the source identities is held out, each held-out
identity gives one query image and the rest of its images form the gallery (Market-1501 rules, so
gallery images of the query's own camera are ignored by the metric).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ppreid.data.datasets.base import ReIDRecord
from ppreid.utils.errors import ConfigValueError


@dataclass
class SourceSplit:
    """``train``: records relabelled 0..N-1 (sorted old labels); ``query`` / ``gallery``: held out."""

    train: list[ReIDRecord]
    query: list[ReIDRecord]
    gallery: list[ReIDRecord]

    @property
    def num_val_identities(self) -> int:
        return len({r.pid for r in self.query})


def num_held_out(identities: int | float, num_pids: int, key: str = "data.val_split.identities") -> int:
    """A count (int >= 0) as is; a fraction (float in [0, 1)) of ``num_pids``, at least 1 if > 0."""
    if isinstance(identities, bool) or not isinstance(identities, (int, float)):
        raise ConfigValueError(f"{key}={identities!r}: give a fraction in [0, 1) or a number of identities.")
    if isinstance(identities, float):
        if not 0.0 <= identities < 1.0:
            raise ConfigValueError(
                f"{key}={identities}: a fraction of the source identities must be in [0, 1); "
                "write an int for a number of identities."
            )
        return 0 if identities == 0 else max(1, int(round(identities * num_pids)))
    if identities < 0:
        raise ConfigValueError(f"{key}={identities}: the number of held-out identities must be >= 0.")
    return int(identities)


def hold_out_identities(
    records: Sequence[ReIDRecord], identities: int | float, seed: int = 0, key: str = "data.val_split.identities"
) -> SourceSplit:
    """Hold out identities of ``records`` (train records, pids 0..N-1) as a query/gallery split.

    Only identities seen by at least two cameras are eligible (a query needs a match from another
    camera). The choice depends on ``seed`` alone, not on the run's seed, so every seed of an
    experiment validates on the same identities. At least two identities must remain for training.
    """
    by_pid: dict[int, list[ReIDRecord]] = defaultdict(list)
    for rec in records:
        by_pid[rec.pid].append(rec)
    pids = sorted(by_pid)
    n = num_held_out(identities, len(pids), key)
    if n == 0:
        return SourceSplit(list(records), [], [])
    eligible = [p for p in pids if len({r.camid for r in by_pid[p]}) >= 2]
    if n > len(eligible) or len(pids) - n < 2:
        raise ConfigValueError(
            f"{key}={identities} asks for {n} validation identities, but the source has {len(pids)} "
            f"identities, {len(eligible)} of them seen by 2+ cameras, and training needs 2 or more; "
            f"lower {key} (or set it to 0 to train without validation)."
        )
    rng = np.random.default_rng(seed)
    held = sorted(int(p) for p in rng.choice(eligible, size=n, replace=False))
    held_set = set(held)
    query: list[ReIDRecord] = []
    gallery: list[ReIDRecord] = []
    for pid in held:
        recs = sorted(by_pid[pid], key=lambda r: r.path)
        q = int(rng.integers(len(recs)))
        query.append(recs[q])
        gallery.extend(r for i, r in enumerate(recs) if i != q)
    keep = [p for p in pids if p not in held_set]
    label = {p: i for i, p in enumerate(keep)}
    train = [replace(r, pid=label[r.pid]) for r in records if r.pid in label]
    return SourceSplit(train, query, gallery)
