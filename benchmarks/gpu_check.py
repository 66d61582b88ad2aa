"""The GPU check: what a first few minutes on one GPU should measure, in one table.

    python benchmarks/gpu_check.py [--json FILE] [--only STEP[,STEP]] [--workdir DIR]
    python benchmarks/gpu_check.py --dry-run          # every step on tiny shapes, on CPU (CI)

Steps (each under a time cap; the sum of the caps fits in 8 minutes on an H200-class GPU):

evaluator    the ReID evaluator (src/metrics/reid.py) on CUDA vs the CPU path at Market-1501 scale
             (3,368 x 15,913, dim 2048) and MSMT17 scale (11,659 x 82,161), synthetic features, pids and
             cameras: seconds of each, and equality of CMC / mAP / mINP (the MSMT17 CPU time is
             extrapolated from a subset of the queries; the table says from how many);
throughput   training images/s and peak GPU memory at 256x128 of BoT / ResNet-50 and of the stage-2
             iteration of CLIP-ReID and PDM on ViT-B/16 (random weights, synthetic batches), with
             bf16-mixed and fp32 (32-true);
privacy_gan  joint-phase iterations/s of model=privacy_gan (ResNet-50, 256x128, the paper recipe's G and
             D) through Lightning's loop, with bf16-mixed and fp32;
diffusion    synthesis images/s of the ``diffusion`` generator with a random-weight pipeline of Stable
             Diffusion 1.5's size (UNet 860M, VAE, CLIP ViT-L/14-size text encoder, real tokenizer) at
             512x256, batch 1 and 8, DDIM, fp16;
fdr          ``python train.py debug=fdr`` of every model (bot, clipreid, pdm, privacy_gan, attack) with
             ``trainer=gpu`` and ``trainer=ddp trainer.devices=1``, as subprocesses in a temp folder (the
             attack audits a checkpoint written by a short bot run first).

Nothing is downloaded (``HF_HUB_OFFLINE=1``; every model has random weights). The exit code is 0
when every row says ``ok``, 1 when any step failed (the table names it, with a one-line reason),
2 on bad arguments or when no GPU is visible without ``--dry-run``. A failing step does not stop
the others. ``--dry-run`` runs the same code on tiny shapes on CPU: tiny feature counts, tiny_cnn /
clip_tiny backbones, a tiny UNet, and ``trainer=cpu`` / DDP on CPU for the fast dev runs (in this
process, except the checkpoint run, which goes through the ``train.py`` subprocess path).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Sequence

STARTED = time.time()  # before the heavy imports: the reported wall time includes them
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

STEP_NAMES = ("evaluator", "throughput", "privacy_gan", "diffusion", "fdr")
# Hard time caps (s) per step. On the GPU they sum to 445 s, so with start-up the check ends within
# 8 minutes; the dry run's caps only stop a hung step on a slow shared CPU.
TIME_CAPS_S = {"evaluator": 70, "throughput": 95, "privacy_gan": 60, "diffusion": 40, "fdr": 180}
DRY_RUN_CAPS_S = {"evaluator": 120, "throughput": 120, "privacy_gan": 120, "diffusion": 120, "fdr": 400}
# CUDA vs CPU from the same features: each device rounds its own fp32 matmul, which may swap
# near-tied gallery entries (on CPU, these features in fp32 vs fp64 moved mAP by ~1e-8 and CMC not at
# all, at both scales); from the same distance matrix the ranking is exact on both devices.
FEATURE_TOLERANCE = 1e-4
EXACT_TOLERANCE = 1e-9
CPU_EXTRAPOLATION_BUDGET_S = 15.0  # CPU seconds spent on the MSMT17-scale subset
NUM_TRAIN_IDS = 751                # Market-1501's training identities (classifier size)
DIFFUSION_CONFIG_STEPS = 30        # conf/generator/diffusion.yaml: what synthesis runs by default
FDR_MODELS = ("bot", "clipreid", "pdm", "privacy_gan", "attack")


class StepTimeout(BaseException):
    """Raised in the main thread when a step's time cap is reached (a BaseException, so that no
    ``except Exception`` on the way swallows it)."""


@dataclass
class Row:
    step: str
    setting: str
    figure: Optional[float]
    unit: str
    status: str


def one_line(exc: BaseException, limit: int = 240) -> str:
    """``Type: first line of the message``, at most ``limit`` characters."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Check:
    """The table being filled, the device, and the running step's name, setting and deadline."""

    def __init__(self, dry_run: bool, workdir: Path, json_path: Optional[Path], fdr_workers: int) -> None:
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.workdir = workdir
        self.json_path = json_path
        self.fdr_workers = fdr_workers
        self.rows: List[Row] = []
        self.step = ""
        self.current = "-"
        self.deadline = math.inf
        self.started = STARTED
        self.children: Dict[int, subprocess.Popen] = {}  # running train.py subprocesses, by pid
        self.children_lock = threading.Lock()

    # ---------------------------------------------------------------- rows
    def add(self, setting: str, figure: Optional[float], unit: str, status: str = "ok") -> None:
        row = Row(self.step, setting, None if figure is None else float(figure), unit, status)
        self.rows.append(row)
        print(f"  [{row.step}] {row.setting}: {format_figure(row.figure)} {row.unit}  {row.status}", flush=True)

    @contextlib.contextmanager
    def setting(self, name: str):
        """A measured setting: an error in it becomes its FAIL row, and the step goes on."""
        self.current = name
        try:
            yield
        except StepTimeout:
            raise  # ``current`` still names the setting, for the step's FAIL row
        except Exception as exc:  # noqa: BLE001  (every failure is reported, none stops the check)
            self.add(name, None, "", f"FAIL: {one_line(exc)}")
            if self.device.type == "cuda":
                gc.collect()
                torch.cuda.empty_cache()
        self.current = "-"

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    # ---------------------------------------------------------------- device helpers
    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> Optional[float]:
        return torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else None

    def add_peak(self, setting: str) -> None:
        """A peak-memory row (GPU only: the dry run has no device memory to report)."""
        peak = self.peak_gib()
        if peak is not None:
            self.add(setting, peak, "GiB peak")

    def timed(self, fn: Callable):
        """(result, seconds) of ``fn()``, device work included."""
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return out, time.perf_counter() - start

    # ---------------------------------------------------------------- output
    def failed_steps(self) -> List[str]:
        return list(dict.fromkeys(r.step for r in self.rows if r.status != "ok"))

    def describe(self) -> Dict:
        info = {"mode": "dry-run (CPU, tiny shapes)" if self.dry_run else "gpu", "torch": torch.__version__,
                "cuda": torch.version.cuda, "python": platform.python_version(), "cpus": os.cpu_count(),
                "cpu_threads": torch.get_num_threads()}
        if torch.cuda.is_available() and not self.dry_run:
            props = torch.cuda.get_device_properties(0)
            info["device"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor})"
            info["bf16_supported"] = torch.cuda.is_bf16_supported()
        else:
            info["device"] = "cpu"
        return info

    def write_json(self) -> None:
        if self.json_path is None:
            return
        failed = self.failed_steps()
        payload = {**self.describe(), "ok": not failed, "failed_steps": failed,
                   "wall_s": round(time.time() - self.started, 1), "rows": [asdict(r) for r in self.rows]}
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.json_path.with_suffix(self.json_path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, self.json_path)


