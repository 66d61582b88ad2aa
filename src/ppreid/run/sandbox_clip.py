"""``backbone.pretrained=sandbox``: the person-aligned ``clip_tiny`` of the CPU sandbox, built on first use.

A random-weight CLIP's prompts live in a word space that means nothing, so the sandbox builds its own
aligned one (PLIP-style): the pre-training corpus (``src/ppreid/synth/pretrain_corpus.py``, identities
disjoint from GenePerson-mini) is written, then ``model=clip_pretrain`` itself (its LightningModule,
datamodule and a Lightning Trainer, ``src/ppreid/models/clip_pretrain.py``) trains both towers of
``clip_tiny`` with CLIP's contrastive loss on captions of its attribute records for a fixed number of
steps, and the result is evaluated on the corpus's held-out identities. The run resolves it
(:func:`resolve_pretrained_sandbox`, called by train.py before the model is built); a backbone
constructor only ever sees a weights file.

Each set of build parameters has its own folder, ``root/<build key>`` (:func:`build_key`: the version,
``text`` or ``no-text`` and a hash of every parameter), so the no-text control and the language build
live side by side. Written once there::

    clip_tiny.pt          full open_clip CLIP state dict (visual.* + text tower + logit_scale)
    results.json          held-out identities: zero-shot attribute accuracy, the linear-probe ceiling on the
                          same features (and their ratio), caption-to-image R1, the scene (background) probe;
                          training losses, timing
    text_to_image.png     caption queries with their top-ranked held-out images
    .complete.json        the parameters it was built with

Like GenePerson-mini: one log line saying what it does and how long it takes, a progress bar,
written atomically (a temporary folder renamed), reused afterwards, rebuilt when its parameters change.
Under a fast dev run (``quick``: ``debug=fdr``) nothing is built: the backbone keeps random weights and
says so in one line, so smoke runs and the test suite never pay for the build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ppreid.run.sandbox_clip_fit import WEIGHTS, take_build_parameters, train_and_evaluate
from ppreid.utils.errors import ConfigValueError
from ppreid.utils.fileops import atomic_write_json, file_lock, replace_dir

log = logging.getLogger(__name__)

COMPLETE = ".complete.json"
# 3: pre-training v2 (identity-level positives, person-only identity text, colour-aware batches, caption-true
# augmentation, the no-text control; a folder per build key); 2: trained by model=clip_pretrain's
# LightningModule and Trainer; 1: a hand loop
SANDBOX_VERSION = 3
SANDBOX = "sandbox"
DEFAULT_TRAINING: dict[str, Any] = {
    "steps": 1500,
    "batch_size": 64,
    "caption_tokens": 48,
    "lr": 1.0e-3,
    "weight_decay": 0.1,
    "warmup_steps": 50,
    "identity_level": True,
    "identity_text": True,
    "text": True,
    "caption_truth": False,
    "caption_kinds": {"content": 1.0},
    "augment": {"crop_scale": [0.8, 1.0], "crop_ratio": [0.9, 1.1], "flip_prob": 0.5},
    "attribute_weight": 0.0,
    "colour_batches": {"enabled": True, "keys": ["upper_colour", "lower_colour"], "group_size": 4},
    "logit_scale_init": 1 / 0.07,
    "seed": 0,
    "seconds_per_step": 0.25,
    "fragment_keep_prob": None,
    "precision": "auto",
}
ANNOUNCE_ONLY = ("seconds_per_step",)  # sizes the log line only: changing it rebuilds nothing


def build_key(params: Mapping[str, Any]) -> str:
    """The folder name of a build: ``v<version>-<text|no-text>-<8 hex digits of the parameters' hash>``."""
    text = "text" if params["training"].get("text", True) else "no-text"
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"v{params['version']}-{text}-{digest}"


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
    """The weights file of the person-aligned CLIP (built under ``root/<build key>`` unless there); None
    when ``quick``.

    Args:
        corpus: ``ensure_pretrain_corpus`` options (its ``root`` defaults to ``<root>-corpus``).
        training: steps, batch_size, caption_tokens (training captions are cut to this many tokens at
            fragment boundaries: the text transformer's cost grows with the longest caption of a batch),
            lr, weight_decay, warmup_steps, identity_level, identity_text, text (false: the no-text control),
            caption_kinds, augment, attribute_weight, colour_batches, logit_scale_init, seed, precision
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
    root = root / build_key(params)
    if _is_complete(root, params):
        return root / WEIGHTS
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        if _is_complete(root, params):
            return root / WEIGHTS
        if root.exists():
            raise ConfigValueError(
                f"{root} exists but is not a complete sandbox CLIP build (no {COMPLETE}, or other parameters); "
                "move it away or set backbone.sandbox.root elsewhere."
            )
        minutes = training["steps"] * training["seconds_per_step"] / 60 + 2
        log.info(
            "backbone.pretrained=sandbox: building the person-aligned %s into %s (a captioned pre-training "
            "corpus, then %d contrastive steps %s); once, about %.0f minutes on 2 CPU cores, "
            "reused afterwards",
            model_name,
            root,
            training["steps"],
            "of both towers" if training["text"] else "of the image tower (the no-text control)",
            minutes,
        )
        start = time.time()
        from ppreid.synth.pretrain_corpus import ensure_pretrain_corpus

        ensure_pretrain_corpus(corpus_root, progress=progress, **corpus)
        for stale in root.parent.glob(f"{root.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True)
        report = train_and_evaluate(tmp, corpus_root, model_name, (height, width), training, progress)
        report["seconds"] = round(time.time() - start, 1)
        atomic_write_json(tmp / "results.json", report)
        atomic_write_json(tmp / COMPLETE, {"params": params, "seconds": report["seconds"]})
        replace_dir(tmp, root)
        held = report["heldout"]
        log.info(
            "person-aligned %s ready in %.1f min: held-out zero-shot mean normalized accuracy %s (%s of the "
            "linear-probe ceiling), caption-to-image R1 %s, background probe %s (chance %s) (%s)",
            model_name,
            report["seconds"] / 60,
            held["zero_shot"]["mean_normalized"],
            held["zero_shot_vs_probe"]["ratio"],
            held["text_to_image"]["R1"],
            held["scene_probe"]["attributes"].get("background", {}).get("balanced_accuracy"),
            held["scene_probe"]["attributes"].get("background", {}).get("chance"),
            root / "results.json",
        )
    return root / WEIGHTS


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
