"""The fit of the sandbox CLIP (:mod:`ppreid.run.sandbox_clip`): ``model=clip_pretrain`` composed for it
(:func:`clip_pretrain_config`), trained by its LightningModule, datamodule and a Lightning Trainer, and its
held-out report (zero-shot, caption-to-image, the image probe ceiling) (:func:`train_and_evaluate`).
:func:`take_build_parameters` makes a composed run config instantiable: the run, the tests and the GPU
check call it first.

Speed on 2 CPU cores: the text transformer dominates a step; captions are cut after the batch's
longest end-of-text token (exact under the causal mask). The token table (49,408 x 128) is most of
clip_tiny's parameters but costs little per step (an embedding lookup and a dense Adam update).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ppreid.utils.errors import ConfigValueError

WEIGHTS = "clip_tiny.pt"
PRECISIONS = ("auto", "bf16-mixed", "32-true")
SCENE_KEYS = ("background", "camera")  # what the scene probe reads: the scene and the camera look


def zero_shot_vs_probe(zero_shot: Mapping[str, Any], probe: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Zero-shot choice by text against the linear-probe ceiling, on the same images (the probe's scored
    half) and person attributes, both as normalized balanced accuracy ``(b - chance) / (1 - chance)``
    (chance: 1 / the values present). ``ratio``: the zero-shot mean over the probe's mean (how much of
    what the image features hold linearly the words reach)."""

    def norm(b: float, c: float) -> float:
        return (b - c) / (1 - c) if c < 1 else 0.0

    zs, pr = zero_shot.get("attributes", {}), probe.get("attributes", {})
    common = [k for k in keys if k in zs and k in pr]
    rows = {
        k: {
            "zero_shot": round(norm(zs[k]["balanced_accuracy"], zs[k]["balanced_chance"]), 4),
            "probe": round(norm(pr[k]["balanced_accuracy"], pr[k]["chance"]), 4),
        }
        for k in common
    }
    zmean = float(np.mean([r["zero_shot"] for r in rows.values()])) if rows else None
    pmean = float(np.mean([r["probe"] for r in rows.values()])) if rows else None
    return {
        "attributes": rows,
        "zero_shot_mean": None if zmean is None else round(zmean, 4),
        "probe_mean": None if pmean is None else round(pmean, 4),
        "ratio": None if not rows or pmean <= 0 else round(zmean / pmean, 4),
    }


