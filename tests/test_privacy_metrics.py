"""ppreid.metrics.privacy: SSIM / PSNR on hand-worked cases and against an independent SciPy SSIM; the audit's
swap test, region SSIM and gain baseline on hand-worked images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage, signal

from ppreid.metrics.privacy import gain_over_baseline, psnr, region_ssim, ssim, ssim_map, swap_gain
from ppreid.utils.errors import ConfigValueError

C1 = (0.01 * 1.0) ** 2  # (k1 * data_range)^2
C2 = (0.03 * 1.0) ** 2  # (k2 * data_range)^2


def gauss_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    k = np.arange(size) - size // 2
    g = np.exp(-(k**2) / (2 * sigma**2))
    return g / g.sum()


def reference_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Wang et al. 2004 written out plainly: explicit 2-D Gaussian, per channel, 'valid' region, float64."""
    window = np.outer(gauss_1d(), gauss_1d())
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = []
    for xi, yi in zip(x.astype(np.float64), y.astype(np.float64)):
        per_channel = []
        for a, b in zip(xi, yi):
            filt = lambda img: signal.convolve2d(img, window, mode="valid")  # noqa: E731
            mu_a, mu_b = filt(a), filt(b)
            var_a = filt(a * a) - mu_a**2
            var_b = filt(b * b) - mu_b**2
            cov = filt(a * b) - mu_a * mu_b
            s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
            per_channel.append(s.mean())
        out.append(np.mean(per_channel))
    return np.array(out)


def skimage_style_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """skimage's own recipe: ndimage.gaussian_filter (truncate 3.5 -> 11 taps), then crop 5 pixels per side."""
    out = []
    for xi, yi in zip(x.astype(np.float64), y.astype(np.float64)):
        per_channel = []
        for a, b in zip(xi, yi):
            filt = lambda img: ndimage.gaussian_filter(img, sigma=1.5, truncate=3.5)  # noqa: E731
            ux, uy, uxx, uyy, uxy = filt(a), filt(b), filt(a * a), filt(b * b), filt(a * b)
            vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
            s = ((2 * ux * uy + C1) * (2 * vxy + C2)) / ((ux**2 + uy**2 + C1) * (vx + vy + C2))
            per_channel.append(s[5:-5, 5:-5].mean())
        out.append(np.mean(per_channel))
    return np.array(out)


def smooth_images(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, 4, 3, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)


# ----------------------------------------------------------------------------- hand-worked cases


def test_identical_images_ssim_one_psnr_inf():
    x = torch.rand(3, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-6)
    out = psnr(x, x)
    assert out.shape == (3,) and torch.isinf(out).all() and (out > 0).all()


def test_ssim_constant_pair_closed_form():
    # Constant images a and b: every local variance / covariance is 0, so the contrast-structure
    # term is C2 / C2 = 1 and SSIM = (2ab + C1) / (a^2 + b^2 + C1) at every position.
    # a=0.3, b=0.5: (0.3 + 1e-4) / (0.09 + 0.25 + 1e-4) = 0.3001 / 0.3401 = 0.882387533...
    x = torch.full((1, 3, 12, 12), 0.3, dtype=torch.float64)
    y = torch.full((1, 3, 12, 12), 0.5, dtype=torch.float64)
    assert ssim(x, y).item() == pytest.approx(0.3001 / 0.3401, abs=1e-12)
    # float32: the variances come out as +-2e-9 instead of 0, against C2 = 9e-4 -> ~1e-5 relative
    assert ssim(x.float(), y.float()).item() == pytest.approx(0.3001 / 0.3401, abs=2e-5)
    assert pytest.approx(0.8823875, abs=1e-7) == 0.3001 / 0.3401
    # per-channel constants (R, G, B) = (0.3|0.5, 0.2|0.2, 0.0|1.0): the mean of three closed forms
    # 0.3|0.5 -> 0.882387533; 0.2|0.2 -> 1; 0.0|1.0 -> (0 + 1e-4) / (0 + 1 + 1e-4) = 9.999e-5
    x = torch.tensor([0.3, 0.2, 0.0], dtype=torch.float64).view(1, 3, 1, 1).expand(2, 3, 13, 11)
    y = torch.tensor([0.5, 0.2, 1.0], dtype=torch.float64).view(1, 3, 1, 1).expand(2, 3, 13, 11)
    expected = (0.3001 / 0.3401 + 1.0 + 1e-4 / 1.0001) / 3
    assert torch.allclose(ssim(x, y), torch.full((2,), expected, dtype=torch.float64), atol=1e-12)


