"""GPU check step 5 (``benchmarks/gpu_check.py``): ``python train.py debug=fdr`` of every model with
``trainer=gpu`` and ``trainer=ddp trainer.devices=1`` as subprocesses (the dry run: in this process, on
CPU), after a short bot run that writes the checkpoint the attack audits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gpu_check_core import ROOT, Check, StepTimeout, compose, one_line

FDR_MODELS = ("bot", "clipreid", "pdm", "privacy_gan", "attack")
# The dry run's embedded data: a GenePerson-mini of 40 source identities (x 4 images) and 12 per target,
# written into the work folder (about a second), read at 32x16.
DRY_RUN_DATA = [
    "data.prepare.num_identities=40",
    "data.prepare.images_per_identity=4",
    "data.prepare.target_identities=12",
    "data.height=32",
    "data.width=16",
    "data.batch_size=8",
    "data.num_instances=2",
    "data.test_batch_size=16",
    "data.val_split.identities=2",
    "callbacks.reid_media.num_train_images=8",
    "callbacks.progress_bar.refresh_rate=0",
]
DRY_RUN_MODEL = {
    "bot": ["backbone.channels=[8,16,16,32]", "backbone.out_dim=32"],
    "clipreid": [],
    "pdm": [],
    "privacy_gan": [
        "backbone.channels=[8,16,16,32]",
        "backbone.out_dim=32",
        "model.generator.base_channels=16",
        "model.generator.min_channels=8",
        "model.discriminator.base_channels=8",
        "model.discriminator.max_channels=16",
    ],
    "attack": [
        "model.attack_size=[32,16]",
        "model.l1.decoder.base_channels=32",
        "model.gan.decoder.base_channels=32",
        "model.gan.discriminator.base_channels=8",
        "model.gan.discriminator.max_channels=32",
        "model.diffusion.sample_size=null",
        "model.diffusion.decoder.block_out_channels=[8,16]",
        "model.diffusion.decoder.inference_steps=3",
        "model.diffusion.num_samples=1",
        "model.num_pictures=3",
    ],
}


def fdr_trainers(dry_run: bool):
    """(label, overrides) of the two trainers: ``gpu`` and ``ddp`` on one device. The dry run keeps each
    config's precision (mixed precision runs on CPU too) on ``trainer=cpu``, and DDP with the gloo
    backend on CPU."""
    if dry_run:
        gpu, ddp = (compose([f"trainer={name}"]).trainer.precision for name in ("gpu", "ddp"))
        return [
            (f"trainer=cpu {gpu} (for gpu)", ["trainer=cpu", f"trainer.precision={gpu}"]),
            (
                f"trainer=ddp on cpu {ddp}",
                ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.sync_batchnorm=false"],
            ),
        ]
    return [("trainer=gpu", ["trainer=gpu"]), ("trainer=ddp devices=1", ["trainer=ddp", "trainer.devices=1"])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failure_reason(stderr: str) -> str:
    """One line from a failed run's stderr: its ``error:`` line, else the exception line of the traceback."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln[len("error:") :].strip()
    for k, ln in enumerate(lines):  # Hydra's own messages (bad override, missing config)
        if ln.startswith(("Could not override", "Could not load", "Could not append", "In '")):
            return " ".join(lines[k : k + 2])
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
            return ln
    return lines[-1] if lines else "no output"


