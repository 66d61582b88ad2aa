"""train.py as a user runs it: subprocesses, exit codes, the last lines of stderr, files on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import train_cli


def _last_lines(text: str, n: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


@pytest.mark.slow
def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    proc = train_cli(
        "data=market1501", "debug=fdr", tiny=True, run_dir=tmp_path / "run", data_dir=tmp_path / "empty_data"
    )
    assert proc.returncode != 0
    tail = _last_lines(proc.stderr)
    assert "Market-1501-v15.09.15" in tail and "bounding_box_train" in tail, tail
    assert "Traceback" not in proc.stderr


def _market_copy(reid_data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the shared Market tree (a test may damage it); returns its data root."""
    data = tmp_path / "data"
    shutil.copytree(reid_data_dir / "Market-1501-v15.09.15", data / "Market-1501-v15.09.15")
    return data


@pytest.mark.slow
def test_misnamed_file_names_the_file_and_pattern(reid_data_dir, tmp_path):
    data = _market_copy(reid_data_dir, tmp_path)
    (data / "Market-1501-v15.09.15" / "query" / "holiday_photo.jpg").write_bytes(b"x")
    proc = train_cli("data=market1501", "debug=fdr", tiny=True, run_dir=tmp_path / "run", data_dir=data)
    assert proc.returncode != 0
    tail = _last_lines(proc.stderr)
    assert "holiday_photo.jpg" in tail and "_c" in tail, tail
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_corrupt_image_names_the_file(reid_data_dir, tmp_path):
    data = _market_copy(reid_data_dir, tmp_path)
    victim = sorted((data / "Market-1501-v15.09.15" / "query").glob("*.jpg"))[0]
    victim.write_bytes(b"this is not a jpeg")
    proc = train_cli("data=market1501", "train=false", tiny=True, run_dir=tmp_path / "run", data_dir=data)
    assert proc.returncode != 0
    assert victim.name in _last_lines(proc.stderr), _last_lines(proc.stderr)


@pytest.mark.slow
def test_multirun_writes_one_results_json_per_run(reid_data_dir, tmp_path):
    proc = train_cli(
        "data=market1501",
        "seed=1,2",
        "trainer.max_epochs=1",
        tiny=True,
        run_dir=tmp_path / "sweep",
        data_dir=reid_data_dir,
        multirun=True,
        timeout=600,
    )
    assert proc.returncode == 0, _last_lines(proc.stderr, 30)
    results = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert len(results) == 2
    assert sorted(json.loads(p.read_text())["seed"] for p in results) == [1, 2]
    for path in results:  # results.json and status.json time the run from the same start
        timed, status = json.loads(path.read_text()), json.loads((path.parent / "status.json").read_text())
        assert status["status"] == "completed" and timed["wall_time_s"] >= timed["run_time_s"] > 0
        assert 0 <= status["wall_time_s"] - timed["wall_time_s"] < 5, (status, timed["wall_time_s"])


@pytest.mark.slow
def test_wandb_offline_logs_config_metrics_images_and_cmc(reid_data_dir, tmp_path):
    pytest.importorskip("wandb")
    proc = train_cli(
        "data=market1501",
        "logger=wandb",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        tiny=True,
        run_dir=tmp_path / "run",
        data_dir=reid_data_dir,
    )
    assert proc.returncode == 0, _last_lines(proc.stderr, 30)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = runs[0] / "files"
    # offline runs keep history, summary and config as records in the run's .wandb file
    records = next(runs[0].glob("*.wandb")).read_bytes()
    for key in (
        b"test/market1501/mAP",
        b"test/market1501/R1",
        b"train/loss",
        b"ppreid.data.datamodule.ReIDDataModule",
        b"Market-1501-v15.09.15",
    ):
        assert key in records, key
    images = files / "media" / "images"
    media = [str(p.relative_to(images)) for p in images.rglob("*.png")]
    assert any(name.startswith("train") for name in media) and any("cmc" in name for name in media), media


@pytest.mark.slow
def test_optuna_hparams_search_maximizes_the_returned_metric(reid_data_dir, tmp_path):
    """hparams_search=bot_optuna: every trial returns val/mAP (held-out source identities, never a target)
    and the sweeper records the best one."""
    proc = train_cli(
        "data=market1501",
        "hparams_search=bot_optuna",
        "trainer.max_epochs=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
        tiny=True,
        run_dir=tmp_path / "sweep",
        data_dir=reid_data_dir,
        multirun=True,
        timeout=600,
    )
    assert proc.returncode == 0, _last_lines(proc.stderr, 30)
    results = sorted((tmp_path / "sweep").glob("*/results.json"))
    assert len(results) == 2
    maps = [json.loads(p.read_text())["val"]["mAP"] for p in results]
    best = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    assert "best_value" in best and "model.optimizer.lr" in best, best
    import yaml

    assert yaml.safe_load(best)["best_value"] == pytest.approx(max(maps), abs=1e-6)
