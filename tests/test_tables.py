"""experiments/tables.py: tables built only from results.json files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import tables  # noqa: E402


def _write(run_dir: Path, model: str, seed: int, r1: float, mAP: float) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps({
        "test": {"market1501": {"R1": r1, "R5": 1.0, "R10": 1.0, "mAP": mAP, "mINP": 0.1}},
        "model": model, "data": "genepers", "seed": seed}))


def test_groups_seeds_into_mean_and_sample_std(tmp_path):
    _write(tmp_path / "a" / "0", "bot", 1, 0.50, 0.30)
    _write(tmp_path / "a" / "1", "bot", 2, 0.70, 0.40)
    _write(tmp_path / "b", "pdm", 1, 0.805, 0.60)
    header, rows = tables.build_table([tables.load_result(p) for p in tables.find_results([str(tmp_path)])])
    assert header == ["model", "data", "runs", "market1501/R1", "market1501/mAP"]
    # bot: R1 mean 60.0, sample std sqrt(((50-60)^2 + (70-60)^2) / 1) = 14.14; mAP 35.0 +- 7.07
    assert rows[0] == ["bot", "genepers", "2", "60.0 ± 14.1", "35.0 ± 7.1"]
    assert rows[1] == ["pdm", "genepers", "1", "80.5", "60.0"]


def test_cli_writes_csv_and_reports_missing_paths(tmp_path):
    _write(tmp_path / "r", "bot", 1, 0.25, 0.125)
    out = tmp_path / "t.csv"
    ok = subprocess.run([sys.executable, str(REPO / "experiments" / "tables.py"), str(tmp_path), "--format", "csv",
                         "--out", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert out.read_text().splitlines() == ["model,data,runs,market1501/R1,market1501/mAP", "bot,genepers,1,25.0,12.5"]
    bad = subprocess.run([sys.executable, str(REPO / "experiments" / "tables.py"), str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "nope" in bad.stderr and "no such" in bad.stderr


def test_unreadable_results_file_is_named(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(tables.TableInputError, match="results.json"):
        tables.load_result(tmp_path / "results.json")
