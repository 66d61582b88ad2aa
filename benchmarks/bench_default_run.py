"""Where the time of ``python train.py`` goes, and how two checkouts compare, side by side.

    python benchmarks/bench_default_run.py                        # this checkout, 4-epoch runs
    python benchmarks/bench_default_run.py --ref /path/to/other   # both, alternating, with ratios
    python benchmarks/bench_default_run.py --ref X --epochs 0 --parts run   # full default runs (32 epochs)
    python benchmarks/bench_default_run.py -- data.num_workers=0  # extra train.py overrides (both checkouts)
    python benchmarks/bench_default_run.py --this /tmp/a --ref /tmp/b   # two other (frozen) checkouts

Two measurements per checkout, each in a fresh process run inside that checkout (its own code):

``components`` (in-process, one at a time): data set-up (parse, plus whatever the checkout does once at
start, e.g. decoding into memory), one epoch of training batches from the loader in the main process
(``num_workers=0``: decoding + augmentation) and with the configured workers, decoding every training
image once (what a loader that reads files pays per epoch), the model's training step (forward, backward,
optimizer; one epoch's worth of steps), and one validation and one test pass (loader + features).

``run``: the real ``python train.py trainer.max_epochs=<epochs>`` with a timing callback added
(``+callbacks.bench_timer``): start-up (process start to the callbacks being built: imports, config,
model, datamodule), data set-up (to Lightning's ``setup``), training epochs split into waiting for
batches and the steps themselves, validation passes, the test pass, time inside the other callbacks
(pictures, checkpoints, progress bar), the end (results, exit), total wall time; and the metrics of
``results.json`` (val and test R1 / mAP).

With ``--ref`` the two checkouts run alternately (this, ref, ref, this, ...) so that a machine shared with
other jobs loads both alike; the table shows the median of ``--repeats`` and the ratio this / ref.
Timings on a loaded machine are noisy: compare ratios, and report the load (printed) with them.
Both checkouts read the same data folder (``--data-dir``, default this checkout's ``data/``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
from bench_run_timer import TIMINGS_ENV  # the callback the measured train.py loads


# --------------------------------------------------------------------------- measurements (child side)
def _compose(checkout: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(checkout / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


class _Parts:
    """Wall and CPU seconds (this process; DataLoader workers not included) of named parts."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def time(self, name: str, fn, *args, scale: float = 1.0):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        self.wall[name] = (time.perf_counter() - w0) * scale
        self.cpu[name] = (time.process_time() - c0) * scale
        return out


