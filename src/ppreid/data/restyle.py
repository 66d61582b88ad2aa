"""Photometric re-styling of an image: the same person and pose under another "camera style".

PDM's disentanglement needs, for each training image, a view whose *style* (colour cast, light,
contrast, saturation, blur) changed and whose *content* (identity) did not. The change is drawn
from ``seed`` (the image's index), so a re-styled view is the same on every rank and every run.
"""

from __future__ import annotations

import numpy as np
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageFilter


def restyle(img: Image.Image, seed: int, strength: float = 1.0) -> Image.Image:
    """``img`` with a random, seeded photometric style change; ``strength`` 0 returns it unchanged.

    brightness / contrast / saturation factors in [1 - 0.5 s, 1 + 0.5 s], a hue shift in
    [-0.1 s, 0.1 s], gamma in [1 - 0.4 s, 1 + 0.4 s], a per-channel colour cast of up to 20% s and,
    with probability 0.3, a Gaussian blur of radius up to 1.5 s pixels.
    """
    if strength <= 0:
        return img
    rng = np.random.default_rng([int(seed), 7919])
    s = float(strength)
    out = TF.adjust_brightness(img, float(rng.uniform(1 - 0.5 * s, 1 + 0.5 * s)))
    out = TF.adjust_contrast(out, float(rng.uniform(1 - 0.5 * s, 1 + 0.5 * s)))
    out = TF.adjust_saturation(out, float(rng.uniform(1 - 0.5 * s, 1 + 0.5 * s)))
    out = TF.adjust_hue(out, float(rng.uniform(-0.1 * s, 0.1 * s)))
    out = TF.adjust_gamma(out, float(rng.uniform(max(0.2, 1 - 0.4 * s), 1 + 0.4 * s)))
    cast = 1.0 + rng.uniform(-0.2 * s, 0.2 * s, size=3)
    arr = np.asarray(out, dtype=np.float32) * cast.reshape(1, 1, 3)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.5 * s))))
    return out
