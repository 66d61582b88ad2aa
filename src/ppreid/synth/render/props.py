"""What the procedural renderer draws around the person (src/ppreid/synth/generators/procedural.py): the
body's round shading, its shadow on the ground, a passer-by behind it, an occluder in front (railing,
bin, bush), and the tests of what stays visible (a layer's alpha, whether the shoes show). All sizes in
pixels of the canvas drawn on (supersampled ``ss`` times where a function says so)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ppreid.synth.render.appearance import make_look, random_words, sample_pose
from ppreid.synth.render.draw import Draw
from ppreid.synth.render.person import PersonPainter
from ppreid.synth.render.tables import RenderTables

SHOES_SHOWN = 0.5  # the shoes count as hidden when less of their area than this shows


def shoes_show(boxes, occluder: Image.Image | None, size: tuple[int, int], ss: int) -> bool:
    """Whether at least :data:`SHOES_SHOWN` of the shoes' area is inside the frame and not behind the
    occluder (boxes and ``size`` in supersampled pixels)."""
    if not boxes:
        return False
    if occluder is None and all(x0 >= 0 and y0 >= 0 and x1 <= size[0] and y1 <= size[1] for x0, y0, x1, y1 in boxes):
        return True  # nothing in front, nothing out of the frame
    m = size[1] // 2  # margin: the canvas holds the shoes' whole area, in the frame or not
    shoes = Image.new("L", (size[0] + 2 * m, size[1] + 2 * m), 0)
    draw = Draw(shoes)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0 + m, y0 + m, x1 + m, y1 + m], fill=255)
    area = np.asarray(shoes, np.float32) / 255.0
    total = float(area.sum())
    inside = area[m : m + size[1], m : m + size[0]]
    if occluder is not None:
        inside = inside * (1.0 - np.asarray(occluder.getchannel("A"), np.float32) / 255.0)
    return total > 0 and float(inside.sum()) >= SHOES_SHOWN * total


def body_shading(H: int, W: int, cx: float, top: float, P: float, cam: dict[str, Any]) -> np.ndarray:
    """Round-body shading ``(H, W, 1)``: darker at the silhouette's sides, lit from the camera's side."""
    x = (np.arange(W, dtype=np.float32)[None, :] - cx) / max(1.0, 0.14 * P)
    y = (np.arange(H, dtype=np.float32)[:, None] - top) / max(1.0, P)
    directional = float(cam["illumination"].get("directional", 0.0))
    s = 1.0 - 0.16 * np.clip(x, -1.5, 1.5) ** 2 + 0.22 * directional * cam["light_side"] * np.clip(x, -1.2, 1.2)
    s = s + 0.06 * (0.5 - np.clip(y, 0, 1))
    return np.clip(s, 0.45, 1.4)[..., None]


def cast_shadow(bg: np.ndarray, cx: float, feet_y: float, P: float, strength: float, side: float) -> None:
    H, W, _ = bg.shape
    sx, sy, mx = 0.16 * P, 0.025 * P, cx - side * 0.06 * P
    y0, y1 = max(0, int(feet_y - 3 * sy)), min(H, int(feet_y + 3 * sy) + 1)
    x0, x1 = max(0, int(mx - 3 * sx)), min(W, int(mx + 3 * sx) + 1)
    if strength <= 0 or y0 >= y1 or x0 >= x1:
        return
    x = (np.arange(x0, x1, dtype=np.float32)[None, :] - mx) / sx
    y = (np.arange(y0, y1, dtype=np.float32)[:, None] - feet_y) / sy
    bg[y0:y1, x0:x1] *= (1 - 0.6 * strength * np.exp(-(x**2 + y**2)))[..., None]


def draw_passer_by(
    tables: RenderTables, layer: Image.Image, rng: np.random.Generator, cx: float, top: float, P: float, Wss: int
) -> None:
    words = random_words(tables, rng)
    look = make_look(words, tables, rng)
    view = ("front", "back", "left", "right")[int(rng.integers(4))]
    P2 = P * rng.uniform(0.7, 0.95)
    cx2 = cx + (1 if rng.random() < 0.5 else -1) * Wss * rng.uniform(0.42, 0.7)
    top2 = top + (P - P2) * rng.uniform(0.1, 0.5)
    PersonPainter(layer, look, sample_pose(view, rng), cx2, top2, P2, shade=0.85).paint()


def draw_occluder(layer: Image.Image, rng: np.random.Generator, W: int, H: int, top: float, P: float) -> None:
    d = Draw(layer)
    grey = int(rng.integers(40, 200))
    colour = (grey, int(grey * rng.uniform(0.8, 1.2)) % 256, int(grey * rng.uniform(0.8, 1.2)) % 256, 255)
    y = top + P * rng.uniform(0.68, 0.85)
    kind = int(rng.integers(3))
    if kind == 0:  # railing
        d.rectangle([0, y, W, y + P * 0.02], fill=colour)
        for x in np.arange(rng.uniform(0, W * 0.2), W, W * rng.uniform(0.18, 0.3)):
            d.rectangle([x, y, x + max(1, W * 0.03), H], fill=colour)
    elif kind == 1:  # bin / bollard
        x = W * rng.uniform(0.05, 0.7)
        d.rounded_rectangle([x, y, x + W * rng.uniform(0.2, 0.35), H], radius=W * 0.03, fill=colour)
    else:  # bush
        x = W * rng.uniform(-0.2, 0.5)
        d.ellipse([x, y, x + W * rng.uniform(0.5, 0.8), H + P * 0.2], fill=(40, int(rng.integers(90, 140)), 50, 255))


def alpha_of(layer: Image.Image, ss: int) -> np.ndarray:
    """(H, W) alpha in [0, 1] of an RGBA layer drawn at ``ss`` times the output size (box-filtered)."""
    a = layer.getchannel("A")
    return np.asarray(a.reduce(ss) if ss > 1 else a, np.float32) / 255.0