def measure_components(checkout: Path, overrides: list[str], model_steps: int) -> dict[str, dict[str, float]]:
    """Per-part wall and CPU seconds of the default run, measured inside ``checkout`` (its code, this process)."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from hydra.utils import instantiate

    from ppreid.config.resolvers import register_resolvers

    register_resolvers()
    cfg = _compose(checkout, overrides)
    parts = _Parts()

    def build():
        dm = instantiate(cfg.data, _convert_="all")
        model = instantiate(cfg.model)
        backbone = getattr(model, "backbone", None)
        if getattr(backbone, "input_mean", None) is not None:
            dm.use_backbone_normalization(backbone.input_mean, backbone.input_std)
        return dm, model

    dm, model = parts.time("build model + datamodule", build)

    def data_setup():
        dm.prepare_data()
        dm.setup("fit")
        dm.setup("test")

    parts.time("data set-up (parse, once-only work)", data_setup)

    def drain(loader) -> list[Any]:
        return list(loader)

    workers = dm.num_workers
    dm.num_workers = 0
    batches = parts.time("train batches / epoch, main process", lambda: drain(dm.train_dataloader()))
    if workers > 0:
        dm.num_workers = workers
        parts.time(f"train batches / epoch, {workers} workers", lambda: drain(dm.train_dataloader()))

    from ppreid.data.image_dataset import read_image

    parts.time("decode every train image once", lambda: [read_image(r.path) for r in dm.train_records])

    if hasattr(model, "neck") and dm.num_classes:
        model.neck.reset_classifier(dm.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
    model.train()
    hook = getattr(dm, "on_after_batch_transfer", None)

    def step(batch, i):
        if hook is not None:
            batch = hook(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss = model.training_step(batch, i)
        loss.backward()
        optimizer.step()

    for i in range(2):
        step(batches[i % len(batches)], i)
    n = max(1, model_steps)

    def steps():
        for i in range(n):
            step(batches[i % len(batches)], i)

    parts.time("train steps / epoch (fwd+bwd+adam)", steps, scale=len(batches) / n)

    model.eval()

    def features(loaders) -> None:
        with torch.no_grad():
            for ld in loaders:
                for batch in ld:
                    if hook is not None:
                        batch = hook(batch, 0)
                    model.extract_features(batch["image"])

    parts.time("one validation pass (loader + features)", features, dm.val_dataloader())
    parts.time("test pass (loader + features)", features, dm.test_dataloader())
    return {"wall": parts.wall, "cpu": parts.cpu}


# --------------------------------------------------------------------------- parent side
def _env(checkout: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("MPLBACKEND", "Agg")
    env["PROJECT_ROOT"] = str(checkout)
    # the measured checkout's own package first (src/ layout, or an older checkout's top-level src package)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(checkout / "src"), str(checkout), str(HERE)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    return env


def run_components(checkout: Path, overrides: list[str], model_steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "components.json"
        cmd = [
            sys.executable,
            str(HERE),
            "--child-components",
            str(checkout),
            "--child-out",
            str(out),
            "--model-steps",
            str(model_steps),
            "--",
            *overrides,
        ]
        proc = subprocess.run(cmd, cwd=checkout, env=_env(checkout), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"components of {checkout} failed:\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def run_train(checkout: Path, overrides: list[str]) -> dict[str, Any]:
    """``python train.py <overrides>`` in ``checkout`` with the timing callback; seconds per phase + metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        timings = Path(tmp) / "timings.json"
        run_dir = Path(tmp) / "run"
        env = _env(checkout)
        env[TIMINGS_ENV] = str(timings)
        cmd = [
            sys.executable,
            "train.py",
            *overrides,
            f"hydra.run.dir={run_dir}",
            "+callbacks.bench_timer._target_=bench_run_timer.PhaseTimer",
        ]
        import resource

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        launch = time.time()
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
        end = time.time()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"train.py in {checkout} failed:\n{proc.stderr[-3000:]}")
        tm = json.loads(timings.read_text())
        results = json.loads((run_dir / "results.json").read_text())
    t, acc, cb = tm["t"], tm["acc"], tm["callbacks"]
    fit_end = t.get("fit_end", t.get("test_end", end))
    train_epochs = fit_end - t["first_epoch"] - tm["val_in_fit"] if "first_epoch" in t else 0.0
    pictures = cb.get("ReIDMediaCallback", 0.0)
    out = {
        "start-up (imports, config, model, datamodule)": tm["t_built"] - launch,
        "data set-up (trainer, parse, once-only work)": t.get("setup_fit", t.get("setup_test", end)) - tm["t_built"],
        "fit start to first epoch": (t["first_epoch"] - t["setup_fit"]) if "first_epoch" in t else 0.0,
        "training epochs (excl. validation)": train_epochs,
        "  waiting for batches": acc["data_wait"],
        "  training steps": acc["step"],
        f"validation ({tm['counts']['val']} passes)": acc["val"] - tm["callback_in_val"],
        "test (features + metrics)": acc["test"] - tm["callback_in_test"],
        "pictures (media callback)": pictures,
        "checkpoints": cb.get("ModelCheckpoint", 0.0),
        "end (results, exit)": end - t.get("test_end", end),
        "total wall time": end - launch,
        "total CPU time (all processes)": cpu,
    }
    metrics = {"val/mAP": results.get("val", {}).get("mAP")}
    for name, res in results.get("test", {}).items():
        if isinstance(res, dict):
            metrics[f"{name} R1"] = res.get("R1")
            metrics[f"{name} mAP"] = res.get("mAP")
    return {"times": out, "metrics": metrics, "steps": tm["counts"]["steps"]}


def _load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average n/a"


