"""Cost of a joint training iteration of each feature-privacy defence, printed as figures.

One batch of the sandbox shape (64 images of 128x64, P=16 x K=4) is fed again and again through
``trainer.fit`` (so Lightning's loop, manual optimization and the optimizers are all counted; data
loading and the fresh probe are not), with the models built from the real configs (``model=bot`` and
the ``experiment=privacy_sandbox_*`` rows, the same backbone), every iteration in the joint phase:

(a) a BoT iteration vs a joint iteration of each defence: ``gan`` (step 1: D every ``d_every`` batches
    with lazy R1, G; step 2: E against the fixed G), ``pool`` (three decoders one step each, E against
    all of them: ``warmup_batches=0`` so every timed iteration pays for the whole pool), ``dependence``
    (no adversary, a distance correlation) and ``bottleneck``; each ratio is checked against
    ``--max-ratio`` (2.5);
(b) the time ``d_every=4`` (the default) saves against ``d_every=1`` per joint GAN iteration.

Per-iteration times are means over ``--iters`` batches after ``--warmup`` batches: 64 timed batches
hold 16 D steps and one lazy R1 step of the default clocks (d_every=4, r1_every=16), so the mean is the
amortized cost of an iteration.

    python benchmarks/bench_privacy_gan.py [--iters 64] [--warmup 8] [--threads 2] [--backbone tiny_cnn]
                                           [--defences gan pool dependence bottleneck]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

BATCH, P, HEIGHT, WIDTH = 64, 16, 128, 64


class RepeatedBatch(Dataset):
    """The same (B,3,H,W) batch ``length`` times (the loader uses batch_size=None)."""

    def __init__(self, length: int, num_classes: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.batch = {
            "image": torch.randn(BATCH, 3, HEIGHT, WIDTH, generator=gen),
            "pid": torch.arange(P).repeat_interleave(BATCH // P) % num_classes,
            "camid": torch.zeros(BATCH, dtype=torch.long),
            "index": torch.arange(BATCH),
        }
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):
        return self.batch


class BenchData(pl.LightningDataModule):
    """What the models read from a datamodule at fit time, with one repeated batch."""

    def __init__(self, length: int, num_classes: int = 270) -> None:
        super().__init__()
        self.length, self.num_classes = length, num_classes
        self.has_val, self.target_names = False, []

    def normalization(self, train: bool = False):
        return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def train_dataloader(self):
        return DataLoader(RepeatedBatch(self.length, self.num_classes), batch_size=None, num_workers=0)


class BatchTimer(pl.Callback):
    def __init__(self) -> None:
        self.times, self._start = [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


def build(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from ppreid.config.resolvers import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return instantiate(cfg.model)


def time_iterations(overrides, iters: int, warmup: int) -> float:
    """Mean seconds per training iteration of the model ``overrides`` build (after ``warmup`` iterations)."""
    pl.seed_everything(0, verbose=False)
    model = build(overrides)
    timer = BatchTimer()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=BenchData(warmup + iters))
    return statistics.mean(timer.times[warmup:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--iters",
        type=int,
        default=64,
        help="timed iterations per model (64: whole D and R1 cycles of d_every=4, r1_every=16)",
    )
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--backbone", default="tiny_cnn")
    ap.add_argument("--max-ratio", type=float, default=2.5)
    ap.add_argument(
        "--defences",
        nargs="+",
        default=["gan", "pool", "dependence", "bottleneck"],
        choices=["gan", "pool", "dependence", "bottleneck"],
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("ppreid").setLevel(logging.WARNING)
    common = [f"backbone={args.backbone}"]
    joint = ["model.phases.reversal_from=0", "model.phases.joint_from=0"]
    rows = {
        "gan": ["experiment=privacy_sandbox_gan", *joint, "model.d_every=4"],
        "pool": ["experiment=privacy_sandbox_pool", *joint, "model.pool.warmup_batches=0"],
        "dependence": ["experiment=privacy_sandbox_dependence", *joint],
        "bottleneck": ["experiment=privacy_sandbox_bottleneck", *joint],
    }
    print(
        f"batch {BATCH} x 3 x {HEIGHT} x {WIDTH}, backbone {args.backbone}, {torch.get_num_threads()} threads, "
        f"mean of {args.iters} iterations after {args.warmup}"
    )
    bot = time_iterations(common + ["model=bot"], args.iters, args.warmup)
    print(f"(a) BoT iteration                      {1000 * bot:8.1f} ms")
    ok, times = True, {}
    for name in args.defences:
        times[name] = time_iterations(common + rows[name], args.iters, args.warmup)
        ratio = times[name] / bot
        ok &= ratio <= args.max_ratio
        print(
            f"    {name:<10} joint iteration          {1000 * times[name]:8.1f} ms   ratio {ratio:.2f}x "
            f"(goal <= {args.max_ratio}x){'' if ratio <= args.max_ratio else '  OVER'}"
        )
    if "gan" in times:
        lazy = times["gan"]
        eager = time_iterations(common + rows["gan"] + ["model.d_every=1"], args.iters, args.warmup)
        print(f"(b) gan joint, d_every=1               {1000 * eager:8.1f} ms   ratio {eager / bot:.2f}x")
        print(
            f"    d_every=4 saves                    {1000 * (eager - lazy):8.1f} ms per iteration "
            f"({100 * (eager - lazy) / eager:.0f}% of a d_every=1 iteration)"
        )
    print("PASS" if ok else f"FAIL: a defence above {args.max_ratio}x a BoT iteration")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
