"""How well a CLIP model aligns person images and words: the text tower as trainable code, and the
zero-shot / caption-to-image evaluation of ``model=clip_pretrain`` and of the sandbox CLIP build.

- ``encode_text``: (B, L) token ids -> (B, E) text features of an open_clip text tower (trainable);
- ``zero_shot_report``: per attribute, choosing the image's value among all vocabulary values by prompts;
- ``text_to_image_report``: each identity's canonical content caption ranks every image (R1 / R5 / mAP);
- ``image_probe_ceiling``: what the image features hold linearly (per attribute, a probe on half the identities);
- ``zero_shot_vs_probe``: zero-shot against that ceiling on the same images;
- ``alignment_report``: all of these for one evaluation set (the sections of ``results.json``);
- ``alignment_picture``: caption queries with their top-ranked images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ppreid.metrics.attribute_probe import balanced_accuracy
from ppreid.synth.attributes import AttributeSchema, hidden_attributes
from ppreid.synth.captions import Captioner
from ppreid.utils.errors import ConfigValueError

IDENTITY_EXCLUDE = ("viewpoint",)  # per-image fragments left out of an identity's query caption
ALIGNMENT_SECTIONS = ("zero_shot", "text_to_image", "image_probe", "zero_shot_vs_probe", "scene_probe")
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


def encode_text(tower: nn.Module, token_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) ids -> (B, E) text features of an open_clip ``TextTransformer``, trainable.

    The ids are cut after the longest end-of-text token of the batch (exact under the causal mask:
    later tokens never reach an end-of-text row), so short captions cost less than the full context.
    """
    eot = token_ids.argmax(dim=-1)
    length = int(eot.max()) + 1
    ids = token_ids[:, :length]
    x = tower.token_embedding(ids) + tower.positional_embedding[:length]
    mask = None if tower.attn_mask is None else tower.attn_mask[:length, :length]
    x = tower.ln_final(tower.transformer(x, attn_mask=mask))
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    proj = tower.text_projection
    if isinstance(proj, nn.Linear):
        return proj(x)
    return x @ proj if proj is not None else x