def train_and_evaluate(
    out: Path,
    corpus_root: Path,
    model_name: str,
    image_size: Sequence[int],
    training: Mapping[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """Train ``model=clip_pretrain`` (its LightningModule, datamodule and Trainer) on the corpus's train
    identities for ``training["steps"]`` optimizer steps, write the weights into ``out`` and evaluate them
    on the held-out identities."""
    from hydra.utils import instantiate

    from ppreid.config.resolvers import _precision
    from ppreid.metrics.clip_alignment import zero_shot_report

    precision = str(training["precision"])
    if precision not in PRECISIONS:
        raise ConfigValueError(
            f"backbone.sandbox.training.precision={precision!r}: choose one of {', '.join(PRECISIONS)}."
        )
    cfg = clip_pretrain_config(out, corpus_root, model_name, image_size, training, _precision(precision, "cpu"))
    losses = _StepLosses()
    with _quiet(QUIET_DURING_BUILD):
        pl.seed_everything(int(training["seed"]), verbose=False)
        model = instantiate(cfg.model)
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.use_backbone_normalization(model.backbone.input_mean, model.backbone.input_std)
        trainer = instantiate(
            cfg.trainer,
            callbacks=[losses],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
        )
        trainer.fit(model, datamodule=datamodule)
        model.save_weights(out / WEIGHTS)
        datamodule.setup("test")
        held = datamodule.targets[0]
        alignment = model.alignment([held], out)
        feats, records = model._set_features(held)
    (out / f"text_to_image_{held.name}.png").replace(out / "text_to_image.png")
    model.eval()
    attrs = [r.attributes or {} for r in records]
    pids = [r.pid for r in records]
    person = [k for k in model.captioner.zero_shot_keys if k in model.schema.identity_keys]
    probe = image_probe_ceiling(feats, pids, attrs, person)
    scene = image_probe_ceiling(feats, pids, attrs, [k for k in SCENE_KEYS if k in model.schema.environment_keys])
    scored = [p not in set(sorted(set(pids))[::2]) for p in pids]  # the probe's scored half
    zs_scored = zero_shot_report(
        feats[torch.tensor(scored)],
        [a for a, s in zip(attrs, scored) if s],
        model.text_tower,
        model.captioner,
        model.schema,
    )
    steps = len(losses.values)
    n = max(1, steps // 10)
    return {
        "heldout": {
            "zero_shot": alignment["zero_shot"][held.name],
            "text_to_image": alignment["text_to_image"][held.name],
            "image_probe": probe,
            "zero_shot_vs_probe": zero_shot_vs_probe(zs_scored, probe, person),
            "scene_probe": scene,
            "num_identities": len({r.pid for r in records}),
            "num_images": len(records),
        },
        "train": {
            "num_images": len(datamodule.train_records),
            "steps": steps,
            "loss_first": round(float(np.mean(losses.values[:n])), 4),
            "loss_last": round(float(np.mean(losses.values[-n:])), 4),
            "logit_scale": round(float(model.logit_scale.detach().exp()), 3),
            "text": bool(training["text"]),
        },
    }


# ppreid loggers silenced while the build's model trains (its data tables, weights and alignment lines):
# the build says what it does in its own lines
QUIET_DURING_BUILD = ("ppreid.data", "ppreid.models", "ppreid.nn", "ppreid.metrics", "ppreid.training")


@contextlib.contextmanager
def _quiet(names: Sequence[str]):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _StepLosses(pl.Callback):
    """The training loss of every optimizer step (the report's first / last tenth)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        self.values.append(float(loss.detach()))


def clip_pretrain_config(
    out: Path,
    corpus_root: Path,
    model_name: str,
    image_size: Sequence[int],
    training: Mapping[str, Any],
    precision: str,
) -> DictConfig:
    """The composed run config of ``model=clip_pretrain`` that builds the sandbox CLIP: the corpus's train
    identities (every one, no validation split, no augmentation), ``training``'s steps, batch size, learning
    rate, weight decay, warm-up, caption kinds and positives, identity text, augmentation, attribute term,
    colour-aware batches and the no-text switch, on the CPU, writing into ``out``."""
    from omegaconf import OmegaConf, open_dict

    from ppreid.synth.attributes import load_conf_yaml

    cfg = compose_run_config(["model=clip_pretrain", "backbone=clip_tiny", "trainer.accelerator=cpu"])
    take_build_parameters(cfg)
    height, width = (int(s) for s in image_size)
    captions = load_conf_yaml("synth/captions.yaml")
    if training["fragment_keep_prob"] is not None:
        captions["fragment_keep_prob"] = float(training["fragment_keep_prob"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.log_dir = str(out)
        cfg.paths.work_dir = str(out)
        cfg.seed = int(training["seed"])
        cfg.backbone.update(model_name=model_name, pretrained=None, image_size=[height, width])
        cfg.data.update(
            height=height,
            width=width,
            prepare=None,
            sources=[{"dataset": "genepers", "root": str(corpus_root / "train")}],
            targets=[{"dataset": "genepers", "root": str(corpus_root / "heldout"), "name": "heldout"}],
            batch_size=int(training["batch_size"]),
            num_workers=0,
            pin_memory=False,
            check_targets=False,
            colour_batches=dict(training["colour_batches"]),
        )
        cfg.data.val_split.update(identities=0, seed=0)  # a typed node: updated key by key
        cfg.data.train_transforms.update(flip_prob=0.0, padding=0, random_erasing_prob=0.0)
        cfg.model.update(
            identity_level=bool(training["identity_level"]),
            identity_text=bool(training["identity_text"]),
            text=bool(training["text"]),
            augment=dict(training["augment"]),
            attribute_weight=float(training["attribute_weight"]),
            caption_truth=bool(training["caption_truth"]),
            caption_kinds=dict(training["caption_kinds"]),
            captions=captions,
            logit_scale_init=float(training["logit_scale_init"]),
            warmup_steps=int(training["warmup_steps"]),
            seed=int(training["seed"]),
            caption_tokens=int(training["caption_tokens"]),
            schedule="steps",
            no_decay_1d=True,
            loss_in_fp32=True,
            weights_file=WEIGHTS,
        )
        cfg.model.optimizer.update(lr=float(training["lr"]), weight_decay=float(training["weight_decay"]))
        cfg.trainer = OmegaConf.to_container(cfg.trainer, resolve=False)  # a step budget: keys the typed node lacks
        cfg.trainer.update(
            max_steps=int(training["steps"]),
            max_epochs=-1,
            min_epochs=None,
            precision=precision,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            default_root_dir=str(out),
        )
    OmegaConf.resolve(cfg.model)
    return cfg


def compose_run_config(overrides: Sequence[str]) -> DictConfig:
    """conf/train.yaml composed with ``overrides`` (inside a running train.py, or from anywhere else)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ppreid.utils.paths import CONF_DIR

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def image_probe_ceiling(
    feats: torch.Tensor, pids: Sequence[int], attrs: Sequence[Mapping[str, str]], keys: Sequence[str]
) -> dict[str, Any]:
    """What the image tower encodes linearly: a linear probe per attribute, fitted on half of the held-out
    identities' (N, E) image features and scored (balanced accuracy) on the other half. Zero-shot choice by
    text can hardly beat it, so it says whether a missed attribute is missing from the image features or
    from their alignment with the words."""
    from ppreid.metrics.attribute_probe import probe_attributes

    first = set(sorted(set(pids))[::2])
    half = torch.tensor([p in first for p in pids])
    rows = probe_attributes(
        feats[half],
        [a for a, h in zip(attrs, half) if h],
        feats[~half],
        [a for a, h in zip(attrs, half) if not h],
        {"attributes": list(keys)},
    )["attributes"]
    per = {
        k: {"balanced_accuracy": round(v["balanced_accuracy"], 4), "chance": round(v["chance"], 4)}
        for k, v in rows.items()
        if isinstance(v, dict)
    }
    return {
        "attributes": per,
        "mean_balanced_accuracy": round(float(np.mean([v["balanced_accuracy"] for v in per.values()])), 4)
        if per
        else None,
        "mean_chance": round(float(np.mean([v["chance"] for v in per.values()])), 4) if per else None,
    }


def take_build_parameters(cfg: DictConfig) -> dict | None:
    """Take ``backbone.sandbox`` (the run's build parameters, resolved) out of ``cfg.backbone``; None if absent.

    Only clip_tiny's config has them. A typed (structured) node refuses ``pop``, so the backbone becomes a
    plain node without ``sandbox``, its interpolations (``${data.height}``) kept."""
    from omegaconf import OmegaConf, open_dict

    backbone = cfg.get("backbone")
    if backbone is None or "sandbox" not in backbone:
        return None
    build = OmegaConf.to_container(backbone.sandbox, resolve=True)
    plain = OmegaConf.to_container(backbone, resolve=False)
    plain.pop("sandbox")
    with open_dict(cfg):
        cfg.backbone = plain
    return build
