"""Pictures a person would rather look at than read: a grid of training images and CMC curves.

Saved into the run folder (``train_images.jpg``, ``cmc_test.png``, ``cmc_test.json``) and, when a
WandbLogger is attached, logged to the dashboard (``train/images``, ``test/cmc``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)


def denormalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """(B,3,H,W) normalized -> (B,3,H,W) in [0,1]."""
    mean = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def plot_cmc(curves: Dict[str, List[float]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for name, cmc in curves.items():
        ranks = range(1, len(cmc) + 1)
        ax.plot(ranks, [100 * c for c in cmc], label=f"{name} (R1 {100 * cmc[0]:.1f})")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class ReIDMediaCallback(pl.Callback):
    def __init__(self, num_train_images: int = 32) -> None:
        self.num_train_images = int(num_train_images)

    @staticmethod
    def _wandb(trainer: pl.Trainer):
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.num_train_images <= 0:
            return
        from torchvision.utils import make_grid, save_image

        dm = trainer.datamodule
        dataset = dm.train_dataset()
        step = max(1, len(dataset) // self.num_train_images)
        items = [dataset[i] for i in range(0, len(dataset), step)][: self.num_train_images]
        tf_cfg = dm.train_transform_cfg
        images = denormalize(torch.stack([it["image"] for it in items]),
                             tf_cfg.get("mean", (0.485, 0.456, 0.406)), tf_cfg.get("std", (0.229, 0.224, 0.225)))
        grid = make_grid(images, nrow=min(16, len(items)), padding=2)
        path = Path(trainer.default_root_dir) / "train_images.jpg"
        save_image(grid, path)
        for lg in self._wandb(trainer):
            lg.log_image(key="train/images", images=[grid],
                         caption=[f"{len(items)} training images (pid: {[it['pid'] for it in items]})"])

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_curves(trainer, pl_module, "test")

    def _save_curves(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        results = getattr(pl_module, "eval_results", {}).get(stage)
        if not trainer.is_global_zero or not results:
            return
        curves = {name: [float(c) for c in res["cmc"]] for name, res in results.items()}
        out = Path(trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"cmc_{stage}.json", "w") as f:
            json.dump(curves, f)
        png = out / f"cmc_{stage}.png"
        plot_cmc(curves, png, f"CMC ({stage})")
        for lg in self._wandb(trainer):
            lg.log_image(key=f"{stage}/cmc", images=[str(png)])
            for name, cmc in curves.items():
                import wandb
                table = wandb.Table(data=[[k + 1, c] for k, c in enumerate(cmc)], columns=["rank", "cmc"])
                lg.experiment.log({f"{stage}/{name}/cmc_curve": wandb.plot.line(
                    table, "rank", "cmc", title=f"CMC {name}")})
