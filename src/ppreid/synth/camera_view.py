"""A camera's view that the procedural renderer has no knob for (GenePerson-mini's ``far_high`` target): a far
camera mounted high sees the person from above and with fewer pixels. :class:`CameraView` wraps another
generator and applies that geometry and resolution loss, fixed per camera, to its images and person masks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from ppreid.synth.attributes import derive_seed
from ppreid.synth.generators.base import ImageGenerator, ImageRequest
from ppreid.synth.generators.procedural import Rendered
from ppreid.utils.errors import ConfigValueError

VIEW_KEYS = {"tilt": (0.0, 0.3), "squash": (0.5, 1.0), "downscale": (1.0, 8.0)}  # [lo, hi] bounds of each range
VIEW_STREAM = 6  # a camera's view parameters: derive_seed(camera_seed, 6), apart from the renderer's streams


def check_view(view: Any, where: str) -> dict[str, list[float]]:
    """``view`` as ``{key: [lo, hi]}`` with keys among :data:`VIEW_KEYS` inside their bounds (one-line errors)."""
    if not isinstance(view, Mapping) or set(view) - set(VIEW_KEYS):
        raise ConfigValueError(f"{where} = {view!r}: a map with keys among {sorted(VIEW_KEYS)}.")
    out = {}
    for key, value in view.items():
        lo, hi = VIEW_KEYS[key]
        pair = list(value) if isinstance(value, list | tuple) else [value, value]
        if len(pair) != 2 or not all(isinstance(v, int | float) for v in pair) or not lo <= pair[0] <= pair[1] <= hi:
            raise ConfigValueError(f"{where}.{key} = {value!r}: [lo, hi] with {lo} <= lo <= hi <= {hi}.")
        out[key] = [float(v) for v in pair]
    return out


class CameraView(ImageGenerator):
    """A far, high camera's geometry and resolution, applied to another generator's images.

    The procedural renderer draws a person upright, seen at eye level, at the full resolution of the
    box; its camera knobs are colour, blur, noise and a box scale (``person_height``). A far camera
    mounted high sees the person from above and with fewer pixels. Per camera (fixed, drawn from the
    camera seed; every value uniform in its [lo, hi] range), in this order:

    - ``squash`` s: the person looks shorter seen from above: the image (H, W) is stretched to
      width W / s and its centre W columns kept (the box keeps its size and the person's width grows
      by 1 / s relative to the height);
    - ``tilt`` k: perspective of a downward-looking camera (the head nearer than the feet): the
      homography that maps the output rectangle onto the source trapezoid whose top edge is inset by
      k W on each side (top magnified by 1 / (1 - 2k), bottom compressed by as much);
    - ``downscale`` f: resolution loss: down-sampled to (W / f, H / f) and up-sampled back
      (bilinear both ways), what a far sensor resolves of the person.

    It runs after the renderer's own camera look (noise, JPEG), a simplification of the real order.
    ``name`` and ``model_id`` are the wrapped generator's (the domain's ``view`` is recorded in the
    set's config).
    """

    def __init__(
        self,
        generator: ImageGenerator,
        tilt: Any = (0.0, 0.0),
        squash: Any = (1.0, 1.0),
        downscale: Any = (1.0, 1.0),
    ) -> None:
        ranges = check_view({"tilt": tilt, "squash": squash, "downscale": downscale}, "CameraView")
        self.generator = generator
        self.ranges = ranges
        self.name = getattr(generator, "name", "base")
        self.model_id = getattr(generator, "model_id", "")

    def params(self, camera_seed: int) -> dict[str, float]:
        """The view of the camera with seed ``camera_seed`` (deterministic)."""
        rng = np.random.default_rng(derive_seed(camera_seed, VIEW_STREAM))
        return {key: float(rng.uniform(lo, hi)) for key, (lo, hi) in sorted(self.ranges.items())}

    def generate(self, requests: list[ImageRequest]) -> list[Image.Image]:
        images = self.generator.generate(requests)
        return [self.apply(img, self.params(req.camera_seed)) for img, req in zip(images, requests)]

    def generate_with_info(self, requests: list[ImageRequest]) -> list[Rendered]:
        """The wrapped generator's :class:`Rendered` infos seen through the view: the person mask (H, W)
        bool takes the same squash, tilt and resolution loss as its image (bilinear, then > 0.5), so a
        region measure still reads the person where the warped image shows it."""
        infos = self.generator.generate_with_info(requests)
        out = []
        for info, req in zip(infos, requests):
            p = self.params(req.camera_seed)
            mask = Image.fromarray(np.asarray(info.mask, dtype=np.uint8) * 255)
            warped = np.asarray(self.apply(mask, p)) > 127
            out.append(dataclasses.replace(info, image=self.apply(info.image, p), mask=warped))
        return out

    def close(self) -> None:
        close = getattr(self.generator, "close", None)
        if close is not None:
            close()

    @staticmethod
    def apply(img: Image.Image, p: Mapping[str, float]) -> Image.Image:
        """``img`` (W x H RGB) seen through the view ``p`` (keys of :data:`VIEW_KEYS`); same size."""
        W, H = img.size
        s = float(p.get("squash", 1.0))
        if s < 0.999:
            wide = max(W, int(round(W / s)))
            left = (wide - W) // 2
            img = img.resize((wide, H), Image.BILINEAR).crop((left, 0, left + W, H))
        k = float(p.get("tilt", 0.0))
        if k > 1e-3:
            # output (x, y) -> source ((a x + b y + c) / (h y + 1), e y / (h y + 1)): corners (0, 0) -> (kW, 0),
            # (W, 0) -> ((1 - k) W, 0), (0, H) -> (0, H), (W, H) -> (W, H)
            a = 1.0 - 2.0 * k
            coeffs = (a, -k * W / H, k * W, 0.0, a, 0.0, 0.0, -2.0 * k / H)
            img = img.transform((W, H), Image.PERSPECTIVE, coeffs, Image.BILINEAR)
        f = float(p.get("downscale", 1.0))
        if f > 1.001:
            small = (max(4, int(round(W / f))), max(8, int(round(H / f))))
            img = img.resize(small, Image.BILINEAR).resize((W, H), Image.BILINEAR)
        return img
