"""Identity classification losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ppreid.utils.errors import ConfigValueError


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against smoothed targets (1-eps)*onehot + eps/C (Szegedy et al. 2016; BoT).

    forward(logits (B,C), targets (B,) int) -> scalar, averaged over the batch.

    The same definition as torch's ``F.cross_entropy(..., label_smoothing=eps)`` (equal values and
    gradients in fp32: tests/test_losses.py), kept written out so that runs keep their numbers: under CPU
    bf16 autocast (``trainer.precision=bf16-mixed``) ``log_softmax`` stays in the logits' bf16 while
    torch's ``cross_entropy`` is upcast to fp32, and the library call moved the default run's losses.
    """

    input_kind = "logits"

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ConfigValueError(f"CrossEntropyLabelSmooth: epsilon={epsilon}; must be in [0, 1) (BoT uses 0.1).")
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(logits, dim=1)
        smooth = torch.full_like(log_probs, self.epsilon / logits.size(1))
        smooth.scatter_add_(1, targets.long().unsqueeze(1), torch.full_like(log_probs[:, :1], 1.0 - self.epsilon))
        return -(smooth * log_probs).sum(dim=1).mean()
