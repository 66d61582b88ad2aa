"""The one image path of the privacy audit: normalized model input <-> [0, 1] images at any size.

Every attacker, the control and the scores see images in [0, 1] at the attack size (B,3,h,w); every
extractor (audited or reference) sees its own input size and mean / std normalization. ``ImageSpace``
holds one such input convention and converts both ways.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ppreid.metrics.images import resize_images as resize  # the one resize path of defences and audit


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> uint8 on the CPU (a compact store of many images)."""
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()


class ImageSpace:
    """An extractor's input convention: size (H, W) and per-channel mean / std."""

    def __init__(self, size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> None:
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.mean = torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1)
        self.std = torch.tensor([float(v) for v in std]).view(1, 3, 1, 1)

    @classmethod
    def from_spec(cls, spec: dict) -> ImageSpace:
        """From a checkpoint's build spec (``spec["input"]``: height, width, mean, std)."""
        inp = spec["input"]
        return cls((inp["height"], inp["width"]), inp["mean"], inp["std"])

    def to_unit(self, normalized: torch.Tensor) -> torch.Tensor:
        """Model input (B,3,H,W) -> [0, 1] images, same size."""
        return (normalized * self.std.to(normalized) + self.mean.to(normalized)).clamp(0.0, 1.0)

    def from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        """[0, 1] images at any size -> model input (B,3,H,W) at this space's size. Differentiable."""
        return (resize(unit, self.size) - self.mean.to(unit)) / self.std.to(unit)
