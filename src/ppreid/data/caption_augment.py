"""Augmentation that keeps a caption true (``model.augment`` of ``model=clip_pretrain``): a random resized
crop of small scale range and a horizontal flip, applied to the batch tensor, with the flipped image's
record mirrored so its caption says the mirrored viewpoint (left <-> right). No colour jitter: the
captions name colours."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ppreid.utils.errors import ConfigValueError

DEFAULT_AUGMENT: dict[str, Any] = {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "flip_prob": 0.0}
MIRRORED = {"left": "right", "right": "left"}


def mirror_record(record: Mapping[str, str]) -> dict[str, str]:
    """The record of the mirrored image: every ``left`` value becomes ``right`` and back (the viewpoint);
    nothing else a caption names changes under a horizontal flip."""
    return {k: MIRRORED.get(v, v) if isinstance(v, str) else v for k, v in record.items()}


def check_augment(augment: Mapping[str, Any] | None) -> dict[str, Any]:
    """``augment`` with defaults filled, or one line naming the bad value."""
    cfg = {**DEFAULT_AUGMENT, **dict(augment or {})}
    unknown = set(cfg) - set(DEFAULT_AUGMENT)
    if unknown:
        raise ConfigValueError(f"model.augment: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULT_AUGMENT)}.")
    lo, hi = (float(v) for v in cfg["crop_scale"])
    rlo, rhi = (float(v) for v in cfg["crop_ratio"])
    if not 0 < lo <= hi <= 1 or not 0 < rlo <= rhi or not 0 <= float(cfg["flip_prob"]) <= 1:
        raise ConfigValueError(
            f"model.augment={cfg}: need 0 < crop_scale[0] <= crop_scale[1] <= 1, 0 < crop_ratio[0] <= "
            "crop_ratio[1] and flip_prob in [0, 1]."
        )
    return {"crop_scale": [lo, hi], "crop_ratio": [rlo, rhi], "flip_prob": float(cfg["flip_prob"])}


def augment_batch(
    images: torch.Tensor, augment: Mapping[str, Any], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> (the augmented (B, 3, H, W), (B,) bool: flipped). A random resized crop per image
    (area a fraction in ``crop_scale`` of the image, aspect ``crop_ratio`` times the image's, placed
    uniformly, resized back bilinearly in one ``roi_align`` call) and a horizontal flip with ``flip_prob``.
    Photometry is untouched: the colours a caption names stay true."""
    from torchvision.ops import roi_align

    b, _, h, w = images.shape
    flipped = torch.rand(b, generator=generator) < float(augment["flip_prob"])
    lo, hi = augment["crop_scale"]
    rlo, rhi = augment["crop_ratio"]
    if (lo, hi) != (1.0, 1.0) or (rlo, rhi) != (1.0, 1.0):
        area = lo + (hi - lo) * torch.rand(b, generator=generator)
        log_r = math.log(rlo) + (math.log(rhi) - math.log(rlo)) * torch.rand(b, generator=generator)
        ratio = log_r.exp()  # relative to the image's own aspect
        ch = (h * (area / ratio).sqrt()).clamp(max=h)
        cw = (w * (area * ratio).sqrt()).clamp(max=w)
        y0 = (h - ch) * torch.rand(b, generator=generator)
        x0 = (w - cw) * torch.rand(b, generator=generator)
        boxes = torch.stack([torch.arange(b, dtype=torch.float32), x0, y0, x0 + cw, y0 + ch], 1)
        images = roi_align(images.float(), boxes.to(images.device), (h, w), aligned=True, sampling_ratio=2).to(
            images.dtype
        )
    if flipped.any():
        images = torch.where(flipped.to(images.device)[:, None, None, None], images.flip(-1), images)
    return images, flipped
