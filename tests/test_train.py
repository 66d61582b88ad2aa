"""End-to-end runs of train.py's pipeline on tiny data: real training, real files, real metrics."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, TINY, run_train

REAL_DATA = [
    "market1501",
    "dukemtmc",
    "msmt17",
    "cuhk03np",
    "cuhk03np_detected",
    "genepers",
    "dg_market1501",
    "dg_msmt17",
    "dg_randperson",
    "dg_unrealperson",
    "dg_clonedperson",
]


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize(
    "data", [d if d == "market1501" else pytest.param(d, marks=pytest.mark.slow) for d in REAL_DATA]
)  # the fast tier runs one (the parsers have their own tests); pytest -m slow runs them all
def test_fast_dev_run_every_real_data_config(data, reid_data_dir, tmp_path):
    res = run_train(TINY + [f"data={data}", "debug=fdr"], tmp_path, reid_data_dir)
    assert set(res["test"]) and all(0.0 <= m["R1"] <= 1.0 for m in res["test"].values())


@pytest.fixture(scope="module")
def trained_market(market_two_epochs):
    """The shared 2-epoch Market run, for the tests that read its files or evaluate its checkpoint:
    (results, run dir, last.ckpt)."""
    res, out = market_two_epochs
    return res, out, out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def trained_market_evaluated(trained_market, reid_data_dir, tmp_path_factory):
    """``train=false ckpt_path=<its last.ckpt>`` on the same data, single process: the results."""
    ckpt = trained_market[2]
    out = tmp_path_factory.mktemp("trained_market_evaluated")
    return run_train(TINY + ["data=market1501", "train=false", f"ckpt_path={ckpt}"], out, reid_data_dir)


@pytest.mark.slow
def test_train_then_results_json_and_checkpoint(trained_market):
    res, tmp_path, _ = trained_market
    written = _results(tmp_path)
    assert written["test"] == res["test"]
    m = written["test"]["market1501"]
    assert list(m) == ["R1", "R5", "R10", "mAP", "mINP"]
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert m["R1"] <= m["R5"] <= m["R10"]
    assert written["seed"] == 42 and written["model"] == "bot" and written["wall_time_s"] > 0
    env, resolved = written["environment"], yaml.safe_load((tmp_path / "config_resolved.yaml").read_text())
    assert env["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert env["precision"] == str(resolved["trainer"]["precision"]) != "auto" and env["cpu"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "train_images.jpg").is_file() and (tmp_path / "cmc_test.png").is_file()
    cmc = json.loads((tmp_path / "cmc_test.json").read_text())["market1501"]
    assert len(cmc) == 50 and cmc[0] == pytest.approx(m["R1"]) and cmc[9] == pytest.approx(m["R10"])


@pytest.mark.slow
def test_eval_checkpoint_equals_end_of_training(trained_market, trained_market_evaluated):
    trained, _, _ = trained_market
    evaluated = trained_market_evaluated
    assert evaluated["test"] == trained["test"]


@pytest.mark.slow
def test_resume_from_last_ckpt_continues_training(reid_data_dir, tmp_path, caplog):
    run_train(TINY + ["data=market1501", "trainer.max_epochs=1"], tmp_path / "a", reid_data_dir)
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    first = torch.load(ckpt, map_location="cpu", weights_only=False)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, logger="train"):
        warnings.simplefilter("always")
        run_train(
            TINY + ["data=market1501", "trainer.max_epochs=3", f"ckpt_path={ckpt}"], tmp_path / "b", reid_data_dir
        )
    # another run folder: our one line says where the new checkpoints go, not Lightning's dirpath warning
    assert not [w for w in caught if "dirpath has changed" in str(w.message)]
    assert f"resuming from {ckpt}; new checkpoints go to {tmp_path / 'b' / 'checkpoints'}" in caplog.messages
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["epoch"] == 0 and resumed["epoch"] == 2
    steps_per_epoch = first["global_step"]
    assert steps_per_epoch > 0 and resumed["global_step"] == 3 * steps_per_epoch
    # the optimizer state and LR schedule came along (warm-up advanced 3 epochs, not restarted)
    assert resumed["lr_schedulers"][0]["last_epoch"] == 3


def test_untrained_evaluation_runs_with_train_false(reid_data_dir, tmp_path):
    res = run_train(TINY + ["data=market1501", "train=false"], tmp_path, reid_data_dir)
    assert (tmp_path / "results.json").is_file() and res["train"] is False
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_training_lowers_the_loss(reid_data_dir, tmp_path):
    import csv

    run_train(
        TINY
        + [
            "data=market1501",
            "trainer.max_epochs=6",
            "trainer.log_every_n_steps=1",
            "model.scheduler.warmup_epochs=0",
            "data.val_split.identities=0",
        ],
        tmp_path,
        reid_data_dir,
    )
    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 6
    k = len(losses) // 3
    assert sum(losses[-k:]) / k < sum(losses[:k]) / k


def test_multi_source_training_merges_identities(reid_data_dir, tmp_path):
    root = reid_data_dir
    res = run_train(
        TINY
        + [
            "data=market1501",
            "data.sources=[{dataset: market1501, root: " + str(root / "Market-1501-v15.09.15") + "},"
            "{dataset: dukemtmc, root: " + str(root / "DukeMTMC-reID") + "}]",
            "debug=fdr",
        ],
        tmp_path,
        reid_data_dir,
    )
    assert "market1501" in res["test"]


@pytest.mark.slow
def test_ddp_sim_evaluation_equals_single_process(trained_market, trained_market_evaluated, reid_data_dir, tmp_path):
    ckpt = trained_market[2]
    single = trained_market_evaluated
    ddp = run_train(
        TINY + ["data=market1501", "train=false", f"ckpt_path={ckpt}", "trainer=ddp_sim"],
        tmp_path / "ddp",
        reid_data_dir,
    )
    assert json.loads((tmp_path / "ddp" / "results.json").read_text())["test"] == single["test"]
    assert ddp["test"] == single["test"]


@pytest.mark.slow
def test_ddp_sim_training_runs(reid_data_dir, tmp_path):
    res = run_train(
        TINY + ["data=market1501", "trainer=ddp_sim", "trainer.max_epochs=1", "data.val_split.identities=0"],
        tmp_path,
        reid_data_dir,
    )  # 2 ranks x P=4 need 8 ids
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert 0.0 <= res["test"]["market1501"]["mAP"] <= 1.0


# `_`-prefixed files are building blocks (conf/experiment/_bot_120ep.yaml), not experiments
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if not p.stem.startswith("_"))


def _uses_clip(experiment: str) -> bool:
    text = (ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text()
    return any(f"override /model: {m}" in text for m in ("clipreid", "pdm"))


# Experiments on the embedded data (no data override, e.g. the sandbox privacy rows): a toy GenePerson-mini.
TOY_MINI = [
    "data.prepare.num_identities=8",
    "data.prepare.images_per_identity=4",
    "data.prepare.target_identities=4",
    "data.prepare.gallery_per_identity=2",
    "data.prepare.height=32",
    "data.prepare.width=16",
    "data.prepare.progress=false",
]


def _on_embedded_data(experiment: str) -> bool:
    return "override /data:" not in (ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_fast_dev_run_every_experiment_config(experiment, reid_data_dir, tmp_path):
    # the experiment's real data/trainer choices, with a tiny CPU backbone and no weight download
    tiny = (
        [o for o in TINY if not o.startswith("backbone")] + ["backbone=clip_tiny"] if _uses_clip(experiment) else TINY
    )
    toy = TOY_MINI if _on_embedded_data(experiment) else []
    res = run_train(
        [f"experiment={experiment}"] + tiny + ["backbone.pretrained=null", "debug=fdr"] + toy, tmp_path, reid_data_dir
    )
    assert res["test"], res


@pytest.mark.slow
def test_default_config_writes_mini_data_and_evaluates_every_target(tmp_path):
    """The default `python train.py` path (data=genepers_mini), at toy size: data written on first use."""
    res = run_train(TINY + TOY_MINI, tmp_path / "run", tmp_path / "data")
    mini = tmp_path / "data" / "GenePerson-mini"
    assert (mini / "source" / "manifest.jsonl").is_file()
    assert set(res["test"]) == {"night_cctv", "station_indoor", "far_high"}
    assert res["data"] == "genepers_mini"
    assert all(0.0 <= m["mAP"] <= 1.0 for m in res["test"].values())


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_follows_the_cpu(native, monkeypatch):
    from ppreid.config import resolvers

    monkeypatch.setattr(resolvers, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolvers._precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    assert resolvers._precision("auto", "auto") == ("bf16-mixed" if native else "32-true")
    assert resolvers._precision("32-true", "cpu") == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolvers._precision("auto", "auto") == "32-true"  # a GPU under trainer=default: as before


@pytest.mark.slow
def test_bf16_mixed_training_lowers_the_loss_and_evaluates(reid_data_dir, tmp_path):
    """The default run's arithmetic on native-bf16 CPUs (trainer.precision=auto), typed here on any CPU."""
    import csv

    res = run_train(
        TINY
        + [
            "data=market1501",
            "trainer.max_epochs=6",
            "trainer.log_every_n_steps=1",
            "trainer.precision=auto",
            "model.scheduler.warmup_epochs=0",
            "data.val_split.identities=0",
        ],
        tmp_path,
        reid_data_dir,
    )
    cfg = (tmp_path / "config_resolved.yaml").read_text()
    assert "precision: bf16-mixed" in cfg or "precision: 32-true" in cfg  # auto resolved before the Trainer
    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    k = len(losses) // 3
    assert sum(losses[-k:]) / k < sum(losses[:k]) / k
    assert 0.0 < res["test"]["market1501"]["mAP"] <= 100.0


@pytest.mark.slow
def test_bf16_mixed_typed_trains(reid_data_dir, tmp_path):
    res = run_train(
        TINY + ["data=market1501", "trainer.precision=bf16-mixed", "data.val_split.identities=0"],
        tmp_path,
        reid_data_dir,
    )
    assert "precision: bf16-mixed" in (tmp_path / "config_resolved.yaml").read_text()
    assert res["test"]["market1501"]["mAP"] > 0
