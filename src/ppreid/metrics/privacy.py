"""Reversibility of features, scored on reconstructed images: per-image SSIM and PSNR, and the
identity-leakage scale (chance rank-1 of a random ranking, leakage normalized between chance and the
judge's rank-1 on real images).

``ssim`` and ``psnr`` take (B,C,H,W) images in [0, data_range] (C=3 for our RGB reconstructions) and return one
value per image (B,), so a caller can average, take medians or keep per-identity numbers. SSIM
is differentiable and doubles as a privacy loss (the extractor makes reconstructions dissimilar
to its input).
"""

from __future__ import annotations

import torch

from ppreid.utils.errors import ConfigValueError

# Slack on the [0, data_range] check: float rounding and resampling overshoot pass,
# ImageNet-normalised inputs (values down to about -2.1) do not.
RANGE_TOLERANCE = 1e-3


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; half / bfloat16 are promoted to float32 so the statistics stay accurate."""
    return torch.promote_types(x.dtype, torch.float32)


def _check_images(name: str, x: torch.Tensor, y: torch.Tensor, data_range: float, check_range: bool) -> None:
    if x.dim() != 4 or y.dim() != 4:
        raise ValueError(
            f"{name}: expects (B,C,H,W) image batches, got shapes {tuple(x.shape)} and {tuple(y.shape)}; "
            "add a batch dimension with x.unsqueeze(0)."
        )
    if x.shape != y.shape:
        raise ValueError(f"{name}: shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}; compare images of one size.")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(
            f"{name}: expects float images in [0, {data_range}], got {x.dtype} and {y.dtype}; "
            "convert uint8 images with x.float() / 255."
        )
    if not data_range > 0:
        raise ConfigValueError(f"{name}: data_range={data_range}; use the images' value range (1.0 for [0, 1]).")
    if check_range and x.numel() > 0:
        lo = torch.minimum(x.detach().amin(), y.detach().amin())
        hi = torch.maximum(x.detach().amax(), y.detach().amax())
        tol = RANGE_TOLERANCE * data_range
        in_range = (lo >= -tol) & (hi <= data_range + tol)  # False for NaN too
        if not bool(in_range):
            raise ValueError(
                f"{name}: image values span [{lo.item():.4g}, {hi.item():.4g}], outside [0, {data_range}]; "
                "undo the mean/std normalisation first, or pass the right data_range."
            )


def gaussian_window(window_size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """(window_size,) normalised 1-D Gaussian, centred; its outer product is the 2-D SSIM window."""
    coords = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _band(n: int, g: torch.Tensor) -> torch.Tensor:
    """(n, n-k+1) matrix whose column j holds the k-tap window ``g`` at rows j..j+k-1: ``maps @ band``
    is the 'valid' filtering of the last axis. Products with it are the same sums as a convolution and
    much faster on CPUs than single-channel convolutions (the SSIM loss runs every training step)."""
    k = g.numel()
    offset = torch.arange(n, device=g.device)[:, None] - torch.arange(n - k + 1, device=g.device)[None, :]
    inside = (offset >= 0) & (offset < k)
    return torch.where(inside, g[offset.clamp(0, k - 1)], g.new_zeros(()))


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    *,
    check_range: bool = True,
) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004): (B,C,H,W), (B,C,H,W) -> (B,); the mean of :func:`ssim_map`.

    Local statistics under a Gaussian window (11 taps, sigma 1.5), population (biased)
    variances, C1 = (k1 * data_range)^2, C2 = (k2 * data_range)^2; the SSIM map is computed
    per channel on the 'valid' region (no padding) and averaged over channels and positions.
    This is skimage's ``structural_similarity(x, y, channel_axis=0, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)`` and pytorch_msssim's
    ``ssim(x, y, data_range=1, size_average=False)``. Differentiable in x and y.

    Images smaller than the window in H or W raise ValueError. ``check_range`` checks that
    the values lie in [0, data_range] (one device sync); turn it off in hot loops whose
    inputs are known to be in range. The result has x's dtype, at least float32.
    """
    return ssim_map(x, y, data_range, window_size, sigma, k1, k2, check_range=check_range).mean(dim=(1, 2))


def ssim_map(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    *,
    check_range: bool = True,
) -> torch.Tensor:
    """The SSIM map of :func:`ssim`, averaged over channels: (B,C,H,W), (B,C,H,W) -> (B,H-k+1,W-k+1), one
    value per window centre of the 'valid' region (k = ``window_size``; the centre of entry (i, j) is pixel
    (i + k // 2, j + k // 2)). Region scores (:func:`region_ssim`) average it inside a mask."""
    _check_images("ssim", x, y, data_range, check_range)
    if int(window_size) != window_size or window_size < 1 or window_size % 2 == 0:
        raise ConfigValueError(f"ssim: window_size={window_size}; use an odd positive size (11 is the standard).")
    if not sigma > 0 or k1 < 0 or k2 < 0:
        raise ConfigValueError(
            f"ssim: sigma={sigma}, k1={k1}, k2={k2}; need sigma > 0 and k1, k2 >= 0 (standard: 1.5, 0.01, 0.03)."
        )
    b, c, h, w = x.shape
    window_size = int(window_size)
    if h < window_size or w < window_size:
        raise ValueError(
            f"ssim: images are {h}x{w}, smaller than the {window_size}x{window_size} Gaussian window; "
            f"use images of at least {window_size}x{window_size} or a smaller window_size."
        )
    dtype = _compute_dtype(x)
    x, y = x.to(dtype), y.to(dtype)
    # Subtracting a per-(image, channel) constant leaves (co)variances unchanged and avoids
    # the cancellation of E[x^2] - E[x]^2 on smooth images in float32.
    shift = (0.5 * (x + y)).detach().mean(dim=(2, 3), keepdim=True)
    xc, yc = x - shift, y - shift

    g = gaussian_window(window_size, sigma, dtype=dtype, device=x.device)
    maps = torch.stack([xc, yc, xc * xc, yc * yc, xc * yc])  # (5,B,C,H,W)
    maps = maps @ _band(w, g)  # valid along W: (5,B,C,H,W-k+1)
    maps = _band(h, g).transpose(0, 1) @ maps  # valid along H: (5,B,C,H-k+1,W-k+1)
    mu_xc, mu_yc, e_xx, e_yy, e_xy = maps

    var_x = e_xx - mu_xc * mu_xc
    var_y = e_yy - mu_yc * mu_yc
    cov_xy = e_xy - mu_xc * mu_yc
    mu_x, mu_y = mu_xc + shift, mu_yc + shift
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    contrast_structure = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    return (luminance * contrast_structure).mean(dim=1)


