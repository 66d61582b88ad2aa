"""GenePerson-mini: the embedded default data of ``python train.py`` (procedural, no downloads).

Written once under ``root`` and reused::

    root/source/            GenePerson train set (bounding_box_train/ + manifest.jsonl ...)
    root/<target>/          held-out domain: query/ + bounding_box_test/ + manifest.jsonl (split field)
    root/.complete.json     the parameters it was written with (other parameters -> rewritten)

Why it is a real cross-domain task: identity lives in appearance (garment colours and patterns,
hair, bags, body proportions, with per-identity continuous offsets), which every domain renders
the same way; style lives in the environment (scene, light, camera colour cast / blur / noise /
resolution), which the target domains draw from vocabularies the source never shows (e.g.
night-time parking lots seen by grainy green CCTV). A model must keep the first and drop the
second. Targets hold identities disjoint from the source (their own pids and seeds); each query
has its gallery matches only in other cameras.

Domain styles are config data (``domains``), shaped like :data:`DEFAULT_DOMAINS`: a name ->
``{"num_cameras", "style": {environment key: [allowed words]}}``, optionally also
``num_identities``, ``images_per_identity`` (source), ``queries_per_identity`` /
``gallery_per_identity`` (targets), ``generator`` (ProceduralGenerator options for that domain) and
``view`` (a camera geometry the renderer has no knob for, applied to its images: :class:`CameraView`).
The domain named ``source`` is the training set; every other one is a held-out target.

Targets: ``night_cctv`` and ``station_indoor`` shift scene, light and colour; ``far_high`` also shifts
what the source never shows in the person: a far, high camera (a smaller person in the box through the
renderer's ``person_height``, a steep view and the resolution loss of a far sensor through
:class:`CameraView`). Each target holds 300 identities with 2 queries and 4 gallery images each
(``data.prepare``): 600 queries per target (100 in version 1), so a difference between two runs
rests on six times as many queries. ``night_cctv`` and ``far_high`` put two backgrounds on their 4
cameras (cameras 1 and 3 one, 2 and 4 the other), so every query has matches in another scene and
most also in its own: the scene sensitivity of every run (``ppreid.metrics.scene_split.scene_split_ap``).

Version 2 untrained (``python train.py train=false``, seed 42): R1 / mAP 3.7 / 2.6 (night_cctv),
4.5 / 4.3 (station_indoor), 3.0 / 2.3 (far_high); same-scene vs other-scene AP 6.7 vs 0.5 and 5.1
vs 0.4 (night_cctv, far_high): random features rank by scene. Version 1 calibration (two targets
of 100 identities x 1 query; the source is unchanged since): the default ``python train.py`` (BoT, tiny CNN, 32 epochs, 2 CPU cores, 7.6 min
with the 14.5 s of data generation) gave night_cctv R1 0.67 / mAP 0.45 and station_indoor R1 0.81 /
mAP 0.77; untrained (``train=false``) R1 0.05 / 0.10, mAP 0.05 / 0.08. What made targets learnable: a
light type shared by a domain's cameras (cameras that differ in light, e.g. streetlight vs neon, or
in resolution, left transfer near chance), balanced camera looks, and :data:`DEFAULT_GENERATOR`
nuisance strengths (night_cctv milder, 0.15: at 0.25 the same model reached R1 0.45; at full
strength the baseline stayed at chance on both targets). Raise ``look_strength`` /
``light_strength`` for a harder benchmark.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ppreid.synth.attributes import _to_plain, derive_seed, load_conf_yaml
from ppreid.synth.camera_view import CameraView, check_view
from ppreid.synth.generators.base import ImageGenerator
from ppreid.synth.generators.procedural import ProceduralGenerator
from ppreid.synth.plan import SynthPlan, parse_count_range
from ppreid.synth.set_layout import ordered_json
from ppreid.synth.writer import GenePersonWriter
from ppreid.utils.errors import ConfigValueError
from ppreid.utils.fileops import atomic_write_json, file_lock, replace_dir

log = logging.getLogger(__name__)

SOURCE = "source"
COMPLETE = ".complete.json"
MINI_VERSION = 2  # bump when the domains or the post-processing change (old sets are then rewritten)

DEFAULT_DOMAINS: dict[str, dict[str, Any]] = {
    SOURCE: {
        "num_cameras": 6,
        "style": {
            "background": ["street", "park", "campus", "shopping_mall"],
            "illumination": ["bright_sunlight", "overcast", "soft_shade", "fluorescent"],
            "time_of_day": ["morning", "noon", "afternoon"],
            "camera": ["clean", "warm_cast", "cool_cast", "soft_focus", "low_contrast"],
            "weather": ["clear", "cloudy", "rainy", "none"],
        },
    },
    "night_cctv": {
        "num_cameras": 4,
        "style": {
            "background": ["parking_lot", "plaza"],
            "illumination": ["streetlight"],
            "time_of_day": ["night"],
            "camera": ["green_cast", "grainy"],
            "weather": ["clear", "cloudy"],
        },
        "generator": {"look_strength": 0.15, "light_strength": 0.15},
    },
    "station_indoor": {
        "num_cameras": 4,
        "style": {
            "background": ["subway_station"],
            "illumination": ["fluorescent"],
            "time_of_day": ["morning", "noon", "afternoon"],
            "camera": ["magenta_cast", "overexposed", "grainy"],
            "weather": ["none"],
        },
    },
    # A far camera mounted high over an outdoor square: the person is smaller in the box (renderer:
    # person_height), seen from above (CameraView: tilt, squash) and resolved by fewer pixels
    # (CameraView: downscale), besides camera colour looks the source never shows (magenta cast, over-exposure).
    "far_high": {
        "num_cameras": 4,
        "style": {
            "background": ["plaza", "parking_lot"],
            "illumination": ["overcast"],
            "time_of_day": ["noon", "afternoon"],
            "camera": ["magenta_cast", "overexposed"],
            "weather": ["clear", "cloudy"],
        },
        "generator": {"person_height": [0.6, 0.75]},
        "view": {"tilt": [0.08, 0.12], "squash": [0.82, 0.9], "downscale": [2.0, 2.5]},
    },
}
# Nuisance strength of every domain (ProceduralGenerator options): calibrated so that the default
# BoT run on 2 CPU cores learns the targets (stronger settings are a harder benchmark).
DEFAULT_GENERATOR: dict[str, Any] = {
    "look_strength": 0.35,
    "light_strength": 0.35,
    "scene_contrast": 0.5,
    "distractor_prob": 0.1,
    "occluder_prob": 0.05,
}
DOMAIN_KEYS = {
    "num_cameras",
    "style",
    "num_identities",
    "images_per_identity",
    "queries_per_identity",
    "gallery_per_identity",
    "generator",
    "view",
}


def _domain_seed(seed: int, name: str) -> int:
    return derive_seed(seed, 100, zlib.crc32(name.encode("utf-8")))


def mini_params(
    num_identities: int,
    images_per_identity: Any,
    target_identities: int,
    queries_per_identity: int,
    gallery_per_identity: int,
    seed: int,
    height: int,
    width: int,
    domains: Mapping[str, Any],
    generator: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Everything the written data depends on (stored in ``.complete.json``)."""
    return json.loads(
        ordered_json(
            {
                "version": MINI_VERSION,
                "renderer": ProceduralGenerator.model_id,
                "num_identities": num_identities,
                "images_per_identity": list(parse_count_range(images_per_identity)),
                "target_identities": target_identities,
                "queries_per_identity": queries_per_identity,
                "gallery_per_identity": gallery_per_identity,
                "seed": seed,
                "height": height,
                "width": width,
                "domains": domains,
                "generator": generator or {},
                "attributes": load_conf_yaml("synth/attributes.yaml"),
                "prompts": load_conf_yaml("synth/prompts.yaml"),
                "render": load_conf_yaml("synth/render.yaml"),
            }
        )
    )