def format_figure(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 0.01:
        return f"{value:.3g}"
    return f"{value:.1e}"


def format_table(rows: Sequence[Row]) -> str:
    header = ("step", "setting", "figure", "unit", "status")
    cells = [header] + [(r.step, r.setting, format_figure(r.figure), r.unit, r.status) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = []
    for k, c in enumerate(cells):
        lines.append(f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]:<{widths[3]}}  {c[4]}")
        if k == 0:
            lines.append("-" * min(200, len(lines[0]) + 8))
    return "\n".join(lines)


# ============================================================================ configs
def compose(overrides: Sequence[str], output_dir: Optional[Path] = None):
    """conf/train.yaml composed with ``overrides``, as ``python train.py <overrides>`` would (Hydra's
    runtime config set, so ``${hydra:...}`` interpolations resolve)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from src.utils.resolvers import register_resolvers

    register_resolvers()
    out = Path(output_dir) if output_dir is not None else Path(tempfile.gettempdir()) / "gpu_check_compose"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.output_dir = str(out)
            cfg.hydra.runtime.output_dir = str(out)
            cfg.hydra.job.num = 0
        HydraConfig().set_config(cfg)
    return cfg


# ============================================================================ 1. evaluator
def synthetic_reid_split(num_query: int, num_gallery: int, num_ids: int, num_cams: int, num_distractors: int,
                         dim: int, seed: int, identity_strength: float = 0.2):
    """Query / gallery features (CPU float32) with identity structure, and Market-like pids / camids.

    feature = noise + ``identity_strength`` * centre of its identity, so ranks are partial (mAP well
    below 1), as with a real model; built in slices so that only the two arrays are ever held.
    """
    import numpy as np

    from benchmarks.bench_evaluator import market_like_ids

    rng = np.random.default_rng(seed)
    q_pids, g_pids, q_cams, g_cams = market_like_ids(rng, num_query, num_gallery, num_ids, num_cams, num_distractors)
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(int(max(q_pids.max(), g_pids.max())) + 1, dim, generator=gen)
    feats = []
    for pids in (q_pids, g_pids):
        out = torch.empty(len(pids), dim)
        for s in range(0, len(pids), 4096):
            ids = torch.as_tensor(pids[s : s + 4096])
            out[s : s + 4096] = torch.randn(len(ids), dim, generator=gen) + identity_strength * centers[ids]
        feats.append(out)
    return feats[0], feats[1], q_pids, g_pids, q_cams, g_cams


def max_result_diff(a: Dict, b: Dict) -> float:
    """Largest absolute difference of CMC / mAP / mINP (inf when the valid query counts differ)."""
    import numpy as np

    if a["num_valid_queries"] != b["num_valid_queries"]:
        return math.inf
    return float(max(np.abs(np.asarray(a["cmc"]) - np.asarray(b["cmc"])).max(), abs(a["mAP"] - b["mAP"]),
                     abs(a["mINP"] - b["mINP"])))


def add_equality(chk: Check, setting: str, diff: float, tolerance: float) -> None:
    status = "ok" if diff <= tolerance else f"FAIL: results differ by {diff:.3g} (tolerance {tolerance:g})"
    chk.add(setting, diff, "max abs diff", status)


def step_evaluator(chk: Check) -> None:
    if chk.dry_run:
        scales = [("market1501-like", 60, 300, 20, 6, 30, 32), ("msmt17-like", 120, 900, 40, 15, 0, 32)]
    else:
        scales = [("market1501", 3368, 15913, 751, 6, 2794, 2048), ("msmt17", 11659, 82161, 3060, 15, 0, 2048)]
    cpu_seconds_per_pair: List[float] = []  # measured on the first scale, sizes the second one's subset
    for seed, (name, nq, ng, ids, cams, distractors, dim) in enumerate(scales):
        with chk.setting(f"{name} {nq}x{ng} d{dim}"):
            evaluator_scale(chk, name, nq, ng, ids, cams, distractors, dim, seed, cpu_seconds_per_pair)
        if chk.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()


def evaluator_scale(chk: Check, name: str, nq: int, ng: int, ids: int, cams: int, distractors: int, dim: int,
                    seed: int, cpu_seconds_per_pair: List[float]) -> None:
    """Rows of one scale: device and CPU seconds, speed-up, equality from the same features and from the
    same distances. The CPU path runs on the first ``n_sub`` queries when the whole set would take more
    than ``CPU_EXTRAPOLATION_BUDGET_S`` (its time is then extrapolated, and said so)."""
    from src.metrics.reid import distance_matrix, evaluate_distmat, evaluate_features

    dev = chk.device
    other = "cpu (dry run: no GPU)" if chk.dry_run else "CUDA"
    label = f"{name} {nq}x{ng} d{dim}"
    qf, gf, q_pids, g_pids, q_cams, g_cams = synthetic_reid_split(
        nq, ng, ids, cams, distractors, dim, seed, identity_strength=1.0 if chk.dry_run else 0.2)
    qd, gd = qf.to(dev), gf.to(dev)
    evaluate_features(qd[:64], gd, q_pids[:64], g_pids, q_cams[:64], g_cams)  # warm-up (CUDA context, kernels)

    res_dev, t_dev = chk.timed(lambda: evaluate_features(qd, gd, q_pids, g_pids, q_cams, g_cams))
    chk.add(f"{label}: {other} evaluate_features (mAP {100 * res_dev['mAP']:.2f}%)", t_dev, "s")

    if seed == 0:
        n_sub = nq
    elif chk.dry_run:
        n_sub = nq // 4  # exercises the extrapolation
    elif cpu_seconds_per_pair:
        n_sub = int(min(nq, max(256, CPU_EXTRAPOLATION_BUDGET_S / (cpu_seconds_per_pair[0] * ng))))
    else:  # the first scale failed before its CPU timing
        n_sub = max(256, nq // 8)
    q = slice(0, n_sub)
    res_cpu, t_cpu = chk.timed(lambda: evaluate_features(qf[q], gf, q_pids[q], g_pids, q_cams[q], g_cams,
                                                         device="cpu"))
    cpu_seconds_per_pair.append(t_cpu / (n_sub * ng))
    t_cpu_full = t_cpu * nq / n_sub
    threads = torch.get_num_threads()
    if n_sub == nq:
        chk.add(f"{label}: CPU evaluate_features ({threads} threads)", t_cpu_full, "s")
    else:
        chk.add(f"{label}: CPU evaluate_features ({threads} threads), extrapolated from the first {n_sub} of "
                f"{nq} queries", t_cpu_full, "s")
    chk.add(f"{label}: {other} speed-up over CPU", t_cpu_full / t_dev, "x")

    res_sub = res_dev if n_sub == nq else evaluate_features(qd[q], gd, q_pids[q], g_pids, q_cams[q], g_cams)
    add_equality(chk, f"{label}: {other} = CPU from the same features ({n_sub} queries)",
                 max_result_diff(res_sub, res_cpu), FEATURE_TOLERANCE)
    n_exact = min(n_sub, 1024)
    e = slice(0, n_exact)
    dist = distance_matrix(qd[e], gd)
    exact_dev = evaluate_distmat(dist, q_pids[e], g_pids, q_cams[e], g_cams)
    exact_cpu = evaluate_distmat(dist.cpu(), q_pids[e], g_pids, q_cams[e], g_cams)
    add_equality(chk, f"{label}: {other} = CPU from the same distances ({n_exact} queries)",
                 max_result_diff(exact_dev, exact_cpu), EXACT_TOLERANCE)


# ============================================================================ 2. training throughput
PRECISIONS = ("32-true", "bf16-mixed")


def throughput_models(dry_run: bool):
    """(label, overrides) of the models whose training iteration is timed."""
    if dry_run:
        data = ["data=market1501", "data.height=64", "data.width=32", "data.batch_size=8", "data.num_instances=2"]
        return [("BoT tiny_cnn", ["model=bot", "backbone=tiny_cnn", "backbone.channels=[8,16,16,32]",
                                  "backbone.out_dim=32", *data]),
                ("CLIP-ReID stage 2 clip_tiny", ["model=clipreid", "backbone=clip_tiny", *data]),
                ("PDM stage 2 clip_tiny", ["model=pdm", "backbone=clip_tiny", *data])]
    data = ["data=market1501"]  # paper scale: 256x128, P x K = 16 x 4, the paper recipes
    return [("BoT ResNet-50", ["model=bot", "backbone=resnet50", *data]),
            ("CLIP-ReID stage 2 ViT-B/16", ["model=clipreid", "backbone=clip_vit_b16", *data]),
            ("PDM stage 2 ViT-B/16", ["model=pdm", "backbone=clip_vit_b16", *data])]


def synthetic_batch(batch_size: int, instances: int, height: int, width: int, num_classes: int, device,
                    cameras: int = 6) -> Dict[str, torch.Tensor]:
    """A P x K batch of random images: pids (P identities, K images each), cameras cycling over ``cameras``."""
    n = batch_size
    return {"image": torch.randn(n, 3, height, width, device=device),
            "pid": (torch.arange(n, device=device) // instances) % num_classes,
            "camid": torch.arange(n, device=device) % cameras,
            "domain": torch.zeros(n, dtype=torch.long, device=device),
            "index": torch.arange(n, device=device)}


def build_training_model(overrides: Sequence[str], num_classes: int):
    """(model, loss function of a batch, trainable parameters, data config) of a training iteration as the
    model's own training step computes it: BoT's ``training_step``; for the CLIP models the stage-2 losses
    (image encoder + BNNeck trained, stage-1 modules frozen) against a random unit text bank."""
    from hydra.utils import instantiate

    cfg = compose(overrides)
    model = instantiate(cfg.model)
    model.log = lambda *args, **kwargs: None  # no trainer to log to
    model.neck.reset_classifier(num_classes)
    if hasattr(model, "neck_proj"):  # CLIP-ReID / PDM: a second BNNeck on the projected feature
        model.neck_proj.reset_classifier(num_classes)
    if hasattr(model, "setup_identities"):  # CLIP-ReID / PDM
        model.setup_identities(SimpleNamespace(num_classes=num_classes, num_cameras=6, num_domains=1))
        model.text_bank = torch.nn.functional.normalize(torch.randn(num_classes, model.embed_dim), dim=1)
        if hasattr(model, "stage1_feats"):  # PDM's style-mixed term reads the stage-1 features by index
            model.stage1_feats = torch.randn(4096, model.embed_dim)
        for module in model.stage1_modules().values():
            module.eval()
        params = [p for p in list(model.backbone.parameters()) + list(model.neck.parameters()) if p.requires_grad]

        def loss_fn(batch):
            return sum(model._stage2_losses(batch).values())
    else:
        params = [p for p in model.parameters() if p.requires_grad]

        def loss_fn(batch):
            return model.training_step(batch, 0)
    return model, loss_fn, params, cfg.data


def time_iterations(chk: Check, step: Callable[[], None], warmup: int, max_iters: int, min_iters: int,
                    budget_s: float) -> tuple:
    """(mean seconds per call of ``step``, calls timed): ``warmup`` calls first, then up to ``max_iters``,
    stopping after ``min_iters`` once ``budget_s`` is spent."""
    for _ in range(warmup):
        step()
    chk.sync()
    start = time.perf_counter()
    n = 0
    while n < max_iters:
        step()
        n += 1
        if n >= min_iters:
            chk.sync()
            if time.perf_counter() - start > budget_s:
                break
    chk.sync()
    return (time.perf_counter() - start) / n, n


def step_throughput(chk: Check) -> None:
    dev = chk.device
    num_classes = 20 if chk.dry_run else NUM_TRAIN_IDS
    iters = dict(warmup=1, max_iters=3, min_iters=2, budget_s=2.0) if chk.dry_run else \
        dict(warmup=3, max_iters=12, min_iters=4, budget_s=6.0)
    for label, overrides in throughput_models(chk.dry_run):
        built = None
        with chk.setting(f"{label}: build"):
            model, loss_fn, params, data = build_training_model(overrides, num_classes)
            model.to(dev).train()
            optimizer = torch.optim.Adam(params, lr=1e-5)
            batch = synthetic_batch(data.batch_size, data.num_instances, data.height, data.width, num_classes, dev)
            shape = f"{data.height}x{data.width} batch {data.batch_size}"
            built = model
        if built is None:
            model = optimizer = batch = params = loss_fn = None  # free what a failed build left
            continue
        for precision in PRECISIONS:
            setting = f"{label} {shape}, {precision}"
            with chk.setting(setting):
                autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

                def train_step():
                    with autocast:  # Lightning's bf16-mixed: autocast around the step, backward outside
                        loss = loss_fn(batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if not torch.isfinite(loss.detach()):
                        raise FloatingPointError(f"training loss is {float(loss)}")

                chk.reset_peak()
                seconds, n = time_iterations(chk, train_step, **iters)
                chk.add(f"{setting} ({n} iterations)", data.batch_size / seconds, "images/s")
                chk.add_peak(setting)
        model = optimizer = batch = params = loss_fn = built = None
        if dev.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()


# ============================================================================ 3. privacy GAN
def step_privacy_gan(chk: Check) -> None:
    """Joint-phase iterations (step 1: D every ``d_every`` batches with lazy R1, G; step 2: E against the
    fixed G) through ``trainer.fit`` on one repeated batch: Lightning's loop, manual optimization and the
    precision plugin are all counted, data loading is not."""
    from hydra.utils import instantiate

    if chk.dry_run:
        overrides = ["model=privacy_gan", "data=market1501", "backbone=tiny_cnn", "backbone.channels=[8,16,16,32]",
                     "backbone.out_dim=32", "data.height=32", "data.width=16", "data.batch_size=16",
                     "data.num_instances=4", "model.generator.base_channels=16", "model.generator.min_channels=8",
                     "model.discriminator.base_channels=8", "model.discriminator.max_channels=16",
                     "model.r1_every=1"]  # so that the few timed iterations hold an R1 step
        warmup, max_iters, budget_s, label = 2, 6, 5.0, "privacy_gan joint, tiny_cnn, R1 every D step"
    else:
        # the paper recipe: ResNet-50 at 256x128, G from 256 channels, D up to 256, reconstructions at 256x128
        overrides = ["model=privacy_gan", "data=market1501", "backbone=resnet50"]
        # 64 timed batches = one whole lazy cycle: 16 D steps (d_every=4), one of them with R1 (r1_every=16)
        warmup, max_iters, budget_s, label = 8, 64, 20.0, "privacy_gan joint, ResNet-50"
    overrides += ["model.phases.reversal_from=0", "model.phases.joint_from=0"]
    num_classes = 20 if chk.dry_run else NUM_TRAIN_IDS
    for precision in PRECISIONS:
        cfg = compose(overrides)
        data = cfg.data
        setting = f"{label} {data.height}x{data.width} batch {data.batch_size}, {precision}"
        with chk.setting(setting):
            pl.seed_everything(0, verbose=False)
            model = instantiate(cfg.model)
            timer = IterationTimer(warmup, max_iters, budget_s)
            trainer = pl.Trainer(max_epochs=1, accelerator="gpu" if chk.device.type == "cuda" else "cpu", devices=1,
                                 precision=precision,
                                 logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, callbacks=[timer], num_sanity_val_steps=0,
                                 limit_val_batches=0)
            batch = synthetic_batch(data.batch_size, data.num_instances, data.height, data.width, num_classes,
                                    chk.device)  # on the device already: no copy per iteration
            chk.reset_peak()
            trainer.fit(model, datamodule=RepeatedBatchData(batch, warmup + max_iters, num_classes))
            times = timer.times[warmup:]
            if not times:
                raise RuntimeError(f"no timed iteration ({len(timer.times)} ran)")
            per_iter = sum(times) / len(times)
            steps = {k: step_counters(model).get(k, 0) - timer.counters_from.get(k, 0) for k in ("d_steps", "r1_steps")}
            chk.add(f"{setting} ({len(times)} iterations holding {steps['d_steps']} D steps, {steps['r1_steps']} R1)",
                    1.0 / per_iter, "it/s")
            chk.add_peak(setting)
            del model, trainer
        if chk.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()


def step_counters(model) -> Dict[str, int]:
    """The privacy model's step counters (E's and the defence's clock: batches, D / G / R1 steps)."""
    counters = dict(getattr(model, "counters", {}) or {})
    counters.update(getattr(getattr(model, "defence", None), "clock", {}) or {})
    return counters


class IterationTimer(pl.Callback):
    """Times each training batch (start to end, device synchronized); stops the fit after ``warmup +
    max_iters`` batches, or once ``budget_s`` is spent on at least 4 timed batches."""

    def __init__(self, warmup: int, max_iters: int, budget_s: float) -> None:
        self.warmup, self.max_iters, self.budget_s = warmup, max_iters, budget_s
        self.times: List[float] = []
        self._start = 0.0
        self._timed_from = 0.0
        self.counters_from: Dict[str, int] = {}  # the model's step counters when timing starts

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self._start = time.perf_counter()
        if len(self.times) == self.warmup:
            self._timed_from = self._start
            self.counters_from = step_counters(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.times.append(now - self._start)
        timed = len(self.times) - self.warmup
        if timed >= self.max_iters or (timed >= 4 and now - self._timed_from > self.budget_s):
            trainer.should_stop = True


class RepeatedBatch(Dataset):
    """The same batch ``length`` times (loaded with ``batch_size=None``)."""

    def __init__(self, batch: Dict[str, torch.Tensor], length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):
        return self.batch


class RepeatedBatchData(pl.LightningDataModule):
    """What the models read from a datamodule at fit time, serving one batch ``length`` times."""

    def __init__(self, batch: Dict[str, torch.Tensor], length: int, num_classes: int) -> None:
        super().__init__()
        self.batch, self.length, self.num_classes = batch, length, num_classes
        self.has_val, self.target_names = False, []

    def normalization(self, train: bool = False):
        return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def train_dataloader(self):
        return DataLoader(RepeatedBatch(self.batch, self.length), batch_size=None, num_workers=0)


# ============================================================================ 4. diffusion synthesis
def build_random_sd_pipeline(dry_run: bool, device: torch.device, tokenizer_dir: Path):
    """A random-weight StableDiffusionPipeline assembled from diffusers / transformers blocks.

    GPU: Stable Diffusion 1.5's sizes: UNet (320, 640, 1280, 1280), 2 layers per block, cross-attention
    768, 8 heads (860M parameters); VAE (128, 256, 512, 512); a 12-layer, 768-wide CLIP ViT-L/14-size
    text encoder; CLIP's real 49,408-token tokenizer (built offline from open_clip's BPE merges); SD 1.5's
    scheduler config. Dry run: the tiny blocks of tests/tiny_pipelines.py. Weights are created on
    ``device`` (fast random init).
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_pipelines import CLIP_CONTEXT_LENGTH, CLIP_VOCAB_SIZE, write_clip_tokenizer

    if dry_run:
        unet_kw = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16,
                       down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                       attention_head_dim=(2, 4), norm_num_groups=32)
        vae_kw = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, sample_size=32, norm_num_groups=8)
        text_kw = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       projection_dim=32)
    else:
        unet_kw = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64,
                       down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                       up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
                       attention_head_dim=8, norm_num_groups=32)
        vae_kw = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
                      norm_num_groups=32)
        text_kw = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       projection_dim=768, hidden_act="quick_gelu")
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **unet_kw)
        n = len(vae_kw["block_out_channels"])
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                            **vae_kw)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=CLIP_CONTEXT_LENGTH, bos_token_id=CLIP_VOCAB_SIZE - 2,
            eos_token_id=CLIP_VOCAB_SIZE - 1, pad_token_id=CLIP_VOCAB_SIZE - 1, **text_kw))
    tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(tokenizer_dir)),
                                              model_max_length=CLIP_CONTEXT_LENGTH)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    sizes = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in
             (("unet", unet), ("vae", vae), ("text", text_encoder))}
    return pipe, sizes


def synthesis_requests(count: int, height: int, width: int):
    """``count`` image requests with real GenePerson attribute prompts (a plan of 8 images per identity)."""
    from src.synth.plan import SynthPlan

    plan = SynthPlan.from_config({"num_identities": max(1, math.ceil(count / 8)), "num_cameras": 4, "seed": 0,
                                  "images_per_identity": [8, 8]})
    images = [img for ident in plan.identities() for img in ident.images]
    return [img.request(height, width) for img in images[:count]]


def step_diffusion(chk: Check) -> None:
    """Images/s of the ``diffusion`` generator (src/synth/generators/diffusion.py: tokenizing the attribute
    prompts in up to 3 chunks, classifier-free guidance 7.5, DDIM, VAE decoding, PIL images) with the
    random-weight pipeline handed to it in place of a folder. Each batch size is timed at two step
    counts, which also gives the images/s at the config's 30 steps (fixed cost + steps x cost per step)."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    height, width = (64, 32) if chk.dry_run else (512, 256)
    batches = (1, 2) if chk.dry_run else (1, 8)
    steps_lo, steps_hi = (1, 2) if chk.dry_run else (4, 8)
    repeats = 1 if chk.dry_run else 2
    built = None
    with chk.setting("build the pipeline"):
        built = diffusion_generator(chk, height, width, max(batches))
        generator, what, requests = built
        generator.steps = 1
        for bs in batches:  # warm-up: kernels of both shapes
            generator.generate(requests[:bs])
    if built is None:
        return
    for bs in batches:
        with chk.setting(f"batch {bs}"):
            chk.reset_peak()
            seconds = {}
            for steps in (steps_lo, steps_hi):
                generator.steps = steps
                seconds[steps] = min(chk.timed(lambda: generator.generate(requests[:bs]))[1] for _ in range(repeats))
            per_step = (seconds[steps_hi] - seconds[steps_lo]) / (steps_hi - steps_lo)
            if per_step <= 0:  # timing noise: charge everything to the steps
                per_step = seconds[steps_hi] / steps_hi
            fixed = max(0.0, seconds[steps_hi] - steps_hi * per_step)
            chk.add(f"{what}, batch {bs}, {steps_hi} DDIM steps", bs / seconds[steps_hi], "images/s")
            chk.add(f"{what}, batch {bs}, {DIFFUSION_CONFIG_STEPS} steps (extrapolated from {steps_lo} and "
                    f"{steps_hi})", bs / (fixed + DIFFUSION_CONFIG_STEPS * per_step), "images/s")
            chk.add_peak(f"{what}, batch {bs}")


def diffusion_generator(chk: Check, height: int, width: int, count: int):
    """(DiffusionGenerator on the random-weight pipeline, description, ``count`` requests)."""
    import src.synth.generators.diffusion as diffusion_module

    pipe, sizes = build_random_sd_pipeline(chk.dry_run, chk.device, chk.workdir / "sd_tokenizer")
    original = diffusion_module.load_text2image_pipeline
    diffusion_module.load_text2image_pipeline = lambda pretrained, dtype=torch.float32, *a, **k: pipe.to(dtype=dtype)
    try:
        generator = diffusion_module.DiffusionGenerator(
            pretrained="random-weight pipeline", steps=1, guidance_scale=7.5, scheduler="ddim", dtype="auto",
            device=chk.device.type, max_prompt_chunks=3)
    finally:
        diffusion_module.load_text2image_pipeline = original
    kind = "tiny" if chk.dry_run else "SD 1.5-size"
    chk.add(f"random-weight {kind} pipeline: UNet {sizes['unet']:.1f}M + VAE {sizes['vae']:.1f}M + CLIP text encoder "
            f"{sizes['text']:.1f}M parameters", sum(sizes.values()), "M params")
    dtype = str(generator.dtype).replace("torch.", "")
    return generator, f"{height}x{width} {dtype}, CFG 7.5", synthesis_requests(count, height, width)


# ============================================================================ 5. fast dev runs
# The dry run's embedded data: a GenePerson-mini of 40 source identities (x 4 images) and 12 per target,
# written into the work folder (about a second), read at 32x16.
DRY_RUN_DATA = ["data.prepare.num_identities=40", "data.prepare.images_per_identity=4",
                "data.prepare.target_identities=12", "data.height=32", "data.width=16", "data.batch_size=8",
                "data.num_instances=2", "data.test_batch_size=16", "data.val_split.identities=2",
                "callbacks.reid_media.num_train_images=8", "callbacks.progress_bar.refresh_rate=0"]
DRY_RUN_MODEL = {
    "bot": ["backbone.channels=[8,16,16,32]", "backbone.out_dim=32"],
    "clipreid": [],
    "pdm": [],
    "privacy_gan": ["backbone.channels=[8,16,16,32]", "backbone.out_dim=32", "model.generator.base_channels=16",
                    "model.generator.min_channels=8", "model.discriminator.base_channels=8",
                    "model.discriminator.max_channels=16"],
    "attack": ["model.attack_size=[32,16]", "model.l1.decoder.base_channels=32", "model.gan.decoder.base_channels=32",
               "model.gan.discriminator.base_channels=8", "model.gan.discriminator.max_channels=32",
               "model.diffusion.sample_size=null", "model.diffusion.decoder.block_out_channels=[8,16]",
               "model.diffusion.decoder.inference_steps=3", "model.diffusion.num_samples=1", "model.num_pictures=3"],
}


def fdr_trainers(dry_run: bool):
    """(label, overrides) of the two trainers: ``gpu`` and ``ddp`` on one device. The dry run keeps each
    config's precision (mixed precision runs on CPU too) on ``trainer=cpu``, and DDP with the gloo
    backend on CPU."""
    if dry_run:
        gpu, ddp = (compose([f"trainer={name}"]).trainer.precision for name in ("gpu", "ddp"))
        return [(f"trainer=cpu {gpu} (for gpu)", ["trainer=cpu", f"trainer.precision={gpu}"]),
                (f"trainer=ddp on cpu {ddp}",
                 ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.sync_batchnorm=false"])]
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
            return ln[len("error:"):].strip()
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
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}",
           f"paths.log_dir={chk.workdir / 'logs'}"]
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
    from src.utils.errors import find_input_error
    from train import run

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

    def overrides_of(model: str, trainer: Sequence[str], extra: Sequence[str] = ()) -> List[str]:
        return [f"model={model}", *trainer, *tiny, *(DRY_RUN_MODEL[model] if dry else []), *extra]

    ckpt_run = root / "bot_checkpoint"
    ckpt = ckpt_run / "checkpoints" / "last.ckpt"
    ckpt_setting = f"{trainers[0][0]} model=bot, 2 batches: checkpoint for the attack"
    with chk.setting(ckpt_setting):
        seconds = run_train_subprocess(chk, overrides_of("bot", trainers[0][1], [
            "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false",
            "task_name=gpu_check"]), ckpt_run, timeout=min(150.0, chk.time_left() - 5))
        if not ckpt.exists():
            raise RuntimeError(f"the bot run wrote no {ckpt}")
        chk.add(f"{ckpt_setting}, train.py subprocess", seconds, "s")

    jobs = []
    for label, trainer in trainers:
        for model in FDR_MODELS:
            extra = ["debug=fdr"] + ([f"model.extractor_ckpt={ckpt}"] if model == "attack" else [])
            jobs.append((f"{label} model={model}", model, overrides_of(model, trainer, extra),
                         root / f"{trainer[0].split('=')[1]}_{model}"))

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
                        raise RuntimeError("stopped at the step's time cap")
                    chk.add(f"{job[0]}, train.py subprocess", future.result(), "s")


STEPS: Dict[str, Callable[[Check], None]] = {
    "evaluator": step_evaluator,
    "throughput": step_throughput,
    "privacy_gan": step_privacy_gan,
    "diffusion": step_diffusion,
    "fdr": step_fdr,
}


# ============================================================================ driver
def run_step(chk: Check, name: str, cap_s: float) -> None:
    """Run one step under its time cap; any error becomes a FAIL row of that step."""
    chk.step, chk.current = name, "-"
    chk.deadline = time.monotonic() + cap_s
    rows_before = len(chk.rows)

    def on_alarm(signum, frame):
        raise StepTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, cap_s)
    print(f"[{name}] (time cap {cap_s:.0f} s)", flush=True)
    start = time.perf_counter()
    try:
        STEPS[name](chk)
    except StepTimeout:
        chk.add(chk.current, None, "", f"FAIL: time cap of {cap_s:.0f} s reached")
    except Exception as exc:  # noqa: BLE001
        chk.add(chk.current, None, "", f"FAIL: {one_line(exc)}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if len(chk.rows) == rows_before:
        chk.add("-", None, "", "FAIL: the step produced no figure")
    chk.add("step total", time.perf_counter() - start, "s")
    if chk.device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="every step on tiny shapes on CPU (for CI)")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated steps to run (default: all of {', '.join(STEP_NAMES)})")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON to this file")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="folder for the fast dev runs' folders and logs (default: a temp folder, removed when "
                         "every step passed)")
    ap.add_argument("--fdr-workers", type=int, default=6, help="fast dev runs at once on the GPU (default 6)")
    return ap.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    steps = list(STEP_NAMES) if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEP_NAMES]
    if unknown or not steps:
        print(f"error: --only {args.only}: unknown step(s) {', '.join(unknown) or '(none given)'}; "
              f"steps are {', '.join(STEP_NAMES)}", file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); run with --dry-run "
              "for the CPU version of every step", file=sys.stderr)
        return 2
    if args.fdr_workers < 1:
        print(f"error: --fdr-workers {args.fdr_workers} must be >= 1", file=sys.stderr)
        return 2
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="gpu_check_")) if own_workdir else args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    chk = Check(args.dry_run, workdir, args.json, args.fdr_workers)
    info = chk.describe()
    print("gpu_check: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    caps = DRY_RUN_CAPS_S if args.dry_run else TIME_CAPS_S
    for name in steps:
        run_step(chk, name, caps[name])
        chk.write_json()
    failed = chk.failed_steps()
    wall = time.time() - chk.started
    print(f"\ngpu_check ({info['mode']}, {info['device']}), {wall:.0f} s:")
    print(format_table(chk.rows))
    if failed:
        print(f"\nFAILED: {', '.join(failed)} (work folder kept: {workdir})")
    else:
        print("\nall steps ok")
        if own_workdir:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
