"""The language-image pre-training corpus of the sandbox: GenePerson-style, captioned, its own identities.

Written once under ``root`` by the same plan / renderer / writer as GenePerson-mini::

    root/train/      GenePerson train set (bounding_box_train/ + manifest.jsonl with each identity's seed)
    root/heldout/    held-out identities (query/ + bounding_box_test/): zero-shot and caption-to-image
                     evaluation of the pre-trained model
    root/.complete.json   the parameters it was written with (other parameters -> rewritten)

**Disjoint from GenePerson-mini.** The corpus has its own dataset seed (its identity seeds derive from
it) and its own pid range (``pid_start``). When it is built, every identity seed and pid is compared
with those of GenePerson-mini's source (which holds the validation identities) and target domains
(computed from the mini parameters, nothing is read from disk); any overlap stops with one line.

**Vocabulary.** Camera profiles are drawn across the attribute vocabulary (``num_cameras`` balanced
profiles cycle through every background, light, time of day and camera look), as a web-trained CLIP
has seen night scenes and grainy CCTV too. Never a target image or identity. With
``exclude_target_styles=true`` every scene/camera word that *only* the mini targets use (not the
mini source) is removed (:func:`target_only_words`; with the default domains: parking_lot, plaza,
subway_station, streetlight, night, green_cast, grainy, magenta_cast, overexposed).

**Several scenes and looks per identity.** An identity's images cycle through a permutation of the
``num_cameras`` environment profiles, so with 8 images of 40 balanced profiles almost every identity is
seen in two or more backgrounds (same-person, different-background pairs: what identity-level positives
need to learn the person rather than the scene). ``.complete.json`` counts them (``scenes``).

**Identity text** (:func:`identity_caption`): a caption built from the record's person fields only
(:func:`person_record`: the schema's identity keys; no scene, light, weather, camera or viewpoint word),
so an identity's text is true of every one of its images, whatever the scene or the view.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppreid.synth.attributes import (
    AttributeSchema,
    _to_plain,
    derive_seed,
    hidden_attributes,
    identity_seed,
    load_conf_yaml,
)
from ppreid.synth.generators.procedural import ProceduralGenerator
from ppreid.synth.mini import DEFAULT_DOMAINS, DEFAULT_GENERATOR, SOURCE, _domain_seed, write_procedural_set
from ppreid.synth.plan import MAX_PID, SynthPlan, parse_count_range
from ppreid.synth.set_layout import ordered_json
from ppreid.utils.errors import ConfigValueError
from ppreid.utils.fileops import atomic_write_json, file_lock, replace_dir

log = logging.getLogger(__name__)

COMPLETE = ".complete.json"
CORPUS_VERSION = 1
IDENTITY_CAPTION_EXCLUDE = ("viewpoint",)  # per-image: not part of an identity's text
SPLITS = ("train", "heldout")
CORPUS_KEY = 200  # corpus split seeds: derive_seed(seed, 200, split index), apart from the mini's domain seeds
DEFAULT_MINI = {"seed": 0, "num_identities": 300, "target_identities": 300, "domains": None}


def target_only_words(domains: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """Per environment key, the words some target domain allows and the source domain does not."""
    domains = _to_plain(domains) if domains is not None else DEFAULT_DOMAINS
    source = domains[SOURCE].get("style") or {}
    out: dict[str, list[str]] = {}
    for name, spec in domains.items():
        if name == SOURCE:
            continue
        for key, allowed in (spec.get("style") or {}).items():
            allowed = [allowed] if isinstance(allowed, str) else list(allowed)
            seen = set(source.get(key, [])) if key in source else None
            only = [w for w in allowed if seen is not None and w not in seen]
            out.setdefault(key, [])
            out[key] += [w for w in only if w not in out[key]]
    return {k: v for k, v in out.items() if v}


def corpus_style(
    exclude_target_styles: bool,
    domains: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, list[str]] | None:
    """The corpus's vocabulary restriction: None (the whole vocabulary) or every word but the target-only ones."""
    if not exclude_target_styles:
        return None
    schema = AttributeSchema.from_config(attributes)
    return {
        key: [v for v in schema.vocabulary(key).values if v not in words]
        for key, words in target_only_words(domains).items()
    }


def _mini_identities(mini: Mapping[str, Any]) -> tuple[dict[int, str], dict[int, str]]:
    """(identity seed -> 'domain pid', pid -> domain) of every GenePerson-mini identity, as mini.py plans them."""
    domains = _to_plain(mini.get("domains")) or DEFAULT_DOMAINS
    seeds: dict[int, str] = {}
    pids: dict[int, str] = {}
    pid_start = 1
    for name in [SOURCE] + [n for n in domains if n != SOURCE]:
        spec = domains[name]
        count = int(spec.get("num_identities", mini["num_identities" if name == SOURCE else "target_identities"]))
        dseed = _domain_seed(int(mini["seed"]), name)
        for pid in range(pid_start, pid_start + count):
            seeds[identity_seed(dseed, pid)] = f"{name} pid {pid}"
            pids[pid] = name
        pid_start += count
    return seeds, pids


