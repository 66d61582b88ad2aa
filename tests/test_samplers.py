"""P x K identity sampler and inference shards, including the DDP split."""

from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from ppreid.data.samplers import InferenceSampler, RandomIdentitySampler
from ppreid.utils.errors import ConfigValueError

# 10 identities with 1..12 images each (interleaved, so dataset order != identity order)
COUNTS = [7, 1, 12, 4, 9, 3, 5, 8, 2, 6]
PIDS = [pid for n in range(max(COUNTS)) for pid, c in enumerate(COUNTS) if n < c]


def batches(sampler, batch_size):
    flat = list(sampler)
    assert len(flat) == len(sampler) and len(flat) % batch_size == 0
    return [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]


def test_every_batch_is_p_ids_times_k():
    sampler = RandomIdentitySampler(PIDS, batch_size=12, num_instances=4, seed=3)
    out = batches(sampler, 12)
    # chunks per identity = max(1, n // 4) = 1,1,3,1,2,1,1,2,1,1 (sum 14); 3 ids per step -> 4 steps
    assert len(out) == 4 and len(sampler) == 48
    for batch in out:
        pids = [PIDS[i] for i in batch]
        assert sorted(Counter(pids).values()) == [4, 4, 4]
        assert all(len(set(pids[j : j + 4])) == 1 for j in range(0, 12, 4))  # K consecutive per identity
        for j in range(0, 12, 4):
            block = batch[j : j + 4]
            if COUNTS[pids[j]] >= 4:
                assert len(set(block)) == 4  # no repeats when an identity has K images
            else:
                assert set(block) == {i for i, p in enumerate(PIDS) if p == pids[j]}  # topped up


def test_balanced_data_uses_every_image_once():
    pids = [i // 8 for i in range(64)]
    out = batches(RandomIdentitySampler(pids, batch_size=16, num_instances=4, seed=0), 16)
    assert len(out) == 4
    assert sorted(i for b in out for i in b) == list(range(64))


def test_deterministic_per_seed_and_epoch():
    a = RandomIdentitySampler(PIDS, 12, 4, seed=1)
    b = RandomIdentitySampler(PIDS, 12, 4, seed=1)
    assert list(a) == list(b)
    epoch0 = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != epoch0
    assert len(list(a)) == len(epoch0)  # same length every epoch
    a.set_epoch(0)
    assert list(a) == epoch0
    assert list(RandomIdentitySampler(PIDS, 12, 4, seed=2)) != epoch0


def test_skewed_identities_fix_the_number_of_steps():
    # one identity with 250 chunks and 39 with one: S = max{S: min(250, S) + 39 >= 16 S} = 2
    pids = [0] * 1000 + [p for p in range(1, 40) for _ in range(4)]
    sampler = RandomIdentitySampler(pids, batch_size=64, num_instances=4)
    assert len(sampler) == 128
    for batch in batches(sampler, 64):
        assert sorted(Counter(pids[i] for i in batch).values()) == [4] * 16


def test_ddp_ranks_get_disjoint_batches_of_equal_length():
    pids = [i // 8 for i in range(96)]  # 12 identities x 8 images
    ranks = [RandomIdentitySampler(pids, 12, 4, seed=5, num_replicas=2, rank=r) for r in range(2)]
    for s in ranks:
        s.set_epoch(2)
    out = [batches(s, 12) for s in ranks]
    # 24 chunks, 2 ranks x 3 ids per step -> 4 steps per rank
    assert len(out[0]) == len(out[1]) == 4 and len(ranks[0]) == len(ranks[1]) == 48
    for b0, b1 in zip(*out):
        assert not {pids[i] for i in b0} & {pids[i] for i in b1}  # different identities at a step
        assert len({pids[i] for i in b0}) == len({pids[i] for i in b1}) == 3
    assert sorted(i for o in out for b in o for i in b) == list(range(96))  # disjoint and complete
    single = RandomIdentitySampler(pids, 12, 4, seed=5)
    assert len(single) == 96


def test_ddp_world_read_from_torch_distributed(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    pids = [i // 8 for i in range(96)]
    s = RandomIdentitySampler(pids, 12, 4, seed=5)
    assert (s.num_replicas, s.rank) == (2, 1)
    assert list(s) == list(RandomIdentitySampler(pids, 12, 4, seed=5, num_replicas=2, rank=1))
    inf = InferenceSampler(10)
    assert list(inf) == [5, 6, 7, 8, 9]


def test_dataloader_batches():
    sampler = RandomIdentitySampler(PIDS, 12, 4, seed=0)
    loader = DataLoader(torch.tensor(PIDS), batch_size=12, sampler=sampler, drop_last=True)
    got = list(loader)
    assert len(got) == len(loader) == 4
    assert all(sorted(Counter(b.tolist()).values()) == [4, 4, 4] for b in got)


def test_argument_errors():
    with pytest.raises(ConfigValueError, match="multiple of num_instances"):
        RandomIdentitySampler(PIDS, batch_size=10, num_instances=4)
    with pytest.raises(ConfigValueError, match="10 identities.*P = batch_size // num_instances = 16"):
        RandomIdentitySampler(PIDS, batch_size=64, num_instances=4)
    with pytest.raises(ConfigValueError, match="2 ranks"):
        RandomIdentitySampler(PIDS, batch_size=24, num_instances=4, num_replicas=2, rank=0)
    with pytest.raises(ConfigValueError, match="rank 2"):
        InferenceSampler(10, num_replicas=2, rank=2)


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_inference_sampler_contiguous_shards(n, world):
    shards = [list(InferenceSampler(n, num_replicas=world, rank=r)) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))  # contiguous, in order, each once
    assert [len(InferenceSampler(n, world, r)) for r in range(world)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    if (n, world) == (10, 3):
        assert shards == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
