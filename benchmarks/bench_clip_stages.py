"""Speed of the CLIP prompt models' stages (CLIP-ReID, PDM), measured in one run on the same data.

    python benchmarks/bench_clip_stages.py                 # clip_tiny on the embedded data (128x64)
    python benchmarks/bench_clip_stages.py --vit-images 32 # + clip_vit_b16 training images/s at 256x128

Prints:
1. stage 1, one epoch over the embedded GenePerson-mini source (the model's stage-1 batches as training
   draws them: P x K for PDM, chunks of a permutation of every image for CLIP-ReID): training on the
   **cached** image features (what the models do) vs **recomputing**, batch by batch, what the cache
   holds (loading and encoding the images, and for PDM's content invariance rendering and encoding their
   re-styled views too); targets for PDM: cached >= 3x faster on clip_tiny, >= 6x on ViT-B/16;
2. one stage-2 training iteration of PDM vs CLIP-ReID on the same batch and backbone; target: PDM
   <= 1.2x CLIP-ReID's time;
3. training images/s of a stage-2 iteration with ViT-B/16 at 256x128 (``--vit-images``).
Threads: torch's default for the machine (``--threads`` to set it). Times are CPU seconds of this
process (``time.process_time``; images are decoded in the main process, ``data.num_workers=0``), so
the ratios hold on a machine shared with other jobs; wall seconds swing with the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

import torch


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from ppreid.config.resolvers import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = "/tmp/bench_clip_stages"
            cfg.hydra.job.num = 0
        HydraConfig().set_config(cfg)
    return cfg


class _Trainer:
    """The little a model needs from a trainer here: its datamodule (the cache) and the step counter
    (PDM draws its other-style partners from it)."""

    fast_dev_run = False

    def __init__(self, datamodule):
        self.datamodule = datamodule
        self.global_step = 0


def build(model_name: str, extra=()):
    from hydra.utils import instantiate

    # random weights: a speed benchmark needs no person-aligned sandbox CLIP (the sandbox default builds one)
    from ppreid.run.sandbox_clip import resolve_pretrained_sandbox

    cfg = compose([f"model={model_name}", "data.num_workers=0", "backbone.pretrained=null", *extra])
    resolve_pretrained_sandbox(cfg)  # as the run does: backbone.sandbox is the run's, not the backbone's
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.use_backbone_normalization(model.backbone.input_mean, model.backbone.input_std)
    dm.setup("fit")
    model.neck.reset_classifier(dm.num_classes)
    model.neck_proj.reset_classifier(dm.num_classes)
    model.setup_identities(dm)
    model._trainer = _Trainer(dm)
    model.log = lambda *args, **kwargs: None  # no trainer to log to
    return model, dm


def stage1_batches(model, dm) -> list[torch.Tensor]:
    """One epoch of the model's stage-1 index batches, drawn as training draws them: P x K batches
    (``model.stage1.batch_size: null``, PDM) or chunks of a permutation of every image (CLIP-ReID)."""
    from ppreid.data.samplers import PermutationChunkSampler

    chunk = model.index_batch_size
    if chunk is None:
        order = list(dm.train_sampler())
        n = len(order) // dm.batch_size * dm.batch_size  # drop_last, as the training loader
        return list(torch.tensor(order[:n]).split(dm.batch_size))
    return list(torch.tensor(list(PermutationChunkSampler(len(dm.train_records)))).split(chunk))


def stage1_epoch(model, dm, recompute: bool, max_batches: int | None = None) -> float:
    """Seconds for one stage-1 epoch (the model's stage-1 batches, the first ``max_batches``), on the
    cache or recomputing, batch by batch, what the cache holds: the frozen image encoder's features of
    the images and, when the model caches them (PDM's content invariance), of their re-styled views."""
    from ppreid.data.image_dataset import TwoViewDataset

    opt = torch.optim.Adam([p for m in model.stage1_modules().values() for p in m.parameters()], lr=1e-4)
    batches = stage1_batches(model, dm)[:max_batches]
    records = dm.train_records
    two_views = model.cache_restyled
    dataset = (
        TwoViewDataset(records, dm._transform(is_train=False), model.restyle_strength)
        if two_views
        else dm.train_dataset(augment=False)
    )
    start = time.process_time()
    for idx in batches:
        meta = {
            "pid": torch.tensor([records[i].pid for i in idx]),
            "camid": torch.tensor([records[i].camid for i in idx]),
            "domain": torch.tensor([records[i].domain for i in idx]),
            "index": idx,
        }
        if recompute:
            items = [dataset[int(i)] for i in idx]
            model.backbone.eval()
            with torch.no_grad():
                feats = model.backbone(torch.stack([it["image"] for it in items]))
                restyled = model.backbone(torch.stack([it["image_restyled"] for it in items])) if two_views else None
            cache = model._cache  # the same step, fed the recomputed features
            model._cache = {"feats": feats, "row": torch.full((len(records),), -1, dtype=torch.long)}
            model._cache["row"][idx] = torch.arange(len(idx))
            if two_views:
                model._cache["restyled"] = restyled
            try:
                loss = sum(model.stage1_losses(feats, meta).values())
            finally:
                model._cache = cache
        else:
            loss = sum(model.stage1_losses(model.cached("feats", idx), meta).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.process_time() - start


def stage2_iteration(model, batch, repeats: int) -> float:
    """Median seconds of one stage-2 training iteration (forward, losses, backward, step)."""
    opt = torch.optim.Adam(model.stage2_parameter_groups(), lr=1e-5)
    model.backbone.train()
    times = []
    for i in range(repeats + 1):
        start = time.process_time()
        loss = sum(model._stage2_losses(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i > 0:  # the first iteration warms up allocators
            times.append(time.process_time() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vit-images", type=int, default=16, help="batch size of the ViT-B/16 measurement (0: skip)")
    ap.add_argument(
        "--vit-batches",
        type=int,
        default=4,
        help="stage-1 batches of the ViT-B/16 cached-vs-recomputed measurement (0: skip)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    # 1. stage 1: cached vs recomputed image features, both models, sandbox and paper backbones
    print(
        "\n[1] stage 1, one epoch: training on cached image features vs recomputing them "
        "(PDM targets: >= 3x clip_tiny, >= 6x ViT-B/16)"
    )
    for backbone, extra, batches in (
        ("clip_tiny 128x64", [], None),
        ("clip_vit_b16 256x128", ["backbone=clip_vit_b16", "data.height=256", "data.width=128"], args.vit_batches),
    ):
        if batches == 0:
            continue
        for name in ("clipreid", "pdm"):
            model, dm = build(name, extra)
            if batches is not None:  # only the images the measured batches use get cached
                dm.train_records = dm.train_records[: batches * (model.index_batch_size or dm.batch_size)]
                model._cache = None
            t0 = time.process_time()
            model.cache  # noqa: B018  (built once per run, as in training)
            cache_s = time.process_time() - t0
            cached = min(stage1_epoch(model, dm, False, batches) for _ in range(2))
            recomputed = stage1_epoch(model, dm, True, batches)
            n = len(dm.train_records)
            print(
                f"    {name:8s} {backbone:20s} {n:5d} images: cached {cached:6.2f} s, recomputed {recomputed:6.2f} s "
                f"-> {recomputed / cached:5.1f}x  (cache built once in {cache_s:.1f} s)"
            )
            if name == "pdm" and batches is None:
                pdm, pdm_dm = model, dm
    dm = pdm_dm

    # 2. stage 2: PDM vs CLIP-ReID, same batch, same backbone
    clipreid, _ = build("clipreid")
    with torch.no_grad():
        clipreid.build_stage2_targets()
        pdm.build_stage2_targets()
    clipreid.backbone.load_state_dict(pdm.backbone.state_dict())
    items = [dm.train_dataset()[i] for i in list(dm.train_sampler())[: dm.batch_size]]
    batch = {
        k: (torch.stack([it[k] for it in items]) if k == "image" else torch.tensor([it[k] for it in items]))
        for k in ("image", "pid", "camid", "domain", "index")
    }
    t_clipreid = stage2_iteration(clipreid, batch, args.repeats)
    t_pdm = stage2_iteration(pdm, batch, args.repeats)
    print(f"\n[2] stage-2 iteration, batch {len(items)} x 3x{dm.height}x{dm.width}, clip_tiny")
    print(
        f"    CLIP-ReID: {1000 * t_clipreid:7.1f} ms   PDM: {1000 * t_pdm:7.1f} ms   ratio {t_pdm / t_clipreid:.2f}x "
        "(target <= 1.2x)"
    )

    # 3. ViT-B/16 training throughput
    if args.vit_images > 0:
        vit, _ = build("clipreid", ["backbone=clip_vit_b16", "data.height=256", "data.width=128"])
        vit.text_bank = torch.randn(vit.prompt_learner.num_classes, vit.embed_dim)
        n = args.vit_images
        vb = {
            "image": torch.randn(n, 3, 256, 128),
            "pid": torch.arange(n) // 4,
            "camid": torch.arange(n) % 4,
            "domain": torch.zeros(n, dtype=torch.long),
            "index": torch.arange(n),
        }
        t_vit = stage2_iteration(vit, vb, max(2, args.repeats // 2))
        print(
            f"\n[3] clip_vit_b16 stage-2 training, batch {n} x 3x256x128: {1000 * t_vit:.0f} ms/iteration = "
            f"{n / t_vit:.1f} images/s on {torch.get_num_threads()} threads"
        )


if __name__ == "__main__":
    main()
