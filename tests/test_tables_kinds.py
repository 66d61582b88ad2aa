"""tables.py on a folder that mixes kinds of runs: training rows beside audits, debug runs that are also
partial, evaluation-only runs; and tables that say which numbers are %."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ppreid.reports import tables


def _train(run_dir: Path, seed: int, config_hash: str, model: str = "privacy_gan", **top) -> None:
    res = {
        "test": {"night": {"R1": 0.5, "mAP": 0.4}},
        "train": True,
        "debug": False,
        "partial": False,
        "seed": seed,
        "identity": {
            "model": model,
            "backbone": "tiny_cnn",
            "data": "genepers_mini",
            "experiment": "privacy_sandbox_gan",
            "epochs": 32,
            "config_hash": config_hash,
        },
        **top,
    }
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(res))


def _audit(run_dir: Path, seed: int) -> None:
    res = {
        "test": {"night": {"R1": 0.5, "mAP": 0.4}},
        "privacy": {
            "night": {
                "mean_image_ssim": 0.2,
                "mean_image_psnr": 12.0,
                "chance_r1": 0.01,
                "strongest": "l1",
                "attackers": {"l1": {"ssim": 0.3, "psnr": 13.0, "leakage_r1": 0.1}},
                "urr": 1.3,
            }
        },
        "audit": {"group_hash": "g1", "extractor": {"model": "privacy_gan", "experiment": "privacy_sandbox_gan"}},
        "identity": {"model": "attack", "data": "genepers_mini", "experiment": None, "config_hash": f"g1-{seed}"},
        "debug": False,
        "partial": False,
        "train": False,
        "seed": seed,
    }
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(res))


def test_training_rows_beside_audits_are_labelled_by_their_model(tmp_path, capsys):
    """Under the audits' default labels (extractor.model, extractor.experiment) training rows read "-"
    before: a training run is its own extractor, and a kind column tells the two apart."""
    _train(tmp_path / "train" / "1", 1, "t" * 16)
    _train(tmp_path / "train" / "2", 2, "t" * 16)
    _audit(tmp_path / "audit" / "1", 1)
    _audit(tmp_path / "audit" / "2", 2)
    assert tables.main([str(tmp_path), "--format", "csv", "--metrics", "mAP", "SSIM:l1"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [(r["extractor.model"], r["extractor.experiment"], r["kind"], r["runs"]) for r in rows] == [
        ("privacy_gan", "privacy_sandbox_gan", "audit", "2"),
        ("privacy_gan", "privacy_sandbox_gan", "trained", "2"),
    ]
    by_kind = {r["kind"]: r for r in rows}
    assert by_kind["audit"]["night/SSIM:l1"] == "0.300 ± 0.000" and by_kind["trained"]["night/SSIM:l1"] == "-"


def test_a_debug_run_that_is_also_partial_is_counted_once(tmp_path):
    """debug=default runs are debug and partial: 'left out 5 debug runs' and 'left out 5 partial runs'
    read as ten; now one line per kind combination, each run once, naming the folders and the flags."""
    _train(tmp_path / "ok", 1, "a" * 16)
    for i in range(5):
        _train(tmp_path / "debug" / str(i), i, "b" * 16, debug=True, partial=True)
    notes = []
    runs = [tables.load_result(p) for p in tables.find_results([str(tmp_path)])]
    kept = tables.select_runs(runs, warn=notes.append)
    assert len(kept) == 1 and len(notes) == 1
    note = notes[0]
    assert note.startswith(
        "note: left out 5 debug+partial runs (debug=... or fast_dev_run; limit_*_batches: part "
        "of a set); add --include-debug --include-partial to include them: "
    )
    assert all(str(tmp_path / "debug" / str(i)) in note for i in range(5))
    # including debug alone is not enough: the runs are still partial, and the note names only that flag
    notes.clear()
    assert len(tables.select_runs(runs, include_debug=True, warn=notes.append)) == 1
    assert "add --include-partial to include them" in notes[0] and "--include-debug" not in notes[0]
    assert len(tables.select_runs(runs, include_debug=True, include_partial=True, warn=notes.append)) == 6


def test_markdown_tables_say_their_numbers_are_percent(tmp_path, capsys):
    _train(tmp_path / "a", 1, "a" * 16, model="bot")
    assert tables.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| model |")
    assert out[-1] == (
        "Numbers: R1, mAP in %. A cell is the mean ± sample std over the row's runs (seeds); "
        "mean/<metric>: per run the mean over the targets shown."
    )
    _audit(tmp_path / "b" / "1", 1)
    assert tables.main([str(tmp_path / "b"), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    last = err.strip().splitlines()[-1]
    assert last.startswith("Numbers: R1, mAP") and "in %" in last and "SSIM in [0, 1]" in last and "URR a ratio" in last
    assert "Numbers" not in out  # csv stays machine-readable


def test_evaluation_only_runs_group_by_training_and_evaluation(tmp_path):
    """Evaluations of one training config's seeds with the same options pool; other options do not."""
    from ppreid.utils.run_info import evaluation_identity

    resolved = {"data": {"name": "market1501", "targets": [{"name": "market1501"}]}, "paths": {}}
    trained = {
        "identity": {
            "model": "bot",
            "data": "genepers_mini",
            "epochs": 2,
            "targets": ["night"],
            "config_hash": "t" * 16,
        }
    }
    plain = {"flip": False, "rerank": None}
    flip = {"flip": True, "rerank": None}
    a = evaluation_identity(trained, resolved, plain)
    assert a == evaluation_identity(trained, {**resolved, "paths": {"output_dir": "/elsewhere"}}, plain)
    assert (
        a["config_hash"]
        != evaluation_identity(trained, resolved, flip)["config_hash"]
        != trained["identity"]["config_hash"]
    )
    assert a["targets"] == ["market1501"] and a["epochs"] == 2 and a["data"] == "genepers_mini"
    before = {**resolved, "model": {"neck_feat": "before"}}
    assert a["config_hash"] != evaluation_identity(trained, before, plain, ["model.neck_feat"])["config_hash"]
