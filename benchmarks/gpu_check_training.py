"""GPU check steps 2 and 3 (``benchmarks/gpu_check.py``): training images/s and peak memory of BoT,
CLIP-ReID and PDM (one iteration as each model's training step computes it, synthetic P x K batches), and
joint-phase iterations/s of ``model=privacy_gan`` through Lightning's loop; fp32 and bf16-mixed."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import pytorch_lightning as pl
import torch
from gpu_check_core import Check, compose
from torch.utils.data import DataLoader, Dataset

NUM_TRAIN_IDS = 751  # Market-1501's training identities (classifier size)


PRECISIONS = ("32-true", "bf16-mixed")


def throughput_models(dry_run: bool):
    """(label, overrides) of the models whose training iteration is timed."""
    if dry_run:
        data = ["data=market1501", "data.height=64", "data.width=32", "data.batch_size=8", "data.num_instances=2"]
        return [
            (
                "BoT tiny_cnn",
                ["model=bot", "backbone=tiny_cnn", "backbone.channels=[8,16,16,32]", "backbone.out_dim=32", *data],
            ),
            ("CLIP-ReID stage 2 clip_tiny", ["model=clipreid", "backbone=clip_tiny", *data]),
            ("PDM stage 2 clip_tiny", ["model=pdm", "backbone=clip_tiny", *data]),
        ]
    data = ["data=market1501"]  # paper scale: 256x128, P x K = 16 x 4, the paper recipes
    return [
        ("BoT ResNet-50", ["model=bot", "backbone=resnet50", *data]),
        ("CLIP-ReID stage 2 ViT-B/16", ["model=clipreid", "backbone=clip_vit_b16", *data]),
        ("PDM stage 2 ViT-B/16", ["model=pdm", "backbone=clip_vit_b16", *data]),
    ]


def synthetic_batch(
    batch_size: int, instances: int, height: int, width: int, num_classes: int, device, cameras: int = 6
) -> dict[str, torch.Tensor]:
    """A P x K batch of random images: pids (P identities, K images each), cameras cycling over ``cameras``."""
    n = batch_size
    return {
        "image": torch.randn(n, 3, height, width, device=device),
        "pid": (torch.arange(n, device=device) // instances) % num_classes,
        "camid": torch.arange(n, device=device) % cameras,
        "domain": torch.zeros(n, dtype=torch.long, device=device),
        "index": torch.arange(n, device=device),
    }


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


def time_iterations(
    chk: Check, step: Callable[[], None], warmup: int, max_iters: int, min_iters: int, budget_s: float
) -> tuple:
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
    iters = (
        dict(warmup=1, max_iters=3, min_iters=2, budget_s=2.0)
        if chk.dry_run
        else dict(warmup=3, max_iters=12, min_iters=4, budget_s=6.0)
    )
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


def step_privacy_gan(chk: Check) -> None:
    """Joint-phase iterations (step 1: D every ``d_every`` batches with lazy R1, G; step 2: E against the
    fixed G) through ``trainer.fit`` on one repeated batch: Lightning's loop, manual optimization and the
    precision plugin are all counted, data loading is not."""
    from hydra.utils import instantiate

    if chk.dry_run:
        overrides = [
            "model=privacy_gan",
            "data=market1501",
            "backbone=tiny_cnn",
            "backbone.channels=[8,16,16,32]",
            "backbone.out_dim=32",
            "data.height=32",
            "data.width=16",
            "data.batch_size=16",
            "data.num_instances=4",
            "model.generator.base_channels=16",
            "model.generator.min_channels=8",
            "model.discriminator.base_channels=8",
            "model.discriminator.max_channels=16",
            "model.r1_every=1",
        ]  # so that the few timed iterations hold an R1 step
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
            trainer = pl.Trainer(
                max_epochs=1,
                accelerator="gpu" if chk.device.type == "cuda" else "cpu",
                devices=1,
                precision=precision,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[timer],
                num_sanity_val_steps=0,
                limit_val_batches=0,
            )
            batch = synthetic_batch(
                data.batch_size, data.num_instances, data.height, data.width, num_classes, chk.device
            )  # on the device already: no copy per iteration
            chk.reset_peak()
            trainer.fit(model, datamodule=RepeatedBatchData(batch, warmup + max_iters, num_classes))
            times = timer.times[warmup:]
            if not times:
                raise RuntimeError(f"no timed iteration ({len(timer.times)} ran)")
            per_iter = sum(times) / len(times)
            steps = {k: step_counters(model).get(k, 0) - timer.counters_from.get(k, 0) for k in ("d_steps", "r1_steps")}
            chk.add(
                f"{setting} ({len(times)} iterations holding {steps['d_steps']} D steps, {steps['r1_steps']} R1)",
                1.0 / per_iter,
                "it/s",
            )
            chk.add_peak(setting)
            del model, trainer
        if chk.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()


def step_counters(model) -> dict[str, int]:
    """The privacy model's step counters (E's and the defence's clock: batches, D / G / R1 steps)."""
    counters = dict(getattr(model, "counters", {}) or {})
    counters.update(getattr(getattr(model, "defence", None), "clock", {}) or {})
    return counters


class IterationTimer(pl.Callback):
    """Times each training batch (start to end, device synchronized); stops the fit after ``warmup +
    max_iters`` batches, or once ``budget_s`` is spent on at least 4 timed batches."""

    def __init__(self, warmup: int, max_iters: int, budget_s: float) -> None:
        self.warmup, self.max_iters, self.budget_s = warmup, max_iters, budget_s
        self.times: list[float] = []
        self._start = 0.0
        self._timed_from = 0.0
        self.counters_from: dict[str, int] = {}  # the model's step counters when timing starts

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

    def __init__(self, batch: dict[str, torch.Tensor], length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):
        return self.batch


class RepeatedBatchData(pl.LightningDataModule):
    """What the models read from a datamodule at fit time, serving one batch ``length`` times."""

    def __init__(self, batch: dict[str, torch.Tensor], length: int, num_classes: int) -> None:
        super().__init__()
        self.batch, self.length, self.num_classes = batch, length, num_classes
        self.has_val, self.target_names = False, []

    def normalization(self, train: bool = False):
        return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def train_dataloader(self):
        return DataLoader(RepeatedBatch(self.batch, self.length), batch_size=None, num_workers=0)
