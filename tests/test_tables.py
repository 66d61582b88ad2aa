"""experiments/tables.py: tables built only from results.json files, one row per config."""

import csv
import json
from pathlib import Path

import pytest
from conftest import run_script

from ppreid.reports import tables

HASH_A = "aaaaaaaa11112222"
HASH_B = "bbbbbbbb33334444"


def _write(
    run_dir: Path, seed: int, test: dict, config_hash: str = HASH_A, legacy: bool = False, identity: dict = None, **top
) -> Path:
    """A results.json as train.py writes it; ``test`` is target -> metrics (fractions)."""
    ident = {
        "model": "bot",
        "backbone": "tiny_cnn",
        "data": "genepers_mini",
        "sources": ["genepers"],
        "targets": sorted(test),
        "loss": {"ce": 1.0, "triplet": 1.0},
        "epochs": 32,
        "experiment": None,
        "task_name": "train",
        "config_hash": config_hash,
        **(identity or {}),
    }
    res = {
        "test": test,
        "val": {"R1": 0.9, "mAP": 0.8},
        "identity": ident,
        "debug": False,
        "partial": False,
        "train": True,
        "ckpt_path": None,
        "seed": seed,
        "model": ident["model"],
        "data": ident["data"],
        "git_commit": "abc",
        "wall_time_s": 1.0,
        "run_dir": str(run_dir),
        "overrides": [f"seed={seed}"],
        **top,
    }
    if legacy:
        del res["identity"]
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(res))
    return run_dir / "results.json"


def _runs(root: Path, **select):
    return tables.select_runs(
        [tables.load_result(p) for p in tables.find_results([str(root)])], warn=lambda _: None, **select
    )


def _col(header, row, name):
    return row[header.index(name)]


def test_seeds_of_one_config_are_pooled_with_sample_std(tmp_path):
    _write(tmp_path / "m" / "0", 1, {"night": {"R1": 0.50, "mAP": 0.30}})
    _write(tmp_path / "m" / "1", 2, {"night": {"R1": 0.70, "mAP": 0.40}})
    _write(tmp_path / "m" / "2", 3, {"night": {"R1": 0.60, "mAP": 0.35}})
    header, rows = tables.build_table(_runs(tmp_path))
    assert header == [
        "model",
        "backbone",
        "data",
        "experiment",
        "runs",
        "seeds",
        "night/R1",
        "night/mAP",
        "mean/R1",
        "mean/mAP",
    ]
    # R1 50, 70, 60: mean 60.0, sample std sqrt((100 + 100 + 0) / 2) = 10.0; mAP 30, 40, 35: 35.0 ± 5.0
    assert rows == [
        [
            "bot",
            "tiny_cnn",
            "genepers_mini",
            "-",
            "3",
            "1,2,3",
            "60.0 ± 10.0",
            "35.0 ± 5.0",
            "60.0 ± 10.0",
            "35.0 ± 5.0",
        ]
    ]