def region_ssim(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, window_size: int = 11, **kwargs) -> torch.Tensor:
    """Per-image SSIM inside a region: the mean of the SSIM map over the window centres that lie in ``mask``.

    x, y (B,C,H,W) images in [0, 1]; mask (B,1,H,W) or (B,H,W) bool at the images' size (True = in the
    region). The SSIM map holds one value per window centre of the 'valid' region, so the mask is cropped
    by ``window_size // 2`` on every side to line up with it. Images whose region holds no centre give NaN
    (average with ``nanmean``). Returns (B,)."""
    if mask.dim() == 4:
        mask = mask[:, 0]
    if mask.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(
            f"region_ssim: mask of shape {tuple(mask.shape)} for images {tuple(x.shape)}; give (B,1,H,W) at the images' size."
        )
    maps = ssim_map(x, y, window_size=window_size, **kwargs)  # (B,H',W')
    r = int(window_size) // 2
    inside = mask[:, r : r + maps.shape[1], r : r + maps.shape[2]].to(maps.dtype)
    return (maps * inside).sum(dim=(1, 2)) / inside.sum(dim=(1, 2))  # 0 / 0 = NaN: no centre in the region


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, *, check_range: bool = True) -> torch.Tensor:
    """Per-image PSNR in dB: (B,C,H,W), (B,C,H,W) -> (B,), 10 * log10(data_range^2 / MSE).

    MSE is the mean over C, H, W of each image. Identical images give +inf (as skimage's
    ``peak_signal_noise_ratio``), so a mean over a batch that holds one is +inf too: report
    medians or drop infinite entries where that matters. The result has x's dtype, at least float32.
    """
    _check_images("psnr", x, y, data_range, check_range)
    dtype = _compute_dtype(x)
    mse = (x.to(dtype) - y.to(dtype)).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse)


def random_rank1(q_pids: torch.Tensor, g_pids: torch.Tensor, q_camids: torch.Tensor, g_camids: torch.Tensor) -> float:
    """Expected rank-1 of a random ranking under the Market protocol: per query, the share of true matches
    among the gallery entries it may be ranked against (same pid *and* camera dropped, which drops the
    query itself when query and gallery are one set), averaged over the queries with a match left."""
    same_pid = q_pids.view(-1, 1) == g_pids.view(1, -1)
    kept = ~(same_pid & (q_camids.view(-1, 1) == g_camids.view(1, -1)))
    matches = (same_pid & kept).sum(1).float()
    valid = matches > 0
    if not bool(valid.any()):
        return float("nan")
    return float((matches[valid] / kept.sum(1)[valid].float()).mean())


def normalized_leakage(leak_r1: float, chance_r1: float, reference_r1: float) -> float | None:
    """``(leak - chance) / (reference R1 - chance)``: 0 = the reconstructions identify people no better than
    chance, 1 = as well as the real images do (both judged by one extractor). None when undefined."""
    if any(v is None or v != v for v in (leak_r1, chance_r1, reference_r1)) or reference_r1 - chance_r1 <= 1e-9:
        return None
    return (leak_r1 - chance_r1) / (reference_r1 - chance_r1)


def swap_gain(
    own: torch.Tensor, other: torch.Tensor, real: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The swap test: what a reconstruction says about *this* photo beyond the person.

    own = A(f_i), other = A(f_j) with j another image of the same identity, real = x_i, all (B,3,H,W) in
    [0, 1]; returns SSIM(A(f_i), x_i) - SSIM(A(f_j), x_i) per image (B,) (with ``mask`` (B,1,H,W) bool: the
    SSIM inside that region, :func:`region_ssim`). 0: the feature says nothing about image i that image j's
    feature of the same person does not say too."""
    if mask is None:
        return ssim(own, real) - ssim(other, real)
    return region_ssim(own, real, mask) - region_ssim(other, real, mask)


def gain_over_baseline(score: float | None, null: float | None, mean_image: float | None) -> float | None:
    """``score - max(null, mean image)``: an attacker's SSIM above the better of the two feature-blind
    guesses (its null, the same attacker on shuffled features, and the mean training image). A null
    that memorizes its training images scores below the mean image, so a gain over the null alone would
    count that weakness as leak. None when the score or both baselines are undefined."""
    baselines = [v for v in (null, mean_image) if v is not None and v == v]
    if score is None or score != score or not baselines:
        return None
    return float(score) - max(baselines)
