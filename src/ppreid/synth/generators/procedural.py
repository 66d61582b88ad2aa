"""Generator ``procedural``: draws a pedestrian from its attribute record, offline, in milliseconds.

It renders the same records the diffusion prompts are built from, so the whole stage-1 pipeline
(schema -> writer -> GenePerson -> training) runs on a laptop with no model weights.

What comes from where (all numpy ``default_rng`` streams of derived seeds):
- identity seed: exact colours and proportions (:func:`make_look`), so identities sharing every
  attribute word still differ;
- camera seed: the camera's scene layout and palette, side light, lamp pool, exact camera look
  (colour cast, blur, noise, contrast, gamma, JPEG quality, resolution);
- image seed: pose (stride, arm swing), bounding-box jitter (scale, shift), scene window,
  weather particles, a passer-by behind or an occluder in front, per-image exposure and noise.
The result depends only on the request, never on the batch or the process.

:meth:`ProceduralGenerator.render_info` also returns the person's mask (the silhouette's alpha > 0.5
after the occluder, the passer-by excluded) and the attributes the image hides: those its view hides
(:func:`ppreid.synth.attributes.hidden_attributes`) and the shoes when less than half of them shows
(behind an occluder or below the frame).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ppreid.synth.attributes import _to_plain, derive_seed, hidden_attributes
from ppreid.synth.generators.base import ImageGenerator, ImageRequest
from ppreid.synth.render.appearance import PersonLook, look_words, make_look, sample_pose
from ppreid.synth.render.look import apply_camera, apply_weather, light_map, noise_bank, vignette_map
from ppreid.synth.render.person import PersonPainter
from ppreid.synth.render.props import alpha_of, body_shading, cast_shadow, draw_occluder, draw_passer_by, shoes_show
from ppreid.synth.render.scene import draw_scene
from ppreid.synth.render.tables import RenderTables
from ppreid.utils.errors import ConfigValueError

LOOK_STREAM, CAMERA_STREAM, IMAGE_STREAM = 3, 4, 5
NEUTRAL_LOOK = {
    "cast_r": 1.0,
    "cast_g": 1.0,
    "cast_b": 1.0,
    "blur": 0.0,
    "noise": 0.0,
    "contrast": 1.0,
    "saturation": 1.0,
    "gamma": 1.0,
    "jpeg": 95.0,
    "downscale": 1.0,
    "vignette": 0.0,
    "exposure": 1.0,
}


@dataclass
class Rendered:
    """One rendered image and what it shows.

    image: RGB, (W, H) = the request's size.
    mask: (H, W) bool, True where the requested person is seen (not the passer-by, not the occluder).
    hidden: attribute keys of the request's record that this image does not show (record order).
    """

    image: Image.Image
    mask: np.ndarray
    hidden: tuple[str, ...]


class _LRU(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = self[key] = make()
        if len(self) > self.size:
            self.popitem(last=False)
        return value


class ProceduralGenerator(ImageGenerator):
    """Offline renderer of attribute records (``generator=procedural``).

    Args:
        render: render tables (shape of ``conf/synth/render.yaml``; that file when None).
        supersample: the person is drawn at this multiple of the output size, then box-filtered
            (anti-aliasing).
        person_height: [lo, hi] person height as a fraction of the image height (bbox scale jitter).
        shift_x / shift_y: max horizontal / vertical bbox shift, fraction of width / height.
        distractor_prob: chance of a passer-by partly visible behind the person.
        occluder_prob: chance of an object in front of the person's legs.
        cache_size: cameras and identities kept in memory (scenes are drawn once per camera).
        num_workers: 0 renders in this process; n > 0 spreads each batch over n worker processes
            (spawned, each with its own renderer; output is identical, only faster on n cores).
        scene_contrast: background contrast about its mean colour (1 = as drawn; lower makes the
            person stand out more).
        look_strength: scales every camera-look parameter's distance from neutral (cast, blur,
            noise, contrast, gamma, JPEG, resolution, vignette); 0 = an ideal camera.
        light_strength: scales illumination and time-of-day brightness/colour away from neutral, and
            the side light and lamp pools on the scene.
    """

    name = "procedural"
    model_id = "procedural-v2"  # bump when the drawing changes (GenePerson-mini and the corpus are then rewritten)

    def __init__(
        self,
        render: Mapping[str, Any] | None = None,
        supersample: int = 2,
        person_height: Sequence[float] = (0.8, 0.97),
        shift_x: float = 0.07,
        shift_y: float = 0.03,
        distractor_prob: float = 0.2,
        occluder_prob: float = 0.1,
        cache_size: int = 256,
        num_workers: int = 0,
        scene_contrast: float = 1.0,
        look_strength: float = 1.0,
        light_strength: float = 1.0,
    ) -> None:
        self._options = dict(
            render=render,
            supersample=supersample,
            person_height=_to_plain(person_height),
            shift_x=shift_x,
            shift_y=shift_y,
            distractor_prob=distractor_prob,
            occluder_prob=occluder_prob,
            cache_size=cache_size,
            scene_contrast=scene_contrast,
            look_strength=look_strength,
            light_strength=light_strength,
        )
        self.tables = RenderTables.from_config(render)
        person_height = tuple(float(v) for v in (_to_plain(person_height) or ()))
        if int(supersample) < 1:
            raise ConfigValueError(f"generator.supersample={supersample} must be an integer >= 1.")
        if len(person_height) != 2 or not 0.2 <= person_height[0] <= person_height[1] <= 1.2:
            raise ConfigValueError(
                f"generator.person_height={list(person_height)} must be [lo, hi] with "
                "0.2 <= lo <= hi <= 1.2 (fraction of the image height)."
            )
        for name, v in (
            ("distractor_prob", distractor_prob),
            ("occluder_prob", occluder_prob),
            ("shift_x", shift_x),
            ("shift_y", shift_y),
        ):
            if not 0.0 <= float(v) <= 1.0:
                raise ConfigValueError(f"generator.{name}={v} must be in [0, 1].")
        for name, v in (
            ("scene_contrast", scene_contrast),
            ("look_strength", look_strength),
            ("light_strength", light_strength),
        ):
            if not 0.0 <= float(v) <= 3.0:
                raise ConfigValueError(f"generator.{name}={v} must be in [0, 3] (1 = the render tables as written).")
        self.scene_contrast, self.look_strength = float(scene_contrast), float(look_strength)
        self.light_strength = float(light_strength)
        self.supersample = int(supersample)
        self.person_height = person_height
        self.shift_x, self.shift_y = float(shift_x), float(shift_y)
        self.distractor_prob, self.occluder_prob = float(distractor_prob), float(occluder_prob)
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigValueError(f"generator.num_workers={num_workers!r} must be an integer >= 0.")
        self.num_workers = num_workers
        self._pool = None
        self._cameras = _LRU(int(cache_size))
        self._looks = _LRU(int(cache_size))

    def generate(self, requests: list[ImageRequest]) -> list[Image.Image]:
        if self.num_workers == 0 or len(requests) < 2:
            return [self.render(r) for r in requests]
        return self._map(_render_in_worker, requests)

    def generate_with_info(self, requests: list[ImageRequest]) -> list[Rendered]:
        """:meth:`render_info` of each request (the writer's masks); the same images as :meth:`generate`."""
        if self.num_workers == 0 or len(requests) < 2:
            return [self.render_info(r) for r in requests]
        return self._map(_render_info_in_worker, requests)

    def _map(self, fn, requests: list[ImageRequest]) -> list:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                self.num_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self._options,),
            )
        chunk = max(1, len(requests) // (4 * self.num_workers))
        return list(self._pool.map(fn, requests, chunksize=chunk))

    def close(self) -> None:
        """Stop the worker processes (if any)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __getstate__(self):
        raise TypeError("ProceduralGenerator is not picklable; workers build their own from the options.")

    # ---- cached per camera / identity -----------------------------------------------------------
    def _camera(self, req: ImageRequest) -> dict[str, Any]:
        a = req.attributes
        key = (req.camera_seed, a["background"], a["illumination"], a["camera"], req.height, req.width)

        def make():
            rng = np.random.default_rng(derive_seed(req.camera_seed, CAMERA_STREAM))
            illum = self.tables.entry("illumination", a["illumination"])
            scene, _ = draw_scene(self.tables.entry("backgrounds", a["background"]), rng, req.height, req.width)
            k = self.light_strength
            light = light_map(
                rng,
                scene.shape[0],
                scene.shape[1],
                float(illum.get("directional", 0.0)) * k,
                float(illum.get("pool", 0.0)) * k,
            )
            params = self.tables.camera_params(a["camera"], rng)
            params = {
                k: NEUTRAL_LOOK.get(k, v) + (v - NEUTRAL_LOOK.get(k, v)) * self.look_strength for k, v in params.items()
            }
            if self.scene_contrast != 1.0:
                mean = scene.mean(axis=(0, 1), keepdims=True)
                scene = mean + (scene - mean) * self.scene_contrast
            return {
                "scene": scene * light,
                "light_side": 1.0 if rng.random() < 0.5 else -1.0,
                "params": params,
                "illumination": illum,
                "noise": noise_bank(rng, req.height, req.width),
                "vignette": vignette_map(req.height, req.width, params.get("vignette", 0.0)),
            }

        return self._cameras.get_or(key, make)

    def _look(self, req: ImageRequest) -> PersonLook:
        # keyed on the identity's appearance words only: every image of an identity (other camera,
        # weather, viewpoint) reuses its look
        key = (req.identity_seed, tuple(look_words(req.attributes).items()))
        return self._looks.get_or(
            key,
            lambda: make_look(
                req.attributes, self.tables, np.random.default_rng(derive_seed(req.identity_seed, LOOK_STREAM))
            ),
        )

    # ---- one image ------------------------------------------------------------------------------
    def render(self, req: ImageRequest) -> Image.Image:
        """One RGB image of size ``(req.width, req.height)`` for ``req`` (deterministic)."""
        return self.render_info(req).image

    def render_info(self, req: ImageRequest) -> Rendered:
        """:meth:`render`'s image with the person's mask and the attributes the image hides."""
        H, W, ss = int(req.height), int(req.width), self.supersample
        if H < 16 or W < 8:
            raise ConfigValueError(f"image size {H}x{W} is too small for the procedural renderer (min 16x8).")
        a = req.attributes
        cam = self._camera(req)
        look = self._look(req)
        time = self.tables.entry("time_of_day", a["time_of_day"])
        weather = self.tables.entry("weather", a["weather"]) or {}
        rng = np.random.default_rng(derive_seed(req.seed, IMAGE_STREAM))

        scene = cam["scene"]
        ox = int(rng.integers(0, scene.shape[1] - W + 1))
        bg = scene[:, ox : ox + W].copy()

        P = H * rng.uniform(*self.person_height)
        top = (H - P) * rng.uniform(0.25, 0.75) + H * rng.uniform(-self.shift_y, self.shift_y)
        cx = W * (0.5 + rng.uniform(-self.shift_x, self.shift_x))
        cast_shadow(bg, cx, top + P, P, float(cam["illumination"].get("shadow", 0.3)), cam["light_side"])

        size = (W * ss, H * ss)
        layer = Image.new("RGBA", size, (0, 0, 0, 0))
        if rng.random() < self.distractor_prob:
            draw_passer_by(self.tables, layer, rng, cx * ss, top * ss, P * ss, W * ss)
        body = Image.new("RGBA", size, (0, 0, 0, 0))
        painter = PersonPainter(body, look, sample_pose(a["viewpoint"], rng), cx * ss, top * ss, P * ss)
        painter.paint()
        layer.alpha_composite(body)
        occluder = None
        if rng.random() < self.occluder_prob:
            occluder = Image.new("RGBA", size, (0, 0, 0, 0))
            draw_occluder(occluder, rng, W * ss, H * ss, top * ss, P * ss)
            layer.alpha_composite(occluder)
        if ss > 1:
            layer = layer.reduce(ss)
        arr = np.asarray(layer, np.float32) / 255.0
        alpha = arr[..., 3:]
        seen = alpha_of(body, ss) * (1.0 - (alpha_of(occluder, ss) if occluder is not None else 0.0))
        hidden = () if shoes_show(painter.shoe_boxes, occluder, size, ss) else ("shoes",)
        person = arr[..., :3] * body_shading(H, W, cx, top, P, cam)
        img = bg * (1 - alpha) + person * alpha

        illum, k = cam["illumination"], self.light_strength
        gains = np.asarray(illum.get("gains", (1, 1, 1)), np.float32) * np.asarray(
            time.get("gains", (1, 1, 1)), np.float32
        )
        brightness = float(illum.get("brightness", 1.0)) * float(time.get("brightness", 1.0))
        img = img * (1 + (gains - 1) * k) * (1 + (brightness - 1) * k)
        img = apply_weather(img, weather, rng)
        image = Image.fromarray(apply_camera(img, cam["params"], rng, cam["noise"], cam["vignette"]), mode="RGB")
        return Rendered(image, seen > 0.5, hidden_attributes(a, hidden))


_WORKER: ProceduralGenerator | None = None


def _init_worker(options: dict[str, Any]) -> None:
    global _WORKER
    _WORKER = ProceduralGenerator(**options)


def _render_in_worker(request: ImageRequest) -> Image.Image:
    return _WORKER.render(request)


def _render_info_in_worker(request: ImageRequest) -> Rendered:
    return _WORKER.render_info(request)
