"""Shared fixtures: compose the real Hydra configs, and tiny datasets in every real layout.

The tiny images are colour-coded by identity (plus camera noise), so a model can really learn them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

from ppreid.config.resolvers import register_resolvers  # noqa: E402
from ppreid.utils.paths import load_entry_point  # noqa: E402

register_resolvers()

# Overrides that make any train config tiny and CPU-only.
TINY = [
    "trainer=cpu",
    "trainer.precision=32-true",  # the same arithmetic on every CI machine (auto: bf16 where native)
    "trainer.max_epochs=1",
    "trainer.check_val_every_n_epoch=1",
    "data.height=32",
    "data.width=16",
    "data.batch_size=8",
    "data.num_instances=2",
    "data.test_batch_size=16",
    "data.num_workers=0",
    "data.pin_memory=false",
    "data.val_split.identities=2",
    "callbacks.progress_bar.refresh_rate=0",
    "callbacks.reid_media.num_train_images=8",
    "backbone=tiny_cnn",
    "backbone.channels=[8,16,16,32]",
    "backbone.out_dim=32",
]


def compose_train(overrides: Sequence[str], out_dir: Path, data_dir: Path | None = None):
    """Compose conf/train.yaml like ``python train.py <overrides>`` would, writing into ``out_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out_dir)
            cfg.paths.log_dir = str(out_dir / "logs")
            if data_dir is not None:
                cfg.paths.data_dir = str(data_dir)
            cfg.hydra.runtime.output_dir = str(out_dir)
            cfg.hydra.job.num = 0
        HydraConfig().set_config(cfg)
    backbone = cfg.get("backbone")
    if backbone is not None and backbone.get("pretrained") != "sandbox":
        from ppreid.run.sandbox_clip_fit import take_build_parameters

        take_build_parameters(cfg)  # what the run does first: instantiate(cfg.model) then just works
    out_dir.mkdir(parents=True, exist_ok=True)
    return cfg


