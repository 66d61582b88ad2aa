"""``ImageDraw`` that accepts boxes with corners in any order (PIL requires x0 <= x1, y0 <= y1), and the
small drawing helpers the person painter uses (RGBA fills, tapered limbs, interpolation)."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw

from ppreid.synth.render.tables import RGB


def _box(xy):
    x0, y0, x1, y1 = xy
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


class Draw:
    """Drawing calls used by the renderer, with boxes normalised; everything else goes to ImageDraw."""

    def __init__(self, img: Image.Image) -> None:
        self._d = ImageDraw.Draw(img)

    def rectangle(self, xy, **kw):
        self._d.rectangle(_box(xy), **kw)

    def ellipse(self, xy, **kw):
        self._d.ellipse(_box(xy), **kw)

    def rounded_rectangle(self, xy, radius=0, **kw):
        b = _box(xy)
        radius = max(0.0, min(radius, (b[2] - b[0]) / 2, (b[3] - b[1]) / 2))
        self._d.rounded_rectangle(b, radius=radius, **kw)

    def chord(self, xy, start, end, **kw):
        self._d.chord(_box(xy), start, end, **kw)

    def __getattr__(self, name):
        return getattr(self._d, name)


def fill_rgba(c: RGB, k: float = 1.0) -> tuple[int, int, int, int]:
    return (int(min(255, c[0] * k)), int(min(255, c[1] * k)), int(min(255, c[2] * k)), 255)


def limb(d: Draw, p0, p1, w0: float, w1: float, fill, cap0: bool = True) -> None:
    (x0, y0), (x1, y1) = p0, p1
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy) or 1e-6
    nx, ny = -dy / n, dx / n
    d.polygon(
        [
            (x0 + nx * w0 / 2, y0 + ny * w0 / 2),
            (x1 + nx * w1 / 2, y1 + ny * w1 / 2),
            (x1 - nx * w1 / 2, y1 - ny * w1 / 2),
            (x0 - nx * w0 / 2, y0 - ny * w0 / 2),
        ],
        fill=fill,
    )
    d.ellipse([x1 - w1 / 2, y1 - w1 / 2, x1 + w1 / 2, y1 + w1 / 2], fill=fill)
    if cap0:
        d.ellipse([x0 - w0 / 2, y0 - w0 / 2, x0 + w0 / 2, y0 + w0 / 2], fill=fill)


def lerp(a, b, t: float):
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


def mix(a: RGB, b: RGB, t: float = 0.5) -> RGB:
    return tuple(x * (1 - t) + y * t for x, y in zip(a, b))