def check_disjoint(plans: Mapping[str, SynthPlan], mini: Mapping[str, Any]) -> None:
    """Stop with one line if a corpus identity shares a seed or a pid with GenePerson-mini."""
    mini_seeds, mini_pids = _mini_identities(mini)
    for split, plan in plans.items():
        for pid in plan.pids:
            seed = identity_seed(plan.seed, pid)
            if seed in mini_seeds:
                raise ConfigValueError(
                    f"pre-training corpus {split} pid {pid} has identity seed {seed}, which GenePerson-mini's "
                    f"{mini_seeds[seed]} uses; choose another corpus seed."
                )
            if pid in mini_pids:
                raise ConfigValueError(
                    f"pre-training corpus {split} pid {pid} is also a GenePerson-mini {mini_pids[pid]} pid; set "
                    f"the corpus pid_start above {max(mini_pids)} so the corpus shares no identity with it."
                )


def corpus_plans(params: Mapping[str, Any]) -> dict[str, SynthPlan]:
    """The train and held-out plans of a corpus (pure function of its parameters)."""
    style = corpus_style(params["exclude_target_styles"], (params["mini"] or {}).get("domains"), params["attributes"])
    plans = {}
    pid_start = int(params["pid_start"])
    for index, split in enumerate(SPLITS):
        count = int(params["num_identities" if split == "train" else "heldout_identities"])
        plan_cfg = {
            "num_identities": count,
            "num_cameras": int(params["num_cameras"]),
            "seed": derive_seed(int(params["seed"]), CORPUS_KEY, index),
            "images_per_identity": params["images_per_identity"],
            "split": "train" if split == "train" else "heldout",
            "queries_per_identity": 1,
            "gallery_per_identity": int(params["heldout_gallery_per_identity"]),
            "pid_start": pid_start,
        }
        plans[split] = SynthPlan.from_config(plan_cfg, params["attributes"], params["prompts"], style)
        pid_start += count
    if pid_start - 1 > MAX_PID:
        raise ConfigValueError(
            f"pre-training corpus: pids {params['pid_start']}..{pid_start - 1} exceed {MAX_PID}; "
            "lower pid_start or the identity counts."
        )
    return plans