def test_same_labels_different_hash_are_two_rows_with_config_column(tmp_path, capsys):
    _write(tmp_path / "a", 1, {"night": {"R1": 0.5, "mAP": 0.3}}, HASH_A, identity={"epochs": 32})
    _write(tmp_path / "b", 1, {"night": {"R1": 0.9, "mAP": 0.7}}, HASH_B, identity={"epochs": 64})
    assert tables.main([str(tmp_path), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "model,backbone,data,experiment,config,runs,seeds,night/R1,night/mAP,mean/R1,mean/mAP"
    assert lines[1:] == [
        "bot,tiny_cnn,genepers_mini,-,aaaaaaaa,1,1,50.0,30.0,50.0,30.0",
        "bot,tiny_cnn,genepers_mini,-,bbbbbbbb,1,1,90.0,70.0,90.0,70.0",
    ]
    # a label that tells them apart: no config column unless asked for
    header, rows = tables.build_table(_runs(tmp_path), label=["model", "epochs"])
    assert "config" not in header and [r[:2] for r in rows] == [["bot", "32"], ["bot", "64"]]
    header, _ = tables.build_table(_runs(tmp_path), label=["model", "epochs"], show_hash=True)
    assert header[:3] == ["model", "epochs", "config"]


def test_short_hash_grows_until_configs_differ(tmp_path):
    _write(tmp_path / "a", 1, {"night": {"R1": 0.5}}, "0123456789ab", identity={"epochs": 32})
    _write(tmp_path / "b", 1, {"night": {"R1": 0.5}}, "0123456780ab", identity={"epochs": 64})
    header, rows = tables.build_table(_runs(tmp_path), metrics=["R1"])
    assert [r[header.index("config")] for r in rows] == ["0123456780", "0123456789"]


def test_label_keys_from_identity_or_top_level_and_unknown_key(tmp_path):
    _write(tmp_path / "a", 1, {"night": {"R1": 0.5, "mAP": 0.3}})
    header, rows = tables.build_table(_runs(tmp_path), label=["loss", "sources", "git_commit"])
    assert rows[0][:3] == ["ce=1.0,triplet=1.0", "genepers", "abc"]
    with pytest.raises(tables.TableInputError, match="unknown label key 'lr'"):
        tables.build_table(_runs(tmp_path), label=["model", "lr"])


def test_repeated_seed_is_kept_with_a_warning(tmp_path, capsys):
    _write(tmp_path / "a", 7, {"night": {"R1": 0.5, "mAP": 0.3}})
    _write(tmp_path / "b", 7, {"night": {"R1": 0.7, "mAP": 0.3}})
    assert tables.main([str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert list(csv.reader(out.splitlines()))[1][4:6] == ["2", "7,7"]  # runs, seeds
    assert "seed 7" in err and "a/results.json" in err and "b/results.json" in err


@pytest.mark.parametrize(
    "kind,top,flag",
    [
        ("debug", {"debug": True}, "--include-debug"),
        ("eval-only", {"train": False}, "--include-eval-only"),
        ("partial", {"partial": True}, "--include-partial"),
    ],
)
def test_debug_eval_only_partial_excluded_by_default(tmp_path, capsys, kind, top, flag):
    _write(tmp_path / "ok", 1, {"night": {"R1": 0.5, "mAP": 0.3}})
    _write(tmp_path / "x" / "0", 1, {"night": {"R1": 0.9, "mAP": 0.9}}, HASH_B, **top)
    _write(tmp_path / "x" / "1", 2, {"night": {"R1": 0.9, "mAP": 0.9}}, HASH_B, **top)
    assert tables.main([str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "90.0" not in out
    assert f"left out 2 {kind} runs" in err and flag in err

    assert tables.main([str(tmp_path), "--format", "csv", flag]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",")[4:8] == ["config", "kind", "runs", "seeds"]
    expected = "eval-only" if kind == "eval-only" else f"trained+{kind}"
    assert sorted(line.split(",")[5] for line in lines[1:]) == sorted(["trained", expected])

    assert tables.main([str(tmp_path / "x")]) == 2  # nothing left: the error names the flag
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error: no runs left") and flag in last


def test_unknown_metric_is_rejected_before_reading_files(tmp_path, capsys):
    assert tables.main([str(tmp_path / "does-not-exist"), "--metrics", "R1", "Rank1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'Rank1'" in err and "R1, R5, R10, mAP, mINP" in err


def test_mean_over_targets_column(tmp_path):
    # run 1: R1 (40 + 60) / 2 = 50; run 2: (60 + 80) / 2 = 70 -> 60.0 ± sqrt(200) = 14.1
    _write(tmp_path / "a", 1, {"night": {"R1": 0.4, "mAP": 0.2}, "station": {"R1": 0.6, "mAP": 0.4}})
    _write(tmp_path / "b", 2, {"night": {"R1": 0.6, "mAP": 0.2}, "station": {"R1": 0.8, "mAP": 0.4}})
    # another config evaluated on one target only: its mean over the table's targets is "-"
    _write(tmp_path / "c", 1, {"night": {"R1": 0.5}}, HASH_B, identity={"model": "pdm"})
    header, rows = tables.build_table(_runs(tmp_path), metrics=["R1", "mAP"])
    assert header[6:] == ["night/R1", "night/mAP", "station/R1", "station/mAP", "mean/R1", "mean/mAP"]
    assert rows[0][6:] == ["50.0 ± 14.1", "20.0 ± 0.0", "70.0 ± 14.1", "40.0 ± 0.0", "60.0 ± 14.1", "30.0 ± 0.0"]
    assert rows[1][:1] + rows[1][6:] == ["pdm", "50.0", "-", "-", "-", "-", "-"]
    # restricted to one target, the pdm row has all the table's targets
    header, rows = tables.build_table(_runs(tmp_path), metrics=["R1"], targets=["night"])
    assert _col(header, rows[1], "mean/R1") == "50.0"


def test_targets_restrict_and_order_columns(tmp_path, capsys):
    _write(tmp_path / "a", 1, {"night": {"R1": 0.4, "mAP": 0.2}, "station": {"R1": 0.6, "mAP": 0.4}})
    assert tables.main([str(tmp_path), "--format", "csv", "--metrics", "R1", "--targets", "station", "night"]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("seeds,station/R1,night/R1,mean/R1")
    assert tables.main([str(tmp_path), "--targets", "market1501"]) == 2
    err = capsys.readouterr().err
    assert "'market1501'" in err and "night, station" in err


def test_legacy_files_without_identity_are_skipped_with_a_warning(tmp_path, capsys):
    _write(tmp_path / "new", 1, {"night": {"R1": 0.5, "mAP": 0.3}})
    old = _write(tmp_path / "old", 1, {"night": {"R1": 0.9, "mAP": 0.9}}, legacy=True)
    assert tables.main([str(tmp_path), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "90.0" not in out
    assert str(old) in err and "re-run" in err
    assert tables.main([str(tmp_path / "old")]) == 2
    assert "error: no runs left" in capsys.readouterr().err


def test_same_hash_with_different_identity_is_an_error(tmp_path):
    _write(tmp_path / "a", 1, {"night": {"R1": 0.5}})
    _write(tmp_path / "b", 2, {"night": {"R1": 0.5}}, identity={"epochs": 64})
    with pytest.raises(tables.TableInputError, match="identity.epochs"):
        tables.build_table(_runs(tmp_path))


def test_cli_writes_csv_atomically_and_reports_bad_inputs(tmp_path):
    _write(tmp_path / "r", 1, {"night": {"R1": 0.25, "mAP": 0.125}})
    out = tmp_path / "tables" / "t.csv"
    ok = run_script("experiments/tables.py", str(tmp_path), "--format", "csv", "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert out.read_text().splitlines() == [
        "model,backbone,data,experiment,runs,seeds,night/R1,night/mAP,mean/R1,mean/mAP",
        "bot,tiny_cnn,genepers_mini,-,1,1,25.0,12.5,25.0,12.5",
    ]
    assert [p.name for p in out.parent.iterdir()] == ["t.csv"]  # no temp file left behind
    bad = run_script("experiments/tables.py", str(tmp_path / "nope"))
    assert bad.returncode == 2 and "nope" in bad.stderr and "no such" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_unreadable_results_file_is_named(tmp_path, capsys):
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(tables.TableInputError, match="results.json"):
        tables.load_result(tmp_path / "results.json")
    _write(tmp_path / "r", 1, {"night": {"R1": "high"}})
    with pytest.raises(tables.TableInputError, match="test.night.R1 is 'high'"):
        tables.load_result(tmp_path / "r" / "results.json")
    assert tables.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_published_rows_below_ours_labelled_by_source(tmp_path, capsys):
    _write(tmp_path / "runs" / "a", 1, {"t1": {"R1": 0.5, "mAP": 0.25}, "t2": {"R1": 0.7, "mAP": 0.35}})
    pub = tmp_path / "published.yaml"
    pub.write_text(
        "rows:\n"
        "  - label: {model: bot}\n    source: 'Paper A, Table 2'\n"
        "    metrics: {t1/R1: 60.0, t1/mAP: null, t2/R1: 80.0}\n"
    )
    assert tables.main([str(tmp_path / "runs"), "--label", "model", "--published", str(pub), "--format", "csv"]) == 0
    ours, theirs = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert ours["source"] == "ours" and ours["t1/R1"] == "50.0" and ours["mean/mAP"] == "30.0"
    assert theirs["source"] == "Paper A, Table 2" and theirs["model"] == "bot" and theirs["runs"] == "-"
    assert theirs["t1/R1"] == "60.0" and theirs["t1/mAP"] == "n/a" and theirs["t2/mAP"] == "-"
    assert theirs["mean/R1"] == "70.0" and theirs["mean/mAP"] == "-"


@pytest.mark.parametrize(
    "text, message",
    [
        ("rows: []\n", "non-empty list under 'rows:'"),
        (
            "rows:\n  - {label: {model: a}, source: s, metrics: {t1/Rank1: 3.0}}\n",
            "'t1/Rank1' is not <target>/<metric>",
        ),
        ("rows:\n  - {label: {model: a}, source: s, metrics: {t1/R1: high}}\n", "is not a percentage or null"),
        ("rows:\n  - {label: {model: a}, metrics: {}}\n", "needs 'label' (mapping), 'source' (text)"),
    ],
)
def test_bad_published_file_is_named_before_reading_runs(tmp_path, capsys, text, message):
    pub = tmp_path / "pub.yaml"
    pub.write_text(text)
    assert tables.main([str(tmp_path / "nowhere"), "--published", str(pub)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(pub) in err
    assert tables.main([str(tmp_path), "--published", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------- experiments/paired.py
def test_paired_differences_by_seed_hand_case(tmp_path, capsys):
    """A - B per seed and target, their mean over targets, then mean ± sample std over the paired seeds."""
    from ppreid.reports import paired

    for seed, (a1, a2, b1, b2) in {
        1: (0.50, 0.70, 0.40, 0.60),
        2: (0.52, 0.68, 0.50, 0.62),
        3: (0.60, 0.80, 0.55, 0.71),
        4: (0.1, 0.1, 0.1, 0.1),
    }.items():
        if seed != 4:
            _write(tmp_path / "a" / f"s{seed}", seed, {"t1": {"mAP": a1}, "t2": {"mAP": a2}})
        _write(tmp_path / "b" / f"s{seed}", seed, {"t1": {"mAP": b1}, "t2": {"mAP": b2}}, config_hash=HASH_B)
    a, b = paired.load_side(str(tmp_path / "a"), "A"), paired.load_side(str(tmp_path / "b"), "B")
    table = paired.paired_table(a, b, "mAP")
    # per-seed mean differences: (10 + 10) / 2 = 10, (2 + 6) / 2 = 4, (5 + 9) / 2 = 7 -> 7 ± 3
    assert table["seeds"] == ["1", "2", "3"] and table["unpaired"] == ["4"]
    assert table["mean_difference"] == pytest.approx(7.0) and table["std_difference"] == pytest.approx(3.0)
    header, rows = table["header"], table["rows"]
    assert rows[0][header.index("t2/A-B")] == "+10.0" and rows[-1][header.index("mean/A-B")] == "+7.0 ± 3.0"
    assert paired.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "left out (a seed on one side only): 4" in out and "2.3x the paired standard deviation" in out
    # 7 ± 3 over 3 seeds: t(0.975, 2) = 4.302653, half width 4.302653 * 3 / sqrt(3) = 7.45 -> [-0.5, +14.5]
    assert "95% CI [-0.5, +14.5] (includes 0)" in out


def test_paired_refuses_mixed_configurations_and_repeated_seeds(tmp_path, capsys):
    from ppreid.reports import paired

    _write(tmp_path / "a" / "x", 1, {"t": {"mAP": 0.5}})
    _write(tmp_path / "a" / "y", 2, {"t": {"mAP": 0.5}}, config_hash=HASH_B)
    _write(tmp_path / "b" / "x", 1, {"t": {"mAP": 0.5}})
    _write(tmp_path / "b" / "y", 1, {"t": {"mAP": 0.6}})
    assert paired.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "2 configurations" in capsys.readouterr().err
    assert paired.main([str(tmp_path / "b"), str(tmp_path / "b")]) == 2
    assert "two runs with seed 1" in capsys.readouterr().err
