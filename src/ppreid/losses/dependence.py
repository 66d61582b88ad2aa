"""Dependence between two batches of vectors, and the within-identity form a ReID gallery cares about.

A defence without an adversary penalises how much the stored feature depends on the image it was
extracted from (NoPeek, Vepakomma et al. 2020: distance correlation; BiDO, Peng et al. KDD 2022: HSIC).
ReID *needs* the feature to depend on the identity, so the penalty looks only at what varies **within
an identity** of the P x K batch (pose, background, light, camera): both the features and the images
are replaced by their residuals from their identity's mean in the batch before the measure is taken.

Inputs are (N,D) and (N,E) float tensors (images flattened); every measure returns a scalar in [0, 1]
(0: no dependence seen in the sample) that is differentiable in both inputs.
"""

from __future__ import annotations

import torch

from ppreid.utils.errors import ConfigValueError


def _distances(x: torch.Tensor) -> torch.Tensor:
    """(N,D) -> (N,N) Euclidean distances; the diagonal's gradient is 0, not NaN."""
    sq = x.pow(2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    far = d2 > 1e-10 * (1.0 + sq.max().detach())
    return torch.where(far, d2.clamp_min(1e-30).sqrt(), torch.zeros_like(d2))


def _double_centred(d: torch.Tensor) -> torch.Tensor:
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation (Szekely et al. 2007) of x (N,D) and y (N,E): 0 when the sample shows
    no dependence, 1 for y an isometry of x up to scale (e.g. y = a x + b); 0 when either is constant."""
    _pair("distance_correlation", x, y)
    a, b = _double_centred(_distances(x.flatten(1))), _double_centred(_distances(y.flatten(1)))
    dcov2, dvar_x, dvar_y = (a * b).mean(), (a * a).mean(), (b * b).mean()
    denom = (dvar_x * dvar_y).sqrt()
    if float(denom.detach()) <= 1e-12:
        return x.new_zeros(()) + 0.0 * (x.sum() + y.sum())
    return (dcov2.clamp_min(0.0) / denom + 1e-12).sqrt()


def _gaussian_kernel(x: torch.Tensor, sigma: float | None) -> torch.Tensor:
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0.0)
    if sigma is None:  # median heuristic, fixed for this batch (no gradient through the bandwidth)
        off = d2.detach()[~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)]
        width2 = off.median().clamp_min(1e-12)
    else:
        width2 = torch.tensor(float(sigma) ** 2, device=x.device, dtype=x.dtype)
    return torch.exp(-d2 / (2.0 * width2))


def _hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    h = torch.eye(n, device=k.device, dtype=k.dtype) - 1.0 / n
    return torch.trace(k @ h @ l @ h) / (n - 1) ** 2


def normalized_hsic(x: torch.Tensor, y: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """HSIC(x, y) / sqrt(HSIC(x, x) HSIC(y, y)) with Gaussian kernels (BiDO's measure, normalized as
    in CKA). ``sigma``: the kernel width, or None for the median heuristic of each input."""
    _pair("normalized_hsic", x, y)
    k, l = _gaussian_kernel(x.flatten(1), sigma), _gaussian_kernel(y.flatten(1), sigma)
    hsic_kk, hsic_ll = _hsic(k, k), _hsic(l, l)
    if min(float(hsic_kk.detach()), float(hsic_ll.detach())) <= 1e-8:  # a constant input (kernel values are <= 1)
        return x.new_zeros(()) + 0.0 * (x.sum() + y.sum())
    return (_hsic(k, l) / (hsic_kk * hsic_ll).sqrt()).clamp_min(0.0)


DEPENDENCE_MEASURES = {"dcor": distance_correlation, "hsic": normalized_hsic}


def within_identity_residuals(x: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
    """(N,...) -> (N,...): each row minus the mean of the rows of its identity in the batch (values below
    float rounding of the input's scale are set to 0, so a kernel with an adaptive width sees no noise)."""
    _, inverse = torch.unique(pids, return_inverse=True)
    flat = x.flatten(1)
    sums = flat.new_zeros(int(inverse.max()) + 1, flat.shape[1]).index_add_(0, inverse, flat)
    counts = torch.bincount(inverse).to(flat.dtype)[:, None]
    res = flat - (sums / counts)[inverse]
    tiny = 1e-5 * float(flat.detach().abs().max())
    return torch.where(res.abs() > tiny, res, torch.zeros_like(res)).view_as(x)


def within_identity_dependence(
    feat: torch.Tensor, images: torch.Tensor, pids: torch.Tensor, measure: str = "dcor", sigma: float | None = None
) -> torch.Tensor:
    """Dependence between feature (N,D) and image (N,3,H,W) residuals from their identity's batch mean:
    what the feature keeps of an image beyond its identity."""
    if measure not in DEPENDENCE_MEASURES:
        raise ConfigValueError(
            f"dependence measure={measure!r} is unknown; use one of {', '.join(DEPENDENCE_MEASURES)}."
        )
    fx, fy = within_identity_residuals(feat, pids), within_identity_residuals(images, pids).flatten(1)
    if measure == "hsic":
        return normalized_hsic(fx, fy, sigma)
    return distance_correlation(fx, fy)


def _pair(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"{name}: needs the same number (>= 2) of rows in x and y, got {x.shape[0]} and {y.shape[0]}.")
