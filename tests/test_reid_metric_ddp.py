"""ReIDEvaluator: index bookkeeping, and real 2-process gloo DDP equal to the single-process result."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ppreid.metrics.reid import evaluate_features
from ppreid.metrics.reid_metric import ReIDEvaluator
from ppreid.utils.errors import ReIDInputError

NUM_QUERY, NUM_GALLERY, DIM = 14, 37, 8


def make_data():
    """Features with identity structure (so ranks are non-trivial) and Market-style ids."""
    gen = torch.Generator().manual_seed(0)
    n = NUM_QUERY + NUM_GALLERY
    pids = torch.randint(0, 6, (n,), generator=gen)
    camids = torch.randint(0, 3, (n,), generator=gen)
    centers = torch.randn(6, DIM, generator=gen)
    feats = centers[pids] + 0.8 * torch.randn(n, DIM, generator=gen)
    return feats, pids, camids


def single_process_result():
    feats, pids, camids = make_data()
    q, g = slice(0, NUM_QUERY), slice(NUM_QUERY, None)
    return evaluate_features(feats[q], feats[g], pids[q], pids[g], camids[q], camids[g], max_rank=10)


def assert_same(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(np.asarray(a["cmc"]), np.asarray(b["cmc"]))
    assert (a["mAP"], a["mINP"], a["num_valid_queries"]) == (b["mAP"], b["mINP"], b["num_valid_queries"])


def feed(metric: ReIDEvaluator, order: list[int], batch: int) -> None:
    feats, pids, camids = make_data()
    for s in range(0, len(order), batch):
        idx = torch.tensor(order[s : s + batch])
        metric.update(feats[idx], pids[idx], camids[idx], idx)


def test_single_process_any_order_with_duplicates():
    expected = single_process_result()
    n = NUM_QUERY + NUM_GALLERY
    order = list(np.random.default_rng(1).permutation(n)) + [3, 40]  # shuffled + 2 repeats
    metric = ReIDEvaluator(num_query=NUM_QUERY, max_rank=10, num_gallery=NUM_GALLERY)
    feed(metric, [int(i) for i in order], batch=5)
    assert_same(metric.compute(), expected)
    assert 0.0 < expected["mAP"] < 1.0


def test_missing_index_is_reported():
    metric = ReIDEvaluator(num_query=NUM_QUERY, max_rank=10)
    feed(metric, [i for i in range(NUM_QUERY + NUM_GALLERY) if i != 20], batch=8)
    with pytest.raises(ReIDInputError, match=r"missing e\.g\. \[20\]"):
        metric.compute()
    short = ReIDEvaluator(num_query=NUM_QUERY, max_rank=10, num_gallery=NUM_GALLERY + 2)
    feed(short, list(range(NUM_QUERY + NUM_GALLERY)), batch=8)
    with pytest.raises(ReIDInputError, match="needs exactly 0..52"):
        short.compute()


def test_conflicting_duplicate_is_reported():
    metric = ReIDEvaluator(num_query=NUM_QUERY, max_rank=10)
    feed(metric, list(range(NUM_QUERY + NUM_GALLERY)), batch=8)
    metric.update(torch.zeros(1, DIM), torch.tensor([99]), torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ReIDInputError, match="index 5 was given twice"):
        metric.compute()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        n = NUM_QUERY + NUM_GALLERY
        # DistributedSampler(shuffle=False): pad to a multiple of world with the first samples,
        # then rank r takes every world-th sample (interleaved shards, one duplicate here).
        padded = list(range(n)) + list(range((-n) % world))
        shard = padded[rank::world]
        metric = ReIDEvaluator(num_query=NUM_QUERY, max_rank=10, num_gallery=NUM_GALLERY)
        feed(metric, shard, batch=4 + rank)  # different batch sizes per rank
        out = metric.compute()
        torch.save({"result": out, "shard": shard}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_single_process(tmp_path):
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # same GEMM blocking as the workers, for bitwise equality
    try:
        expected = single_process_result()
    finally:
        torch.set_num_threads(prev)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    shards = []
    for rank in range(2):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert_same(saved["result"], expected)
        shards.append(saved["shard"])
    n = NUM_QUERY + NUM_GALLERY
    assert len(shards[0]) + len(shards[1]) == n + 1  # one padded duplicate was dropped
    assert sorted(set(shards[0]) | set(shards[1])) == list(range(n))