def run_train_subprocess(chk: Check, overrides: Sequence[str], run_dir: Path, timeout: float) -> float:
    """``python train.py OVERRIDES`` in the work folder, its run folder ``run_dir``; returns its wall seconds,
    raises RuntimeError with one line (the run's own error line, or its timeout) when it fails."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        *overrides,
        f"hydra.run.dir={run_dir}",
        f"paths.log_dir={chk.workdir / 'logs'}",
    ]
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "MASTER_PORT": str(free_port()), "HF_HUB_OFFLINE": "1"}
    (run_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    start = time.perf_counter()
    with open(run_dir / "stdout.txt", "w") as out, open(run_dir / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, cwd=chk.workdir, stdout=out, stderr=err, env=env, start_new_session=True)
        with chk.children_lock:
            chk.children[proc.pid] = proc
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            kill_child(proc)
            raise RuntimeError(f"timed out after {timeout:.0f} s (log: {run_dir}/stderr.txt)") from None
        finally:
            with chk.children_lock:
                chk.children.pop(proc.pid, None)
    seconds = time.perf_counter() - start
    if rc != 0:
        reason = failure_reason((run_dir / "stderr.txt").read_text(errors="replace"))
        raise RuntimeError(f"exit code {rc}: {reason} (log: {run_dir}/stderr.txt)")
    check_results(run_dir, "debug=fdr" in overrides)
    return seconds


def kill_child(proc: subprocess.Popen) -> None:
    """Kill a train.py subprocess this check started, and its own children (its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_train_in_process(chk: Check, overrides: Sequence[str], run_dir: Path) -> float:
    """The dry run's fast dev runs: train.py's ``run`` on the same composed config, in this process (a
    train.py start-up costs more than a tiny run on 2 cores)."""
    from ppreid.utils.errors import find_input_error
    from ppreid.utils.paths import load_entry_point

    run = load_entry_point("train.py").run

    start = time.perf_counter()
    cfg = compose([*overrides, f"paths.log_dir={chk.workdir / 'logs'}"], run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        run(cfg)
    except Exception as exc:
        err = find_input_error(exc)
        raise RuntimeError(str(err) if err is not None else one_line(exc)) from exc
    check_results(run_dir, "debug=fdr" in overrides)
    return time.perf_counter() - start


def check_results(run_dir: Path, fast_dev_run: bool) -> None:
    """The run wrote its ``results.json`` (a fast dev run's marked ``debug``)."""
    results = run_dir / "results.json"
    if not results.exists():
        raise RuntimeError(f"the run succeeded but wrote no {results}")
    if fast_dev_run and not json.loads(results.read_text()).get("debug"):
        raise RuntimeError(f"{results} does not mark the fast dev run as a debug run")


def step_fdr(chk: Check) -> None:
    """First a short bot run that writes ``checkpoints/last.ckpt`` (a fast dev run writes none) for the
    attack to audit; then ``debug=fdr`` of every model with each trainer, in parallel on the GPU."""
    dry = chk.dry_run
    trainers = fdr_trainers(dry)
    root = chk.workdir / "fdr"
    tiny = [f"data.prepare.root={chk.workdir / 'GenePerson-mini-tiny'}", *DRY_RUN_DATA] if dry else []

    def overrides_of(model: str, trainer: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
        return [f"model={model}", *trainer, *tiny, *(DRY_RUN_MODEL[model] if dry else []), *extra]

    ckpt_run = root / "bot_checkpoint"
    ckpt = ckpt_run / "checkpoints" / "last.ckpt"
    ckpt_setting = f"{trainers[0][0]} model=bot, 2 batches: checkpoint for the attack"
    with chk.setting(ckpt_setting):
        seconds = run_train_subprocess(
            chk,
            overrides_of(
                "bot",
                trainers[0][1],
                [
                    "trainer.max_epochs=1",
                    "+trainer.limit_train_batches=2",
                    "+trainer.limit_val_batches=1",
                    "test=false",
                    "task_name=gpu_check",
                ],
            ),
            ckpt_run,
            timeout=min(150.0, chk.time_left() - 5),
        )
        if not ckpt.exists():
            raise RuntimeError(f"the bot run wrote no {ckpt}")
        chk.add(f"{ckpt_setting}, train.py subprocess", seconds, "s")

    jobs = []
    for label, trainer in trainers:
        for model in FDR_MODELS:
            extra = ["debug=fdr"] + ([f"model.extractor_ckpt={ckpt}"] if model == "attack" else [])
            jobs.append(
                (
                    f"{label} model={model}",
                    model,
                    overrides_of(model, trainer, extra),
                    root / f"{trainer[0].split('=')[1]}_{model}",
                )
            )

    def one(job):
        setting, model, overrides, run_dir = job
        if model == "attack" and not ckpt.exists():
            raise RuntimeError("no checkpoint to audit: the bot checkpoint run failed")
        if dry:
            return run_train_in_process(chk, overrides, run_dir)
        return run_train_subprocess(chk, overrides, run_dir, timeout=max(1.0, chk.time_left() - 5))

    if dry:
        for job in jobs:
            with chk.setting(job[0]):
                chk.add(f"{job[0]}, in process", one(job), "s")
        return
    with ThreadPoolExecutor(max_workers=chk.fdr_workers) as pool:
        futures = [(job, pool.submit(one, job)) for job in jobs]
        reported = 0
        try:
            for job, future in futures:
                with chk.setting(job[0]):
                    chk.add(f"{job[0]}, train.py subprocess", future.result(), "s")
                reported += 1
        except StepTimeout:  # (each run's own timeout should have come first)
            for _, future in futures:
                future.cancel()
            with chk.children_lock:
                running = list(chk.children.values())
            for proc in running:
                kill_child(proc)
            for job, future in futures[reported:]:
                with chk.setting(job[0]):
                    if not future.done() or future.cancelled():
                        raise RuntimeError("stopped at the step's time cap") from None
                    chk.add(f"{job[0]}, train.py subprocess", future.result(), "s")
