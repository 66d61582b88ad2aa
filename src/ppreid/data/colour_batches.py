"""Colour-aware P x K batches: identities that share a garment colour are put in the same batch.

In a batch of random identities the colours of the clothes alone tell most pairs apart (14 upper and
10 lower colours), so a contrastive model learns colour and little else. Here a batch of P identities is
made of groups of ``group_size`` identities that share one colour attribute's value (the keys are
taken in turn: upper colour, then lower colour, ...), so within a group the colour is no cue and the
rest of the person must separate them. Used by the sandbox's language-image pre-training
(``data=sandbox_corpus``, ``data.colour_batches``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ppreid.data.datamodule import ReIDDataModule
from ppreid.data.samplers import RandomIdentitySampler
from ppreid.utils.errors import ConfigValueError

DEFAULT_COLOUR_BATCHES: dict[str, Any] = {"enabled": True, "keys": ["upper_colour", "lower_colour"], "group_size": 4}


class ColourAwareIdentitySampler(RandomIdentitySampler):
    """P x K sampling (as :class:`RandomIdentitySampler`: the same number of steps, K images per identity,
    P distinct identities per batch and rank) whose batches are built from colour groups.

    Args:
        pids: (N,) identity of each training image.
        colours: per colour key, (N,) the value of each image's record (an identity's first image decides).
        group_size: identities per colour group (a batch holds P // group_size groups and a remainder).

    A group takes the next key in turn, draws one of its values with probability proportional to the
    identities still to be used that have it (at least two needed), and takes the ``group_size`` of them
    with the most chunks left (random tie-break), so every identity is used as often as the plain sampler
    would use it. When no value has two identities left, the batch is filled with any unused identities;
    when none are left, with an extra chunk of a random identity (so ``len()`` is fixed).
    """

    def __init__(
        self,
        pids: Sequence[int],
        colours: Mapping[str, Sequence[str]],
        batch_size: int,
        num_instances: int,
        group_size: int = 4,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        super().__init__(pids, batch_size, num_instances, seed=seed, num_replicas=num_replicas, rank=rank)
        if int(group_size) < 2:
            raise ConfigValueError(f"colour_batches.group_size={group_size}: at least 2 identities share a colour.")
        if not colours:
            raise ConfigValueError("colour_batches.keys is empty: name at least one colour attribute.")
        self.group_size = int(group_size)
        self.keys = list(colours)
        first = {int(p): i for i, p in reversed(list(enumerate(pids)))}
        self.colour_of = {k: [str(colours[k][first[p]]) for p in self.pid_list] for k in self.keys}

    def _plan(self) -> np.ndarray:
        """(num_steps, num_replicas, P, K) dataset indices of this epoch, the same on every rank."""
        rng = np.random.default_rng([self.seed, self.epoch, 17])
        P, K, S, R = self.num_pids_per_batch, self.num_instances, self.num_steps, self.num_replicas
        chunks_of, left = self._draw_chunks(rng)
        taken = np.zeros(len(chunks_of), dtype=np.int64)
        plan = np.empty((S * R, P, K), dtype=np.int64)
        turn = 0
        for b in range(S * R):
            members: list[int] = []
            while len(members) < P:
                want = min(self.group_size, P - len(members))
                free = np.flatnonzero(left > 0)
                free = free[~np.isin(free, members)]
                group = self._colour_group(free, left, want, self.keys[turn % len(self.keys)], rng) if want > 1 else []
                turn += 1
                if not len(group):  # no colour shared by two identities left: any unused identities
                    group = list(rng.permutation(free)[:want])
                if not len(group):  # every identity used up: an extra chunk of a random other identity
                    others = np.setdiff1d(np.arange(len(chunks_of)), members)
                    group = [int(rng.choice(others))]
                    left[group[0]] += 1
                for i in group:
                    members.append(int(i))
                    left[i] -= 1
            for slot, i in enumerate(members):
                plan[b, slot] = chunks_of[i][taken[i] % len(chunks_of[i])]
                taken[i] += 1
        order = rng.permutation(S * R)  # groups stay together inside a batch; batches in random order
        return plan[order].reshape(S, R, P, K)

    def _colour_group(
        self, free: np.ndarray, left: np.ndarray, want: int, key: str, rng: np.random.Generator
    ) -> list[int]:
        """Up to ``want`` free identities sharing one value of ``key`` (empty if no value has two)."""
        by_value: dict[str, list[int]] = {}
        for i in free:
            by_value.setdefault(self.colour_of[key][i], []).append(int(i))
        values = [v for v, ids in by_value.items() if len(ids) >= 2]
        if not values:
            return []
        weight = np.array([len(by_value[v]) for v in values], dtype=np.float64)
        ids = np.asarray(by_value[values[int(rng.choice(len(values), p=weight / weight.sum()))]])
        ids = rng.permutation(ids)
        ids = ids[np.argsort(-left[ids], kind="stable")]
        return [int(i) for i in ids[:want]]

    def __iter__(self) -> Iterator[int]:
        return iter(self._plan()[:, self.rank].reshape(-1).tolist())


class ColourBatchesDataModule(ReIDDataModule):
    """:class:`ReIDDataModule` whose training batches are colour-aware (``colour_batches``: ``enabled``,
    ``keys`` (colour attributes, taken in turn), ``group_size``); the colours come from the training
    records' attributes (a GenePerson source with ``manifest.jsonl``)."""

    def __init__(self, *args: Any, colour_batches: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = {**DEFAULT_COLOUR_BATCHES, **dict(colour_batches or {})}
        unknown = set(cfg) - set(DEFAULT_COLOUR_BATCHES)
        if unknown:
            raise ConfigValueError(
                f"data.colour_batches: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULT_COLOUR_BATCHES)}."
            )
        self.colour_batches = cfg

    def train_sampler(self) -> RandomIdentitySampler:
        if not self.colour_batches["enabled"]:
            return super().train_sampler()
        keys = list(self.colour_batches["keys"])
        missing = [r.path for r in self.train_records if not all(k in (r.attributes or {}) for k in keys)]
        if missing:
            raise ConfigValueError(
                f"data.colour_batches: {missing[0]} has no {keys} in its attribute record; colour-aware "
                "batches need a GenePerson source with manifest.jsonl (or data.colour_batches.enabled=false)."
            )
        world, rank = self._dist()
        return ColourAwareIdentitySampler(
            [r.pid for r in self.train_records],
            {k: [r.attributes[k] for r in self.train_records] for k in keys},
            self.batch_size,
            self.num_instances,
            group_size=int(self.colour_batches["group_size"]),
            seed=self.sampler_seed,
            num_replicas=world,
            rank=rank,
        )
