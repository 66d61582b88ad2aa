"""The fit of the sandbox CLIP (:mod:`ppreid.run.sandbox_clip`): ``model=clip_pretrain`` composed for it
(:func:`clip_pretrain_config`), trained by its LightningModule, datamodule and a Lightning Trainer, and its
held-out report (zero-shot, caption-to-image, the probe ceiling, the scene probe) (:func:`train_and_evaluate`).
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
from omegaconf import DictConfig

from ppreid.utils.errors import ConfigValueError

WEIGHTS = "clip_tiny.pt"
PRECISIONS = ("auto", "bf16-mixed", "32-true")


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
    from ppreid.metrics.clip_alignment import ALIGNMENT_SECTIONS

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
    (out / f"text_to_image_{held.name}.png").replace(out / "text_to_image.png")
    steps = len(losses.values)
    n = max(1, steps // 10)
    return {
        "heldout": {
            **{section: alignment[section][held.name] for section in ALIGNMENT_SECTIONS},
            "num_identities": len({r.pid for r in held.records}),
            "num_images": len(held.records),
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
