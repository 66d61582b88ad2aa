"""Pictures a person would rather look at than read, saved in the run folder and sent to wandb.

- ``train_images.jpg``: the first P x K training batch exactly as the sampler draws it, one row per
  identity, captioned with the dataset's own pid (from the file name, not the relabelled class index)
  and camera (``train/images`` in wandb);
- ``cmc_test.png`` / ``cmc_test.json``: CMC curves of every target (``test/cmc``);
- ``embedding_test.png``: a 2-D PCA of every target's query + gallery features, coloured by target
  domain and, for a few identities, by identity (``eval.embedding_plot``);
- ``ranked_<target>.png``: a few queries with their top-k gallery images, green / red borders for the
  right / wrong identity, like torchreid's visrank (``test/ranked/<target>``); how many queries and
  how deep is ``eval.ranked_list``;
- ``scene_sensitivity.png``: per target, the AP of the true matches in the query's own scene against
  those in another scene (``test/scene_sensitivity``), for targets whose records name their scene
  (GenePerson's ``background`` attribute); the figures also go to results.json's ``scene_sensitivity``.

``loss_curves.png`` is drawn by :mod:`ppreid.callbacks.loss_curves`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import WandbLogger

from ppreid.callbacks.pictures import batch_grid, legend_row, ranked_list, stack_rows

log = logging.getLogger(__name__)


def denormalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """(B,3,H,W) normalized -> (B,3,H,W) in [0,1]."""
    mean = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1)


def plot_cmc(curves: dict[str, list[float]], path: Path, title: str) -> None:
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


def plot_embedding(
    features: dict[str, dict[str, torch.Tensor]], path: Path, num_identities: int = 8, max_points: int = 4000
) -> None:
    """PCA (over all targets together) of L2-normalised query + gallery features: left coloured by target
    domain, right by identity for ``num_identities`` identities of each target (others grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feats, domains, pids = [], [], []
    for d, f in enumerate(features.values()):
        x = torch.cat([f["qf"], f["gf"]]).float()
        feats.append(torch.nn.functional.normalize(x, dim=1))
        domains += [d] * len(x)
        pids.append(torch.cat([f["q_pids"], f["g_pids"]]) + 1_000_000 * d)
    x = torch.cat(feats)
    domains, pids = torch.tensor(domains), torch.cat(pids)
    if len(x) > max_points:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:max_points]
        x, domains, pids = x[keep], domains[keep], pids[keep]
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    xy = (x @ v[:2].t()).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    for d, name in enumerate(features):
        m = (domains == d).numpy()
        axes[0].scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.5, label=name)
    axes[0].set_title("targets: coloured by domain")
    axes[0].legend(fontsize=8, markerscale=3)
    axes[1].scatter(xy[:, 0], xy[:, 1], s=3, c="lightgrey")
    shown = []
    for d in range(len(features)):
        ids = sorted(set(pids[domains == d].tolist()))[:num_identities]
        shown += ids
    cmap = plt.get_cmap("tab20")
    for k, pid in enumerate(shown):
        m = (pids == pid).numpy()
        axes[1].scatter(xy[m, 0], xy[m, 1], s=14, color=cmap(k % 20), marker="os^D"[k // 20 % 4])
    axes[1].set_title(f"coloured by identity ({num_identities} per target)")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_scene_sensitivity(scene: dict[str, dict], path: Path) -> None:
    """Grouped bars: per target, the AP over same-scene matches and over other-scene matches
    (``scene_split_ap``'s dict per target), with the query counts; a target whose matches all share
    the query's scene has one bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scene)
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(names), 3.6), dpi=120)
    width = 0.38
    for k, (key, n_key, label, color) in enumerate(
        (
            ("same_bg_ap", "n_same", "matches in the query's scene", "tab:blue"),
            ("diff_bg_ap", "n_diff", "matches in another scene", "tab:orange"),
        )
    ):
        for i, name in enumerate(names):
            value = scene[name].get(key)
            x = i + (k - 0.5) * width
            if value is None:
                ax.text(x, 2, "none", ha="center", va="bottom", fontsize=7, color="grey", rotation=90)
                continue
            ax.bar(x, 100 * value, width, color=color, label=label)
            ax.text(
                x, 100 * value + 1, f"{100 * value:.1f}\nn={scene[name][n_key]}", ha="center", va="bottom", fontsize=7
            )
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper right")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 118)
    ax.set_title("Scene sensitivity: AP by the scene of the true matches", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def scene_ids(records, key: str) -> list[int] | None:
    """Each record's scene as an integer id (the sorted distinct values of ``attributes[key]``), or None
    when some record does not name it (real datasets carry no attributes)."""
    values = [(getattr(r, "attributes", None) or {}).get(key) for r in records]
    if not values or any(v is None for v in values):
        return None
    index = {v: i for i, v in enumerate(sorted(set(map(str, values))))}
    return [index[str(v)] for v in values]


def dataset_pid_caption(record, with_source: bool = False) -> str:
    """``id 1502 c3``: the pid in the image's file name (Market-style names, MSMT17, GenePerson: the leading
    number), which a person can look up in the data set; the relabelled class index when the name has none.
    ``with_source``: prefixed ``s<i>:`` by the source data set (multi-source training)."""
    m = re.match(r"(-?\d+)_", Path(record.path).name)
    pid = str(int(m.group(1))) if m else f"#{record.pid}"
    return (f"s{record.domain + 1}:" if with_source else "") + f"id {pid} c{record.camid + 1}"


class ReIDMediaCallback(pl.Callback):
    """The pictures above; ``scene_key``: the record attribute that names an image's scene (the scene
    split of every target whose records carry it; null: none)."""

    def __init__(self, num_train_images: int = 32, scene_key: str | None = "background") -> None:
        self.num_train_images = int(num_train_images)
        self.scene_key = scene_key

    @staticmethod
    def _wandb(trainer: pl.Trainer):
        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.num_train_images <= 0:
            return
        dm = trainer.datamodule
        batch = dm.first_train_batch()
        k = max(1, dm.num_instances)
        n = min(self.num_train_images, len(batch["pid"]))
        n = max(min(k, n), n - n % k)  # whole identities
        mean, std = dm.normalization(train=True)
        images = denormalize(batch["image"][:n], mean, std)
        records = getattr(dm, "train_records", None) or []
        captions = None
        if "index" in batch and records:
            multi = getattr(dm, "num_domains", 1) > 1
            captions = [dataset_pid_caption(records[int(i)], multi) for i in batch["index"][:n].tolist()]
        sheet = batch_grid(
            images, batch["pid"][:n].tolist(), batch["camid"][:n].tolist(), dm.num_instances, captions=captions
        )
        path = Path(trainer.default_root_dir) / "train_images.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path, quality=92)
        for lg in self._wandb(trainer):
            lg.log_image(
                key="train/images",
                images=[sheet],
                caption=[
                    f"first P x K batch: {n} images, {n // max(1, dm.num_instances)} identities "
                    "(captions: the dataset's pid and camera)"
                ],
            )

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Hand every target's evaluator the scene of each query and gallery image (every rank: each
        computes the metrics), so the test also measures how much the ranking follows the scene."""
        if not self.scene_key:
            return
        targets = {t.name: t for t in getattr(trainer.datamodule, "targets", None) or []}
        for name, evaluator in zip(getattr(pl_module, "target_names", []), getattr(pl_module, "evaluators", [])):
            if name not in targets or not hasattr(evaluator, "set_scenes"):
                continue
            splits = targets[name].splits
            ids = scene_ids(list(splits.query) + list(splits.gallery), self.scene_key)
            if ids is not None:
                evaluator.set_scenes(ids[: len(splits.query)], ids[len(splits.query) :])

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = getattr(pl_module, "eval_results", {}).get("test")
        if not results:
            return
        scene = {name: res["scene"] for name, res in results.items() if "scene" in res}
        if scene and isinstance(getattr(pl_module, "extra_results", None), dict):
            pl_module.extra_results["scene_sensitivity"] = scene
        if not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        if scene:
            self._save_scene(trainer, scene, out)
        self._save_curves(trainer, results, out)
        if all("features" in r for r in results.values()):
            self._save_embedding(trainer, results, out)
        targets = {t.name: t for t in getattr(trainer.datamodule, "targets", [])}
        for name, res in results.items():
            if "ranked" in res and name in targets:
                self._save_ranked(trainer, name, res["ranked"], targets[name], out)

    def _save_curves(self, trainer: pl.Trainer, results: dict, out: Path) -> None:
        curves = {name: [float(c) for c in res["cmc"]] for name, res in results.items()}
        with open(out / "cmc_test.json", "w") as f:
            json.dump(curves, f)
        png = out / "cmc_test.png"
        plot_cmc(curves, png, "CMC (test)")
        for lg in self._wandb(trainer):
            lg.log_image(key="test/cmc", images=[str(png)])
            import wandb

            for name, cmc in curves.items():
                table = wandb.Table(data=[[k + 1, c] for k, c in enumerate(cmc)], columns=["rank", "cmc"])
                lg.experiment.log(
                    {f"test/{name}/cmc_curve": wandb.plot.line(table, "rank", "cmc", title=f"CMC {name}")}
                )

    def _save_scene(self, trainer: pl.Trainer, scene: dict, out: Path) -> None:
        for name, s in scene.items():
            log.info(
                "scene sensitivity %s: AP over matches in the query's scene %s (%d queries), in another scene %s "
                "(%d queries)",
                name,
                "-" if s["same_bg_ap"] is None else f"{100 * s['same_bg_ap']:.1f}",
                s["n_same"],
                "-" if s["diff_bg_ap"] is None else f"{100 * s['diff_bg_ap']:.1f}",
                s["n_diff"],
            )
        path = out / "scene_sensitivity.png"
        plot_scene_sensitivity(scene, path)
        for lg in self._wandb(trainer):
            lg.log_image(key="test/scene_sensitivity", images=[str(path)])

    def _save_embedding(self, trainer: pl.Trainer, results: dict, out: Path) -> None:
        path = out / "embedding_test.png"
        plot_embedding({name: res["features"] for name, res in results.items()}, path)
        for lg in self._wandb(trainer):
            lg.log_image(key="test/embedding", images=[str(path)])

    def _save_ranked(self, trainer: pl.Trainer, name: str, ranked: dict, target, out: Path) -> None:
        query, gallery = target.splits.query, target.splits.gallery
        rows = []
        distances = ranked.get("distance") or [[None] * len(g) for g in ranked["gallery"]]
        for q, g_list, matches, dists in zip(ranked["query"], ranked["gallery"], ranked["match"], distances):
            qrec = query[q]
            with Image.open(qrec.path) as im:
                q_img = im.convert("RGB")
            g_imgs = []
            for g in g_list:
                with Image.open(gallery[g].path) as im:
                    g_imgs.append(im.convert("RGB"))
            rows.append(
                ranked_list(
                    q_img,
                    g_imgs,
                    matches,
                    query_caption=f"q id {qrec.pid}",
                    gallery_captions=[
                        f"id {gallery[g].pid}" + ("" if d is None else f" {d:.2f}") for g, d in zip(g_list, dists)
                    ],
                )
            )
        if not rows:
            return
        opts = getattr(trainer.lightning_module, "eval_options", None)
        metric = getattr(trainer.lightning_module, "eval_metric", "cosine")
        how = "re-ranked distance" if getattr(opts, "rerank", False) else f"{metric} distance"
        legend = legend_row(
            max(r.size[0] for r in rows),
            [
                f"{name}: each row a query (grey border, first) and its top {len(ranked['gallery'][0])} gallery images, "
                "closest first (same-camera images of the query's identity excluded, as the metric does)",
                "green border: same identity as the query",
                "red border: another identity",
                f"captions: the gallery image's pid and its {how} to the query (smaller is closer)",
            ],
        )
        path = out / f"ranked_{name}.png"
        stack_rows([legend] + rows).save(path)
        for lg in self._wandb(trainer):
            lg.log_image(key=f"test/ranked/{name}", images=[str(path)])
