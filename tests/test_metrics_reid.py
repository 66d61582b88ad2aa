"""ppreid.metrics.reid: hand-worked Market-1501 cases and randomized checks against a plain reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ppreid.metrics.reid as reid
import ppreid.metrics.scene_split as scene_split
from ppreid.metrics.reference_eval import reference_eval  # independent per-query NumPy evaluator
from ppreid.metrics.reid import evaluate_distmat, evaluate_features
from ppreid.utils.errors import ReIDInputError


def assert_matches_reference(out, distmat, qp, gp, qc, gc, max_rank):
    ref = reference_eval(np.asarray(distmat, dtype=np.float64), *map(np.asarray, (qp, gp, qc, gc)), max_rank)
    cmc, ap, inp = ref["cmc"], ref["mAP"], ref["mINP"]
    assert out["num_valid_queries"] == ref["num_valid_queries"]
    assert out["cmc"].shape == (max_rank,)
    np.testing.assert_allclose(out["cmc"], cmc, atol=1e-6, rtol=0)
    assert out["mAP"] == pytest.approx(ap, abs=1e-6)
    assert out["mINP"] == pytest.approx(inp, abs=1e-6)


def arr(*xs):
    return [np.asarray(x) for x in xs]


# ----------------------------------------------------------------------------- hand-worked cases


def test_junk_removed_before_ranking():
    # Query pid 1, cam 0. Gallery (pid, cam, dist): g0 (1,0,.1) junk, g1 (2,1,.2), g2 (1,1,.3),
    # g3 (3,0,.4), g4 (1,2,.5). Ranked after removing g0: g1 x, g2 v, g3 x, g4 v -> matches at
    # ranks 2 and 4. AP = (1/2 + 2/4) / 2 = 0.5; INP = 2 / 4 = 0.5; CMC = [0, 1, 1, 1].
    # (Without junk removal the ranks would be 3 and 5: AP = (1/3 + 2/5) / 2 = 0.3667.)
    d = [[0.1, 0.2, 0.3, 0.4, 0.5]]
    qp, gp, qc, gc = arr([1], [1, 2, 1, 3, 1], [0], [0, 1, 1, 0, 2])
    out = evaluate_distmat(np.array(d), qp, gp, qc, gc, max_rank=4)
    np.testing.assert_array_equal(out["cmc"], [0.0, 1.0, 1.0, 1.0])
    assert out["mAP"] == pytest.approx(0.5, abs=1e-12)
    assert out["mINP"] == pytest.approx(0.5, abs=1e-12)
    assert out["num_valid_queries"] == 1


def test_ties_broken_by_gallery_order():
    # Query pid 1, cam 0. dist = [.5, .5, .2, .5], pids = [2, 1, 3, 1], cams all != 0.
    # Ranked: g2 (.2) x, then the tie at .5 in gallery order: g0 x, g1 v, g3 v -> ranks 3, 4.
    # AP = (1/3 + 2/4) / 2 = 5/12; INP = 2/4; CMC = [0, 0, 1, 1].
    # (Reverse tie order g3, g1, g0 would give ranks 2, 3 and AP = 7/12.)
    qp, gp, qc, gc = arr([1], [2, 1, 3, 1], [0], [1, 1, 1, 2])
    out = evaluate_distmat(np.array([[0.5, 0.5, 0.2, 0.5]]), qp, gp, qc, gc, max_rank=4)
    np.testing.assert_array_equal(out["cmc"], [0.0, 0.0, 1.0, 1.0])
    assert out["mAP"] == pytest.approx(5 / 12, abs=1e-12)
    assert out["mINP"] == pytest.approx(0.5, abs=1e-12)


def test_query_without_match_is_skipped():
    # q0 as in test_junk_removed_before_ranking, with an extra g5 (9, 0, .9) ranked last.
    # q1 pid 9, cam 0: its only same-pid entry g5 is in its own camera (junk) -> skipped.
    # Result = q0 alone: AP 0.5, INP 0.5, CMC [0, 1, 1, 1], one valid query.
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.9], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])
    qp, gp, qc, gc = arr([1, 9], [1, 2, 1, 3, 1, 9], [0, 0], [0, 1, 1, 0, 2, 0])
    out = evaluate_distmat(d, qp, gp, qc, gc, max_rank=4)
    assert out["num_valid_queries"] == 1
    np.testing.assert_array_equal(out["cmc"], [0.0, 1.0, 1.0, 1.0])
    assert out["mAP"] == pytest.approx(0.5, abs=1e-12)
    assert out["mINP"] == pytest.approx(0.5, abs=1e-12)


def test_gallery_smaller_than_max_rank_pads_cmc():
    # Query pid 1, cam 0; gallery g0 (2,1,.1), g1 (1,1,.2), g2 (1,0,.05) junk.
    # Ranked after removal: g0 x, g1 v -> rank 2, list of length 2 < max_rank 5.
    # CMC = [0, 1] padded with its last value -> [0, 1, 1, 1, 1]; AP = 1/2; INP = 1/2.
    qp, gp, qc, gc = arr([1], [2, 1, 1], [0], [1, 1, 0])
    out = evaluate_distmat(np.array([[0.1, 0.2, 0.05]]), qp, gp, qc, gc, max_rank=5)
    np.testing.assert_array_equal(out["cmc"], [0.0, 1.0, 1.0, 1.0, 1.0])
    assert out["mAP"] == pytest.approx(0.5, abs=1e-12)
    assert out["mINP"] == pytest.approx(0.5, abs=1e-12)


def test_minp_uses_rank_of_last_match():
    # Query pid 1, cam 0; six gallery entries already in distance order, matches at 1, 2, 6.
    # AP = (1/1 + 2/2 + 3/6) / 3 = 2.5 / 3; INP = 3 / 6 = 0.5; CMC = [1, 1, 1].
    qp, gp, qc, gc = arr([1], [1, 1, 4, 5, 6, 1], [0], [1, 2, 1, 1, 1, 3])
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    out = evaluate_distmat(d, qp, gp, qc, gc, max_rank=3)
    np.testing.assert_array_equal(out["cmc"], [1.0, 1.0, 1.0])
    assert out["mAP"] == pytest.approx(2.5 / 3, abs=1e-12)
    assert out["mINP"] == pytest.approx(0.5, abs=1e-12)


def test_distractors_count_as_non_matches_and_queries_average():
    # q0 pid 1 cam 0: g0 (0,0,.1) distractor, g1 (-1,0,.2) junk-id image, g2 (1,3,.3) match
    #   -> distractors are not junk (other pid): match at rank 3, AP = INP = 1/3, CMC [0, 0, 1].
    # q1 pid 2 cam 1 (dists .3, .2, .1 for g0..g2; g3 (2,0,.05)): match g3 at rank 1 -> AP 1.
    # Means: mAP = (1/3 + 1) / 2 = 2/3, mINP = 2/3, CMC = [(0+1)/2, (0+1)/2, (1+1)/2].
    qp, gp, qc, gc = arr([1, 2], [0, -1, 1, 2], [0, 1], [0, 0, 3, 0])
    d = np.array([[0.1, 0.2, 0.3, 0.4], [0.3, 0.2, 0.1, 0.05]])
    out = evaluate_distmat(d, qp, gp, qc, gc, max_rank=3)
    np.testing.assert_allclose(out["cmc"], [0.5, 0.5, 1.0])
    assert out["mAP"] == pytest.approx(2 / 3, abs=1e-12)
    assert out["mINP"] == pytest.approx(2 / 3, abs=1e-12)
    assert out["num_valid_queries"] == 2


def test_no_valid_query_raises_clear_error():
    qp, gp, qc, gc = arr([1], [1, 2], [0], [0, 1])  # the only pid-1 image is in cam 0: junk
    with pytest.raises(ValueError, match="no query has a match"):
        evaluate_distmat(np.array([[0.1, 0.2]]), qp, gp, qc, gc)
    with pytest.raises(ReIDInputError):
        evaluate_distmat(np.array([[0.1, 0.2]]), qp, gp, qc, gc)


def test_bad_inputs_are_named():
    qp, gp, qc, gc = arr([1], [1, 2], [0], [1, 1])
    with pytest.raises(ReIDInputError, match="g_pids has 2 entries"):
        evaluate_distmat(np.zeros((1, 3)), qp, gp, qc, gc)
    with pytest.raises(ReIDInputError, match="NaN"):
        evaluate_distmat(np.array([[np.nan, 0.2]]), qp, gp, qc, gc)
    with pytest.raises(ReIDInputError, match="metric='l1'"):
        evaluate_features(np.ones((1, 2)), np.ones((2, 2)), qp, gp, qc, gc, metric="l1")
    with pytest.raises(ReIDInputError, match="max_rank"):
        evaluate_distmat(np.zeros((1, 2)), qp, gp, qc, gc, max_rank=0)


# ------------------------------------------------------------------------- randomized checks


def random_case(seed, nq, ng, kind):
    rng = np.random.default_rng(seed)
    num_ids, num_cams = max(2, ng // 6), 3
    qp = rng.integers(1, num_ids + 1, nq)
    gp = rng.integers(-1, num_ids + 1, ng)  # includes distractors 0 and -1
    qp[: nq // 5] = num_ids + 7  # some queries have no gallery image at all
    qc, gc = rng.integers(0, num_cams, nq), rng.integers(0, num_cams, ng)
    if kind == "ties":
        d = rng.integers(0, 4, (nq, ng)).astype(np.float32)
    elif kind == "inf":
        d = rng.integers(0, 3, (nq, ng)).astype(np.float64)
        d[rng.random((nq, ng)) < 0.15] = np.inf
        d[rng.random((nq, ng)) < 0.05] = -np.inf
    elif kind == "narrow":
        d = (5.0 + 1e-4 * rng.random((nq, ng))).astype(np.float32)
    else:
        d = rng.random((nq, ng))
    return d, qp, gp, qc, gc


@pytest.mark.parametrize("kind", ["ties", "inf", "narrow", "continuous"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_against_reference(seed, kind):
    d, qp, gp, qc, gc = random_case(seed, 40, 90, kind)
    out = evaluate_distmat(d, qp, gp, qc, gc, max_rank=20)
    assert_matches_reference(out, d, qp, gp, qc, gc, 20)


@pytest.mark.parametrize("seed", [3, 4])
def test_random_against_reference_across_blocks(seed, monkeypatch):
    # Tiny blocks/sub-blocks/pair blocks exercise the chunk boundaries on every path.
    monkeypatch.setattr(reid, "_BLOCK_ELEMENTS", {"cpu": 700, "cuda": 700})
    monkeypatch.setattr(reid, "_SUB_ELEMENTS", {"cpu": 150, "cuda": 150})
    monkeypatch.setattr(reid, "_PAIR_BLOCK", 7)
    for kind in ("ties", "continuous"):
        d, qp, gp, qc, gc = random_case(seed, 60, 70, kind)
        out = evaluate_distmat(d, qp, gp, qc, gc, max_rank=100)
        assert_matches_reference(out, d, qp, gp, qc, gc, 100)


def test_market_like_scale_against_reference():
    rng = np.random.default_rng(5)
    nq, ng = 300, 3000
    qp, gp = rng.integers(1, 200, nq), rng.integers(0, 200, ng)
    qc, gc = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    d = rng.random((nq, ng), dtype=np.float32)
    d[:, ::7] = np.round(d[:, ::7], 2)  # some exact ties among continuous values
    out = evaluate_distmat(d, qp, gp, qc, gc)
    assert_matches_reference(out, d, qp, gp, qc, gc, 50)


def test_numpy_and_torch_inputs_agree():
    d, qp, gp, qc, gc = random_case(6, 30, 50, "ties")
    a = evaluate_distmat(d, qp, gp, qc, gc, max_rank=10)
    b = evaluate_distmat(
        torch.from_numpy(d),
        torch.from_numpy(qp),
        torch.from_numpy(gp),
        torch.from_numpy(qc),
        torch.from_numpy(gc),
        max_rank=10,
    )
    c = evaluate_distmat(d.astype(np.int64), qp.tolist(), gp.tolist(), qc, gc, max_rank=10)
    for other in (b, c):
        np.testing.assert_array_equal(a["cmc"], other["cmc"])
        assert (a["mAP"], a["mINP"], a["num_valid_queries"]) == (
            other["mAP"],
            other["mINP"],
            other["num_valid_queries"],
        )


def test_features_match_distmat_and_chunking():
    rng = np.random.default_rng(7)
    qf, gf = rng.normal(size=(25, 16)), rng.normal(size=(80, 16))
    qp, gp = rng.integers(0, 10, 25), rng.integers(0, 10, 80)
    qc, gc = rng.integers(0, 3, 25), rng.integers(0, 3, 80)
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    cos = evaluate_distmat(1 - qn @ gn.T, qp, gp, qc, gc, max_rank=10)
    sq = ((qf[:, None] - gf[None]) ** 2).sum(-1)
    euc = evaluate_distmat(sq, qp, gp, qc, gc, max_rank=10)
    for chunk in (None, 1, 7):
        for metric, ref in (("cosine", cos), ("euclidean", euc)):
            out = evaluate_features(
                torch.from_numpy(qf), gf, qp, gp, qc, gc, metric=metric, max_rank=10, chunk_size=chunk
            )
            np.testing.assert_allclose(out["cmc"], ref["cmc"], atol=1e-12)
            assert out["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
            assert out["mINP"] == pytest.approx(ref["mINP"], abs=1e-12)
    assert cos["mAP"] != pytest.approx(euc["mAP"], abs=1e-6)  # unnormalized: rankings differ


def test_euclidean_and_cosine_agree_on_normalized_features():
    # On unit vectors |q - g|^2 = 2 - 2 cos: the same ranking, hence the same metrics.
    rng = np.random.default_rng(8)
    qf = rng.normal(size=(40, 32))
    gf = rng.normal(size=(120, 32))
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    ids = rng.integers(0, 15, 40), rng.integers(0, 15, 120), rng.integers(0, 4, 40), rng.integers(0, 4, 120)
    a = evaluate_features(qf, gf, *ids, metric="cosine", max_rank=30)
    b = evaluate_features(qf, gf, *ids, metric="euclidean", max_rank=30)
    np.testing.assert_allclose(a["cmc"], b["cmc"], atol=1e-12)
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-12)
    assert a["mINP"] == pytest.approx(b["mINP"], abs=1e-12)
    assert 0.0 < a["mAP"] < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu():
    d, qp, gp, qc, gc = random_case(9, 50, 200, "ties")
    cpu = evaluate_distmat(d, qp, gp, qc, gc)
    gpu = evaluate_distmat(torch.from_numpy(d).cuda(), qp, gp, qc, gc)
    np.testing.assert_array_equal(cpu["cmc"], gpu["cmc"])
    assert (cpu["mAP"], cpu["mINP"]) == pytest.approx((gpu["mAP"], gpu["mINP"]), abs=1e-12)


def test_evaluator_strict_refuses_partial_and_nonstrict_evaluates_present_samples():
    import torch as _t

    from ppreid.metrics.reid import ReIDEvalInputError
    from ppreid.metrics.reid import evaluate_features as _ef
    from ppreid.metrics.reid_metric import ReIDEvaluator

    feats = _t.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    pids, cams = _t.tensor([1, 2, 1, 2, 3]), _t.tensor([0, 0, 1, 1, 1])
    present = _t.tensor([0, 1, 2, 3])  # the gallery's last sample (index 4) never arrived
    strict = ReIDEvaluator(num_query=2, num_gallery=3)
    strict.update(feats[present], pids[present], cams[present], present)
    with pytest.raises(ReIDEvalInputError, match="missing"):
        strict.compute()
    loose = ReIDEvaluator(num_query=2, num_gallery=3, strict=False)
    loose.update(feats[present], pids[present], cams[present], present)
    res = loose.compute()
    expected = _ef(feats[:2], feats[2:4], pids[:2], pids[2:4], cams[:2], cams[2:4])
    assert res["partial"] is True and res["mAP"] == expected["mAP"] == 1.0


# ------------------------------------------------------------------------------ scene sensitivity


def scene_case():
    # q0: pid 1, cam 0, scene 0. Gallery (pid, cam, scene, dist from q0):
    #   g0 (1,0,0,.05) junk   g1 (2,1,0,.1) x   g2 (1,1,0,.2) same-scene match   g3 (3,2,1,.3) x
    #   g4 (1,2,1,.4) other-scene match   g5 (1,3,0,.5) same   g6 (4,3,1,.6) x   g7 (1,4,1,.7) other
    #   g8 (5,2,1,.95) x
    # q1: pid 5, cam 0, scene 1; its only match g8 (scene 1) at .25 after g1 (.1) and g2 (.2).
    d = np.array(
        [
            [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.95],
            [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.25],
        ]
    )
    qp, qc, qs = [1, 5], [0, 0], [0, 1]
    gp = [1, 2, 1, 3, 1, 1, 4, 1, 5]
    gc = [0, 1, 1, 2, 2, 3, 3, 4, 2]
    gs = [0, 0, 0, 1, 1, 0, 1, 1, 1]
    return d, *arr(qp, gp, qc, gc, qs, gs)


def test_scene_split_hand_worked():
    # q0 same-scene ranking (g0 junk, other-scene matches g4 g7 left out): g1 x, g2 v, g3 x, g5 v -> ranks 2, 4:
    #    AP = (1/2 + 2/4) / 2 = 1/2.
    # q0 other-scene ranking (g0, g2, g5 left out): g1 x, g3 x, g4 v, g6 x, g7 v -> ranks 3, 5: AP = (1/3 + 2/5) / 2.
    # q1 same-scene: g1 x, g2 x, g8 v -> AP = 1/3; no other-scene match.
    # same = (1/2 + 1/3) / 2 = 5/12 over 2 queries; other = 11/30 over 1 query; gap = 5/12 - 11/30 = 1/20.
    d, qp, gp, qc, gc, qs, gs = scene_case()
    out = scene_split.scene_split_ap(d, qp, gp, qc, gc, qs, gs)
    assert out["same_bg_ap"] == pytest.approx(5 / 12, abs=1e-12)
    assert out["diff_bg_ap"] == pytest.approx(11 / 30, abs=1e-12)
    assert (out["n_same"], out["n_diff"]) == (2, 1)
    assert out["gap"] == pytest.approx(1 / 20, abs=1e-12)
    # one scene everywhere: the same-scene AP is the mAP, and nothing is "other"
    one = scene_split.scene_split_ap(d, qp, gp, qc, gc, np.zeros(2), np.zeros(9))
    assert one["same_bg_ap"] == pytest.approx(evaluate_distmat(d, qp, gp, qc, gc, max_rank=5)["mAP"], abs=1e-12)
    assert one["diff_bg_ap"] is None and one["n_diff"] == 0 and one["gap"] is None


def test_scene_split_ties_in_gallery_order_and_one_scene_equals_map():
    # ties at .5 are ranked in gallery order: g0 x, g1 (same scene) v, g2 (other scene) v
    d = np.array([[0.5, 0.5, 0.5]])
    out = scene_split.scene_split_ap(d, *arr([1], [2, 1, 1], [0], [1, 1, 2], [0], [0, 0, 1]))
    assert out["same_bg_ap"] == pytest.approx(1 / 2) and out["diff_bg_ap"] == pytest.approx(1 / 2)
    for seed, kind in [(0, "ties"), (1, "inf"), (2, "continuous")]:
        d, qp, gp, qc, gc = random_case(seed, 40, 90, kind)
        one = scene_split.scene_split_ap(d, qp, gp, qc, gc, np.zeros(40), np.zeros(90))
        full = evaluate_distmat(d, qp, gp, qc, gc, max_rank=20)
        assert one["same_bg_ap"] == pytest.approx(full["mAP"], abs=1e-9)
        assert one["n_same"] == full["num_valid_queries"]


def reference_scene_split(d, qp, gp, qc, gc, qs, gs):
    """Plain per-query reference: sort the row, drop junk and the other kind of match, average precision."""
    aps = {"same": [], "diff": []}
    for i in range(d.shape[0]):
        order = np.lexsort((np.arange(d.shape[1]), d[i]))  # by distance, then gallery index
        for kind in aps:
            hits, seen, precisions = 0, 0, []
            for g in order:
                if gp[g] == qp[i] and gc[g] == qc[i]:
                    continue  # junk
                is_match = gp[g] == qp[i]
                in_kind = (gs[g] == qs[i]) == (kind == "same")
                if is_match and not in_kind:
                    continue  # the other kind leaves this ranking
                seen += 1
                if is_match:
                    hits += 1
                    precisions.append(hits / seen)
            if precisions:
                aps[kind].append(np.mean(precisions))
    return aps


@pytest.mark.parametrize("kind", ["ties", "inf", "continuous"])
def test_scene_split_random_against_plain_reference(kind, monkeypatch):
    d, qp, gp, qc, gc = random_case(7, 40, 90, kind)
    rng = np.random.default_rng(8)
    qs, gs = rng.integers(0, 3, 40), rng.integers(0, 3, 90)
    ref = reference_scene_split(d, qp, gp, qc, gc, qs, gs)
    monkeypatch.setattr(scene_split, "_SCENE_ELEMENTS", 500)  # many row blocks and comparison sub-blocks
    out = scene_split.scene_split_ap(d, qp, gp, qc, gc, qs, gs)
    assert (out["n_same"], out["n_diff"]) == (len(ref["same"]), len(ref["diff"])) and min(
        out["n_same"], out["n_diff"]
    ) > 5
    assert out["same_bg_ap"] == pytest.approx(np.mean(ref["same"]), abs=1e-12)
    assert out["diff_bg_ap"] == pytest.approx(np.mean(ref["diff"]), abs=1e-12)


def test_scene_split_from_features_equals_distmat_and_blocks(monkeypatch):
    rng = np.random.default_rng(5)
    qf, gf = torch.randn(30, 8, dtype=torch.float64), torch.randn(70, 8, dtype=torch.float64)
    qp, gp = rng.integers(0, 10, 30), rng.integers(0, 10, 70)
    qc, gc = rng.integers(0, 3, 30), rng.integers(0, 3, 70)
    qs, gs = rng.integers(0, 2, 30), rng.integers(0, 2, 70)
    ref = scene_split.scene_split_ap(reid.distance_matrix(qf, gf), qp, gp, qc, gc, qs, gs)
    assert ref["n_same"] > 0 and ref["n_diff"] > 0
    monkeypatch.setattr(scene_split, "_SCENE_ELEMENTS", 150)  # 2 queries per block
    feats = scene_split.scene_split_features(qf, gf, qp, gp, qc, gc, qs, gs, metric="cosine")
    for key in ("same_bg_ap", "diff_bg_ap", "n_same", "n_diff"):
        assert feats[key] == pytest.approx(ref[key], abs=1e-12)


def test_scene_split_bad_inputs_are_named():
    d, qp, gp, qc, gc, qs, gs = scene_case()
    with pytest.raises(ReIDInputError, match="g_scenes has 8 entries"):
        scene_split.scene_split_ap(d, qp, gp, qc, gc, qs, gs[:8])
    bad = d.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ReIDInputError, match="NaN"):
        scene_split.scene_split_ap(bad, qp, gp, qc, gc, qs, gs)


def test_evaluator_reports_the_scene_split_by_the_distances_it_ranks():
    from ppreid.metrics.reid_metric import ReIDEvaluator

    rng = np.random.default_rng(6)
    feats = torch.randn(24, 6)
    pids = torch.as_tensor(rng.integers(0, 5, 24))
    cams = torch.as_tensor(rng.integers(0, 4, 24))
    scenes = cams % 2  # two cameras per scene, as night_cctv
    nq = 8
    ev = ReIDEvaluator(num_query=nq, num_gallery=16, scenes=(scenes[:nq], scenes[nq:]))
    ev.update(feats, pids, cams, torch.arange(24))
    res = ev.compute()
    expect = scene_split.scene_split_features(
        feats[:nq], feats[nq:], pids[:nq], pids[nq:], cams[:nq], cams[nq:], *scenes.split([nq, 16])
    )
    assert res["scene"] == expect
    plain = ReIDEvaluator(num_query=nq, num_gallery=16)
    plain.update(feats, pids, cams, torch.arange(24))
    assert "scene" not in plain.compute()
    with pytest.raises(ReIDInputError, match="set_scenes got 8 query and 15 gallery"):
        plain.set_scenes(scenes[:nq], scenes[nq:-1])
