"""benchmarks/gpu_check.py: the dry run fills every step with ok rows; a failing or overrunning step is
named in the table, the other steps still run, and the exit code is non-zero."""

from __future__ import annotations

import json
import time

import gpu_check
import pytest
import torch
from conftest import ROOT, run_script

STEPS = ("evaluator", "throughput", "privacy_gan", "diffusion", "fdr")
MODELS = ("bot", "clipreid", "pdm", "privacy_gan", "attack")


@pytest.mark.slow
def test_dry_run_measures_every_step(tmp_path):
    """The whole dry run as CI runs it: a subprocess, every row ok, the figures each step promises."""
    out = tmp_path / "gpu_check.json"
    proc = run_script(
        "benchmarks/gpu_check.py",
        "--dry-run",
        "--json",
        str(out),
        "--workdir",
        str(tmp_path / "work"),
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "all steps ok" in proc.stdout and "step  " in proc.stdout  # the printed table
    table = json.loads(out.read_text())
    assert table["ok"] and table["failed_steps"] == [] and table["mode"].startswith("dry-run")
    rows = table["rows"]
    assert [s for s in STEPS if any(r["step"] == s for r in rows)] == list(STEPS)
    assert [r for r in rows if r["status"] != "ok"] == []

    def figures(step, unit):
        return [r for r in rows if r["step"] == step and r["unit"] == unit]

    equal = figures("evaluator", "max abs diff")
    assert len(equal) == 4 and all(r["figure"] <= gpu_check.FEATURE_TOLERANCE for r in equal)
    assert any("extrapolated from the first 30 of 120 queries" in r["setting"] for r in figures("evaluator", "s"))
    speed = figures("throughput", "images/s")
    assert len(speed) == 6 and all(r["figure"] > 0 for r in speed)
    for model in ("BoT", "CLIP-ReID", "PDM"):
        for precision in ("32-true", "bf16-mixed"):
            assert sum(model in r["setting"] and precision in r["setting"] for r in speed) == 1
    assert len(figures("privacy_gan", "it/s")) == 2
    synth = figures("diffusion", "images/s")
    assert len(synth) == 4 and {", batch 1,", ", batch 2,"} <= {
        s for r in synth for s in (", batch 1,", ", batch 2,") if s in r["setting"]
    }
    runs = [r for r in figures("fdr", "s") if "model=" in r["setting"]]
    assert len(runs) == 1 + 2 * len(MODELS)  # the checkpoint run, then every model with both trainers
    for model in MODELS:
        assert sum(f"model={model}" in r["setting"] for r in runs) >= 2
    assert (tmp_path / "work" / "fdr" / "bot_checkpoint" / "checkpoints" / "last.ckpt").exists()


def test_a_failing_step_is_named_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    def broken(chk):
        chk.add("first setting", 1.0, "s")
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nsecond line of the message")

    monkeypatch.setitem(gpu_check.STEPS, "privacy_gan", broken)
    out = tmp_path / "table.json"
    code = gpu_check.main(
        ["--dry-run", "--only", "privacy_gan,evaluator", "--json", str(out), "--workdir", str(tmp_path / "work")]
    )
    assert code == 1
    table = json.loads(out.read_text())
    assert not table["ok"] and table["failed_steps"] == ["privacy_gan"]
    failed = [r for r in table["rows"] if r["status"] != "ok"]
    assert len(failed) == 1 and failed[0]["step"] == "privacy_gan"
    assert failed[0]["status"] == "FAIL: RuntimeError: CUDA error: an illegal memory access was encountered"
    assert any(r["step"] == "evaluator" and r["unit"] == "max abs diff" for r in table["rows"])  # ran after it
    printed = capsys.readouterr().out
    assert "FAILED: privacy_gan" in printed and "illegal memory access" in printed


def test_a_step_over_its_time_cap_fails_and_the_next_step_runs(tmp_path, monkeypatch):
    def hangs(chk):
        with chk.setting("a setting that hangs"):
            time.sleep(30)

    monkeypatch.setitem(gpu_check.STEPS, "diffusion", hangs)
    monkeypatch.setitem(gpu_check.DRY_RUN_CAPS_S, "diffusion", 1)
    out = tmp_path / "table.json"
    start = time.perf_counter()
    code = gpu_check.main(
        ["--dry-run", "--only", "diffusion,evaluator", "--json", str(out), "--workdir", str(tmp_path / "work")]
    )
    assert code == 1 and time.perf_counter() - start < 20
    rows = json.loads(out.read_text())["rows"]
    failed = [r for r in rows if r["status"] != "ok"]
    assert [(r["step"], r["setting"], r["status"]) for r in failed] == [
        ("diffusion", "a setting that hangs", "FAIL: time cap of 1 s reached")
    ]
    assert sum(r["step"] == "evaluator" for r in rows) > 1


def test_a_setting_whose_results_differ_fails_its_row():
    chk = gpu_check.Check(True, ROOT, None, 1)
    chk.step = "evaluator"
    same = {"cmc": [0.5, 1.0], "mAP": 0.4, "mINP": 0.2, "num_valid_queries": 3}
    gpu_check.add_equality(chk, "equal", gpu_check.max_result_diff(same, dict(same)), gpu_check.EXACT_TOLERANCE)
    gpu_check.add_equality(
        chk, "mAP off", gpu_check.max_result_diff(same, {**same, "mAP": 0.41}), gpu_check.FEATURE_TOLERANCE
    )
    gpu_check.add_equality(
        chk,
        "fewer queries",
        gpu_check.max_result_diff(same, {**same, "num_valid_queries": 2}),
        gpu_check.FEATURE_TOLERANCE,
    )
    assert [r.status for r in chk.rows] == [
        "ok",
        "FAIL: results differ by 0.01 (tolerance 0.0001)",
        "FAIL: results differ by inf (tolerance 0.0001)",
    ]
    assert chk.failed_steps() == ["evaluator"]


def test_a_train_py_failure_is_one_line():
    hydra = (
        "Could not override 'trainer.limit_train_batches'.\nTo append to your config use "
        "+trainer.limit_train_batches=2\nKey 'limit_train_batches' is not in struct\n"
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    )
    assert gpu_check.failure_reason(hydra) == (
        "Could not override 'trainer.limit_train_batches'. To append to your config use +trainer.limit_train_batches=2"
    )
    ours = "Traceback ...\n\nerror: model=attack needs the checkpoint to audit: give model.extractor_ckpt=<path>\n"
    assert (
        gpu_check.failure_reason(ours) == "model=attack needs the checkpoint to audit: give model.extractor_ckpt=<path>"
    )
    crash = 'Traceback (most recent call last):\n  File "x.py", line 1\ntorch.OutOfMemoryError: CUDA out of memory.\n'
    assert gpu_check.failure_reason(crash) == "torch.OutOfMemoryError: CUDA out of memory."


def test_bad_arguments_and_a_missing_gpu_are_one_line(capsys):
    assert gpu_check.main(["--dry-run", "--only", "evaluator,fdr2"]) == 2
    assert (
        "unknown step(s) fdr2; steps are evaluator, throughput, privacy_gan, diffusion, fdr" in capsys.readouterr().err
    )
    if not torch.cuda.is_available():
        assert gpu_check.main(["--only", "evaluator"]) == 2
        assert "no CUDA GPU is visible to torch" in capsys.readouterr().err
