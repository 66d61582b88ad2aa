"""ppreid.metrics.rerank: equal to the dense NumPy reference re-ranking, tensor in/out, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppreid.metrics.rerank as rerank
from ppreid.metrics.reference_rerank import re_ranking_reference  # dense transcription of the reference
from ppreid.metrics.rerank import k_reciprocal_rerank
from ppreid.utils.errors import ConfigValueError


def squared_euclidean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None] - 2 * x @ y.T, 0)


def clustered_blocks(seed: int, nq: int, ng: int, dim: int, dtype=np.float32):
    """q_g, q_q, g_g squared euclidean distances of features clustered by id (so that k-reciprocal
    sets are large and the expansion step both accepts and rejects candidates)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(2, (nq + ng) // 8), dim))
    qf = centers[rng.integers(0, len(centers), nq)] + 0.7 * rng.standard_normal((nq, dim))
    gf = centers[rng.integers(0, len(centers), ng)] + 0.7 * rng.standard_normal((ng, dim))
    qf, gf = qf.astype(dtype), gf.astype(dtype)
    return squared_euclidean(qf, gf), squared_euclidean(qf, qf), squared_euclidean(gf, gf)


def assert_matches_reference(qg, qq, gg, k1, k2, lam):
    ours = k_reciprocal_rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    ref = re_ranking_reference(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "nq, ng, dim, k1, k2, lam",
    [
        (30, 120, 16, 20, 6, 0.3),  # the paper's parameters
        (40, 90, 8, 10, 3, 0.5),
        (25, 60, 4, 7, 1, 0.0),  # no query expansion; Jaccard term alone
        (20, 50, 32, 5, 30, 1.0),  # k2 > k1 + 1; original distance alone
        (15, 40, 6, 1, 2, 0.7),  # k1 = 1: half-size sets of round(0.5) = 0 neighbours
        (3, 4, 5, 20, 6, 0.3),  # k1 + 1 and k2 > N = 7: cut to N, as the reference's slices are
        (1, 1, 3, 20, 6, 0.3),
    ],
)
def test_matches_reference_on_clustered_features(nq, ng, dim, k1, k2, lam):
    assert_matches_reference(*clustered_blocks(nq * 1000 + ng, nq, ng, dim), k1, k2, lam)


def test_matches_reference_float64_plain_euclidean():
    qg, qq, gg = (np.sqrt(b) for b in clustered_blocks(3, 30, 70, 12, dtype=np.float64))
    assert_matches_reference(qg, qq, gg, 20, 6, 0.3)


def test_matches_reference_mixed_dtypes_and_asymmetric_blocks():
    """Rows of the normalised matrix are columns of the full one; asymmetric blocks tell them apart."""
    rng = np.random.default_rng(7)
    qg = rng.random((20, 60), dtype=np.float32)
    qq = rng.random((20, 20))  # float64: the reference squares the float64 concatenation
    gg = rng.random((60, 60), dtype=np.float32)
    assert_matches_reference(qg, qq, gg, 10, 4, 0.3)


def test_matches_reference_across_chunk_boundaries(monkeypatch):
    """Rank blocks of 7 rows (cut at the query/gallery boundary), Jaccard chunks of 1 to 3 queries."""
    monkeypatch.setattr(rerank, "_RANK_BLOCK_ELEMENTS", 7 * 130)
    monkeypatch.setattr(rerank, "_JACCARD_BLOCK_ELEMENTS", 3 * 100)
    monkeypatch.setattr(rerank, "_TRIPLES_PER_CHUNK", 500)
    assert_matches_reference(*clustered_blocks(11, 30, 100, 10), 20, 6, 0.3)


def test_torch_in_torch_out():
    qg, qq, gg = clustered_blocks(5, 10, 30, 8)
    out = k_reciprocal_rerank(torch.from_numpy(qg), torch.from_numpy(qq), torch.from_numpy(gg))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (10, 30)
    np.testing.assert_allclose(out.numpy(), re_ranking_reference(qg, qq, gg), atol=1e-4, rtol=0)


def test_lambda_one_is_the_column_max_normalised_squared_distance():
    # One query, three gallery items: the query's column of the full matrix is (0, 1, 2, 3),
    # squared (0, 1, 4, 9), so its row of q_g becomes (1, 4, 9) / 9.
    qg = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    qq = np.zeros((1, 1), dtype=np.float32)
    gg = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], dtype=np.float32)
    out = k_reciprocal_rerank(qg, qq, gg, lambda_value=1.0)
    np.testing.assert_allclose(out, [[1 / 9, 4 / 9, 1.0]], rtol=1e-6)


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((3, 5), (3, 4), (5, 5)), r"q_q_dist has shape \(3, 4\).*needs \(3, 3\)"),
        (((3, 5), (3, 3), (4, 4)), r"g_g_dist has shape \(4, 4\).*needs \(5, 5\)"),
        (((5,), (3, 3), (5, 5)), r"q_g_dist has shape \(5,\); pass a 2-D"),
        (((0, 5), (0, 0), (5, 5)), r"q_g_dist has shape \(0, 5\); pass at least one query"),
    ],
)
def test_shape_errors(shapes, match):
    with pytest.raises(ConfigValueError, match=match):
        k_reciprocal_rerank(*(np.ones(s, dtype=np.float32) for s in shapes))


def test_nan_distance_is_named():
    qg, qq, gg = clustered_blocks(0, 3, 5, 4)
    gg[2, 4] = np.nan
    with pytest.raises(ConfigValueError, match=r"distances to gallery item 4 contain NaN"):
        k_reciprocal_rerank(qg, qq, gg)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k1": 0}, r"k1=0 must be an integer >= 1"),
        ({"k2": 0}, r"k2=0 must be an integer >= 1"),
        ({"k1": 2.5}, r"k1=2.5 must be an integer >= 1"),
        ({"lambda_value": -0.1}, r"lambda_value=-0.1 is outside \[0, 1\]"),
        ({"lambda_value": 1.5}, r"lambda_value=1.5 is outside \[0, 1\]"),
    ],
)
def test_parameter_errors(kwargs, match):
    qg, qq, gg = clustered_blocks(0, 3, 5, 4)
    with pytest.raises(ConfigValueError, match=match):
        k_reciprocal_rerank(qg, qq, gg, **kwargs)