def corpus_params(
    num_identities: int,
    heldout_identities: int,
    images_per_identity: Any,
    num_cameras: int,
    seed: int,
    pid_start: int,
    exclude_target_styles: bool,
    heldout_gallery_per_identity: int,
    height: int,
    width: int,
    generator: Mapping[str, Any] | None,
    mini: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Everything the written corpus depends on (stored in ``.complete.json``)."""
    return json.loads(
        ordered_json(
            {
                "version": CORPUS_VERSION,
                "renderer": ProceduralGenerator.model_id,
                "num_identities": int(num_identities),
                "heldout_identities": int(heldout_identities),
                "images_per_identity": list(parse_count_range(images_per_identity)),
                "num_cameras": int(num_cameras),
                "seed": int(seed),
                "pid_start": int(pid_start),
                "exclude_target_styles": bool(exclude_target_styles),
                "heldout_gallery_per_identity": int(heldout_gallery_per_identity),
                "height": int(height),
                "width": int(width),
                "generator": _to_plain(generator) if generator is not None else DEFAULT_GENERATOR,
                "mini": {**DEFAULT_MINI, **(_to_plain(mini) or {})},
                "attributes": load_conf_yaml("synth/attributes.yaml"),
                "prompts": load_conf_yaml("synth/prompts.yaml"),
                "render": load_conf_yaml("synth/render.yaml"),
            }
        )
    )


def person_record(record: Mapping[str, str], schema: AttributeSchema | None = None) -> dict[str, str]:
    """The person fields of an image record (the schema's identity keys): no scene, light, weather, camera
    or viewpoint value survives, so nothing built from it can name them."""
    keys = (schema or _default_schema()).identity_keys
    return {k: record[k] for k in keys if k in record}


def identity_caption(
    captioner: Any,
    record: Mapping[str, str],
    rng: np.random.Generator | None = None,
    schema: AttributeSchema | None = None,
    hidden: Sequence[str] = (),
) -> tuple[str, tuple[str, ...]]:
    """(caption, the attribute keys it states) of the person in ``record``: the captioner's ``content`` kind
    on :func:`person_record` without the viewpoint (random phrasing with ``rng``, canonical without): no
    scene, light or camera word and no side, so it is true of the identity in any scene. A fragment that
    needs a field the person record lacks (a per-image one) is left out, and so is what this image does not
    show: what ``record``'s view hides (glasses on a back view) and ``hidden`` (the manifest's, e.g. shoes
    behind an occluder)."""
    person = person_record(record, schema)
    exclude = set(IDENTITY_CAPTION_EXCLUDE) | {f.name for f in captioner.content if not set(f.keys) <= set(person)}
    unseen = hidden_attributes(record, hidden) if record else ()
    return captioner.describe(person, "content", rng, exclude=tuple(sorted(exclude)), hidden=unseen)


_SCHEMA: list[AttributeSchema] = []


def _default_schema() -> AttributeSchema:
    if not _SCHEMA:
        _SCHEMA.append(AttributeSchema.from_config())
    return _SCHEMA[0]


def scene_counts(manifest: Path) -> dict[str, Any]:
    """How many identities of a GenePerson train folder are seen in two or more backgrounds / camera looks."""
    backgrounds: dict[int, set] = {}
    looks: dict[int, set] = {}
    for line in Path(manifest).read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            attrs = entry.get("attributes") or {}
            backgrounds.setdefault(entry["pid"], set()).add(attrs.get("background"))
            looks.setdefault(entry["pid"], set()).add(attrs.get("camera"))
    n = len(backgrounds)
    return {
        "identities": n,
        "with_2plus_backgrounds": sum(len(v) >= 2 for v in backgrounds.values()),
        "with_2plus_camera_looks": sum(len(v) >= 2 for v in looks.values()),
        "mean_backgrounds": round(float(np.mean([len(v) for v in backgrounds.values()])), 3) if n else 0.0,
    }


def _is_complete(root: Path, params: Mapping[str, Any]) -> bool:
    marker = root / COMPLETE
    try:
        return marker.is_file() and json.loads(marker.read_text()).get("params") == params
    except json.JSONDecodeError:
        return False


def ensure_pretrain_corpus(
    root: str | Path,
    num_identities: int = 1000,
    heldout_identities: int = 100,
    images_per_identity: Any = 8,
    num_cameras: int = 40,
    seed: int = 1,
    pid_start: int = 20001,
    exclude_target_styles: bool = False,
    heldout_gallery_per_identity: int = 4,
    height: int = 128,
    width: int = 64,
    generator: Mapping[str, Any] | None = None,
    mini: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """Write the corpus under ``root`` unless it is there with these parameters; returns ``root``.

    Idempotent, atomic (written into ``<root>.tmp-<pid>``, then renamed) and safe under concurrency
    (an ``flock`` on ``.<root name>.lock``), like GenePerson-mini.

    Args:
        num_identities / heldout_identities: identities of ``train/`` and ``heldout/``.
        images_per_identity: train images per identity (int or [min, max]).
        num_cameras: environment profiles (balanced over the vocabulary).
        seed / pid_start: the corpus's own dataset seed and first pid.
        exclude_target_styles: drop every scene/camera word only the mini targets use.
        mini: the GenePerson-mini parameters to stay disjoint from (``seed``, ``num_identities``,
            ``target_identities``, ``domains``; the defaults of ``data=genepers_mini`` when None).
    """
    root = Path(root).expanduser().resolve()
    params = corpus_params(
        num_identities,
        heldout_identities,
        images_per_identity,
        num_cameras,
        seed,
        pid_start,
        exclude_target_styles,
        heldout_gallery_per_identity,
        height,
        width,
        generator,
        mini,
    )
    if _is_complete(root, params):
        return root
    plans = corpus_plans(params)
    check_disjoint(plans, params["mini"])
    root.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(root.parent / f".{root.name}.lock"):
        if _is_complete(root, params):
            return root
        if root.exists() and not (root / COMPLETE).is_file():
            raise ConfigValueError(
                f"{root} exists but is not a pre-training corpus folder (no {COMPLETE}); move "
                "it away or point the corpus root elsewhere."
            )
        for stale in root.parent.glob(f"{root.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
        start = time.time()
        counts = {}
        style = corpus_style(params["exclude_target_styles"], params["mini"].get("domains"), params["attributes"])
        for split, plan in plans.items():
            counts[split] = write_procedural_set(
                tmp / split, plan, params, params["generator"], style, progress, f"pre-training corpus split {split}"
            )
        scenes = scene_counts(tmp / "train" / "manifest.jsonl")
        atomic_write_json(
            tmp / COMPLETE,
            {"params": params, "counts": counts, "scenes": scenes, "seconds": round(time.time() - start, 2)},
        )
        replace_dir(tmp, root)
        log.info("pre-training corpus ready in %.1f s: %s", time.time() - start, counts)
    return root


def ensure_corpus_and_mini(mini: Mapping[str, Any], corpus: Mapping[str, Any], progress: bool = False) -> Path:
    """``data=sandbox_corpus``: GenePerson-mini (its targets) and the pre-training corpus, disjoint from it."""
    from ppreid.synth.mini import ensure_genepers_mini

    mini = dict(_to_plain(mini))
    corpus = dict(_to_plain(corpus))
    ensure_genepers_mini(progress=progress, **mini)
    check = {k: mini[k] for k in ("seed", "num_identities", "target_identities", "domains") if k in mini}
    return ensure_pretrain_corpus(mini=check, progress=progress, **corpus)