def test_ssim_constant_vs_checkerboard_closed_form():
    # x = a everywhere, y = a + d * p with p = (-1)^(i+j). The window is separable and symmetric, so
    # the local mean of p is s^2 * p with s = sum_k g_k (-1)^k (k = -5..5), and p^2 = 1:
    #   mu_y = a + d s^2 p,  var_y = d^2 (1 - s^4) (the same everywhere),  var_x = cov = 0.
    # So SSIM = (2 a mu_y + C1) / (a^2 + mu_y^2 + C1) * C2 / (var_y + C2), and the 'valid' region
    # (16-10) x (14-10) = 6 x 4 holds as many p=+1 as p=-1 positions: average the two values.
    a, d = 0.5, 0.1
    g = [math.exp(-(k**2) / (2 * 1.5**2)) for k in range(-5, 6)]
    s = sum(gk * (-1) ** k for gk, k in zip(g, range(-5, 6))) / sum(g)
    var_y = d**2 * (1 - s**4)
    cs = C2 / (var_y + C2)
    lum = [(2 * a * (a + d * s * s * sign) + C1) / (a**2 + (a + d * s * s * sign) ** 2 + C1) for sign in (1, -1)]
    expected = cs * sum(lum) / 2

    i, j = torch.meshgrid(torch.arange(16), torch.arange(14), indexing="ij")
    p = 1.0 - 2.0 * ((i + j) % 2).double()
    x = torch.full((1, 3, 16, 14), a, dtype=torch.float64)
    y = (a + d * p).expand(1, 3, 16, 14)
    assert ssim(x, y).item() == pytest.approx(expected, abs=1e-10)
    assert ssim(x.float(), y.float()).item() == pytest.approx(expected, abs=1e-6)


