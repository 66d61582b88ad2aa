"""Feature-conditioned discriminator of the feature-reversal GAN: is this image the real one behind this feature?

A strided CNN maps an image (B,3,H,W) in [0, 1] to a pooled vector h (B,C); the score (B,)
is a raw logit for the losses of ppreid.losses.adversarial. The feature enters in one of two ways:

- ``projection`` (Miyato & Koyama 2018): score = linear(h) + <embed(feat), h>;
- ``concat``: a linear projection of the feature, broadcast over space, is concatenated as
  extra channels at the input (``concat_stage=0``) or after the s-th down-sampling stage.

Spectral norm (Miyato et al. 2018) wraps every conv and linear layer when enabled; there is
no batch norm, so the R1 penalty's per-image gradients stay independent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn_param

from ppreid.nn.feature_decoder import image_hw
from ppreid.utils.errors import ConfigValueError

CONDITIONINGS = ("projection", "concat")


def auto_num_downsamples(height: int, width: int) -> int:
    """Halve while the smaller side is >= 8, so the last map's smaller side is in [4, 8).

    128x64 -> 4 (8x4), 256x128 -> 5 (8x4), 32x16 -> 2 (8x4).
    """
    n, side = 0, min(height, width)
    while side >= 8:
        side //= 2
        n += 1
    return n


class FeatureConditionedDiscriminator(nn.Module):
    """(images (B,3,H,W) in [0, 1], feat (B,feat_dim)) -> scores (B,).

    Stem 3x3 conv to base_channels, ``num_downsamples`` stride-2 4x4 convs (channels doubling,
    capped at max_channels), a 3x3 conv, LeakyReLU(0.2) after each, global average pool -> h.
    ``num_downsamples`` defaults to ``auto_num_downsamples`` (8x4 last maps for 128x64 and
    256x128). ``concat`` conditioning joins ``concat_channels`` feature channels to the map after
    ``concat_stage`` down-samplings (0: the image). Images are mapped to [-1, 1] inside.
    """

    def __init__(
        self,
        feat_dim: int,
        image_size: Sequence[int],
        base_channels: int = 32,
        max_channels: int = 256,
        conditioning: str = "projection",
        spectral_norm: bool = True,
        num_downsamples: int | None = None,
        concat_channels: int = 16,
        concat_stage: int = 0,
    ) -> None:
        super().__init__()
        height, width = image_hw("FeatureConditionedDiscriminator", image_size)
        if conditioning not in CONDITIONINGS:
            raise ConfigValueError(
                f"FeatureConditionedDiscriminator: conditioning={conditioning!r} is unknown; "
                f"use one of {', '.join(CONDITIONINGS)}."
            )
        if feat_dim < 1 or base_channels < 1 or max_channels < base_channels or concat_channels < 1:
            raise ConfigValueError(
                f"FeatureConditionedDiscriminator: feat_dim={feat_dim}, base_channels={base_channels}, "
                f"max_channels={max_channels}, concat_channels={concat_channels}; need all >= 1 and "
                "max_channels >= base_channels."
            )
        if num_downsamples is None:
            num_downsamples = auto_num_downsamples(height, width)
        num_downsamples = int(num_downsamples)
        if num_downsamples < 0 or min(height, width) // 2**num_downsamples < 1:
            raise ConfigValueError(
                f"FeatureConditionedDiscriminator: num_downsamples={num_downsamples} for image_size="
                f"{[height, width]}; each halves the image, so use 0..{auto_num_downsamples(height, width)} "
                "(or null to choose it)."
            )
        if conditioning == "concat" and not 0 <= concat_stage <= num_downsamples:
            raise ConfigValueError(
                f"FeatureConditionedDiscriminator: concat_stage={concat_stage}; use 0 (the input) up to "
                f"num_downsamples={num_downsamples} (after the last down-sampling stage)."
            )
        self.feat_dim, self.image_size = int(feat_dim), (height, width)
        self.conditioning, self.num_downsamples = conditioning, num_downsamples
        self.concat_stage = int(concat_stage) if conditioning == "concat" else None
        wrap = sn_param if spectral_norm else (lambda layer: layer)

        k = int(concat_channels)

        def extra(after: int) -> int:
            """Feature channels joined to the map read after `after` >= 1 down-samplings."""
            return k if after >= 1 and after == self.concat_stage else 0

        channels = [min(int(base_channels) * 2**i, int(max_channels)) for i in range(num_downsamples + 1)]
        # concat_stage 0 joins the image itself; stage module i reads the map after i down-samplings
        # (the stem keeps the resolution) and `last` the one after all of them.
        self.stem = nn.Sequential(
            wrap(nn.Conv2d(3 + (k if self.concat_stage == 0 else 0), channels[0], 3, padding=1)), nn.LeakyReLU(0.2)
        )
        self.stages = nn.ModuleList(
            nn.Sequential(wrap(nn.Conv2d(c_in + extra(i), c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2))
            for i, (c_in, c_out) in enumerate(zip(channels, channels[1:]))
        )
        self.last = nn.Sequential(
            wrap(nn.Conv2d(channels[-1] + extra(num_downsamples), channels[-1], 3, padding=1)), nn.LeakyReLU(0.2)
        )
        self.out = wrap(nn.Linear(channels[-1], 1))
        if conditioning == "projection":
            self.embed = wrap(nn.Linear(self.feat_dim, channels[-1], bias=False))
        else:
            self.feat_proj = wrap(nn.Linear(self.feat_dim, k))

    def _with_feature(self, x: torch.Tensor, cond: torch.Tensor | None, stage: int) -> torch.Tensor:
        if cond is None or stage != self.concat_stage:
            return x
        return torch.cat([x, cond[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)

    def forward(self, images: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.image_size:
            raise ValueError(
                f"FeatureConditionedDiscriminator: expects images (B,3,{self.image_size[0]},{self.image_size[1]}), "
                f"got {tuple(images.shape)}; resize to the configured image_size."
            )
        if feat.dim() != 2 or feat.shape != (images.shape[0], self.feat_dim):
            raise ValueError(
                f"FeatureConditionedDiscriminator: expects features ({images.shape[0]},{self.feat_dim}) "
                f"for {images.shape[0]} images, got {tuple(feat.shape)}."
            )
        cond = self.feat_proj(feat) if self.conditioning == "concat" else None
        x = self.stem(self._with_feature(2.0 * images - 1.0, cond, 0))
        for i, stage in enumerate(self.stages):
            x = stage(self._with_feature(x, cond, i) if i >= 1 else x)
        if self.num_downsamples >= 1:
            x = self._with_feature(x, cond, self.num_downsamples)
        h = self.last(x).mean(dim=(2, 3))
        score = self.out(h)[:, 0]
        if self.conditioning == "projection":
            score = score + (self.embed(feat) * h).sum(dim=1)
        return score
