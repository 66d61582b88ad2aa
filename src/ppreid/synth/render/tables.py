"""Render tables of the procedural generator (``conf/synth/render.yaml``): word -> look.

A word the schema may draw but the tables lack is reported with the table to extend, so a new
vocabulary value is one YAML line for the diffusion generator and one more for this renderer.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppreid.synth.attributes import _to_plain, load_conf_yaml
from ppreid.utils.errors import ConfigValueError

RGB = tuple[float, float, float]
SCENE_KINDS = ("street", "park", "campus", "mall", "station", "parking", "plaza")
SHOE_STYLES = ("sneakers", "boots", "sandals", "dress")
TABLES = (
    "colours",
    "skin_tones",
    "hair_colours",
    "shoes",
    "backgrounds",
    "illumination",
    "time_of_day",
    "weather",
    "camera_base",
    "camera_looks",
)


def jitter_colour(rgb: RGB, rng: np.random.Generator, hue: float = 0.02, sat: float = 0.12, val: float = 0.1) -> RGB:
    """A nearby shade: hue shifted by up to ``hue`` of the circle, saturation/value scaled by up to +-sat/val."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    h = (h + rng.uniform(-hue, hue)) % 1.0
    s = float(np.clip(s * rng.uniform(1 - sat, 1 + sat), 0, 1))
    v = float(np.clip(v * rng.uniform(1 - val, 1 + val), 0, 1))
    return tuple(255.0 * c for c in colorsys.hsv_to_rgb(h, s, v))


def luminance(rgb: RGB) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


@dataclass
class RenderTables:
    """The tables as plain dicts, checked for shape once."""

    tables: dict[str, dict[str, Any]]

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None = None) -> RenderTables:
        """From a mapping shaped like ``conf/synth/render.yaml`` (that file when None)."""
        cfg = _to_plain(cfg) if cfg is not None else load_conf_yaml("synth/render.yaml")
        missing = [t for t in TABLES if t not in cfg]
        if missing:
            raise ConfigValueError(f"render tables lack {missing} (see conf/synth/render.yaml for the shape).")
        out = cls({t: dict(cfg[t] or {}) for t in TABLES})
        for t in ("colours", "skin_tones", "hair_colours"):
            for k, v in out.tables[t].items():
                if not (isinstance(v, (list, tuple)) and len(v) == 3):
                    raise ConfigValueError(f"render table {t}.{k}={v!r} must be an [R, G, B] list (0-255).")
        for k, v in out.tables["shoes"].items():
            if v.get("style") not in SHOE_STYLES or v.get("colour") not in out.tables["colours"]:
                raise ConfigValueError(
                    f"render table shoes.{k}={v!r}: style must be one of {SHOE_STYLES} and colour a key of `colours`."
                )
        for k, v in out.tables["backgrounds"].items():
            if v.get("kind") not in SCENE_KINDS:
                raise ConfigValueError(
                    f"render table backgrounds.{k}.kind={v.get('kind')!r} must be one of {SCENE_KINDS}."
                )
        for k, v in out.tables["camera_base"].items():
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and v[0] <= v[1]):
                raise ConfigValueError(f"render table camera_base.{k}={v!r} must be a [lo, hi] range.")
        return out

    def entry(self, table: str, word: str) -> Any:
        try:
            return self.tables[table][word]
        except KeyError:
            raise ConfigValueError(
                f"the procedural renderer has no entry for '{word}' in render table '{table}' "
                f"(known: {sorted(self.tables[table])}); add one to conf/synth/render.yaml "
                f"(or pass generator.render.{table}.{word}=...)."
            ) from None

    def colour(self, word: str) -> RGB:
        return tuple(float(c) for c in self.entry("colours", word))

    def camera_params(self, look: str, rng: np.random.Generator) -> dict[str, float]:
        """Exact camera-look parameters: each drawn from the look's range, else from ``camera_base``."""
        ranges = {**self.tables["camera_base"], **(self.entry("camera_looks", look) or {})}
        return {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in sorted(ranges.items())}
