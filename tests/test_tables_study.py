"""Study tables anyone can rebuild: the results bundle (experiments/bundle.py), paired differences with a t
confidence interval (tables.py --pairs), run-level columns (validation, training losses, any results.json
number) and the docs blocks that tables.py renders verbatim (--update-docs / --check-docs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import ROOT

from ppreid.reports import bundle, doc_tables, stats, tables

# per seed: (row a's mAP at t1, t2), (row b's mAP at t1, t2); a - b, mean over t1 and t2: +1, +2, +3, +4, +5 points
SEEDS = {1: ((0.50, 0.60), (0.50, 0.58)), 2: ((0.52, 0.62), (0.50, 0.60)), 3: ((0.56, 0.64), (0.52, 0.62))}
SEEDS |= {4: ((0.60, 0.70), (0.54, 0.68)), 5: ((0.50, 0.70), (0.50, 0.60))}


def _run(folder: Path, seed: int, maps: tuple[float, float], config_hash: str, **top) -> None:
    """A results.json as train.py writes it (with keys a bundle must drop: run_dir, ckpt_path)."""
    res = {
        "test": {"t1": {"R1": 0.7, "mAP": maps[0]}, "t2": {"R1": 0.8, "mAP": maps[1]}},
        "val": {"R1": 0.9, "mAP": 0.8 + seed / 100},
        "training": {"loss": {"loss": [[0, 4.0 + seed], [1, 2.0], [2, 1.0 + seed / 10]]}, "val": {}},
        "scene_sensitivity": {
            "t1": {"same_bg_ap": 0.6, "diff_bg_ap": 0.4},
            "t2": {"same_bg_ap": 0.7, "diff_bg_ap": 0.5},
        },
        "identity": {"model": "pdm", "backbone": "clip_tiny", "config_hash": config_hash, "epochs": 3},
        "debug": False,
        "partial": False,
        "train": True,
        "seed": seed,
        "wall_time_s": 120.0 * seed,
        "run_dir": str(folder),
        "ckpt_path": None,
        "grad_norms": {"i2t": 0.123456789},
        "audit": {"group_hash": None, "curves": {"l1": {"step": list(range(500))}}, "cost_s": {"l1": 3.0}},
        **top,
    }
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(res))


def _study(logs: Path) -> Path:
    """Rows pdm-a and pdm-b (names with a hyphen), 5 seeds, as the study scripts lay them out."""
    for seed, (a, b) in SEEDS.items():
        _run(logs / "pdm-a" / f"s{seed}", seed, a, "aaaa1111")
        _run(logs / "pdm-b" / f"s{seed}", seed, b, "bbbb2222")
    return logs


def test_paired_ci_hand_case():
    """d = 1..5: mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776445 -> half width 2.776445 * 1.581139 / sqrt(5) = 1.963243."""
    ci = stats.paired_ci([1, 2, 3, 4, 5])
    assert ci.n == 5 and ci.mean == pytest.approx(3.0) and ci.sd == pytest.approx(math.sqrt(2.5))
    assert ci.low == pytest.approx(3 - 1.963243, abs=1e-6) and ci.high == pytest.approx(3 + 1.963243, abs=1e-6)
    assert ci.verdict() == "above 0"
    assert stats.paired_ci([-1, 1, 0.5]).verdict() == "includes 0"
    assert stats.paired_ci([-2, -3, -2.5]).verdict() == "below 0"
    one = stats.paired_ci([4.0])
    assert one.low is None and one.verdict() == "one seed: no interval"
    with pytest.raises(ValueError, match="no paired differences"):
        stats.paired_ci([])


def test_bundle_keeps_the_table_keys_and_tables_reads_it(tmp_path, capsys):
    logs = _study(tmp_path / "logs")
    _run(logs / "pdm-a" / "s9", 9, (0.1, 0.1), "aaaa1111", debug=True)  # a debug run: not bundled
    out = tmp_path / "results"
    assert bundle.main([str(logs), "--study", "dppp", "--out", str(out), "--keep", "grad_norms"]) == 0
    assert "10 run(s) written" in capsys.readouterr().out
    files = sorted((out / "dppp").glob("*/s*.json"))
    assert [f.relative_to(out / "dppp").as_posix() for f in files[:2]] == ["pdm-a/s1.json", "pdm-a/s2.json"]
    one = json.loads((out / "dppp" / "pdm-a" / "s1.json").read_text())
    assert "run_dir" not in one and "ckpt_path" not in one and one["row"] == "pdm-a" and one["study"] == "dppp"
    assert one["grad_norms"]["i2t"] == 0.123457  # 6 significant digits
    assert one["audit"] == {"group_hash": None, "cost_s": {"l1": 3.0}}  # the attackers' curves are not kept
    assert max(f.stat().st_size for f in files) < 4000  # a few KB
    manifest = json.loads((out / "dppp" / "bundle.json").read_text())
    assert manifest["rows"] == {"pdm-a": [1, 2, 3, 4, 5], "pdm-b": [1, 2, 3, 4, 5]}

    # the rows, labelled by their row, with validation, training-loss, scene and raw columns
    argv = [str(out / "dppp"), "--metrics", "mAP", "scene_sensitivity.diff_bg_ap", "val:mAP"]
    argv += ["loss:loss@first", "loss:loss", "run:grad_norms.i2t", "minutes"]
    assert tables.main(argv) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == (
        "| row | runs | seeds | t1/mAP | t1/scene_sensitivity.diff_bg_ap | t2/mAP | t2/scene_sensitivity.diff_bg_ap "
        "| mean/mAP | mean/scene_sensitivity.diff_bg_ap | val:mAP | loss:loss@first | loss:loss | run:grad_norms.i2t "
        "| minutes |"
    )
    # val mAP 81..85 -> 83.0 ± 1.6; first loss 5..9 -> 7.000 ± 1.581; last 1.1..1.5; minutes 2..10 -> 6.0 ± 3.2
    assert lines[2].startswith("| pdm-a | 5 | 1,2,3,4,5 | 53.6 ± 4.3 | 40.0 ± 0.0 |")
    assert lines[2].endswith("| 83.0 ± 1.6 | 7.000 ± 1.581 | 1.300 ± 0.158 | 0.123 ± 0.000 | 6.0 ± 3.2 |")
    # the bundle reads like the run folders it came from
    assert tables.main([str(logs), "--label", "model", "--metrics", "mAP", "val:mAP"]) == 0
    from_logs = capsys.readouterr().out
    assert tables.main([str(out / "dppp"), "--label", "model", "--metrics", "mAP", "val:mAP"]) == 0
    assert capsys.readouterr().out == from_logs


def test_pairs_print_the_paired_mean_and_its_t_interval(tmp_path, capsys):
    logs = _study(tmp_path / "logs")
    _run(logs / "pdm-b" / "s6", 6, (0.5, 0.5), "bbbb2222")  # seed 6 on one side only: named, left out
    assert tables.main([str(logs), "--pairs", "pdm-a-pdm-b, pdm-b-pdm-a"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| A - B | seeds | per seed | mean | 95% CI | CI |"
    assert out[2] == "| pdm-a - pdm-b | 1,2,3,4,5 | +1.0, +2.0, +3.0, +4.0, +5.0 | +3.0 | [+1.0, +5.0] | above 0 |"
    assert out[3] == "| pdm-b - pdm-a | 1,2,3,4,5 | -1.0, -2.0, -3.0, -4.0, -5.0 | -3.0 | [-5.0, -1.0] | below 0 |"
    assert "seeds on one side only, left out: 6" in out[5] and "mean over the targets t1, t2" in out[5]
    # a run-level metric pairs as it is: val mAP differs by 0 in every seed
    assert tables.main([str(logs), "--pairs", "pdm-a-pdm-b", "--pair-metric", "val:mAP"]) == 0
    assert "| +0.0 | [+0.0, +0.0] | includes 0 |" in capsys.readouterr().out
    assert tables.main([str(logs), "--pairs", "pdm-a-pdm-c"]) == 2
    assert "names no two rows" in capsys.readouterr().err


def test_pairs_share_of_b_or_of_a_control_pair(tmp_path, capsys):
    """A - B in percent: of B's own value, or of a control pair's difference at the same seed."""
    logs = _study(tmp_path / "logs")
    for seed, (_, b) in SEEDS.items():  # the control row: B + 2 points at both targets, every seed
        _run(logs / "ctl" / f"s{seed}", seed, (b[0] + 0.02, b[1] + 0.02), "cccc3333")
    _run(logs / "ctl" / "s6", 6, (0.5, 0.5), "cccc3333")  # on the control side only: named, left out
    # +1..+5 points over a 2-point control: 50, 100, ..., 250%; mean 150, half width 1.963243 x 50
    assert tables.main([str(logs), "--pairs", "pdm-a-pdm-b", "--pair-share-of", "ctl-pdm-b"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[2] == "| pdm-a - pdm-b | 1,2,3,4,5 | +50%, +100%, +150%, +200%, +250% | +150% | [+52%, +248%] | above 0 |"
    )
    assert "percent of the same seed's ctl-pdm-b difference" in out[4] and "left out: 6" in out[4]
    # of B itself: +1 point over B's 54.0 at seed 1 = +1.85%, then 2/55, 3/57, 4/61, 5/55 (mean 5.28)
    assert tables.main([str(logs), "--pairs", "pdm-a-pdm-b", "--pair-share-of", "B"]) == 0
    assert "| +2%, +4%, +5%, +7%, +9% | +5% |" in capsys.readouterr().out
    assert tables.main([str(logs), "--pair-share-of", "B"]) == 2
    assert "give --pairs too" in capsys.readouterr().err


def test_docs_blocks_are_rendered_checked_and_say_not_yet_run(tmp_path, monkeypatch, capsys):
    _study(tmp_path / "logs")
    assert bundle.main([str(tmp_path / "logs"), "--study", "dppp", "--out", str(tmp_path / "experiments/results")]) == 0
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "studies.md"
    page.write_text(
        "# Study\n<!-- table: experiments/results/dppp --metrics mAP -->\nhand-edited numbers\n<!-- /table -->\n"
        "Between.\n<!-- table: experiments/results/dppp --pairs pdm-a-pdm-b -->\n<!-- /table -->\n"
        "<!-- table: experiments/results/privacy --mean-only -->\nold numbers\n<!-- /table -->\nEnd.\n"
        "<!-- table: experiments/results/dppp --pairs pdm-a-pdm-notext -->\n<!-- /table -->\n"
    )
    monkeypatch.chdir(tmp_path)
    assert tables.main(["--check-docs"]) == 1
    assert "stale docs table: docs/studies.md: experiments/results/dppp --metrics mAP" in capsys.readouterr().err
    assert tables.main(["--update-docs"]) == 0
    assert "updated docs/studies.md" in capsys.readouterr().out
    text = page.read_text()
    assert "hand-edited" not in text and "old numbers" not in text and "<!-- /table -->\nEnd.\n" in text
    assert "*Not yet run*: --pairs item 'pdm-a-pdm-notext' names no two rows" in text  # a row still to run
    assert "`python experiments/tables.py experiments/results/dppp --metrics mAP`:\n\n| row | runs |" in text
    assert "| pdm-a - pdm-b | 1,2,3,4,5 |" in text
    assert "<!-- table: experiments/results/privacy --mean-only -->\n*Not yet run*: no results under" in text
    assert tables.main(["--check-docs"]) == 0
    # a changed bundle makes the page stale again
    one = tmp_path / "experiments/results/dppp/pdm-a/s1.json"
    record = json.loads(one.read_text())
    record["test"]["t1"]["mAP"] = 0.9
    one.write_text(json.dumps(record))
    assert tables.main(["--check-docs"]) == 1
    page.write_text(page.read_text() + "<!-- table: experiments/results/dppp -->\nno end\n")
    assert tables.main(["--check-docs"]) == 2
    assert "without its '<!-- /table -->'" in capsys.readouterr().err
    # a misspelt column fails even while its bundle is not there
    page.write_text("<!-- table: experiments/results/privacy --metrics mAPP -->\n<!-- /table -->\n")
    assert tables.main(["--check-docs"]) == 2
    assert "unknown metric 'mAPP'" in capsys.readouterr().err


def test_repository_docs_tables_equal_the_scripts_output_on_the_committed_bundles():
    """Every table block of README.md, docs/*.md and experiments/README.md is what tables.py renders now."""
    pages = doc_tables.doc_pages(ROOT)

    def render(arguments: str) -> str:
        return tables.doc_block(arguments, ROOT, warn=lambda _: None)

    assert sum(len(doc_tables.blocks(p.read_text(), str(p))) for p in pages) >= 4
    stale = doc_tables.stale_blocks(pages, render, ROOT)
    assert not stale, f"run `python experiments/tables.py --update-docs`: {stale}"


@pytest.mark.slow
def test_train_writes_the_training_signal_that_the_bundle_keeps(market_two_epochs, tmp_path, capsys):
    """A real 2-epoch run (the suite's shared one): results.json's training block holds each loss's epoch
    means and the validation per epoch; bundled, tables.py shows its first and last epoch."""
    res, run_dir = market_two_epochs
    written = json.loads((run_dir / "results.json").read_text())
    loss = written["training"]["loss"]
    assert "loss" in loss and [e for e, _ in loss["loss"]] == [0, 1]
    assert [e for e, _ in written["training"]["val"]["mAP"]] == [0, 1]
    assert written["training"]["val"]["mAP"][-1][1] == pytest.approx(res["val"]["mAP"], abs=1e-6)
    assert bundle.main([str(run_dir), "--study", "s", "--row", "bot", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert tables.main([str(tmp_path / "s"), "--metrics", "mAP", "loss:loss@first", "loss:loss@1"]) == 0
    row = capsys.readouterr().out.splitlines()[2]
    first, last = (f"{v:.3f}" for _, v in loss["loss"])
    assert row.startswith("| bot | 1 | 42 |") and row.endswith(f"| {first} | {last} |")


def test_bundle_refuses_two_runs_of_one_row_and_seed_and_reads_one_row(tmp_path, capsys):
    _run(tmp_path / "a" / "pdm" / "s1", 1, (0.5, 0.6), "aaaa1111")
    _run(tmp_path / "b" / "pdm" / "s1", 1, (0.4, 0.6), "aaaa1111")
    out = tmp_path / "results"
    assert bundle.main([str(tmp_path / "a"), str(tmp_path / "b"), "--study", "x", "--out", str(out)]) == 2
    assert "are both row 'pdm', seed 1" in capsys.readouterr().err and not (out / "x").exists()
    assert bundle.main([str(tmp_path / "a"), "--study", "../x", "--out", str(out)]) == 2
    assert "cannot be a folder name" in capsys.readouterr().err
    # bundled in two steps (a study bundled as its seeds finish); one row folder reads alone
    assert bundle.main([str(tmp_path / "a"), "--study", "x", "--out", str(out)]) == 0
    _run(tmp_path / "c" / "bot" / "s2", 2, (0.3, 0.3), "cccc3333")
    assert bundle.main([str(tmp_path / "c"), "--study", "x", "--out", str(out)]) == 0
    assert json.loads((out / "x" / "bundle.json").read_text())["rows"] == {"bot": [2], "pdm": [1]}
    capsys.readouterr()
    assert tables.main([str(out / "x" / "pdm"), "--metrics", "mAP"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == "| pdm | 1 | 1 | 50.0 | 60.0 | 55.0 |"


def test_privacy_fields_read_the_audits_entry_as_written(tmp_path, capsys):
    """privacy.<path> per target, in SSIM units (not %): per run the mean over t1, t2 (0.03, 0.05) -> 0.040 ± 0.014."""
    for seed, gains in ((1, (0.02, 0.04)), (2, (0.04, 0.06))):
        privacy = {t: {"in_domain": {"image_specific_gain": g}} for t, g in zip(("t1", "t2"), gains)}
        audit = {"group_hash": "g", "extractor": {"model": "bot"}}
        _run(tmp_path / "unprotected" / f"s{seed}", seed, (0.5, 0.5), f"h{seed}", privacy=privacy, audit=audit)
    metric = "privacy.in_domain.image_specific_gain"
    assert tables.main([str(tmp_path), "--mean-only", "--label", "extractor.model", "--metrics", metric]) == 0
    out = capsys.readouterr().out
    assert "| bot | 2 | 1,2 | 0.040 ± 0.014 |" in out and "privacy.<path> as the audit writes it" in out
