"""Light, weather and camera look: the nuisance a ReID model must learn to ignore.

All functions take and return float32 RGB arrays ``(H, W, 3)`` in [0, 1] (the JPEG step returns
uint8). Light and camera parameters come from the camera seed (fixed per camera), weather
particles from the image seed.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from ppreid.synth.render.draw import Draw

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def light_map(rng: np.random.Generator, height: int, width: int, directional: float, pool: float) -> np.ndarray:
    """Multiplicative light over a camera's scene ``(H, W, 1)``: side light gradient + a lamp's pool."""
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    side = 1.0 if rng.random() < 0.5 else -1.0
    m = 1.0 + 0.25 * directional * side * x + 0.08 * directional * (0.5 - y)
    if pool > 0:
        px, py = rng.uniform(-0.7, 0.7), rng.uniform(0.1, 0.6)
        r2 = ((x - px) * 1.2) ** 2 + ((y - py) * 1.8) ** 2
        m = m * (1.0 - 0.35 * pool) + pool * 0.9 * np.exp(-r2 / 0.25)
    return m[..., None].astype(np.float32)


def desaturate(img: np.ndarray, amount: float) -> np.ndarray:
    if amount <= 0:
        return img
    grey = (img @ LUMA)[..., None]
    return img * (1 - amount) + grey * amount


def apply_weather(img: np.ndarray, entry: Mapping, rng: np.random.Generator) -> np.ndarray:
    """Weather row of the render tables: brightness, desaturate, fog, rain streaks, snow flakes."""
    H, W, _ = img.shape
    img = img * float(entry.get("brightness", 1.0))
    img = desaturate(img, float(entry.get("desaturate", 0.0)))
    fog = float(entry.get("fog", 0.0))
    if fog > 0:
        y = np.linspace(1.0, 0.55, H, dtype=np.float32)[:, None, None]
        a = np.clip(fog * y * rng.uniform(0.8, 1.2), 0, 0.9)
        img = img * (1 - a) + 0.78 * a
    rain, snow = float(entry.get("rain", 0.0)), float(entry.get("snow", 0.0))
    if rain > 0 or snow > 0:
        layer = Image.new("L", (W, H), 0)
        d = Draw(layer)
        if rain > 0:
            n = int(rain * W * H / 220)
            xs, ys = rng.uniform(0, W, n), rng.uniform(-H * 0.1, H, n)
            ln, slant = H * rng.uniform(0.05, 0.1), rng.uniform(-0.25, 0.25)
            for x, y in zip(xs, ys):
                d.line([(x, y), (x + slant * ln, y + ln)], fill=int(rng.integers(40, 110)), width=1)
        if snow > 0:
            n = int(snow * W * H / 160)
            r = max(0.6, H / 160)
            for x, y in zip(rng.uniform(0, W, n), rng.uniform(0, H, n)):
                d.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(150, 230)))
        a = np.asarray(layer, np.float32)[..., None] / 255.0
        img = img * (1 - a) + 0.9 * a
    return img


def noise_bank(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A camera's sensor noise field ``(1.5H, 1.5W, 3)`` (unit-ish std, luminance + chroma); images crop it."""
    h, w = height + height // 2, width + width // 2
    lum = rng.standard_normal((h, w, 1), dtype=np.float32)
    return lum * 0.7 + rng.standard_normal((h, w, 3), dtype=np.float32) * 0.5


def vignette_map(height: int, width: int, amount: float) -> np.ndarray:
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    return (1 - amount * 0.5 * (x**2 + y**2))[..., None]


def apply_camera(
    img: np.ndarray, p: Mapping[str, float], rng: np.random.Generator, noise: np.ndarray, vignette: np.ndarray
) -> np.ndarray:
    """Camera look (params from the render tables' camera ranges); returns uint8 after a JPEG round trip.

    ``noise`` (the camera's :func:`noise_bank`, at least H x W) and ``vignette`` (:func:`vignette_map`,
    H x W x 1) are drawn once per camera by the caller.

    Order: resolution loss, optics blur, saturation, per-channel tone curve (cast x exposure, contrast
    about the mean, gamma; one lookup table), vignette, sensor noise (a crop of the camera's
    ``noise`` field), JPEG.
    """
    H, W, _ = img.shape
    pil = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    scale = float(p.get("downscale", 1.0))
    blur = float(p.get("blur", 0.0)) * H / 128.0
    if scale > 1.05:
        small = (max(4, int(round(W / scale))), max(8, int(round(H / scale))))
        pil = pil.resize(small, Image.BILINEAR).resize((W, H), Image.BILINEAR)
    if blur > 0.25:
        pil = pil.filter(ImageFilter.GaussianBlur(blur))
    sat = float(p.get("saturation", 1.0))
    if abs(sat - 1.0) > 1e-3:
        pil = ImageEnhance.Color(pil).enhance(sat)
    gains = np.array([p.get("cast_r", 1.0), p.get("cast_g", 1.0), p.get("cast_b", 1.0)], np.float64)
    gains = gains * rng.uniform(0.98, 1.02, 3) * float(p.get("exposure", 1.0)) * rng.uniform(0.94, 1.06)
    arr = np.asarray(pil)
    mean = float(arr.mean()) / 255.0 * float(gains.mean())
    v = np.arange(256, dtype=np.float64) / 255.0
    contrast, gamma = float(p.get("contrast", 1.0)), float(p.get("gamma", 1.0))
    lut = np.concatenate([np.clip((v * g - mean) * contrast + mean, 0, 1) ** gamma for g in gains])
    pil = pil.point((lut * 255 + 0.5).astype(np.uint8).tolist())
    amount = float(p.get("noise", 0.0)) * rng.uniform(0.8, 1.2)
    vig = float(p.get("vignette", 0.0))
    if amount > 0 or vig > 0:
        out = np.asarray(pil, np.float32)
        if vig > 0:
            out = out * vignette
        if amount > 0:
            oy = int(rng.integers(0, noise.shape[0] - H + 1))
            ox = int(rng.integers(0, noise.shape[1] - W + 1))
            out = out + noise[oy : oy + H, ox : ox + W] * (amount * 255.0)
        out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    else:
        out = np.asarray(pil)
    quality = int(round(p.get("jpeg", 95)))
    if quality < 95:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out = np.asarray(Image.open(buf).convert("RGB"))
    return out
