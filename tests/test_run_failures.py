"""Failed runs: one clear line, the error in the run's own log, a folder that says it failed, and
tables.py naming every folder it skips with the reason."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import ROOT, compose_train, run_script, train_cli

from ppreid.reports import tables


@pytest.mark.parametrize(
    "value,expected",
    [
        ("-1", "trainer.max_epochs=-1 (Lightning's 'train until stopped')"),
        ("0", "trainer.max_epochs=0 with train=true trains nothing"),
    ],
)
def test_max_epochs_that_cannot_train_is_one_line(value, expected, tmp_path):
    from ppreid.config.run_checks import check_run_config
    from ppreid.utils.errors import ConfigValueError

    cfg = compose_train([f"trainer.max_epochs={value}"], tmp_path)
    with pytest.raises(ConfigValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        check_run_config(cfg)
    check_run_config(compose_train([f"trainer.max_epochs={value}", "train=false"], tmp_path))  # not used


def _compose_error(overrides, tmp_path) -> str:
    """The one line train.py prints for a config that fails to compose."""
    from hydra.errors import HydraException

    from ppreid.config.compose_errors import describe

    with pytest.raises(HydraException) as info:
        compose_train(overrides, tmp_path)
    line = describe(info.value)
    assert line is not None and "\n" not in line, str(info.value)
    return line


@pytest.mark.parametrize(
    "override,expected",
    [
        ("trainer.max_epochs=two", "trainer.max_epochs: Value 'two' of type 'str' could not be converted to Integer."),
        ("trainer.max_epochs=null", "trainer.max_epochs: field 'trainer.max_epochs' is not Optional."),
        ("data.batch_size=eight", "data.batch_size: Value 'eight' of type 'str' could not be converted to Integer."),
        ("data.val_split.seed=x", "data.val_split.seed: Value 'x' of type 'str' could not be converted to Integer."),
        ("trainer.max_epoch=2", "trainer.max_epoch: no such key in trainer; did you mean trainer.max_epochs?"),
        (
            "model=bott",
            "model=bott is not an option of group model; did you mean model=bot? choose one of: attack, "
            "bot, clip_pretrain, clipreid, pdm, privacy_gan.",
        ),
        (
            "loss=[ce_ls,tripplet]",
            "loss=tripplet is not an option of group loss; did you mean loss=triplet? "
            "choose one of: ce_ls, triplet, triplet_soft.",
        ),
        ("model.pool.sizee=3", "model.pool.sizee: no such key"),
    ],
)
def test_config_errors_are_found_while_composing(override, expected, tmp_path):
    """Keys, types and group options are checked by Hydra against the schemas (src/ppreid/config/schemas.py)."""
    extra = ["model=privacy_gan"] if override.startswith("model.pool") else []
    assert _compose_error([*extra, override], tmp_path).startswith(expected)


def test_misspelt_key_in_an_experiment_file_fails_while_composing(tmp_path):
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "experiment" / "typo.yaml").write_text("# @package _global_\nmodel:\n  lrr: 0.1\n")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from ppreid.config.compose_errors import describe

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"), pytest.raises(HydraException) as info:
        compose(config_name="train", overrides=["experiment=typo"])
    assert describe(info.value) == "conf/experiment/typo.yaml sets model.lrr: no such key in model"


@pytest.mark.parametrize(
    "args,expected",
    [
        (["trainer.max_epochs=two"], "error: trainer.max_epochs=two: Value 'two' of type 'str' could not be converted"),
        (["model=bott"], "error: model=bott is not an option of group model; did you mean model=bot?"),
    ],
)
def test_compose_errors_are_one_line_at_the_command_line(args, expected, tmp_path):
    proc = run_script("train.py", *args, cwd=tmp_path, timeout=180)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), proc.stderr
    assert not (tmp_path / "logs").exists()  # refused before Hydra made a run folder


def test_value_checks_run_before_the_data_is_prepared(tmp_path):
    from ppreid.config.run_checks import check_run_config
    from ppreid.utils.errors import ConfigValueError

    with pytest.raises(ConfigValueError, match=r"data.batch_size=-4 must be a positive multiple"):
        check_run_config(compose_train(["data.batch_size=-4"], tmp_path))
    with pytest.raises(ConfigValueError, match=r"model.scheduler.milestones=40 does not fall inside the run"):
        check_run_config(compose_train(["model.scheduler.milestones=[40]", "trainer.max_epochs=2"], tmp_path))
    check_run_config(compose_train(["experiment=pdm_without_style"], tmp_path))  # two-stage schedules fit


def test_failed_run_logs_the_error_says_failed_and_is_skipped_by_tables(tmp_path):
    """A value refused after composing (``trainer.max_epochs=0``): one line, train.log holds it,
    status.json says failed, nothing else half-written, and tables.py says why it skips the folder."""
    run_dir = tmp_path / "runs" / "bad"
    proc = train_cli("trainer.max_epochs=0", "logger=csv", run_dir=run_dir)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        "error: trainer.max_epochs=0 with train=true trains nothing; give ep"
        "ochs >= 1, or evaluate without training: train=false ckpt_path=<checkpoint> (or no ckpt_path for the initial weights)."
    ]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "trainer.max_epochs=0" in status["error"] and status["finished"]
    assert "ERROR" in (run_dir / "train.log").read_text() and "max_epochs=0 with" in (run_dir / "train.log").read_text()
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "status.json", "train.log"]

    good = tmp_path / "runs" / "good"
    good.mkdir(parents=True)
    (good / "results.json").write_text(
        json.dumps(
            {
                "test": {"night": {"R1": 0.5, "mAP": 0.25}},
                "train": True,
                "debug": False,
                "partial": False,
                "seed": 1,
                "identity": {
                    "model": "bot",
                    "backbone": "tiny_cnn",
                    "data": "d",
                    "experiment": None,
                    "epochs": 2,
                    "config_hash": "a" * 16,
                },
            }
        )
    )
    warnings = []
    found = tables.find_results([str(tmp_path / "runs")], warn=warnings.append)
    assert found == [good / "results.json"]
    assert warnings == [
        f"skipped {run_dir}: failed: trainer.max_epochs=0 with train=true trains nothin"
        "g; give epochs >= 1, or evaluate without training: train=false ckpt_path=<checkpoint> (or no ckpt_path for the initial weights)."
    ]


def test_tables_names_each_folder_without_results_and_why(tmp_path, capsys):
    killed, old, failed = tmp_path / "killed", tmp_path / "old" / "0", tmp_path / "failed"
    for d in (killed, old, failed, tmp_path / "synth_run"):
        (d / ".hydra").mkdir(parents=True)
    (old / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: train\n    chdir: false\n")
    (tmp_path / "synth_run" / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: synth\n")  # not ours
    (killed / "status.json").write_text(json.dumps({"status": "running", "started": "2026-12-01T10:00:00"}))
    (old / "train.log").write_text("[..][train][INFO] - training bot on genepers_mini\nEpoch 3: 40%\n")
    (failed / "status.json").write_text(json.dumps({"status": "failed", "error": "data.root: no such folder"}))
    assert tables.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:3] == [
        f"skipped {failed}: failed: data.root: no such folder",
        f"skipped {killed}: no results.json: started 2026-12-01T10:00:00 and never finished (killed, or still running)",
        f"skipped {old}: no results.json (failed or stopped before the end; no status.json, an older run); "
        "train.log ends: 'Epoch 3: 40%'",
    ]
    assert err[-1].startswith("error: no results.json found") and "3 run folder(s) without one" in err[-1]


def test_completed_run_says_so(tmp_path):
    from ppreid.utils.run_status import RunStatus

    status = RunStatus(tmp_path)
    status.running()
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "running"
    status.completed()
    record = json.loads((tmp_path / "status.json").read_text())
    assert record["status"] == "completed" and "error" not in record and record["finished"] >= record["started"]


def test_a_run_counts_from_the_process_start(tmp_path):
    """The first run of a process counts its imports and config composing (from the process start);
    a multirun's later runs count from their own start. status.json says how long the run took."""
    import importlib
    import time

    import psutil

    from ppreid.utils import run_status

    run_status = importlib.reload(run_status)  # a fresh count of runs
    first, second = run_status.run_start_time(), run_status.run_start_time()
    assert first == psutil.Process().create_time() < time.time() - 0.5  # this test process started earlier
    assert abs(second - time.time()) < 1
    status = run_status.RunStatus(tmp_path, started_at=time.time() - 30)
    status.completed()
    record = json.loads((tmp_path / "status.json").read_text())
    assert 30 <= record["wall_time_s"] < 32


