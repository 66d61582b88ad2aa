"""A small residual CNN that trains in minutes on 2 CPU cores: the default for the embedded data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ppreid.nn.backbones.pretrained import load_pretrained
from ppreid.utils.errors import ConfigValueError


def _conv_bn(c_in: int, c_out: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with a projected shortcut when shape changes (ResNet-18 style)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1)
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if (stride != 1 or c_in != c_out) else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + self.shortcut(x))


class TinyCNN(nn.Module):
    """(B,3,H,W) -> feature map (B,out_dim,H/s,W/s).

    A stride-2 stem to channels[0], then one stage per further entry of `channels`, each
    stride 2 except the last (`last_stride`). Defaults: 4 stages, s=16 (128x64 -> 8x4).
    Inputs are normalized with the ImageNet mean / std (`input_mean`, `input_std`).
    """

    input_mean = (0.485, 0.456, 0.406)
    input_std = (0.229, 0.224, 0.225)

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128, 256),
        out_dim: int = 256,
        pretrained: str | None = None,
        last_stride: int = 2,
        blocks_per_stage: int = 1,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) < 2 or min(channels) < 1 or last_stride not in (1, 2) or blocks_per_stage < 1:
            raise ConfigValueError(
                f"TinyCNN: channels={channels}, last_stride={last_stride}, blocks_per_stage={blocks_per_stage}; "
                "need >= 2 positive channel counts, last_stride 1 or 2, blocks_per_stage >= 1."
            )
        self.stem = nn.Sequential(_conv_bn(3, channels[0], 3, 2), nn.ReLU(inplace=True))
        stages = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            stride = last_stride if i == len(channels) - 2 else 2
            blocks = [BasicBlock(c_in, c_out, stride)]
            blocks += [BasicBlock(c_out, c_out, 1) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.proj = (
            nn.Sequential(_conv_bn(channels[-1], out_dim, 1, 1), nn.ReLU(inplace=True))
            if out_dim != channels[-1]
            else nn.Identity()
        )
        self.out_dim = int(out_dim)
        self._init_weights()
        load_pretrained(self, pretrained, kind="tiny_cnn")

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each residual branch: blocks start as identity
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.conv2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stages(self.stem(x)))
