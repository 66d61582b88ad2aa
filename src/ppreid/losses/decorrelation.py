"""Decorrelation of two feature sets of the same images (PDM's content vs style prompt features).

The two sets are compared across the batch, after each is centred on its batch mean and scaled to unit
variance per dimension: a constant offset added to either set (a feature that says the same thing of
every image) changes nothing, so the penalty can only be met by making what varies in one set carry no
linear information about what varies in the other.
"""

from __future__ import annotations

import torch


def cross_correlation_penalty(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean squared cross-correlation between the dimensions of ``a`` (B, E1) and ``b`` (B, E2).

    Each column is centred on its batch mean and divided by its batch standard deviation (biased, + eps
    under the root); C = a_hat.T @ b_hat / B is the (E1, E2) matrix of Pearson correlations, and the
    penalty is mean(C ** 2), in [0, 1]. Invariant to a constant offset and to a per-dimension scale of
    either input. Fewer than two rows: 0 (no variation to correlate).
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(
            f"cross_correlation_penalty: expected (B, E1) and (B, E2) of the same images, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}."
        )
    if a.shape[0] < 2:
        return (a.sum() + b.sum()) * 0.0
    a, b = a.float(), b.float()

    def standardize(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(dim=0, keepdim=True)
        return x / (x.pow(2).mean(dim=0, keepdim=True) + eps).sqrt()

    corr = standardize(a).t() @ standardize(b) / a.shape[0]
    return corr.pow(2).mean()
