"""``backbone.pretrained=sandbox``: the person-aligned ``clip_tiny`` of the CPU sandbox, built on first use.

A random-weight CLIP's prompts live in a word space that means nothing, so the sandbox builds its own
aligned one (PLIP-style): the pre-training corpus (``src/ppreid/synth/pretrain_corpus.py``, identities
disjoint from GenePerson-mini) is written, then ``model=clip_pretrain`` itself (its LightningModule,
datamodule and a Lightning Trainer, ``src/ppreid/models/clip_pretrain.py``) trains both towers of
``clip_tiny`` with CLIP's contrastive loss on captions of its attribute records for a fixed number of
steps, and the result is evaluated on the corpus's held-out identities. The run resolves it
(:func:`resolve_pretrained_sandbox`, called by train.py before the model is built); a backbone
constructor only ever sees a weights file. Written once under ``root``::

    root/clip_tiny.pt          full open_clip CLIP state dict (visual.* + text tower + logit_scale)
    root/report.json           zero_shot + text_to_image on held-out corpus identities, losses, timing
    root/text_to_image.png     caption queries with their top-ranked held-out images
    root/.complete.json        the parameters it was built with (other parameters -> rebuilt)

Like GenePerson-mini: one log line saying what it does and how long it takes, a progress bar,
written atomically (a temporary folder renamed), reused afterwards, rebuilt when its parameters change.
Under a fast dev run (``quick``: ``debug=fdr``) nothing is built: the backbone keeps random weights and
says so in one line, so smoke runs and the test suite never pay for the build.

Speed on 2 CPU cores: the text transformer dominates a step; captions are cut after the batch's
longest end-of-text token (exact under the causal mask). The token table (49,408 x 128) is most of
clip_tiny's parameters but costs little per step (an embedding lookup and a dense Adam update).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ppreid.utils.errors import ConfigValueError
from ppreid.utils.fileops import atomic_write_json, file_lock, replace_dir

log = logging.getLogger(__name__)

COMPLETE = ".complete.json"
WEIGHTS = "clip_tiny.pt"
SANDBOX_VERSION = 2  # 2: trained by model=clip_pretrain's LightningModule and Trainer (1: a hand loop)
SANDBOX = "sandbox"
DEFAULT_TRAINING: dict[str, Any] = {
    "steps": 1500,
    "batch_size": 64,
    "caption_tokens": 48,
    "lr": 1.0e-3,
    "weight_decay": 0.1,
    "warmup_steps": 50,
    "identity_level": False,
    "caption_truth": False,
    "caption_kinds": {"full": 0.2, "content": 0.7, "style": 0.1},
    "logit_scale_init": 1 / 0.07,
    "seed": 0,
    "seconds_per_step": 0.25,
    "fragment_keep_prob": None,
    "precision": "auto",
}
PRECISIONS = ("auto", "bf16-mixed", "32-true")
ANNOUNCE_ONLY = ("seconds_per_step",)  # sizes the log line only: changing it rebuilds nothing


def _is_complete(root: Path, params: Mapping[str, Any]) -> bool:
    try:
        return (
            (root / COMPLETE).is_file()
            and json.loads((root / COMPLETE).read_text()).get("params") == params
            and (root / WEIGHTS).is_file()
        )
    except json.JSONDecodeError:
        return False


def ensure_sandbox_clip(
    root: str | Path,
    corpus: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    model_name: str = "clip-tiny",
    image_size: Sequence[int] = (128, 64),
    quick: bool = False,
    progress: bool = True,
) -> Path | None:
    """The weights file of the person-aligned CLIP (built under ``root`` unless there); None when ``quick``.

    Args:
        corpus: ``ensure_pretrain_corpus`` options (its ``root`` defaults to ``<root>-corpus``).
        training: steps, batch_size, caption_tokens (training captions are cut to this many tokens at
            fragment boundaries: the text transformer's cost grows with the longest caption of a batch),
            lr, weight_decay, warmup_steps, identity_level, caption_kinds, logit_scale_init, seed
            (:data:`DEFAULT_TRAINING`); ``seconds_per_step`` only sizes the announced duration.
        image_size: (H, W) of the training images (= the input size the weights are used at).
        quick: a fast dev run: build nothing, return None (random weights).
    """
    from omegaconf import OmegaConf

    from ppreid.synth.attributes import load_conf_yaml

    if quick:
        log.info(
            "backbone.pretrained=sandbox: fast dev run, the person-aligned clip_tiny is not built; random weights "
            "(a full run builds it once under %s)",
            root,
        )
        return None
    root = Path(root).expanduser().resolve()
    corpus = dict(OmegaConf.to_container(OmegaConf.create(dict(corpus or {})), resolve=True))
    corpus_root = Path(corpus.pop("root", None) or f"{root}-corpus").expanduser().resolve()
    height, width = (int(s) for s in image_size)
    corpus.update({"height": height, "width": width})
    training = {
        **DEFAULT_TRAINING,
        **dict(OmegaConf.to_container(OmegaConf.create(dict(training or {})), resolve=True)),
    }
    unknown = set(training) - set(DEFAULT_TRAINING)
    if unknown:
        raise ConfigValueError(
            f"backbone.sandbox.training: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULT_TRAINING)}."
        )
    params = {
        "version": SANDBOX_VERSION,
        "model_name": model_name,
        "image_size": [height, width],
        "corpus": {"root": str(corpus_root), **corpus},
        "training": {k: v for k, v in training.items() if k not in ANNOUNCE_ONLY},
        "captions": load_conf_yaml("synth/captions.yaml"),
    }
    params = json.loads(json.dumps(params))
    if _is_complete(root, params):
        return root / WEIGHTS
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        if _is_complete(root, params):
            return root / WEIGHTS
        if root.exists() and not (root / COMPLETE).is_file():
            raise ConfigValueError(
                f"{root} exists but is not a sandbox CLIP folder (no {COMPLETE}); move it away "
                "or set backbone.sandbox.root elsewhere."
            )
        minutes = training["steps"] * training["seconds_per_step"] / 60 + 2
        log.info(
            "backbone.pretrained=sandbox: building the person-aligned %s into %s (a captioned pre-training "
            "corpus, then %d contrastive steps of both towers); once, about %.0f minutes on 2 CPU cores, "
            "reused afterwards",
            model_name,
            root,
            training["steps"],
            minutes,
        )
        start = time.time()
        from ppreid.synth.pretrain_corpus import ensure_pretrain_corpus

        ensure_pretrain_corpus(corpus_root, progress=progress, **corpus)
        for stale in root.parent.glob(f"{root.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        report = _train_and_evaluate(tmp, corpus_root, model_name, (height, width), training, progress)
        report["seconds"] = round(time.time() - start, 1)
        atomic_write_json(tmp / "report.json", report)
        atomic_write_json(tmp / COMPLETE, {"params": params, "seconds": report["seconds"]})
        replace_dir(tmp, root)
        held = report["heldout"]
        log.info(
            "person-aligned %s ready in %.1f min: held-out zero-shot mean normalized accuracy %s, "
            "caption-to-image R1 %s (%s)",
            model_name,
            report["seconds"] / 60,
            held["zero_shot"]["mean_normalized"],
            held["text_to_image"]["R1"],
            root / "report.json",
        )
    return root / WEIGHTS


def _train_and_evaluate(
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
    probe = image_probe_ceiling(feats, [r.pid for r in records], attrs, model.captioner.zero_shot_keys)
    steps = len(losses.values)
    n = max(1, steps // 10)
    return {
        "heldout": {
            "zero_shot": alignment["zero_shot"][held.name],
            "text_to_image": alignment["text_to_image"][held.name],
            "image_probe": probe,
            "num_identities": len({r.pid for r in records}),
            "num_images": len(records),
        },
        "train": {
            "num_images": len(datamodule.train_records),
            "steps": steps,
            "loss_first": round(float(np.mean(losses.values[:n])), 4),
            "loss_last": round(float(np.mean(losses.values[-n:])), 4),
            "logit_scale": round(float(model.logit_scale.detach().exp()), 3),
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
    rate, weight decay, warm-up, caption kinds and positives, on the CPU, writing into ``out``."""
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
        )
        cfg.data.val_split.update(identities=0, seed=0)  # a typed node: updated key by key
        cfg.data.train_transforms.update(flip_prob=0.0, padding=0, random_erasing_prob=0.0)
        cfg.model.update(
            identity_level=bool(training["identity_level"]),
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


def resolve_pretrained_sandbox(cfg: DictConfig, log_missing: bool = True) -> None:
    """Run orchestration, before the model is built: ``backbone.pretrained=sandbox`` becomes the weights
    file of the person-aligned CLIP (built first when missing: :func:`ensure_sandbox_clip` with the build
    parameters of ``backbone.sandbox``), or null under a fast dev run (random weights). ``backbone.sandbox``
    is the run's, not the backbone's: it is taken out of ``cfg.backbone`` in every case. A checkpoint run
    (``ckpt_path``) builds nothing: its weights replace the backbone's anyway."""
    from omegaconf import open_dict

    backbone = cfg.get("backbone")
    if backbone is None:
        return
    build = take_build_parameters(cfg)
    backbone = cfg.backbone
    if backbone.get("pretrained") != SANDBOX or cfg.get("ckpt_path"):
        return
    model_name = str(backbone.get("model_name"))
    if build is None:
        raise ConfigValueError(
            f"backbone.pretrained=sandbox: {model_name} has no sandbox build (backbone.sandbox); the person-aligned "
            "sandbox CLIP exists for backbone=clip_tiny only. Use a weights file, a tag, or pretrained=null."
        )
    build.pop("_target_", None)
    build.pop("_partial_", None)
    path = ensure_sandbox_clip(model_name=model_name, image_size=list(backbone.image_size), **build)
    with open_dict(cfg):
        backbone.pretrained = None if path is None else str(path)