@torch.no_grad()
def encode_texts(
    tower: nn.Module,
    captioner: Captioner,
    texts: Sequence[str],
    batch_size: int = 256,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(N, E) L2-normalised text features of ``texts``."""
    out = []
    for i in range(0, len(texts), batch_size):
        ids = captioner.tokenize(texts[i : i + batch_size]).to(device or "cpu")
        out.append(F.normalize(encode_text(tower, ids).float(), dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 1)


@torch.no_grad()
def zero_shot_report(
    image_feats: torch.Tensor,
    attributes: Sequence[Mapping[str, str]],
    tower: nn.Module,
    captioner: Captioner,
    schema: AttributeSchema,
) -> dict[str, Any]:
    """Per attribute: accuracy of picking the image's value among all vocabulary values by text prompts.

    ``chance`` = 1 / number of values (the issue's control, behind ``normalized``); values are not equally
    frequent (most people wear no hat), so ``majority`` (always guessing the most frequent value) and the
    class-balanced accuracy (mean recall over the values present, chance ``balanced_chance``) stand beside it.

    ``image_feats``: (N, E) L2-normalised; ``attributes``: the N images' records.
    """
    per: dict[str, Any] = {}
    device = image_feats.device
    for key in captioner.zero_shot_keys:
        try:
            values = list(schema.vocabulary(key).values)
        except ConfigValueError:
            continue
        rows = [i for i, a in enumerate(attributes) if a and a.get(key) in values and key not in hidden_attributes(a)]
        if not rows or len(values) < 2:
            continue
        text = encode_texts(tower, captioner, captioner.zero_shot_prompts(key, values), device=device)
        pred = (image_feats[rows] @ text.t()).argmax(1).cpu()
        truth = torch.tensor([values.index(attributes[i][key]) for i in rows])
        acc = float((pred == truth).float().mean())
        chance = 1.0 / len(values)
        balanced = balanced_accuracy(pred, truth)
        present = int(truth.unique().numel())
        per[key] = {
            "accuracy": round(acc, 4),
            "chance": round(chance, 4),
            "normalized": round((acc - chance) / (1 - chance), 4),
            "majority": round(float(torch.bincount(truth).max()) / len(rows), 4),
            "balanced_accuracy": round(balanced, 4),
            "balanced_chance": round(1.0 / present, 4),
            "num_values": len(values),
            "num_images": len(rows),
        }
    norm = [v["normalized"] for v in per.values()]

    def mean_of(key: str) -> float | None:
        return round(float(np.mean([v[key] for v in per.values()])), 4) if per else None

    return {
        "attributes": per,
        "mean_normalized": round(float(np.mean(norm)), 4) if norm else None,
        "mean_accuracy": mean_of("accuracy"),
        "mean_chance": mean_of("chance"),
        "mean_majority": mean_of("majority"),
        "mean_balanced_accuracy": mean_of("balanced_accuracy"),
        "mean_balanced_chance": mean_of("balanced_chance"),
    }


@torch.no_grad()
def text_to_image_report(
    image_feats: torch.Tensor,
    pids: Sequence[int],
    attributes: Sequence[Mapping[str, str]],
    tower: nn.Module,
    captioner: Captioner,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Caption-to-image retrieval: each identity's canonical content caption ranks all N images.

    Returns (metrics {R1, R5, mAP, num_queries, num_images}, ranking {queries, pids, order}) where
    ``order`` is the (Q, N) ranking, for the picture.
    """
    pids_t = torch.as_tensor(list(pids))
    first: dict[int, int] = {}
    for i, p in enumerate(pids_t.tolist()):
        if attributes[i]:
            first.setdefault(p, i)
    qpids = sorted(first)
    if not qpids:
        return {"R1": None, "R5": None, "mAP": None, "num_queries": 0, "num_images": len(pids_t)}, {}
    queries = [captioner.caption(attributes[first[p]], "content", exclude=IDENTITY_EXCLUDE) for p in qpids]
    text = encode_texts(tower, captioner, queries, device=image_feats.device)
    order = (text @ image_feats.t()).argsort(dim=1, descending=True).cpu()
    match = pids_t[order] == torch.tensor(qpids)[:, None]
    hits = match.float()
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float32)
    ap = ((hits.cumsum(1) / ranks) * hits).sum(1) / hits.sum(1).clamp(min=1)
    metrics = {
        "R1": round(float(hits[:, :1].amax(1).mean()), 4),
        "R5": round(float(hits[:, :5].amax(1).mean()), 4),
        "mAP": round(float(ap.mean()), 4),
        "num_queries": len(qpids),
        "num_images": int(len(pids_t)),
        "chance_R1": round(float((hits.sum(1) / hits.shape[1]).mean()), 4),
    }
    return metrics, {"queries": queries, "pids": qpids, "order": order, "match": match}


def image_probe_ceiling(
    feats: torch.Tensor, pids: Sequence[int], attrs: Sequence[Mapping[str, str]], keys: Sequence[str]
) -> dict[str, Any]:
    """What the image tower encodes linearly: a linear probe per attribute, fitted on half of the held-out
    identities' (N, E) image features and scored (balanced accuracy) on the other half. Zero-shot choice by
    text can hardly beat it, so it says whether a missed attribute is missing from the image features or
    from their alignment with the words. An image whose view hides the attribute (glasses on a back view,
    :func:`~ppreid.synth.attributes.hidden_attributes`) is left out of that attribute's probe, as it is of
    its zero-shot score."""
    from ppreid.metrics.attribute_probe import probe_attributes

    first = set(sorted(set(pids))[::2])
    half = torch.tensor([p in first for p in pids])
    rows: dict[str, Any] = {}
    for key in keys:  # per key, only the images that show it (no glasses to read on a back view)
        shown = torch.tensor([bool(a) and key not in hidden_attributes(a) for a in attrs])
        train, test = half & shown, ~half & shown
        rows.update(
            probe_attributes(
                feats[train],
                [a for a, t in zip(attrs, train.tolist()) if t],
                feats[test],
                [a for a, t in zip(attrs, test.tolist()) if t],
                {"attributes": [key]},
            )["attributes"]
        )
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


def alignment_report(
    feats: torch.Tensor,
    pids: Sequence[int],
    attributes: Sequence[Mapping[str, str]],
    tower: nn.Module,
    captioner: Captioner,
    schema: AttributeSchema,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the :data:`ALIGNMENT_SECTIONS` of one set, the caption-to-image ranking for the picture).

    ``feats``: (N, E) L2-normalised image features; ``pids`` / ``attributes``: the N images' identities and
    records. The probes read the person attributes of the zero-shot prompts (``image_probe``) and the scene
    (``scene_probe``: :data:`SCENE_KEYS`); ``zero_shot_vs_probe`` scores zero-shot on the probe's scored half."""
    person = [k for k in captioner.zero_shot_keys if k in schema.identity_keys]
    t2i, ranking = text_to_image_report(feats, pids, attributes, tower, captioner)
    scene_keys = [k for k in SCENE_KEYS if k in schema.environment_keys]
    # the probes train (autograd): out of a test loop's inference mode, on a normal copy of the features
    with torch.inference_mode(False), torch.enable_grad():
        plain = feats.detach().clone()
        probe = image_probe_ceiling(plain, pids, attributes, person)
        scene = image_probe_ceiling(plain, pids, attributes, scene_keys)
    scored_pids = set(sorted(set(pids))[1::2])  # the probe's scored half
    scored = torch.tensor([p in scored_pids for p in pids])
    zs_scored = zero_shot_report(
        feats[scored], [a for a, s in zip(attributes, scored.tolist()) if s], tower, captioner, schema
    )
    sections = {
        "zero_shot": zero_shot_report(feats, attributes, tower, captioner, schema),
        "text_to_image": t2i,
        "image_probe": probe,
        "zero_shot_vs_probe": zero_shot_vs_probe(zs_scored, probe, person),
        "scene_probe": scene,
    }
    return sections, ranking


def alignment_picture(
    path: Path, ranking: Mapping[str, Any], image_paths: Sequence[str], num_queries: int = 6, topk: int = 6
) -> Path | None:
    """``path``: one row per caption query (text left), its top-k images (green border: the person)."""
    from PIL import Image, ImageDraw

    from ppreid.synth.grid import _font

    if not ranking or num_queries <= 0:
        return None
    queries = ranking["queries"][:num_queries]
    with Image.open(image_paths[0]) as im:
        w, h = im.size
    text_w, gap, border = 260, 4, 2
    sheet = Image.new("RGB", (text_w + topk * (w + gap) + gap, len(queries) * (h + gap) + gap), (255, 255, 255))
    draw, font = ImageDraw.Draw(sheet), _font(10)
    for r, query in enumerate(queries):
        y = gap + r * (h + gap)
        lines, line = [], ""
        for word in query.split():
            if len(line) + len(word) > 44:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        draw.multiline_text((2, y), "\n".join(lines[: max(1, h // 12)]), fill=(0, 0, 0), font=font, spacing=1)
        for c in range(min(topk, ranking["order"].shape[1])):
            idx = int(ranking["order"][r, c])
            ok = bool(ranking["match"][r, c])
            x = text_w + gap + c * (w + gap)
            with Image.open(image_paths[idx]) as im:
                sheet.paste(im.convert("RGB").resize((w, h)), (x, y))
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(0, 170, 0) if ok else (210, 0, 0), width=border)
    path = Path(path)
    sheet.save(path)
    return path
