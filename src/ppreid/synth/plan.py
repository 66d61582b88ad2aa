"""The plan of a GenePerson set: which identities, which images, with which seeds, words and names.

A plan is a pure function of its parameters (no I/O), computed per identity on demand so a shard
only builds its own identities. File names are Market-style: ``PPPPP_cC_SSSSSS.jpg`` (pid, camera
1-based, image index within the identity).

Per identity (its rng = ``default_rng(identity_seed)``): the image count (when a ``[min, max]``
range is given) is drawn first, then the identity attributes, then a permutation of the cameras;
image k uses camera ``perm[k % num_cameras]`` so an identity is seen by as many cameras as it can.
Per image (rng = ``default_rng(image_seed)``): weather and viewpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ppreid.synth.attributes import AttributeSchema, camera_seed, derive_seed, identity_seed, image_seed
from ppreid.synth.generators.base import ImageRequest
from ppreid.synth.prompts import PromptBuilder
from ppreid.utils.errors import ConfigValueError

TRAIN_DIR = "bounding_box_train"
QUERY_DIR = "query"
GALLERY_DIR = "bounding_box_test"
SPLIT_DIRS = {"train": TRAIN_DIR, "query": QUERY_DIR, "gallery": GALLERY_DIR}
MAX_PID = 99_999
MAX_INDEX = 999_999
MAX_CAMERAS = 99
BALANCE_KEY = 2**32  # camera-set shuffle: derive_seed(seed, 1, 2**32), apart from camera_seed(seed, c)


def image_name(pid: int, camid: int, index: int) -> str:
    """``PPPPP_cC_SSSSSS.jpg`` with camera 1-based (camid 0 -> c1)."""
    return f"{pid:05d}_c{camid + 1}_{index:06d}.jpg"


@dataclass
class PlannedImage:
    """One image to make. ``file`` is relative to the set's folder (``bounding_box_train/...``)."""

    file: str
    split: str
    pid: int
    camid: int
    index: int
    seed: int
    identity_seed: int
    camera_seed: int
    attributes: dict[str, str]
    prompt: str
    negative_prompt: str

    def request(self, height: int, width: int, seed: int | None = None) -> ImageRequest:
        return ImageRequest(
            pid=self.pid,
            camid=self.camid,
            attributes=dict(self.attributes),
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed if seed is None else seed,
            identity_seed=self.identity_seed,
            height=height,
            width=width,
            camera_seed=self.camera_seed,
        )

    def manifest_entry(self, generator: str, seed: int | None = None) -> dict[str, Any]:
        """The manifest line's content (deterministic: no timing, no paths outside the set)."""
        return {
            "file": self.file,
            "split": self.split,
            "pid": self.pid,
            "camid": self.camid,
            "seed": self.seed if seed is None else seed,
            "identity_seed": self.identity_seed,
            "camera_seed": self.camera_seed,
            "attributes": self.attributes,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "generator": generator,
        }


@dataclass
class PlannedIdentity:
    pid: int
    identity_seed: int
    attributes: dict[str, str]
    images: list[PlannedImage] = field(default_factory=list)

    def identity_entry(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "identity_seed": self.identity_seed,
            "num_images": len(self.images),
            "attributes": self.attributes,
        }


