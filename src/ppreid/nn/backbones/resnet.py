"""ResNet-50 trunk for ReID (BoT baseline): torchvision layers, no avgpool/fc, last stride configurable."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from ppreid.nn.backbones.pretrained import StateDict, load_pretrained
from ppreid.utils.errors import ConfigValueError


def _imagenet_state() -> StateDict:
    """torchvision IMAGENET1K_V1 weights (downloads on first use: opt-in only)."""
    return resnet50(weights=ResNet50_Weights.IMAGENET1K_V1).state_dict()


def _drop_classifier(state: StateDict) -> StateDict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


class ResNet50(nn.Module):
    """(B,3,H,W) -> feature map (B,2048,H/16,W/16) with last_stride=1 (BoT), H/32 with 2.

    Parameter names equal torchvision's, so a torchvision state dict (with or without
    `fc.*`) loads directly.
    """

    out_dim: int = 2048
    input_mean = (0.485, 0.456, 0.406)  # ImageNet normalization, as torchvision's weights expect
    input_std = (0.229, 0.224, 0.225)

    def __init__(self, pretrained: str | None = None, last_stride: int = 1) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigValueError(f"ResNet50: last_stride={last_stride!r}; use 1 (BoT, H/16 map) or 2 (H/32 map).")
        net = resnet50(weights=None)
        block = net.layer4[0]
        block.conv2.stride = (last_stride, last_stride)
        block.downsample[0].stride = (last_stride, last_stride)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.last_stride = last_stride
        load_pretrained(self, pretrained, kind="resnet50", tags={"imagenet": _imagenet_state}, convert=_drop_classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
