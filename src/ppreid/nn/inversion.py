"""Textual inversion network: an image embedding -> pseudo-word token embeddings (SEARLE / Pic2Word style).

PDM uses two: phi_c maps an image to the words of its *content* (identity), phi_s to the words of
its *style* (domain). The words replace placeholder tokens of a prompt template (src/ppreid/nn/prompts.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ppreid.utils.errors import ConfigValueError


class TextualInversion(nn.Module):
    """(B, embed_dim) image embeddings -> (B, num_words, token_dim) pseudo-word embeddings.

    An MLP: ``num_layers`` hidden blocks of Linear -> GELU -> Dropout (width ``hidden_dim``), then a
    Linear to ``num_words * token_dim``. The output is rescaled to ``word_norm`` per word (the typical
    norm of CLIP token embeddings) when given, so pseudo-words live where real words do. ``word_norm`` is
    a buffer: a checkpoint carries the value training used (a resumed or evaluation run does not
    recompute it from a text tower that may differ).
    """

    def __init__(
        self,
        embed_dim: int,
        token_dim: int,
        num_words: int = 4,
        hidden_dim: int = 512,
        num_layers: int = 2,
        dropout: float = 0.5,
        word_norm: float | None = None,
    ) -> None:
        super().__init__()
        if num_words < 1 or num_layers < 0 or hidden_dim < 1:
            raise ConfigValueError(
                f"TextualInversion: num_words={num_words} (>= 1), num_layers={num_layers} (>= 0) "
                f"and hidden_dim={hidden_dim} (>= 1) are out of range."
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigValueError(f"TextualInversion: dropout={dropout} must be in [0, 1).")
        layers, width = [], int(embed_dim)
        for _ in range(int(num_layers)):
            layers += [nn.Linear(width, hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, num_words * token_dim))
        self.mlp = nn.Sequential(*layers)
        self.num_words, self.token_dim = int(num_words), int(token_dim)
        # 0 = no rescaling
        self.register_buffer("word_norm", torch.tensor(0.0 if word_norm is None else float(word_norm)))

    def _words(self, hidden: torch.Tensor) -> torch.Tensor:
        words = hidden.view(-1, self.num_words, self.token_dim)
        if float(self.word_norm) > 0:
            words = nn.functional.normalize(words, dim=-1) * self.word_norm
        return words

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self._words(self.mlp(image_features))

    def forward_paired(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Words of two aligned batches (B, E) under the **same** dropout masks (row i of ``a`` and of
        ``b`` share one mask), so identical inputs give identical words in training mode too."""
        x = torch.cat([a, b])
        for layer in self.mlp:
            if isinstance(layer, nn.Dropout) and self.training and layer.p > 0:
                keep = torch.rand_like(x[: len(a)]) >= layer.p
                x = x * keep.repeat(2, 1) / (1.0 - layer.p)
            else:
                x = layer(x)
        words = self._words(x)
        return words[: len(a)], words[len(a) :]