def is_complete(root: str | Path, params: Mapping[str, Any] | None = None) -> bool:
    """True if ``root`` holds a finished mini set (with exactly ``params`` when given)."""
    marker = Path(root) / COMPLETE
    if not marker.is_file():
        return False
    if params is None:
        return True
    try:
        return json.loads(marker.read_text()).get("params") == params
    except json.JSONDecodeError:
        return False


def ensure_genepers_mini(
    root: str | Path,
    num_identities: int = 300,
    images_per_identity: Any = 8,
    target_identities: int = 300,
    queries_per_identity: int = 2,
    gallery_per_identity: int = 4,
    seed: int = 0,
    height: int = 128,
    width: int = 64,
    domains: Mapping[str, Any] | None = None,
    generator: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """Write GenePerson-mini under ``root`` unless it is already there with these parameters.

    Idempotent (``root/.complete.json``), safe under concurrency (an ``flock`` on
    ``<root>.lock``: a second process waits, then finds it complete) and atomic (written into
    ``<root>.tmp-<pid>`` and renamed). Returns ``root``.

    Args:
        num_identities / images_per_identity: source size (int or [min, max] per identity).
        target_identities / queries_per_identity / gallery_per_identity: size of each target domain.
        domains: name -> domain style (see module docstring); :data:`DEFAULT_DOMAINS` when None.
        generator: ProceduralGenerator options for every domain (a domain's ``generator`` adds to them);
            :data:`DEFAULT_GENERATOR` when None.
    """
    root = Path(root).expanduser().resolve()
    domains = _to_plain(domains) if domains is not None else DEFAULT_DOMAINS
    _check_domains(domains)
    generator = _to_plain(generator) if generator is not None else DEFAULT_GENERATOR
    params = mini_params(
        num_identities,
        images_per_identity,
        target_identities,
        queries_per_identity,
        gallery_per_identity,
        seed,
        height,
        width,
        domains,
        generator,
    )
    if is_complete(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        if is_complete(root, params):
            return root
        if root.exists() and not (root / COMPLETE).is_file():
            raise ConfigValueError(
                f"{root} exists but is not a GenePerson-mini folder (no {COMPLETE}); move it away or point the "
                "data root elsewhere (paths.data_dir)."
            )
        for stale in root.parent.glob(f"{root.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
        start = time.time()
        log.info("writing GenePerson-mini into %s (once; reused afterwards)", root)
        counts = _write_domains(tmp, params, progress)
        atomic_write_json(
            tmp / COMPLETE, {"params": params, "counts": counts, "seconds": round(time.time() - start, 2)}
        )
        replace_dir(tmp, root)
        log.info("GenePerson-mini ready in %.1f s: %s", time.time() - start, counts)
    return root


def write_procedural_set(
    out: Path,
    plan: SynthPlan,
    params: Mapping[str, Any],
    generator: Mapping[str, Any],
    style: Any,
    progress: bool,
    what: str,
    view: Mapping[str, Any] | None = None,
) -> int:
    """Render ``plan`` with the procedural generator into the GenePerson folder ``out`` (writer, JPEG 95,
    person masks, no fsync: the caller swaps the finished parent folder in atomically); returns the number
    of images. ``view``: a :class:`CameraView` applied to every rendered image and its mask (None: as
    rendered)."""
    gen: ImageGenerator = ProceduralGenerator(render=params["render"], **generator)
    if view:
        gen = CameraView(gen, **view)
    config = {
        "plan": plan.describe(),
        "attributes": params["attributes"],
        "prompts": params["prompts"],
        "style": style,
        "height": params["height"],
        "width": params["width"],
        "jpeg_quality": 95,
        "generator": {"name": "procedural", **generator},
        **({"view": dict(view)} if view else {}),
        "quality_filter": None,
    }
    writer = GenePersonWriter(
        out,
        plan,
        gen,
        config,
        params["height"],
        params["width"],
        batch_size=64,
        fsync=False,
        progress=progress,
        masks=True,  # person masks beside the images (region measures of the privacy audit)
    )
    try:
        info = writer.run()
    finally:
        gen.close()
    if info is None:
        raise RuntimeError(f"{what} did not complete")
    return int(info["num_images"])


def _check_domains(domains: Mapping[str, Any]) -> None:
    if not isinstance(domains, Mapping) or SOURCE not in domains or len(domains) < 2:
        raise ConfigValueError(
            f"GenePerson-mini domains must be a map with a '{SOURCE}' entry and at least one target domain, "
            f"got {list(domains) if isinstance(domains, Mapping) else domains!r}."
        )
    for name, spec in domains.items():
        if not isinstance(spec, Mapping) or set(spec) - DOMAIN_KEYS:
            raise ConfigValueError(
                f"GenePerson-mini domain '{name}' = {spec!r}: keys must be among {sorted(DOMAIN_KEYS)}."
            )
        if not str(name).replace("_", "").replace("-", "").isalnum():
            raise ConfigValueError(f"GenePerson-mini domain name '{name}' must be a plain folder name.")
        if spec.get("view"):
            check_view(spec["view"], f"GenePerson-mini domain '{name}' view")


def _write_domains(tmp: Path, params: Mapping[str, Any], progress: bool) -> dict[str, int]:
    counts: dict[str, int] = {}
    names = [SOURCE] + [n for n in params["domains"] if n != SOURCE]
    pid_start = 1
    for name in names:
        spec = params["domains"][name]
        is_source = name == SOURCE
        plan_cfg = {
            "num_identities": int(
                spec.get("num_identities", params["num_identities" if is_source else "target_identities"])
            ),
            "num_cameras": int(spec.get("num_cameras", 6 if is_source else 4)),
            "seed": _domain_seed(params["seed"], name),
            "images_per_identity": list(
                parse_count_range(spec.get("images_per_identity", params["images_per_identity"]))
            ),
            "split": "train" if is_source else "heldout",
            "queries_per_identity": int(spec.get("queries_per_identity", params["queries_per_identity"])),
            "gallery_per_identity": int(spec.get("gallery_per_identity", params["gallery_per_identity"])),
            "pid_start": pid_start,
        }
        plan = SynthPlan.from_config(plan_cfg, params["attributes"], params["prompts"], spec.get("style"))
        gen_opts = {**params["generator"], **(spec.get("generator") or {})}
        counts[name] = write_procedural_set(
            tmp / name,
            plan,
            params,
            gen_opts,
            spec.get("style"),
            progress,
            f"GenePerson-mini domain {name}",
            view=spec.get("view"),
        )
        pid_start += plan.num_identities
    return counts
