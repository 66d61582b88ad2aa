"""``backbone.pretrained=sandbox``: the person-aligned ``clip_tiny`` of the CPU sandbox, built on first use.

A random-weight CLIP's prompts live in a word space that means nothing, so the sandbox builds its own
aligned one (PLIP-style, see ``src/ppreid/models/clip_pretrain.py``): the pre-training corpus
(``src/ppreid/synth/pretrain_corpus.py``, identities disjoint from GenePerson-mini) is written, both towers of
``clip_tiny`` are trained with CLIP's contrastive loss on captions of its attribute records, and the
result is evaluated on the corpus's held-out identities. Written once under ``root``::

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

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppreid.utils.errors import ConfigValueError
from ppreid.utils.fileops import atomic_write_json, file_lock, replace_dir

log = logging.getLogger("ppreid.nn")

COMPLETE = ".complete.json"
WEIGHTS = "clip_tiny.pt"
SANDBOX_VERSION = 1
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


def _read_images(paths: Sequence[str], height: int, width: int) -> torch.Tensor:
    """(N, 3, H, W) uint8: the whole corpus in memory (small images; no loader in the loop)."""
    from PIL import Image

    out = torch.empty(len(paths), 3, height, width, dtype=torch.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.size != (width, height):
                im = im.resize((width, height), Image.BILINEAR)
            out[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    return out


def _records(folder: Path):
    from ppreid.data.datasets.genepers import genepers

    splits = genepers(str(folder))
    return list(splits.train) + list(splits.query) + list(splits.gallery)


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
    import torch.nn.functional as F
    from tqdm import tqdm

    from ppreid.config.resolvers import _precision
    from ppreid.metrics.clip_alignment import alignment_picture, encode_text, text_to_image_report, zero_shot_report
    from ppreid.models.clip_pretrain import (
        batch_positives,
        check_caption_kinds,
        clip_contrastive_loss,
        clip_state_dict,
        draw_kinds,
    )
    from ppreid.nn.backbones.clip_visual import OpenCLIPVisual
    from ppreid.synth.attributes import AttributeSchema, load_conf_yaml
    from ppreid.synth.captions import Captioner

    height, width = image_size
    precision = str(training["precision"])
    if precision not in PRECISIONS:
        raise ConfigValueError(
            f"backbone.sandbox.training.precision={precision!r}: choose one of {', '.join(PRECISIONS)}."
        )
    bf16 = _precision(precision, "cpu") == "bf16-mixed"
    torch.manual_seed(int(training["seed"]))
    rng = np.random.default_rng(int(training["seed"]))
    model = OpenCLIPVisual(model_name, None, image_size=(height, width))
    tower = model.text_tower()
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(float(training["logit_scale_init"]))))
    context = int(tower.positional_embedding.shape[0])
    caption_cfg = load_conf_yaml("synth/captions.yaml")
    if training["fragment_keep_prob"] is not None:
        caption_cfg["fragment_keep_prob"] = float(training["fragment_keep_prob"])
    captioner = Captioner.from_config(caption_cfg, context_length=min(context, int(training["caption_tokens"])))
    eval_captioner = Captioner.from_config(context_length=context)
    kinds_w = check_caption_kinds(training["caption_kinds"])
    mean = torch.tensor(model.input_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.input_std).view(1, 3, 1, 1)

    train_records = _records(corpus_root / "train")
    images = _read_images([r.path for r in train_records], height, width)
    pids = torch.tensor([r.pid for r in train_records])
    params = list(model.parameters()) + list(tower.parameters()) + [logit_scale]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": float(training["weight_decay"])}, {"params": no_decay, "weight_decay": 0.0}],
        lr=float(training["lr"]),
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    steps, warm = int(training["steps"]), int(training["warmup_steps"])

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / max(1, warm)
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    batch = int(training["batch_size"])
    order = np.concatenate(
        [rng.permutation(len(train_records)) for _ in range(steps * batch // len(train_records) + 1)]
    )
    losses = []
    model.train()
    tower.train()
    bar = tqdm(range(steps), desc="sandbox CLIP", disable=not progress, mininterval=5)
    for step in bar:
        idx = order[step * batch : (step + 1) * batch]
        kinds = draw_kinds(rng, kinds_w, len(idx))
        described = [captioner.describe(train_records[i].attributes, k, rng) for i, k in zip(idx, kinds)]
        texts = [text for text, _ in described]
        x = (images[torch.as_tensor(idx)].float() / 255 - mean) / std
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            img, txt = model(x), encode_text(tower, captioner.tokenize(texts))
        positives = batch_positives(
            pids[torch.as_tensor(idx)],
            kinds,
            [train_records[i].attributes for i in idx],
            [k for _, k in described],
            training["identity_level"],
            training["caption_truth"],
        )
        loss = clip_contrastive_loss(img.float(), txt.float(), logit_scale, positives)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{float(logit_scale.detach().exp()):.1f}")
    torch.save(clip_state_dict(model.visual, tower, logit_scale), out / WEIGHTS)

    model.eval()
    tower.eval()
    held = _records(corpus_root / "heldout")
    held_images = _read_images([r.path for r in held], height, width)
    with torch.no_grad():
        feats = torch.cat(
            [
                F.normalize(model((held_images[i : i + 256].float() / 255 - mean) / std), dim=-1)
                for i in range(0, len(held), 256)
            ]
        )
    attrs = [r.attributes or {} for r in held]
    schema = AttributeSchema.from_config()
    zs = zero_shot_report(feats, attrs, tower, eval_captioner, schema)
    t2i, ranking = text_to_image_report(feats, [r.pid for r in held], attrs, tower, eval_captioner)
    probe = image_probe_ceiling(feats, [r.pid for r in held], attrs, eval_captioner.zero_shot_keys)
    alignment_picture(out / "text_to_image.png", ranking, [r.path for r in held])
    n = max(1, len(losses) // 10)
    return {
        "heldout": {
            "zero_shot": zs,
            "text_to_image": t2i,
            "image_probe": probe,
            "num_identities": len({r.pid for r in held}),
            "num_images": len(held),
        },
        "train": {
            "num_images": len(train_records),
            "steps": steps,
            "loss_first": round(float(np.mean(losses[:n])), 4),
            "loss_last": round(float(np.mean(losses[-n:])), 4),
            "logit_scale": round(float(logit_scale.detach().exp()), 3),
        },
    }


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


def resolve_sandbox(model_name: str, image_size: Sequence[int], builder: Any) -> str | None:
    """``pretrained=sandbox`` -> the built weights file (or None: random weights under a fast dev run)."""
    if builder is None:
        raise ConfigValueError(
            f"backbone.pretrained=sandbox: {model_name} has no sandbox build (backbone.sandbox); the person-aligned "
            "sandbox CLIP exists for backbone=clip_tiny only. Use a weights file, a tag, or pretrained=null."
        )
    path = builder(model_name=model_name, image_size=list(image_size))
    return None if path is None else str(path)
