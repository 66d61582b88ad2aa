"""What a run leaves for a person: losses logged in short runs, best.ckpt, pictures that say what they show,
evaluation-only results.json that names the checkpoint's training (not the command's defaults),
no 'random init' news for a checkpoint's model, embed.py --normalize."""

from __future__ import annotations

import csv
import json
import logging
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import ROOT, TINY, load_script, run_train


@pytest.fixture(scope="module")
def trained(reid_data_dir, tmp_path_factory):
    """1 epoch on tiny Market-1501 with seed 3: 3 steps, fewer than trainer.log_every_n_steps=10."""
    out = tmp_path_factory.mktemp("trained")
    res = run_train(
        TINY + ["data=market1501", "seed=3", "logger=csv", "data.val_split.identities=1"], out, reid_data_dir
    )
    return out, res


@pytest.mark.slow
def test_short_run_logs_its_training_losses(trained):
    out, _ = trained
    with open(out / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss")]
    assert rows and all(float(r["train/loss"]) > 0 for r in rows)


def test_loss_curves_of_a_bot_run(trained):
    """loss_curves.png from the epoch means of the logged losses and the validated epochs; the record
    rides in the checkpoint, so a resumed run draws the whole run."""
    out, _ = trained
    assert (out / "loss_curves.png").is_file()
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = next(v for k, v in ckpt["callbacks"].items() if "LossCurvesCallback" in k)
    assert set(state["train"]) == {"loss", "loss_ce_ls", "loss_triplet"}
    assert [e for e, _ in state["train"]["loss"]] == [0] and state["train"]["loss"][0][1] > 0
    assert set(state["val"]) == {"mAP", "R1"} and [e for e, _ in state["val"]["mAP"]] == [0]


def test_log_interval_follows_the_run_length():
    from ppreid.callbacks.log_interval import log_interval

    assert log_interval(10, steps_per_epoch=3, max_epochs=1) == 1  # 3 steps: log each
    assert log_interval(10, steps_per_epoch=33, max_epochs=2) == 3  # 66 steps: >= 20 points
    assert log_interval(10, steps_per_epoch=33, max_epochs=32) == 10  # the default run: as configured
    assert log_interval(50, steps_per_epoch=20, max_epochs=100) == 20  # every epoch logs at least once


@pytest.mark.slow
def test_best_checkpoint_is_the_best_validated_epoch(trained):
    out, _ = trained
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    cb = [v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint{'monitor': 'val/mAP'")][0]
    assert cb["monitor"] == "val/mAP" and cb["best_model_path"].endswith("best.ckpt")
    assert best["ppreid"]["training"]["seed"] == 3 and best["ppreid"]["training"]["identity"]["epochs"] == 1


@pytest.mark.slow
def test_evaluation_only_results_name_the_checkpoints_training(trained, reid_data_dir, tmp_path, caplog):
    """Evaluating with the command's defaults (seed 42, other data) used to record seed 42 and the
    command's data as the run's identity."""
    out, res = trained
    caplog.set_level(logging.INFO)
    ev = run_train(
        TINY
        + [
            "data=dukemtmc",
            "train=false",
            f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
            "eval.flip=true",
            "eval.rerank.enabled=true",
            "eval.rerank.k1=4",
            "eval.rerank.k2=2",
        ],
        tmp_path,
        reid_data_dir,
    )
    written = json.loads((tmp_path / "results.json").read_text())
    ident, trained_ident = written["identity"], res["identity"]
    assert written["seed"] == 3 and written["evaluation"]["seed"] == 42
    assert ident["data"] == "market1501" and ident["epochs"] == 1 and ident["targets"] == ["dukemtmc"]
    assert ident["config_hash"] != trained_ident["config_hash"]
    assert written["checkpoint"]["training"]["identity"] == trained_ident
    assert written["checkpoint"]["epochs_completed"] == 1 and written["checkpoint"]["training"]["seed"] == 3
    assert written["evaluation"]["flip"] is True and written["evaluation"]["rerank"] == {
        "k1": 4,
        "k2": 2,
        "lambda_value": 0.3,
    }
    assert written["evaluation"]["data"] == "dukemtmc" and ev["test"] == written["test"]
    text = caplog.text
    assert "testing: flip-test on, re-ranking on (k1=4, k2=2, lambda_value=0.3)" in text
    assert "test results (%), flip-test on, re-ranking on" in text
    assert "random init" not in text and "weights: all from the checkpoint" in text
    assert "seed 3, 1 epochs" in text


@pytest.mark.slow
def test_training_run_says_its_evaluation_options(trained):
    _, res = trained
    assert res["evaluation"] == {"flip": False, "rerank": None}


def test_train_images_show_the_datasets_pids():
    from ppreid.callbacks.reid_media import dataset_pid_caption
    from ppreid.data.datasets.base import ReIDRecord

    assert dataset_pid_caption(ReIDRecord("/d/bounding_box_train/0002_c1s1_000451_03.jpg", 0, 0)) == "id 2 c1"
    assert dataset_pid_caption(ReIDRecord("/d/GenePerson/00417_c3_000002.jpg", 11, 2)) == "id 417 c3"
    assert (
        dataset_pid_caption(
            ReIDRecord("/m/train/0105/0105_004_01_0303morning_0015_0.jpg", 1, 3, domain=1), with_source=True
        )
        == "s2:id 105 c4"
    )
    assert dataset_pid_caption(ReIDRecord("/x/person.jpg", 7, 0)) == "id #7 c1"


@pytest.mark.slow
def test_ranked_lists_carry_distances_closest_first(trained):
    """ranked_<target>.png: the distances drawn under each gallery image, ascending, with a legend strip."""
    from PIL import Image

    out, _ = trained
    with Image.open(out / "ranked_market1501.png") as im:
        assert im.size[1] > 0
    from ppreid.callbacks.pictures import legend_row

    strip = np.asarray(legend_row(300, ["green border: same identity", "red border: another identity"]))
    assert (strip == [0, 170, 0]).all(-1).any() and (strip == [220, 0, 0]).all(-1).any()


def test_ranked_result_has_sorted_distances():
    from ppreid.metrics.reid_metric import ReIDEvaluator

    metric = ReIDEvaluator(num_query=2, ranked_queries=2, ranked_topk=3)
    qf = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gf = torch.tensor([[1.0, 0.1], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    ranked = metric._ranked(
        qf, gf, torch.tensor([1, 2]), torch.tensor([1, 2, 3, 4]), torch.tensor([0, 0]), torch.tensor([1, 1, 1, 1]), None
    )
    assert ranked["gallery"][0] == [0, 2, 3] and ranked["match"][0] == [True, False, False]
    for dists in ranked["distance"]:
        assert dists == sorted(dists) and len(dists) == 3
    assert ranked["distance"][0][0] == pytest.approx(1 - 1 / np.sqrt(1.01), abs=1e-6)


@pytest.mark.slow
def test_embed_normalize(trained, reid_data_dir, tmp_path):
    embed = load_script("embed.py")

    out, _ = trained
    ckpt = str(out / "checkpoints" / "last.ckpt")
    folder = reid_data_dir / "Market-1501-v15.09.15" / "query"
    raw = np.load(embed.embed_folder(ckpt, str(folder), str(tmp_path / "raw.npz"), progress=False))
    unit = np.load(embed.embed_folder(ckpt, str(folder), str(tmp_path / "unit.npz"), progress=False, normalize=True))
    assert not bool(raw["normalized"]) and bool(unit["normalized"])
    assert np.allclose(np.linalg.norm(unit["features"], axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(raw["features"], axis=1), 1.0, atol=1e-3)
    expected = raw["features"] / np.linalg.norm(raw["features"], axis=1, keepdims=True)
    assert np.allclose(unit["features"], expected, atol=1e-5)


class _ScriptedValidation(pl.LightningModule):
    """One weight, one training step per epoch; validation logs the scripted ``val/mAP`` of that epoch."""

    def __init__(self, maps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.maps = list(maps)

    def training_step(self, batch, batch_idx):
        return (self.weight - 1.0).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log("val/mAP", self.maps[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(1, 1))

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(1, 1)) if self.maps else []


def _fit_with_default_checkpoints(tmp_path, maps, epochs=3):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "callbacks" / "default.yaml")
    callbacks = [
        instantiate(cfg[k], dirpath=str(tmp_path / "checkpoints")) for k in ("model_checkpoint", "best_checkpoint")
    ]
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(_ScriptedValidation(maps))
    return {p.name: torch.load(p, weights_only=False) for p in sorted((tmp_path / "checkpoints").iterdir())}


def test_best_checkpoint_keeps_the_epoch_of_the_highest_val_map(tmp_path):
    """conf/callbacks/default.yaml's checkpoints: val/mAP 0.2, 0.5, 0.3 -> best.ckpt is epoch 1 (0.5),
    last.ckpt epoch 2; a run without validation writes last.ckpt only, without a warning."""
    ckpts = _fit_with_default_checkpoints(tmp_path / "val", [0.2, 0.5, 0.3])
    assert sorted(ckpts) == ["best.ckpt", "last.ckpt"]
    assert ckpts["best.ckpt"]["epoch"] == 1 and ckpts["last.ckpt"]["epoch"] == 2
    best_state = [v for k, v in ckpts["last.ckpt"]["callbacks"].items() if "'monitor': 'val/mAP'" in k][0]
    assert float(best_state["best_model_score"]) == pytest.approx(0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ckpts = _fit_with_default_checkpoints(tmp_path / "no_val", [])
    assert sorted(ckpts) == ["last.ckpt"] and ckpts["last.ckpt"]["epoch"] == 2
    assert not [w for w in caught if "val/mAP" in str(w.message)]


@pytest.mark.slow
def test_tensorboard_logger_writes_event_files_in_the_run_folder(reid_data_dir, tmp_path):
    """logger=tensorboard (Lightning's TensorBoardLogger): event files in <run dir>/tensorboard/ with the
    training, validation and test scalars."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    run_train(TINY + ["data=market1501", "logger=tensorboard"], out, reid_data_dir)
    tags = set()
    for events in sorted((out / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/loss", "val/mAP", "test/market1501/mAP"} <= tags
    assert not (out / "csv").exists()