def test_psnr_hand_worked():
    # offset 0.1 everywhere: MSE = 0.01 -> 10 log10(1 / 0.01) = 20 dB
    x = 0.9 * torch.rand(2, 3, 8, 6, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(psnr(x, x + 0.1), torch.full((2,), 20.0), atol=1e-4)
    assert torch.allclose(psnr(x.double(), x.double() + 0.1), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-9)
    # black vs mid-grey: MSE = 0.25 -> 10 log10(4) = 6.0206 dB; symmetric in (x, y)
    zero, half = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert psnr(zero, half).item() == pytest.approx(10 * math.log10(4.0), abs=1e-5)
    assert psnr(half, zero).item() == pytest.approx(10 * math.log10(4.0), abs=1e-5)
    # data_range=255: an offset of 25.5 is again 20 dB
    assert psnr(zero, torch.full((1, 3, 4, 4), 25.5), data_range=255.0).item() == pytest.approx(20.0, abs=1e-4)
    # per image: one identical pair (+inf) next to a 20 dB pair
    y = torch.stack([x[0], x[1] + 0.1])
    out = psnr(x, y)
    assert torch.isinf(out[0]) and out[1].item() == pytest.approx(20.0, abs=1e-4)


# ----------------------------------------------------------------------------- independent implementation


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_matches_scipy_reference_random_images(dtype):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 3, 32, 24, generator=g)
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    unrelated = torch.rand(3, 3, 32, 24, generator=g)
    for a, b in ((x, y), (x, unrelated)):
        ref = reference_ssim(a.numpy(), b.numpy())
        out = ssim(a.to(dtype), b.to(dtype))
        assert out.dtype == dtype and out.shape == (3,)
        np.testing.assert_allclose(out.double().numpy(), ref, atol=1e-5, rtol=0)
    # the two references agree with each other (skimage's recipe == valid convolution)
    xn, yn = x.numpy(), y.numpy()
    np.testing.assert_allclose(skimage_style_ssim(xn, yn), reference_ssim(xn, yn), atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_matches_scipy_reference_smooth_images(dtype):
    # smooth images have tiny local variances: the float32 path must not lose them to cancellation
    x = smooth_images(3, 48, 36, seed=3)
    y = (x + 0.02 * smooth_images(3, 48, 36, seed=4) - 0.01).clamp(0, 1)
    z = smooth_images(3, 48, 36, seed=5)
    for a, b in ((x, y), (x, z)):
        ref = reference_ssim(a.numpy(), b.numpy())
        np.testing.assert_allclose(ssim(a.to(dtype), b.to(dtype)).double().numpy(), ref, atol=1e-5, rtol=0)


def test_ssim_data_range_and_symmetry():
    g = torch.Generator().manual_seed(6)
    x, y = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    assert torch.allclose(ssim(x, y), ssim(y, x), atol=1e-6)
    # scaling images and data_range together leaves SSIM unchanged
    assert torch.allclose(ssim(255 * x, 255 * y, data_range=255.0), ssim(x, y), atol=1e-5)
    np.testing.assert_allclose(
        ssim(255 * x, 255 * y, data_range=255.0).double().numpy(),
        reference_ssim(255 * x.numpy(), 255 * y.numpy(), data_range=255.0),
        atol=1e-5,
    )


def test_ssim_is_differentiable():
    g = torch.Generator().manual_seed(7)
    x = (0.1 + 0.8 * torch.rand(1, 3, 12, 13, generator=g, dtype=torch.float64)).requires_grad_()
    y = (0.1 + 0.8 * torch.rand(1, 3, 12, 13, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: ssim(a, b, check_range=False), (x, y), fast_mode=True)
    loss = ssim(x.float(), y.float()).mean()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_problem():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="shape mismatch"):
        ssim(x, torch.rand(2, 3, 16, 15))
    with pytest.raises(ValueError, match="shape mismatch"):
        psnr(x, torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(B,C,H,W\)"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match=r"\(B,C,H,W\)"):
        psnr(x[0], x[0])
    with pytest.raises(ValueError, match="smaller than the 11x11 Gaussian window"):
        ssim(torch.rand(1, 3, 10, 32), torch.rand(1, 3, 10, 32))
    with pytest.raises(ValueError, match="smaller than the 11x11 Gaussian window"):
        ssim(torch.rand(1, 3, 32, 8), torch.rand(1, 3, 32, 8))
    normalised = (x - 0.45) / 0.225  # ImageNet-normalised: about [-2, 2.4]
    with pytest.raises(ValueError, match="outside"):
        ssim(normalised, x)
    with pytest.raises(ValueError, match="outside"):
        psnr(x, normalised)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="outside"):
        ssim(nan, x)
    with pytest.raises(ValueError, match="float images"):
        ssim((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))
    with pytest.raises(ConfigValueError, match="window_size=10"):
        ssim(x, x, window_size=10)
    with pytest.raises(ConfigValueError, match="data_range=0"):
        psnr(x, x, data_range=0)
    # range check off: no error (caller's responsibility)
    assert ssim(normalised, normalised, check_range=False).shape == (2,)


def test_ssim_matches_torchmetrics_valid_region():
    # torchmetrics' default averages its reflect-padded full map (not skimage's value); cropped to
    # the 'valid' region its map gives the standard SSIM.
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 3, 24, 20, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    _, full = tm_ssim(x, y, data_range=1.0, reduction="none", return_full_image=True)
    assert torch.allclose(ssim(x, y), full[..., 5:-5, 5:-5].mean(dim=(1, 2, 3)), atol=1e-10)


# ----------------------------------------------------------------------------- audit v3 measures
# Two constant images a, b: zero (co)variances, so contrast-structure = C2 / C2 = 1 and SSIM is the luminance
# term (2ab + C1) / (a^2 + b^2 + C1); for a = 0.5, b = 0.25, C1 = 1e-4: 0.2501 / 0.3126.
HALF_VS_QUARTER = 0.2501 / 0.3126


def test_swap_gain_on_hand_worked_constant_images():
    real = torch.full((2, 3, 11, 11), 0.5, dtype=torch.float64)
    quarter = torch.full_like(real, 0.25)
    own = torch.stack([real[0], quarter[1]])  # image 0: A(f_i) is the photo itself; image 1: the quarter grey
    other = quarter.clone()  # A(f_j): the quarter grey for both
    gain = swap_gain(own, other, real)
    torch.testing.assert_close(gain, torch.tensor([1.0 - HALF_VS_QUARTER, 0.0], dtype=torch.float64))
    assert abs(float(gain[0]) - 0.199936) < 1e-6  # 1 - 0.80006


def test_region_ssim_on_a_hand_worked_person_and_background():
    """11x32 images equal on columns 0..15, 0.5 vs 0.25 on columns 16..31: every 11x11 window centred on
    columns 5..10 sees equal pixels (SSIM 1), every window centred on 21..26 two constants (0.80006)."""
    x = torch.full((1, 3, 11, 32), 0.5, dtype=torch.float64)
    y = x.clone()
    y[..., 16:] = 0.25
    person = torch.zeros(1, 1, 11, 32, dtype=torch.bool)
    person[..., :11] = True  # window centres 5..10 (the map's centres run 5..26)
    background = torch.zeros_like(person)
    background[..., 21:] = True  # centres 21..26
    torch.testing.assert_close(region_ssim(x, y, person), torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(region_ssim(x, y, background), torch.tensor([HALF_VS_QUARTER], dtype=torch.float64))
    everything = torch.ones_like(person)
    torch.testing.assert_close(region_ssim(x, y, everything), ssim(x, y))
    assert ssim_map(x, y).shape == (1, 1, 22)
    nowhere = torch.zeros_like(person)
    nowhere[..., :4] = True  # the first 5 columns hold no window centre
    assert torch.isnan(region_ssim(x, y, nowhere)).all()
    with pytest.raises(ValueError, match="mask of shape"):
        region_ssim(x, y, person[..., :16])
    # the swap test inside a region: A(f_i) = x, A(f_j) = y, real x -> 0 on the person, 1 - 0.80006 on the background
    torch.testing.assert_close(swap_gain(x, y, x, person), torch.tensor([0.0], dtype=torch.float64))
    torch.testing.assert_close(
        swap_gain(x, y, x, background), torch.tensor([1.0 - HALF_VS_QUARTER], dtype=torch.float64)
    )


def test_gains_are_over_the_better_of_null_and_mean_image():
    # the in-domain case of the last study: the null (0.229) memorizes and scores below the mean image (0.275)
    assert gain_over_baseline(0.40, 0.229, 0.275) == pytest.approx(0.125)
    assert gain_over_baseline(0.40, 0.30, 0.275) == pytest.approx(0.10)
    assert gain_over_baseline(0.40, None, 0.275) == pytest.approx(0.125)
    assert gain_over_baseline(0.40, float("nan"), 0.275) == pytest.approx(0.125)
    assert gain_over_baseline(None, 0.2, 0.3) is None and gain_over_baseline(0.4, None, None) is None
