"""Failed runs: one clear line, the error in the run's own log, a folder that says it failed, and
tables.py naming every folder it skips with the reason."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose_train

from ppreid.reports import tables


def _cli(script: str, *args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "value,expected",
    [
        ("two", "trainer.max_epochs='two' is not a whole number of epochs"),
        ("-1", "trainer.max_epochs=-1 (Lightning's 'train until stopped')"),
        ("0", "trainer.max_epochs=0 with train=true trains nothing"),
        ("null", "trainer.max_epochs is not set"),
    ],
)
def test_max_epochs_that_cannot_train_is_one_line(value, expected, tmp_path):
    from ppreid.config.run_checks import check_run_config
    from ppreid.utils.errors import ConfigValueError

    cfg = compose_train([f"trainer.max_epochs={value}"], tmp_path)
    with pytest.raises(ConfigValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        check_run_config(cfg)
    check_run_config(compose_train([f"trainer.max_epochs={value}", "train=false"], tmp_path))  # not used


def test_failed_run_logs_the_error_says_failed_and_is_skipped_by_tables(tmp_path):
    """``trainer.max_epochs=two`` used to fail with a traceback after the data set-up, and the run folder
    looked like any other; now: one line, train.log holds it, status.json says failed, nothing else
    half-written, and tables.py says why it skips the folder."""
    run_dir = tmp_path / "runs" / "bad"
    proc = _cli("train.py", "trainer.max_epochs=two", f"hydra.run.dir={run_dir}", "logger=csv")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        "error: trainer.max_epochs='two' is not a whole number of epochs; write it in digits, "
        "e.g. trainer.max_epochs=2."
    ]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "trainer.max_epochs='two'" in status["error"] and status["finished"]
    assert "ERROR" in (run_dir / "train.log").read_text() and "max_epochs='two'" in (run_dir / "train.log").read_text()
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
        f"skipped {run_dir}: failed: trainer.max_epochs='two' is not a whole number of epochs; "
        "write it in digits, e.g. trainer.max_epochs=2."
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
    proc = _cli("train.py", "modle=pdm", cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "+modle" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: modle=pdm: there is no config group or key 'modle'; did you mean model=pdm (the config group)? "
        "Groups: scale, data, backbone, loss, trainer, recipe, model, callbacks, logger, paths, experiment, "
        "hparams_search, debug."
    ]
    assert not (tmp_path / "logs").exists()  # refused before Hydra made a run folder


def test_misspelt_key_of_synth_and_unknown_names_left_to_hydra():
    from ppreid.config.config_groups import misspelt_group

    assert "did you mean num_identities=5 (the key)?" in misspelt_group("synth", ["num_identites=5"])
    assert "did you mean generator=diffusion (the config group)?" in misspelt_group("synth", ["generater=diffusion"])
    # valid overrides, dotted keys, appends and flags: not ours to judge
    assert misspelt_group("train", ["model=pdm", "trainer.max_epochs=2", "+foo=1", "-m", "seed=1"]) is None
    assert misspelt_group("train", ["zzzzqq=1"]) is None  # nothing close: Hydra's own message
