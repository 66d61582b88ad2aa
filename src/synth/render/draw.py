"""``ImageDraw`` that accepts boxes with corners in any order (PIL requires x0 <= x1, y0 <= y1)."""
from __future__ import annotations

from PIL import Image, ImageDraw


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