def run_script(script: str, *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300):
    """``python <script> ARGS`` as a user runs it: the one subprocess helper of the tests (train.py, synth.py,
    embed.py, benchmark scripts). W&B offline and Hydra's short errors unless ``env`` says otherwise; returns
    the CompletedProcess (exit code, stdout, stderr) for the test to judge."""
    import subprocess

    full_env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_cli(
    *args: str,
    run_dir: Path | None = None,
    data_dir: Path | None = None,
    tiny: bool = False,
    multirun: bool = False,
    cwd: Path = ROOT,
    env: dict | None = None,
    timeout: int = 300,
):
    """``python train.py [-m] [TINY] [paths.data_dir=..] [hydra dirs] ARGS`` in a subprocess (``run_script``).
    ``run_dir``: Hydra's run folder (the sweep folder with ``multirun``, one subfolder per job number)."""
    dirs = []
    if run_dir is not None:
        dirs = (
            [f"hydra.sweep.dir={run_dir}", "hydra.sweep.subdir=${hydra.job.num}"]
            if multirun
            else [f"hydra.run.dir={run_dir}"]
        )
    return run_script(
        "train.py",
        *(["-m"] if multirun else []),
        *(TINY if tiny else []),
        *([f"paths.data_dir={data_dir}"] if data_dir is not None else []),
        *dirs,
        *args,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def run_synth(tmp_path: Path, out: Path, *args: str, env: dict | None = None, check: bool = True, timeout: int = 300):
    """``python synth.py out_dir=<out> ARGS`` as a user runs it (a subprocess from ``tmp_path``, Hydra's
    folders under it). Flags (``-m``) go first. ``check``: assert exit code 0, showing stderr's tail."""
    flags = [a for a in args if a.startswith("-")]
    proc = run_script(
        "synth.py",
        *flags,
        f"out_dir={out}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        f"hydra.sweep.dir={tmp_path / 'hydra_m'}",
        *[a for a in args if not a.startswith("-")],
        cwd=tmp_path,
        env=env,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


load_script = load_entry_point  # train.py / embed.py as modules (the root is no package)


def run_train(overrides: Sequence[str], out_dir: Path, data_dir: Path | None = None) -> dict:
    run = load_script("train.py").run
    cfg = compose_train(overrides, out_dir, data_dir)
    return run(cfg)


@pytest.fixture(scope="session")
def market_two_epochs(reid_data_dir, tmp_path_factory):
    """One 2-epoch TINY run on tiny Market-1501, trained once for every test that reads its files, logs or
    checkpoints (they must not write into its folder): (results, run dir)."""
    out = tmp_path_factory.mktemp("market_two_epochs")
    res = run_train(TINY + ["data=market1501", "trainer.max_epochs=2"], out, reid_data_dir)
    return res, out


# ----------------------------------------------------------------------------- tiny datasets
PALETTE_SEED = 1234


def _person(pid: int, cam: int, k: int, size=(32, 16)) -> Image.Image:
    """A 32x16 'person': identity colours in top/bottom halves, camera-dependent tint + noise."""
    rng = np.random.default_rng(PALETTE_SEED + pid)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    h, w = size
    img = np.zeros((h, w, 3), np.float32)
    img[: h // 2] = top
    img[h // 2 :] = bottom
    noise = np.random.default_rng(pid * 1000 + cam * 10 + k).normal(0, 12, img.shape)
    img = img * (0.8 + 0.05 * cam) + noise
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def write_market_tree(
    root: Path,
    train_ids: list[int],
    test_ids: list[int],
    cams: int = 4,
    ext: str = ".jpg",
    train_per_id: int = 4,
    gallery_per_id: int = 3,
) -> Path:
    """bounding_box_train/ query/ bounding_box_test/ with Market names; plus junk (-1) and distractors (0)."""
    fmt = "JPEG" if ext == ".jpg" else "PNG"
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for pid in train_ids:
        for k in range(train_per_id):
            cam = k % cams + 1
            _person(pid, cam, k).save(root / "bounding_box_train" / f"{pid:04d}_c{cam}s1_{k:06d}_00{ext}", fmt)
    for pid in test_ids:
        _person(pid, 1, 99).save(root / "query" / f"{pid:04d}_c1s1_{99:06d}_00{ext}", fmt)
        for k in range(gallery_per_id):
            cam = k % (cams - 1) + 2
            _person(pid, cam, k).save(root / "bounding_box_test" / f"{pid:04d}_c{cam}s1_{k:06d}_00{ext}", fmt)
        _person(pid, 1, 50).save(root / "bounding_box_test" / f"{pid:04d}_c1s1_{50:06d}_00{ext}", fmt)  # junk
    _person(9000, 2, 0).save(root / "bounding_box_test" / f"0000_c2s1_000000_00{ext}", fmt)  # distractor
    _person(9001, 3, 0).save(root / "bounding_box_test" / f"-1_c3s1_000000_00{ext}", fmt)  # junk
    return root


def write_msmt_tree(root: Path, train_ids: list[int], test_ids: list[int], cams: int = 4) -> Path:
    """MSMT17 V1: train/ test/ + list files (relpath pid), camera = 3rd '_' field of the name."""
    lines: dict[str, list[str]] = {"train": [], "val": [], "query": [], "gallery": []}
    for pid in train_ids:
        for k in range(4):
            rel = f"{pid:04d}/{pid:04d}_{k:03d}_{k % cams + 1:02d}_0303morning_{k:04d}_0.jpg"
            (root / "train" / rel).parent.mkdir(parents=True, exist_ok=True)
            _person(pid, k % cams + 1, k).save(root / "train" / rel)
            lines["val" if k == 3 else "train"].append(f"{rel} {train_ids.index(pid)}")
    for pid in test_ids:
        for k in range(4):
            cam = 1 if k == 0 else k % (cams - 1) + 2
            rel = f"{pid:04d}/{pid:04d}_{k:03d}_{cam:02d}_0303morning_{k:04d}_0.jpg"
            (root / "test" / rel).parent.mkdir(parents=True, exist_ok=True)
            _person(pid, cam, k).save(root / "test" / rel)
            lines["query" if k == 0 else "gallery"].append(f"{rel} {pid}")
    for name, ls in lines.items():
        (root / f"list_{name}.txt").write_text("\n".join(ls) + "\n")
    return root


@pytest.fixture(scope="session")
def reid_data_dir(tmp_path_factory) -> Path:
    """A data root holding tiny Market-1501, DukeMTMC-reID, MSMT17 and CUHK03-NP folders."""
    root = tmp_path_factory.mktemp("reid_data")
    train_ids, test_ids = list(range(1, 9)), list(range(101, 107))
    write_market_tree(root / "Market-1501-v15.09.15", train_ids, test_ids, cams=6)
    write_market_tree(root / "DukeMTMC-reID", [i + 10 for i in train_ids], [i + 10 for i in test_ids], cams=8)
    write_msmt_tree(root / "MSMT17", train_ids, test_ids)
    for variant in ("labeled", "detected"):
        write_market_tree(root / "cuhk03-np" / variant, train_ids, test_ids, cams=2, ext=".png")
    # training-only sources of the domain-generalization tables, in Market-style folders
    for name, offset in (("GenePerson", 20), ("RandPerson", 30), ("UnrealPerson", 40), ("ClonedPerson", 50)):
        write_market_tree(root / name, [i + offset for i in train_ids], [], cams=4)
        for split in ("query", "bounding_box_test"):
            for f in (root / name / split).iterdir():
                f.unlink()
            (root / name / split).rmdir()
    return root
