"""Feature -> image decoder: the generator of the feature-reversal module, and the L1 / GAN attackers.

A linear layer lifts the feature (B,D) to a small map (B,C,h0,w0), n residual up-sampling
blocks double its size n times, and a 3x3 conv plus the output activation give an
image (B,3,H,W) in [0, 1] with H = h0 * 2^n, W = w0 * 2^n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ppreid.utils.errors import ConfigValueError

NORMS = ("batch", "group", "none")
ACTIVATIONS = ("relu", "leaky_relu")
OUT_ACTIVATIONS = ("sigmoid", "clamp")


def image_hw(name: str, image_size: Sequence[int]) -> tuple[int, int]:
    """(H, W) from a 2-sequence of positive ints (a Hydra ListConfig works too)."""
    size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigValueError(f"{name}: image_size={list(image_size)}; give [height, width], e.g. [256, 128].")
    return size


def auto_num_upsamples(height: int, width: int) -> int:
    """The largest n with H and W divisible by 2^n and the smaller side of the start map >= 2.

    128x64 -> 5 (start 4x2), 256x128 -> 6 (start 4x2), 32x16 -> 3 (start 4x2).
    """
    n = 0
    while height % 2 ** (n + 1) == 0 and width % 2 ** (n + 1) == 0 and min(height, width) // 2 ** (n + 1) >= 2:
        n += 1
    return n


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, groups), channels)
    return nn.Identity()


def _act(kind: str) -> nn.Module:
    return nn.ReLU(inplace=True) if kind == "relu" else nn.LeakyReLU(0.2, inplace=True)


class ResUpBlock(nn.Module):
    """(B,c_in,h,w) -> (B,c_out,2h,2w): act(norm(conv(act(norm(conv(up(x)))))) + conv1x1(up(x)))."""

    def __init__(self, c_in: int, c_out: int, norm: str, activation: str, norm_groups: int) -> None:
        super().__init__()
        bias = norm == "none"
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.main = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias),
            _norm(norm, c_out, norm_groups),
            _act(activation),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=bias),
            _norm(norm, c_out, norm_groups),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1)
        self.act = _act(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.act(self.main(x) + self.skip(x))


class FeatureDecoder(nn.Module):
    """feature (B,feat_dim) -> image (B,3,H,W) in [0, 1].

    Start map (base_channels, H/2^n, W/2^n); block i outputs max(base_channels / 2^(i+1),
    min_channels) channels. ``num_upsamples`` (n) defaults to ``auto_num_upsamples``
    (4x2 start maps for 128x64 and 256x128); H and W must be divisible by 2^n.
    ``norm``: batch | group (gcd(channels, norm_groups) groups) | none; ``activation``:
    relu | leaky_relu (slope 0.2); ``out_activation``: sigmoid (default) | clamp (to [0, 1]).
    """

    def __init__(
        self,
        feat_dim: int,
        image_size: Sequence[int],
        base_channels: int = 256,
        min_channels: int = 32,
        num_upsamples: int | None = None,
        out_activation: str = "sigmoid",
        norm: str = "batch",
        activation: str = "relu",
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        height, width = image_hw("FeatureDecoder", image_size)
        if feat_dim < 1 or base_channels < 1 or min_channels < 1 or norm_groups < 1:
            raise ConfigValueError(
                f"FeatureDecoder: feat_dim={feat_dim}, base_channels={base_channels}, min_channels={min_channels}, "
                f"norm_groups={norm_groups}; all must be >= 1."
            )
        if min_channels > base_channels:
            raise ConfigValueError(
                f"FeatureDecoder: min_channels={min_channels} > base_channels={base_channels}; "
                "channels halve from base_channels down to min_channels, so lower min_channels."
            )
        for key, value, choices in (
            ("norm", norm, NORMS),
            ("activation", activation, ACTIVATIONS),
            ("out_activation", out_activation, OUT_ACTIVATIONS),
        ):
            if value not in choices:
                raise ConfigValueError(f"FeatureDecoder: {key}={value!r} is unknown; use one of {', '.join(choices)}.")
        if num_upsamples is None:
            num_upsamples = auto_num_upsamples(height, width)
            if num_upsamples == 0:
                raise ConfigValueError(
                    f"FeatureDecoder: image_size={[height, width]} has no factor 2 to up-sample by; "
                    "use a height and width divisible by 2^n (e.g. [128, 64] or [256, 128])."
                )
        if int(num_upsamples) < 0:
            raise ConfigValueError(
                f"FeatureDecoder: num_upsamples={num_upsamples}; use an int >= 0, or null to choose it."
            )
        scale = 2 ** int(num_upsamples)
        if height % scale or width % scale:
            raise ConfigValueError(
                f"FeatureDecoder: image_size={[height, width]} is not divisible by 2^num_upsamples = {scale}; "
                "pick num_upsamples so that both sides are (or leave it null to choose it)."
            )
        self.feat_dim, self.image_size, self.num_upsamples = int(feat_dim), (height, width), int(num_upsamples)
        self.start_shape = (int(base_channels), height // scale, width // scale)

        channels = [max(int(base_channels) >> i, int(min_channels)) for i in range(self.num_upsamples + 1)]
        self.fc = nn.Linear(self.feat_dim, math.prod(self.start_shape))
        self.blocks = nn.Sequential(
            *(ResUpBlock(c_in, c_out, norm, activation, norm_groups) for c_in, c_out in zip(channels, channels[1:]))
        )
        self.to_rgb = nn.Conv2d(channels[-1], 3, 3, padding=1)
        self.out_activation = out_activation

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        if feat.dim() != 2 or feat.shape[1] != self.feat_dim:
            raise ValueError(f"FeatureDecoder: expects features (B,{self.feat_dim}), got {tuple(feat.shape)}.")
        x = self.fc(feat).view(feat.shape[0], *self.start_shape)
        x = self.to_rgb(self.blocks(x))
        return torch.sigmoid(x) if self.out_activation == "sigmoid" else x.clamp(0.0, 1.0)
