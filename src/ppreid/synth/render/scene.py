"""Background scenes of the procedural generator: one fixed scene per camera, wider than the image.

A camera sees one place, so its scene (layout, colours, clutter) is drawn once from the camera
seed and cached; each image shows a window of it (where the person stands). Kinds: street, park,
campus, mall, station, parking, plaza (``conf/synth/render.yaml`` maps background words to them).
Output: float32 array ``(H, W_scene, 3)`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from PIL import Image

from ppreid.synth.render.draw import Draw
from ppreid.synth.render.tables import jitter_colour

SCENE_WIDTH = 1.8  # scene width / image width


def _c(rgb, k: float = 1.0) -> tuple[int, int, int]:
    return tuple(int(np.clip(v * k, 0, 255)) for v in rgb)


def _texture(rng: np.random.Generator, h: int, w: int, cells: int, amp: float) -> np.ndarray:
    """Smooth multiplicative noise ``(h, w, 1)`` around 1 (bilinear upsampling of a coarse grid)."""
    gh, gw = max(2, h // cells), max(2, w // cells)
    grid = rng.normal(0.0, amp, size=(gh, gw)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((w, h), Image.BILINEAR)
    return 1.0 + np.asarray(img, np.float32)[..., None]


def _ground(d: Draw, rng, W: int, H: int, y_f: float, colour, lines: tuple[float, float], tile: bool = True) -> None:
    d.rectangle([0, y_f, W, H], fill=_c(colour))
    if not tile:
        return
    line = _c(colour, lines[0])
    lw = max(1, H // 160)
    y, step = y_f, (H - y_f) * 0.08
    while y < H:
        d.line([(0, y), (W, y)], fill=line, width=lw)
        step *= 1.35
        y += step
    vx = W * rng.uniform(0.3, 0.7)
    spacing = W / rng.uniform(5, 10)
    x = -W
    while x < 2 * W:
        d.line([(vx + (x - vx) * 0.25, y_f), (x, H)], fill=line, width=lw)
        x += spacing


def _facade(d, rng, x0, x1, top, bottom, wall, window, lit: float = 0.0) -> None:
    d.rectangle([x0, top, x1, bottom], fill=_c(wall))
    cols = max(1, int((x1 - x0) / max(4, (bottom - top) * rng.uniform(0.12, 0.25))))
    rows = max(1, int((bottom - top) / max(4, (x1 - x0) / cols * rng.uniform(0.9, 1.5))))
    cw, rh = (x1 - x0) / cols, (bottom - top) / rows
    for i in range(cols):
        for j in range(rows):
            fill = _c(window, 1.6) if rng.random() < lit else _c(window)
            d.rectangle(
                [
                    x0 + i * cw + cw * 0.2,
                    top + j * rh + rh * 0.2,
                    x0 + (i + 1) * cw - cw * 0.2,
                    top + (j + 1) * rh - rh * 0.25,
                ],
                fill=fill,
            )


def _people_free_clutter(d, rng, W, H, y_f, accent, n: int) -> None:
    """Poles, bins, signs and planters standing on the ground line."""
    for _ in range(n):
        x = rng.uniform(0, W)
        kind = rng.integers(4)
        base = y_f + rng.uniform(0.02, 0.25) * (H - y_f)
        if kind == 0:
            d.rectangle([x, base - H * rng.uniform(0.3, 0.6), x + max(1, W * 0.006), base], fill=_c(accent, 0.6))
        elif kind == 1:
            w = W * rng.uniform(0.015, 0.03)
            d.rectangle([x, base - H * 0.09, x + w, base], fill=_c(accent, rng.uniform(0.6, 1.2)))
        elif kind == 2:
            w = W * rng.uniform(0.03, 0.06)
            d.rectangle([x + w * 0.45, base - H * 0.3, x + w * 0.55, base], fill=_c(accent, 0.5))
            d.rectangle([x, base - H * 0.38, x + w, base - H * 0.3], fill=_c(jitter_colour(accent, rng, 0.3, 0.3, 0.2)))
        else:
            w = W * rng.uniform(0.04, 0.08)
            d.rectangle([x, base - H * 0.06, x + w, base], fill=_c(accent, 0.7))
            d.ellipse([x - w * 0.1, base - H * 0.15, x + w * 1.1, base - H * 0.04], fill=(50, 110, 55))


def _street(d, rng, W, H, p, y_f) -> None:
    d.rectangle([0, 0, W, y_f], fill=_c(p["sky"]))
    x = -rng.uniform(0, W * 0.2)
    while x < W:
        w = W * rng.uniform(0.18, 0.45)
        wall = jitter_colour(p["wall"], rng, 0.05, 0.25, 0.2)
        _facade(d, rng, x, x + w, -H * 0.05 + rng.uniform(0, 0.2) * H, y_f, wall, _c(p["accent"]))
        d.rectangle([x + w * 0.3, y_f - H * 0.12, x + w * 0.5, y_f], fill=_c(wall, 0.45))
        x += w
    _ground(d, rng, W, H, y_f, p["ground"], (0.85, 0.0))
    d.rectangle([0, H * 0.93, W, H], fill=_c(p["ground"], 0.7))
    _people_free_clutter(d, rng, W, H, y_f, p["accent"], int(rng.integers(2, 6)))


def _park(d, rng, W, H, p, y_f) -> None:
    d.rectangle([0, 0, W, y_f], fill=_c(p["sky"]))
    for _ in range(int(rng.integers(5, 10))):
        x, r = rng.uniform(0, W), H * rng.uniform(0.1, 0.25)
        top = y_f - H * rng.uniform(0.15, 0.4)
        d.rectangle([x - r * 0.08, top + r, x + r * 0.08, y_f + H * 0.02], fill=(82, 60, 40))
        d.ellipse([x - r, top - r * 0.6, x + r, top + r * 1.2], fill=_c(jitter_colour(p["wall"], rng, 0.04, 0.2, 0.25)))
    d.rectangle([0, y_f, W, H], fill=_c(p["ground"]))
    cx = W * rng.uniform(0.3, 0.7)
    d.polygon([(cx - W * 0.08, y_f), (cx + W * 0.08, y_f), (cx + W * 0.5, H), (cx - W * 0.5, H)], fill=_c(p["accent"]))
    bx = rng.uniform(0, W)
    d.rectangle([bx, y_f + H * 0.03, bx + W * 0.12, y_f + H * 0.06], fill=(110, 75, 45))
    d.rectangle([bx, y_f - H * 0.02, bx + W * 0.12, y_f + H * 0.0], fill=(110, 75, 45))


def _campus(d, rng, W, H, p, y_f) -> None:
    d.rectangle([0, 0, W, y_f], fill=_c(p["sky"]))
    top = -H * 0.05 + rng.uniform(0, 0.15) * H
    d.rectangle([0, top, W, y_f], fill=_c(p["wall"]))
    n = int(rng.integers(4, 9))
    for i in range(n):
        x0 = W * (i + 0.12) / n
        d.rectangle([x0, top + H * 0.05, x0 + W * 0.7 / n, y_f - H * 0.04], fill=_c(p["accent"]))
        d.line(
            [(x0 + W * 0.35 / n, top + H * 0.05), (x0 + W * 0.35 / n, y_f - H * 0.04)],
            fill=_c(p["wall"], 0.8),
            width=max(1, H // 128),
        )
    _ground(d, rng, W, H, y_f, p["ground"], (0.88, 0.0))
    for _ in range(int(rng.integers(1, 4))):
        x = rng.uniform(0, W)
        d.ellipse([x, y_f - H * 0.08, x + W * 0.12, y_f + H * 0.03], fill=(58, 112, 60))


def _mall(d, rng, W, H, p, y_f) -> None:
    d.rectangle([0, 0, W, y_f], fill=_c(p["wall"]))
    d.rectangle([0, 0, W, H * 0.08], fill=_c(p["sky"], 1.05))
    for _ in range(int(rng.integers(4, 9))):
        x = rng.uniform(0, W)
        d.ellipse([x, H * 0.02, x + W * 0.05, H * 0.05], fill=(255, 252, 235))
    x = 0.0
    while x < W:
        w = W * rng.uniform(0.2, 0.4)
        shop = jitter_colour(p["accent"], rng, 0.5, 0.3, 0.2)
        d.rectangle([x + W * 0.01, y_f - H * 0.32, x + w - W * 0.01, y_f - H * 0.26], fill=_c(shop))
        d.rectangle(
            [x + W * 0.02, y_f - H * 0.25, x + w - W * 0.02, y_f], fill=_c((150, 170, 180), rng.uniform(0.8, 1.2))
        )
        for _ in range(3):
            px = rng.uniform(x + W * 0.03, x + w - W * 0.05)
            d.rectangle(
                [px, y_f - H * 0.15, px + W * 0.03, y_f - H * 0.02], fill=_c(jitter_colour(shop, rng, 0.3, 0.4, 0.3))
            )
        d.rectangle([x + w - W * 0.012, H * 0.08, x + w + W * 0.012, y_f], fill=_c(p["wall"], 0.85))
        x += w
    _ground(d, rng, W, H, y_f, p["ground"], (0.9, 0.0))


def _station(d, rng, W, H, p, y_f) -> None:
    d.rectangle([0, 0, W, y_f], fill=_c(p["wall"]))
    step = max(3, int(H * rng.uniform(0.025, 0.045)))
    line = _c(p["wall"], 0.8)
    for y in range(0, int(y_f), step):
        d.line([(0, y), (W, y)], fill=line, width=1)
    for x in range(0, W, step * 2):
        d.line([(x, 0), (x, y_f)], fill=line, width=1)
    band = y_f - H * rng.uniform(0.15, 0.3)
    d.rectangle([0, band, W, band + H * 0.04], fill=_c(p["accent"]))
    for _ in range(int(rng.integers(1, 3))):
        x = rng.uniform(0, W)
        d.rectangle([x, band - H * 0.15, x + W * 0.15, band - H * 0.06], fill=_c(p["accent"], 0.8))
        d.rectangle([x + W * 0.02, band - H * 0.12, x + W * 0.12, band - H * 0.1], fill=(235, 235, 235))
    for _ in range(int(rng.integers(1, 3))):
        x = rng.uniform(0, W)
        d.rectangle([x, 0, x + W * 0.06, y_f + H * 0.02], fill=_c(p["wall"], 0.7))
    _ground(d, rng, W, H, y_f, p["ground"], (0.88, 0.0))
    y = y_f + (H - y_f) * rng.uniform(0.55, 0.8)
    d.rectangle([0, y, W, y + H * 0.015], fill=(220, 190, 40))


def _parking(d, rng, W, H, p, y_f) -> None:
    d.rectangle([0, 0, W, y_f], fill=_c(p["sky"]))
    x = 0.0
    while x < W:
        w = W * rng.uniform(0.15, 0.35)
        d.rectangle([x, y_f - H * rng.uniform(0.1, 0.35), x + w, y_f], fill=_c(p["wall"], rng.uniform(0.7, 1.1)))
        x += w
    _ground(d, rng, W, H, y_f, p["ground"], (1.0, 0.0), tile=False)
    for i in range(12):
        x0 = W * i / 6 - W * 0.2
        d.line([(x0 + W * 0.05, y_f), (x0 - W * 0.05, H)], fill=_c(p["accent"]), width=max(1, H // 100))
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.uniform(-W * 0.1, W), y_f + rng.uniform(-0.02, 0.08) * H
        car = jitter_colour(((rng.integers(40, 220),) * 3), rng, 0.5, 0.5, 0.3)
        cw, ch = W * rng.uniform(0.2, 0.3), H * 0.1
        d.rounded_rectangle([x, y - ch, x + cw, y], radius=ch * 0.2, fill=_c(car))
        d.rounded_rectangle(
            [x + cw * 0.2, y - ch * 1.6, x + cw * 0.8, y - ch * 0.9], radius=ch * 0.2, fill=_c(car, 0.9)
        )
        d.rectangle([x + cw * 0.27, y - ch * 1.45, x + cw * 0.73, y - ch], fill=(60, 70, 85))
        for wx in (x + cw * 0.2, x + cw * 0.8):
            d.ellipse([wx - ch * 0.25, y - ch * 0.25, wx + ch * 0.25, y + ch * 0.25], fill=(20, 20, 20))
    lx = rng.uniform(0, W)
    d.rectangle([lx, y_f - H * 0.55, lx + max(1, W * 0.01), y_f + H * 0.05], fill=(60, 60, 64))


def _plaza(d, rng, W, H, p, y_f) -> None:
    d.rectangle([0, 0, W, y_f], fill=_c(p["sky"]))
    x = 0.0
    while x < W:
        w = W * rng.uniform(0.25, 0.5)
        _facade(
            d,
            rng,
            x,
            x + w,
            rng.uniform(0.0, 0.25) * H,
            y_f,
            jitter_colour(p["wall"], rng, 0.05, 0.2, 0.15),
            _c(p["wall"], 0.6),
        )
        x += w
    d.rectangle([0, y_f, W, H], fill=_c(p["ground"]))
    a, b = _c(p["ground"], 0.85), _c(p["accent"])
    rows, y = 0, y_f
    step = (H - y_f) * 0.1
    while y < H:
        n = 8 + rows * 2
        for i in range(n):
            if (i + rows) % 3 == 0:
                d.rectangle([W * i / n, y, W * (i + 1) / n, y + step], fill=a if rows % 2 else b)
        y += step
        step *= 1.3
        rows += 1
    fx = rng.uniform(0, W)
    d.ellipse([fx, y_f + H * 0.01, fx + W * 0.3, y_f + H * 0.08], fill=(150, 150, 150))
    d.ellipse([fx + W * 0.02, y_f + H * 0.02, fx + W * 0.28, y_f + H * 0.065], fill=(90, 130, 170))


KINDS: dict[str, Callable] = {
    "street": _street,
    "park": _park,
    "campus": _campus,
    "mall": _mall,
    "station": _station,
    "parking": _parking,
    "plaza": _plaza,
}


def draw_scene(entry: Mapping, rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, float]:
    """A camera's scene: ``(H, SCENE_WIDTH * W, 3)`` float32 in [0, 1], and the ground line y (pixels).

    ``entry`` is a ``backgrounds`` table row (``kind`` + palette); colours are jittered per camera.
    """
    W = int(round(width * SCENE_WIDTH))
    H = height
    palette = {k: jitter_colour(tuple(entry[k]), rng, 0.03, 0.15, 0.12) for k in ("ground", "wall", "sky", "accent")}
    y_f = H * rng.uniform(0.34, 0.58)
    img = Image.new("RGB", (W, H))
    KINDS[entry["kind"]](Draw(img), rng, W, H, palette, y_f)
    arr = np.asarray(img, np.float32) / 255.0
    arr = arr * _texture(rng, H, W, max(2, H // 24), 0.06) * _texture(rng, H, W, 2, 0.03)
    return np.clip(arr, 0, 1), y_f