def _table(title: str, runs: dict[str, list[dict[str, float]]], labels: list[str]) -> str:
    """Median per key and checkout, and the ratio this / ref; '-' where a checkout has no such part."""
    keys = list(dict.fromkeys(k for lab in labels for r in runs[lab] for k in r))
    med = {
        lab: {k: statistics.median(r[k] for r in runs[lab] if k in r) for k in keys if any(k in r for r in runs[lab])}
        for lab in labels
    }
    width = max(len(k) for k in keys) + 2
    head = f"{title:<{width}}" + "".join(f"{lab:>12}" for lab in labels)
    if len(labels) == 2:
        head += f"{labels[0] + ' / ' + labels[1]:>16}"
    lines = [head, "-" * len(head)]
    for k in keys:
        row = f"{k:<{width}}" + "".join(f"{med[lab][k]:>11.2f}s" if k in med[lab] else f"{'-':>12}" for lab in labels)
        if len(labels) == 2 and all(k in med[lab] for lab in labels):
            a, b = med[labels[0]][k], med[labels[1]][k]
            row += f"{(a / b if b > 1e-6 else float('nan')):>16.2f}"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ref", type=Path, default=None, help="another checkout to measure side by side")
    p.add_argument("--this", type=Path, default=ROOT, help="the checkout called 'this' (default: this script's)")
    p.add_argument("--epochs", type=int, default=4, help="trainer.max_epochs of the timed runs (0: the config's)")
    p.add_argument("--repeats", type=int, default=1, help="measurements per checkout (median shown)")
    p.add_argument("--parts", default="components,run", help="components, run, or both (comma-separated)")
    p.add_argument("--model-steps", type=int, default=10, help="training steps timed in 'components'")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data", help="paths.data_dir of both checkouts")
    p.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    p.add_argument("--child-components", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child_components is not None:
        os.chdir(args.child_components)
        res = measure_components(args.child_components.resolve(), extra, args.model_steps)
        args.child_out.write_text(json.dumps(res))
        return

    overrides = [f"paths.data_dir={args.data_dir.resolve()}"] + extra
    run_overrides = overrides + ([f"trainer.max_epochs={args.epochs}"] if args.epochs > 0 else [])
    run_overrides += ["callbacks.progress_bar.refresh_rate=0"]
    checkouts = {"this": args.this.resolve()}
    if args.ref is not None:
        checkouts["ref"] = args.ref.resolve()
    labels = list(checkouts)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    comp: dict[str, list[dict[str, float]]] = {lab: [] for lab in labels}
    comp_cpu: dict[str, list[dict[str, float]]] = {lab: [] for lab in labels}
    runs: dict[str, list[dict[str, float]]] = {lab: [] for lab in labels}
    metrics: dict[str, list[dict[str, Any]]] = {lab: [] for lab in labels}
    loads = [_load()]
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {_load()}  cpus {os.cpu_count()}  "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1 (set by this script)')}",
        flush=True,
    )
    for lab, path in checkouts.items():
        print(f"  {lab}: {path}  ({_git_commit(path)})", flush=True)
    for part in parts:
        for rep in range(args.repeats):
            order = labels if rep % 2 == 0 else labels[::-1]
            for lab in order:
                t0 = time.time()
                if part == "components":
                    res = run_components(checkouts[lab], overrides, args.model_steps)
                    comp[lab].append(res["wall"])
                    comp_cpu[lab].append(res["cpu"])
                elif part == "run":
                    res = run_train(checkouts[lab], run_overrides)
                    runs[lab].append(res["times"])
                    metrics[lab].append(res["metrics"])
                else:
                    raise SystemExit(f"--parts: unknown part '{part}' (components, run)")
                loads.append(_load())
                print(
                    f"  [{rep + 1}/{args.repeats}] {part:<10} {lab:<5} {time.time() - t0:6.1f}s  {loads[-1]}",
                    flush=True,
                )
        if part == "components":
            print()
            print(_table("components, wall seconds", comp, labels) + "\n")
            print(_table("components, CPU seconds (main process)", comp_cpu, labels) + "\n", flush=True)
    if runs[labels[0]]:
        epochs = args.epochs or "config's"
        print(_table(f"train.py, {epochs} epochs", runs, labels) + "\n")
        for lab in labels:
            for m in metrics[lab]:
                print(
                    f"  {lab} metrics: "
                    + ", ".join(f"{k} {100 * v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())
                )
    print(f"\nload during the measurements: {loads[0]} ... {loads[-1]}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "checkouts": {k: str(v) for k, v in checkouts.items()},
                    "components": comp,
                    "components_cpu": comp_cpu,
                    "runs": runs,
                    "metrics": metrics,
                    "loads": loads,
                    "overrides": run_overrides,
                },
                indent=1,
            )
        )


def _git_commit(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return (out.stdout.strip() or "no git") + (" + local changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "no git"


if __name__ == "__main__":
    main()
