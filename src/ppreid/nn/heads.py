"""BNNeck (Bag of Tricks, Luo et al. 2019): BN between the triplet feature and the ID classifier.

The triplet loss sees the pooled feature; the classifier sees its batch-normalised version,
whose bias is frozen at zero so the BN output stays centred. The BN output is the feature
used for retrieval at test time.
"""

from __future__ import annotations

import torch
from torch import nn


class BNNeck(nn.Module):
    """feat (B,in_dim) -> (feat_bn (B,in_dim), logits (B,num_classes) or None before reset_classifier)."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int | None = None,
        bias_free_bn: bool = True,
        classifier_std: float = 0.001,
    ) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.classifier_std = classifier_std
        self.bn = nn.BatchNorm1d(self.in_dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        if bias_free_bn:
            self.bn.bias.requires_grad_(False)
        self.classifier: nn.Linear | None = None
        if num_classes:
            self.reset_classifier(num_classes)

    @property
    def num_classes(self) -> int | None:
        return None if self.classifier is None else self.classifier.out_features

    def reset_classifier(self, num_classes: int) -> None:
        """(Re)build the bias-free ID classifier once the number of training identities is known."""
        if int(num_classes) < 1:
            raise ValueError(f"BNNeck.reset_classifier: num_classes={num_classes}, need >= 1")
        device = self.bn.weight.device
        self.classifier = nn.Linear(self.in_dim, int(num_classes), bias=False, device=device)
        nn.init.normal_(self.classifier.weight, std=self.classifier_std)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feat_bn = self.bn(feat)
        logits = self.classifier(feat_bn) if self.classifier is not None else None
        return feat_bn, logits
