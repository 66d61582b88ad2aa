"""Samplers: the P x K identity sampler for metric-learning training, and contiguous shards for
evaluation. Both subclass ``DistributedSampler`` only so that Lightning uses them as they are
instead of wrapping them in a second distributed sampler; they split the data across ranks themselves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from ppreid.utils.errors import ConfigValueError


def _world(num_replicas: int | None, rank: int | None, who: str) -> tuple[int, int]:
    """(num_replicas, rank), read from torch.distributed when not given and it is initialized."""
    initialized = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ConfigValueError(f"{who}: rank {rank} is not in 0..{num_replicas - 1} (num_replicas={num_replicas}).")
    return num_replicas, rank


class RandomIdentitySampler(DistributedSampler):
    """P x K sampling: every batch holds P = batch_size // num_instances identities, K images each.

    An epoch's plan depends only on (seed, epoch) and is the same on every rank. A global step draws
    P * num_replicas *distinct* identities and rank r takes the r-th group of P, so ranks see different
    identities at a step and every rank gets the same number of batches. Each identity's images are
    shuffled and cut into chunks of K (an identity with fewer than K images is topped up by sampling its
    images with replacement; a remainder below K is left out this epoch). The number of steps is fixed by
    the data alone: the largest S with sum_i min(chunks_i, S) >= S * P * num_replicas (all chunks when
    identities are balanced), so ``len()`` is the same in every epoch.

    Yields flat dataset indices; use with ``DataLoader(batch_size=batch_size, sampler=..., drop_last=True)``.
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        if num_instances < 1 or batch_size < 1 or batch_size % num_instances != 0:
            raise ConfigValueError(
                f"RandomIdentitySampler: batch_size={batch_size} must be a positive multiple of "
                f"num_instances={num_instances} (batch = P identities x K instances)."
            )
        self.num_replicas, self.rank = _world(num_replicas, rank, "RandomIdentitySampler")
        self.batch_size, self.num_instances = batch_size, num_instances
        self.num_pids_per_batch = batch_size // num_instances
        self.seed, self.epoch = seed, 0

        index_of: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            index_of[int(pid)].append(i)
        self.pid_list = sorted(index_of)
        self.index_of = [np.asarray(index_of[p], dtype=np.int64) for p in self.pid_list]
        per_step = self.num_pids_per_batch * self.num_replicas
        if len(self.pid_list) < per_step:
            raise ConfigValueError(
                f"RandomIdentitySampler: {len(self.pid_list)} identities, but a batch needs "
                f"P = batch_size // num_instances = {self.num_pids_per_batch} distinct identities"
                + (f" on each of {self.num_replicas} ranks ({per_step} in all)" if self.num_replicas > 1 else "")
                + ". Lower batch_size or raise num_instances in the data config."
            )
        self.chunks = np.array([max(1, len(ix) // num_instances) for ix in self.index_of])
        self.num_steps = self._max_steps(self.chunks, per_step)
        self.shuffle, self.drop_last = True, True  # DistributedSampler's public attributes
        self.num_samples, self.total_size = len(self), len(self) * self.num_replicas

    @staticmethod
    def _max_steps(chunks: np.ndarray, per_step: int) -> int:
        """Largest S with sum_i min(chunks_i, S) >= S * per_step: S steps of per_step distinct ids fit."""
        steps = int(chunks.sum()) // per_step
        while np.minimum(chunks, steps).sum() < steps * per_step:
            steps -= 1
        return steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_steps * self.batch_size

    def _draw_chunks(self, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
        """(per identity its images shuffled into chunks (n_i, K), topped up with repeats below K; how many
        of each identity's chunks this epoch uses: at most ``num_steps`` per identity,
        ``num_steps x num_replicas x P`` in all, chosen at random)."""
        K, S = self.num_instances, self.num_steps
        chunks_of = []
        for ix in self.index_of:
            order = rng.permutation(ix)
            if len(order) < K:
                order = np.concatenate([order, rng.choice(ix, K - len(order), replace=True)])
            chunks_of.append(order[: len(order) // K * K].reshape(-1, K))
        slots = np.repeat(np.arange(len(chunks_of)), np.minimum(self.chunks, S))
        used = np.bincount(
            rng.permutation(slots)[: S * self.num_replicas * self.num_pids_per_batch], minlength=len(chunks_of)
        )
        return chunks_of, used

    def _plan(self) -> np.ndarray:
        """(num_steps, num_replicas, P, K) dataset indices of this epoch, the same on every rank."""
        rng = np.random.default_rng([self.seed, self.epoch])
        P, K, S, R = self.num_pids_per_batch, self.num_instances, self.num_steps, self.num_replicas
        chunks_of, used = self._draw_chunks(rng)

        # Put each identity's chunks into distinct steps with the most room left (random tie-break);
        # room stays balanced to within 1, so this always fills every step with distinct identities.
        room = np.full(S, R * P)
        members: list[list[int]] = [[] for _ in range(S)]
        for pid_idx in rng.permutation(len(chunks_of)):
            n = int(used[pid_idx])
            if n == 0:
                continue
            jitter = rng.permutation(S)
            steps = jitter[np.argsort(-room[jitter], kind="stable")[:n]]
            room[steps] -= 1
            for step in steps:
                members[step].append(pid_idx)

        plan = np.empty((S, R * P, K), dtype=np.int64)
        taken = np.zeros(len(chunks_of), dtype=np.int64)
        for s, step in enumerate(rng.permutation(S)):
            for slot, pid_idx in enumerate(rng.permutation(members[step])):
                plan[s, slot] = chunks_of[pid_idx][taken[pid_idx]]
                taken[pid_idx] += 1
        return plan.reshape(S, R, P, K)

    def __iter__(self) -> Iterator[int]:
        return iter(self._plan()[:, self.rank].reshape(-1).tolist())


class InferenceSampler(DistributedSampler):
    """Contiguous, unpadded shards for evaluation: rank r gets indices [r*n//R, (r+1)*n//R).

    The union over ranks is every index exactly once, in order, so gathered features can be put back
    in dataset order without dropping duplicates. Shard sizes differ by at most one.
    """

    def __init__(self, num_samples: int, num_replicas: int | None = None, rank: int | None = None):
        if num_samples < 0:
            raise ConfigValueError(f"InferenceSampler: num_samples={num_samples} must be >= 0.")
        self.num_replicas, self.rank = _world(num_replicas, rank, "InferenceSampler")
        self.begin = num_samples * self.rank // self.num_replicas
        self.end = num_samples * (self.rank + 1) // self.num_replicas
        self.epoch, self.shuffle, self.drop_last = 0, False, False  # DistributedSampler's public attributes
        self.num_samples, self.total_size = self.end - self.begin, num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))


class PermutationChunkSampler(DistributedSampler):
    """A seeded random permutation of all ``num_samples`` indices per epoch, for chunked batches.

    CLIP-ReID's stage 1 walks a fresh permutation of *every* training image in chunks (64 in the paper
    recipe, the remainder kept as a last smaller chunk), so each step contrasts many identities. The
    permutation depends on (seed, epoch) only and is the same on every rank; rank r takes every
    ``num_replicas``-th index, so ``DataLoader(batch_size=ceil(chunk / num_replicas), drop_last=False)``
    gives each rank its share of the global chunk.
    """

    def __init__(self, num_samples: int, seed: int = 0, num_replicas: int | None = None, rank: int | None = None):
        if num_samples < 1:
            raise ConfigValueError(f"PermutationChunkSampler: num_samples={num_samples} must be >= 1.")
        self.num_replicas, self.rank = _world(num_replicas, rank, "PermutationChunkSampler")
        self.total_size, self.seed, self.epoch = int(num_samples), int(seed), 0
        self.shuffle, self.drop_last = True, False
        self.num_samples = len(range(self.rank, self.total_size, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.total_size)
        return iter(perm[self.rank :: self.num_replicas].tolist())