def parse_count_range(value: Any, name: str = "images_per_identity") -> tuple[int, int]:
    """An int ``n`` -> (n, n); ``[min, max]`` -> (min, max); checked >= 1 and min <= max."""
    try:
        from omegaconf import ListConfig

        if isinstance(value, ListConfig):
            value = list(value)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        lo = hi = value
    elif (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        lo, hi = value
    else:
        raise ConfigValueError(
            f"{name}={value!r} must be an integer or a [min, max] pair of integers, e.g. {name}=8 or {name}=[10,30]."
        )
    if lo < 1 or lo > hi or hi > MAX_INDEX + 1:
        raise ConfigValueError(f"{name}={value!r}: need 1 <= min <= max <= {MAX_INDEX + 1}; e.g. {name}=[10,30].")
    return lo, hi


class SynthPlan:
    """Identities ``pid_start .. pid_start + num_identities - 1`` and their images.

    Args:
        schema / prompts: attribute schema (possibly restricted to a domain style) and prompt builder.
        num_identities, num_cameras, seed: the set's size and dataset seed.
        images_per_identity: ``(min, max)`` (train layout).
        split: ``"train"`` (``bounding_box_train/``) or ``"heldout"`` (``query/`` + ``bounding_box_test/``).
        queries_per_identity / gallery_per_identity: held-out layout: the first ``q`` cameras of an
            identity's permutation give one query each; gallery images cycle over the other cameras,
            so a query never has a same-camera match.
        pid_start: first pid (>= 1), so several sets can hold disjoint identities.
    """

    def __init__(
        self,
        schema: AttributeSchema,
        prompts: PromptBuilder,
        num_identities: int,
        num_cameras: int,
        seed: int,
        images_per_identity: tuple[int, int] = (1, 1),
        split: str = "train",
        queries_per_identity: int = 1,
        gallery_per_identity: int = 4,
        pid_start: int = 1,
    ) -> None:
        for name, v, lo in (
            ("num_identities", num_identities, 1),
            ("num_cameras", num_cameras, 1),
            ("pid_start", pid_start, 1),
            ("seed", seed, 0),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigValueError(f"{name}={v!r} must be an integer >= {lo}.")
        if num_cameras > MAX_CAMERAS:
            raise ConfigValueError(
                f"num_cameras={num_cameras}: at most {MAX_CAMERAS} environment profiles (names c1..c{MAX_CAMERAS})."
            )
        if pid_start + num_identities - 1 > MAX_PID:
            raise ConfigValueError(
                f"num_identities={num_identities} (from pid {pid_start}) exceeds the 5-digit "
                f"pid of GenePerson names (max pid {MAX_PID})."
            )
        if split not in ("train", "heldout"):
            raise ConfigValueError(f"split={split!r} must be 'train' or 'heldout'.")
        if split == "heldout" and (
            queries_per_identity < 1 or gallery_per_identity < 1 or queries_per_identity >= num_cameras
        ):
            raise ConfigValueError(
                f"held-out split needs 1 <= queries_per_identity ({queries_per_identity}) < num_cameras "
                f"({num_cameras}) and gallery_per_identity >= 1 ({gallery_per_identity}), so query and "
                "gallery come from different cameras."
            )
        prompts.check_covers(schema.identity_keys + schema.environment_keys)
        self.schema, self.prompts = schema, prompts
        self.num_identities, self.num_cameras, self.seed = num_identities, num_cameras, seed
        self.images_per_identity = parse_count_range(list(images_per_identity))
        self.split = split
        self.queries_per_identity, self.gallery_per_identity = queries_per_identity, gallery_per_identity
        self.pid_start = pid_start
        self.camera_seeds = [camera_seed(seed, c) for c in range(num_cameras)]
        prefer = schema.balanced_camera_preferences(
            np.random.default_rng(derive_seed(seed, 1, BALANCE_KEY)), num_cameras
        )
        self.camera_profiles = [
            schema.sample_camera_profile(np.random.default_rng(s), p) for s, p in zip(self.camera_seeds, prefer)
        ]

    @property
    def pids(self) -> list[int]:
        return list(range(self.pid_start, self.pid_start + self.num_identities))

    def shard_pids(self, shard: int, num_shards: int) -> list[int]:
        """Shard ``i`` of ``n`` owns the pids with ``(pid - pid_start) % n == i``."""
        return [p for p in self.pids if (p - self.pid_start) % num_shards == shard]

    def identity(self, pid: int) -> PlannedIdentity:
        id_seed = identity_seed(self.seed, pid)
        rng = np.random.default_rng(id_seed)
        lo, hi = self.images_per_identity
        count = int(rng.integers(lo, hi + 1)) if self.split == "train" else 0
        attrs = self.schema.sample_identity(rng)
        perm = [int(c) for c in rng.permutation(self.num_cameras)]
        if self.split == "train":
            layout = [("train", perm[k % len(perm)]) for k in range(count)]
        else:
            q = self.queries_per_identity
            others = perm[q:]
            layout = [("query", c) for c in perm[:q]]
            layout += [("gallery", others[k % len(others)]) for k in range(self.gallery_per_identity)]
        ident = PlannedIdentity(pid, id_seed, attrs)
        for k, (split, camid) in enumerate(layout):
            seed = image_seed(id_seed, k)
            profile = self.camera_profiles[camid]
            env = {**profile, **self.schema.sample_image(np.random.default_rng(seed), attrs, profile)}
            record = {**attrs, **env}
            positive, negative = self.prompts.build(record)
            ident.images.append(
                PlannedImage(
                    file=f"{SPLIT_DIRS[split]}/{image_name(pid, camid, k)}",
                    split=split,
                    pid=pid,
                    camid=camid,
                    index=k,
                    seed=seed,
                    identity_seed=id_seed,
                    camera_seed=self.camera_seeds[camid],
                    attributes=record,
                    prompt=positive,
                    negative_prompt=negative,
                )
            )
        return ident

    def identities(self, pids: Sequence[int] | None = None) -> Iterator[PlannedIdentity]:
        for pid in self.pids if pids is None else pids:
            yield self.identity(pid)

    def describe(self) -> dict[str, Any]:
        """The plan's parameters: ``SynthPlan.from_config(plan.describe(), ...)`` rebuilds it."""
        return {
            "num_identities": self.num_identities,
            "num_cameras": self.num_cameras,
            "seed": self.seed,
            "images_per_identity": list(self.images_per_identity),
            "split": self.split,
            "queries_per_identity": self.queries_per_identity,
            "gallery_per_identity": self.gallery_per_identity,
            "pid_start": self.pid_start,
        }

    @classmethod
    def from_config(
        cls,
        plan: Mapping[str, Any],
        attributes: Mapping[str, Any] | None = None,
        prompts: Mapping[str, Any] | None = None,
        style: Mapping[str, Any] | None = None,
    ) -> SynthPlan:
        """A plan from :meth:`describe`'s dict, attribute/prompt configs (repo defaults when None) and an
        optional style (vocabulary restrictions of a domain, e.g. ``{"background": ["park"]}``)."""
        schema = AttributeSchema.from_config(attributes).restricted(style)
        known = {
            "num_identities",
            "num_cameras",
            "seed",
            "images_per_identity",
            "split",
            "queries_per_identity",
            "gallery_per_identity",
            "pid_start",
        }
        unknown = set(plan) - known
        if unknown:
            raise ConfigValueError(f"unknown plan keys {sorted(unknown)}; known: {sorted(known)}")
        kw = dict(plan)
        kw["images_per_identity"] = parse_count_range(kw.get("images_per_identity", 1))
        return cls(schema, PromptBuilder.from_config(prompts), **kw)
