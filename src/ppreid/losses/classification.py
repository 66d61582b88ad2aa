"""Identity classification losses."""

from __future__ import annotations

import torch
from torch import nn

from ppreid.utils.errors import ConfigValueError


class CrossEntropyLabelSmooth(nn.CrossEntropyLoss):
    """Cross-entropy against smoothed targets (1-eps)*onehot + eps/C (Szegedy et al. 2016; BoT).

    forward(logits (B,C), targets (B,) int) -> scalar, averaged over the batch.

    torch's ``nn.CrossEntropyLoss(label_smoothing=eps)``, which has exactly this definition
    (tests/test_losses.py checks it on a hand case), with BoT's name and a range check. Under CPU bf16
    autocast torch computes it in fp32. (Until the sandbox v2 data our own bf16 ``log_softmax`` version
    stood here, so that the package refactor kept every run's numbers.)
    """

    input_kind = "logits"

    def __init__(self, epsilon: float = 0.1) -> None:
        if not 0.0 <= epsilon < 1.0:
            raise ConfigValueError(f"CrossEntropyLabelSmooth: epsilon={epsilon}; must be in [0, 1) (BoT uses 0.1).")
        super().__init__(label_smoothing=float(epsilon))
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return super().forward(logits, targets.long())
