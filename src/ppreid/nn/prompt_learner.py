"""CLIP-ReID's identity prompt learner: learnable context words per training identity.

Each identity i owns ``num_words`` token embeddings (the ``X X X X`` of ``A photo of a X X X X
person.``), learned in stage 1 so that the prompt's text feature describes the identity.
"""

from __future__ import annotations

import torch
from torch import nn


class IdentityPromptLearner(nn.Module):
    """labels (B,) -> (B, num_words, token_dim) context vectors; weights ``ctx`` (num_classes, num_words, token_dim)."""

    def __init__(self, num_classes: int, num_words: int, token_dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.ctx = nn.Parameter(torch.randn(int(num_classes), int(num_words), int(token_dim)) * init_std)

    @property
    def num_classes(self) -> int:
        return int(self.ctx.shape[0])

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.ctx[labels.long()]
