"""Normalized network inputs -> [0, 1] images at the size reconstructions are made and scored at."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize_images(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B,3,H,W) -> (B,3,h,w), bilinear, antialiased when shrinking; unchanged at the same size."""
    size = tuple(int(s) for s in size)
    if tuple(images.shape[-2:]) == size:
        return images
    shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def to_unit_images(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Normalized (B,3,H,W) -> (B,3,h,w) in [0, 1] at ``size``: un-normalize, resize, clamp.

    ``mean`` / ``std`` are (1,3,1,1) tensors of the input normalization.
    """
    return resize_images(images * std + mean, size).clamp(0.0, 1.0)
