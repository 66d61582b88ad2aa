"""Scene sensitivity of every run: the reid_media callback hands each target's evaluator the scene of every
image and writes the split to results.json and scene_sensitivity.png."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, run_train

from ppreid.callbacks.reid_media import ReIDMediaCallback, scene_ids
from ppreid.data.datasets.base import ReIDRecord
from ppreid.metrics.reid_metric import ReIDEvaluator
from ppreid.metrics.scene_split import scene_split_features


def test_scene_ids_name_the_scene_or_nothing():
    recs = [ReIDRecord(f"{i}.jpg", 1, i, {"background": b}) for i, b in enumerate(["plaza", "lot", "plaza"])]
    assert scene_ids(recs, "background") == [1, 0, 1]
    assert scene_ids(recs + [ReIDRecord("x.jpg", 1, 0)], "background") is None  # a real dataset: no attributes
    assert scene_ids(recs, "weather") is None


def test_callback_splits_every_target_by_scene_into_results_and_a_figure(tmp_path):
    # night-like target: cameras 0/2 in one scene, 1/3 in another; station-like: one scene
    torch.manual_seed(0)
    targets, names, evaluators, feats = [], ["night", "station"], [], {}
    for name, backgrounds in zip(names, (["plaza", "lot"], ["station"])):
        q = [
            ReIDRecord("q.jpg", p, c, {"background": backgrounds[c % len(backgrounds)]})
            for p in range(6)
            for c in (0, 1)
        ]
        g = [
            ReIDRecord("g.jpg", p, c, {"background": backgrounds[c % len(backgrounds)]})
            for p in range(6)
            for c in (2, 3)
        ]
        targets.append(SimpleNamespace(name=name, splits=SimpleNamespace(query=q, gallery=g)))
        evaluators.append(ReIDEvaluator(num_query=len(q), num_gallery=len(g), max_rank=5))
        feats[name] = torch.randn(len(q) + len(g), 4)
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(targets=targets), is_global_zero=True, default_root_dir=str(tmp_path), loggers=[]
    )
    module = SimpleNamespace(target_names=names, evaluators=evaluators, eval_results={}, extra_results={})
    callback = ReIDMediaCallback(num_train_images=0)
    callback.on_test_start(trainer, module)
    results = {}
    for t, ev in zip(targets, evaluators):
        recs = t.splits.query + t.splits.gallery
        pids, cams = torch.tensor([r.pid for r in recs]), torch.tensor([r.camid for r in recs])
        ev.update(feats[t.name], pids, cams, torch.arange(len(recs)))
        results[t.name] = ev.compute()
    module.eval_results["test"] = results
    callback.on_test_end(trainer, module)

    scene = module.extra_results["scene_sensitivity"]
    night = scene["night"]
    f, n = feats["night"], 12
    recs = targets[0].splits.query + targets[0].splits.gallery
    pids, cams = torch.tensor([r.pid for r in recs]), torch.tensor([r.camid for r in recs])
    expect = scene_split_features(f[:n], f[n:], pids[:n], pids[n:], cams[:n], cams[n:], cams[:n] % 2, cams[n:] % 2)
    assert night == expect and night["n_same"] == night["n_diff"] == 12  # every query: one match of each kind
    assert scene["station"]["diff_bg_ap"] is None and scene["station"]["n_same"] == 12
    assert (tmp_path / "scene_sensitivity.png").stat().st_size > 1000


@pytest.mark.slow
def test_default_run_reports_scene_sensitivity_of_every_target(tmp_path):
    toy = [
        "data.prepare.num_identities=8",
        "data.prepare.images_per_identity=4",
        "data.prepare.target_identities=4",
        "data.prepare.gallery_per_identity=2",
        "data.prepare.height=32",
        "data.prepare.width=16",
        "data.prepare.progress=false",
    ]
    res = run_train(TINY + toy, tmp_path / "run", tmp_path / "data")
    scene = res["scene_sensitivity"]
    assert set(scene) == {"night_cctv", "station_indoor", "far_high"}
    assert scene["station_indoor"]["n_diff"] == 0  # one background
    assert scene["night_cctv"]["n_diff"] > 0 and scene["far_high"]["n_diff"] > 0  # two backgrounds over 4 cameras
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["scene_sensitivity"] == scene
    assert (tmp_path / "run" / "scene_sensitivity.png").is_file()