def test_zero_epoch_results_are_untrained_not_pooled_with_trained_runs(tmp_path, capsys):
    """A results.json of trainer.max_epochs=0 (older train.py accepted it) holds the initial weights'
    numbers: tables.py leaves it out as untrained instead of pooling it as a trained run."""
    for name, epochs, r1 in (("trained", 2, 0.5), ("zero", 0, 0.01)):
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(
            json.dumps(
                {
                    "test": {"night": {"R1": r1, "mAP": r1}},
                    "train": True,
                    "debug": False,
                    "partial": False,
                    "seed": 1,
                    "identity": {
                        "model": "bot",
                        "backbone": "tiny_cnn",
                        "data": "d",
                        "experiment": None,
                        "epochs": epochs,
                        "config_hash": name * 4,
                    },
                }
            )
        )
    assert tables.main([str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].endswith("50.0,50.0,50.0,50.0") and len(out.splitlines()) == 2
    assert (
        f"left out 1 untrained run (trained 0 epochs); add --include-eval-only to include it: {tmp_path / 'zero'}"
        in err
    )
    assert tables.main([str(tmp_path), "--format", "csv", "--include-eval-only"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert sorted(r["kind"] for r in rows) == ["trained", "untrained"]


def test_misspelt_group_names_the_closest_group(tmp_path):
    proc = train_cli("modle=pdm", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "+modle" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: modle: no such key in the config; did you mean the config group model=pdm?"
    ]
    assert not (tmp_path / "logs").exists()  # refused before Hydra made a run folder


def test_synth_compose_errors_are_one_line(tmp_path):
    proc = run_script("synth.py", "num_identites=5", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: num_identites: no such key in the config; did you mean num_identities? "
        "(+key=value adds a key the config does not have)"
    ]
    proc = run_script("synth.py", "generater=diffusion", cwd=tmp_path, timeout=120)
    assert proc.stderr.strip().splitlines() == [
        "error: generater: no such key in the config; did you mean the config group generator=diffusion?"
    ]
