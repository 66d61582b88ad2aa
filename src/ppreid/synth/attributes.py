"""Attribute schema of stage 1 and its seeded sampling.

Three groups, drawn in this order (vocabularies are config data, ``conf/synth/attributes.yaml``):
- ``identity``: appearance, fixed per identity (gender, age group, build, skin, hair, garments, ...);
- ``camera_profile``: fixed per camera; a GenePerson *camera* is an environment profile
  (background scene + illumination + time of day + camera look);
- ``image``: per image (weather, viewpoint).
Values are strings; ``none`` means absent. ``rules`` restrict a later key given earlier values.

Seeds (all 53-bit, so JSON readers in any language keep them exact)::

    derive_seed(*keys)      = SeedSequence(keys).generate_state(1, uint64)[0] >> 11
    identity_seed(S, pid)   = derive_seed(S, 0, pid)          # S = dataset seed
    camera_seed(S, camid)   = derive_seed(S, 1, camid)
    image_seed(id_seed, k)  = derive_seed(id_seed, 2, k)      # k = image index within the identity

Every draw uses ``numpy.random.default_rng`` of one of these seeds, so an identity (or camera, or
image) does not depend on which shard or batch produced it. Camera profiles are balanced: each
profile key cycles through a shuffled list of its values (shuffled by
``default_rng(derive_seed(S, 1, 2**32))``), so n cameras show min(n, |vocabulary|) different
backgrounds, lights and looks; a rule that forbids the cycled value falls back to the camera's draw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppreid.utils.errors import ConfigValueError
from ppreid.utils.paths import CONF_DIR

GROUPS = ("identity", "camera_profile", "image")
NONE = "none"
# What a view cannot show, whatever the value (``none`` included: "no glasses" cannot be told from
# behind either). The procedural renderer draws by this table; captions and probes follow it.
HIDDEN_BY_VIEW: dict[str, tuple[str, ...]] = {"back": ("glasses",)}


def hidden_attributes(record: Mapping[str, Any], also: Iterable[str] = ()) -> tuple[str, ...]:
    """The attribute keys of ``record`` that its image does not show (record key order).

    The record's ``viewpoint`` hides the keys of :data:`HIDDEN_BY_VIEW` (glasses on a back view);
    ``also``: keys one rendered image hides besides (e.g. shoes behind an occluder, the renderer's
    ``Rendered.hidden`` or a manifest line's ``hidden``). A record without a viewpoint describes the
    identity, not one image, and hides nothing by itself.
    """
    hidden = set(HIDDEN_BY_VIEW.get(str(record.get("viewpoint", "")), ())) | {str(k) for k in also}
    return tuple(k for k in record if k in hidden)


def derive_seed(*keys: int) -> int:
    """A 53-bit seed hashed from non-negative integer keys (NumPy SeedSequence)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(11))


def identity_seed(seed: int, pid: int) -> int:
    """Seed of identity ``pid`` in a dataset of seed ``seed``: all its attributes and images derive from it."""
    return derive_seed(seed, 0, pid)


def camera_seed(seed: int, camid: int) -> int:
    """Seed of camera (environment profile) ``camid`` (0-based): its words, scene layout and look."""
    return derive_seed(seed, 1, camid)


def image_seed(id_seed: int, index: int) -> int:
    """Seed of the ``index``-th image (0-based) of the identity with seed ``id_seed``."""
    return derive_seed(id_seed, 2, index)


def load_conf_yaml(relpath: str) -> dict[str, Any]:
    """A YAML file of ``conf/`` as a plain dict (for code paths that run without Hydra)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / relpath
    if not path.is_file():
        raise ConfigValueError(f"config file {path} is missing; it ships with the repository (restore it).")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _to_plain(obj: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return obj


@dataclass(frozen=True)
class Vocabulary:
    """The values of one attribute and their sampling weights (normalised when drawn)."""

    key: str
    values: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(cls, key: str, spec: Any) -> Vocabulary:
        spec = _to_plain(spec)
        if isinstance(spec, Mapping):
            values, weights = tuple(str(v) for v in spec), tuple(float(w) for w in spec.values())
        elif isinstance(spec, (list, tuple)):
            values, weights = tuple(str(v) for v in spec), tuple(1.0 for _ in spec)
        else:
            raise ConfigValueError(
                f"attribute vocabulary '{key}' is {spec!r}; expected a list of strings or a "
                f"{{value: weight}} map (conf/synth/attributes.yaml)."
            )
        if not values or len(set(values)) != len(values) or any(not v or " " in v for v in values):
            raise ConfigValueError(
                f"attribute vocabulary '{key}'={list(values)} must be non-empty, without duplicates, "
                "and its values single words (use underscores instead of spaces)."
            )
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigValueError(
                f"attribute vocabulary '{key}' has weights {list(weights)}; weights must be >= 0 with a positive sum."
            )
        return cls(key, values, weights)

    def restrict(self, allowed: Iterable[str]) -> Vocabulary:
        """The values in ``allowed`` (order and weights kept); may be empty."""
        allowed = set(allowed)
        keep = [(v, w) for v, w in zip(self.values, self.weights) if v in allowed]
        return Vocabulary(self.key, tuple(v for v, _ in keep), tuple(w for _, w in keep))

    def draw(self, rng: np.random.Generator) -> str:
        """One value; all-zero weights (only weight-0 values left by a rule) -> uniform."""
        w = np.asarray(self.weights, dtype=np.float64)
        if w.sum() <= 0:
            w = np.ones_like(w)
        cdf = np.cumsum(w / w.sum())
        return self.values[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(cdf) - 1)]


@dataclass(frozen=True)
class Rule:
    """If every ``when`` key has one of the listed values, restrict each ``then`` key to its list."""

    when: tuple[tuple[str, frozenset], ...]
    then: tuple[tuple[str, frozenset], ...]

    def matches(self, record: Mapping[str, str]) -> bool:
        return all(k in record and record[k] in vals for k, vals in self.when)


class AttributeSchema:
    """Vocabularies + rules; draws identity, camera-profile and per-image records from seeded RNGs."""

    def __init__(
        self, identity: Mapping, camera_profile: Mapping, image: Mapping, rules: Sequence[Mapping] | None = None
    ) -> None:
        self.groups: dict[str, dict[str, Vocabulary]] = {}
        for name, spec in zip(GROUPS, (identity, camera_profile, image)):
            spec = _to_plain(spec)
            if not isinstance(spec, Mapping) or not spec:
                raise ConfigValueError(
                    f"attribute group '{name}' must be a non-empty map of vocabularies (conf/synth/attributes.yaml)."
                )
            self.groups[name] = {str(k): Vocabulary.parse(str(k), v) for k, v in spec.items()}
        keys = [k for g in GROUPS for k in self.groups[g]]
        if len(set(keys)) != len(keys):
            raise ConfigValueError(f"attribute names must be unique across groups, got {keys}")
        self.rules = tuple(self._parse_rule(r, keys) for r in (_to_plain(rules) or []))

    @staticmethod
    def _parse_rule(rule: Mapping, keys: list[str]) -> Rule:
        if not isinstance(rule, Mapping) or set(rule) != {"if", "then"}:
            raise ConfigValueError(
                f"attribute rule {rule!r} must be {{if: {{key: [values]}}, then: {{key: [values]}}}}."
            )
        parts = []
        for side in ("if", "then"):
            items = []
            for k, vals in dict(rule[side]).items():
                if k not in keys:
                    raise ConfigValueError(f"attribute rule {rule!r} names unknown attribute '{k}'; known: {keys}")
                vals = [vals] if isinstance(vals, str) else list(vals)
                items.append((str(k), frozenset(str(v) for v in vals)))
            parts.append(tuple(items))
        order = {k: i for i, k in enumerate(keys)}
        if max(order[k] for k, _ in parts[0]) >= min(order[k] for k, _ in parts[1]):
            raise ConfigValueError(
                f"attribute rule {rule!r}: every 'if' key must be drawn before every 'then' key (order: {keys})."
            )
        return Rule(parts[0], parts[1])

    @classmethod
    def from_config(cls, cfg: Mapping | None = None) -> AttributeSchema:
        """From a mapping shaped like ``conf/synth/attributes.yaml`` (that file when None)."""
        cfg = _to_plain(cfg) if cfg is not None else load_conf_yaml("synth/attributes.yaml")
        unknown = set(cfg) - set(GROUPS) - {"rules"}
        if unknown:
            raise ConfigValueError(
                f"attributes config has unknown sections {sorted(unknown)}; expected {list(GROUPS)} and rules."
            )
        return cls(cfg.get("identity"), cfg.get("camera_profile"), cfg.get("image"), cfg.get("rules"))

    @property
    def identity_keys(self) -> list[str]:
        return list(self.groups["identity"])

    @property
    def environment_keys(self) -> list[str]:
        return list(self.groups["camera_profile"]) + list(self.groups["image"])

    def vocabulary(self, key: str) -> Vocabulary:
        for g in GROUPS:
            if key in self.groups[g]:
                return self.groups[g][key]
        raise ConfigValueError(f"unknown attribute '{key}'; known: {self.identity_keys + self.environment_keys}")

    def restricted(self, style: Mapping[str, Sequence[str]] | None) -> AttributeSchema:
        """A copy whose vocabularies are cut to ``style`` (e.g. a domain's backgrounds and camera looks)."""
        out = object.__new__(AttributeSchema)
        out.groups = {g: dict(v) for g, v in self.groups.items()}
        out.rules = self.rules
        for key, allowed in (_to_plain(style) or {}).items():
            allowed = [allowed] if isinstance(allowed, str) else list(allowed)
            voc = self.vocabulary(key)
            unknown = [a for a in allowed if a not in voc.values]
            if unknown or not allowed:
                raise ConfigValueError(
                    f"style restricts '{key}' to {allowed}, but {unknown or 'an empty list'} is not in its "
                    f"vocabulary {list(voc.values)} (conf/synth/attributes.yaml)."
                )
            group = next(g for g in GROUPS if key in self.groups[g])
            out.groups[group][key] = voc.restrict(allowed)
        return out

    def _draw_group(
        self, group: str, rng: np.random.Generator, context: dict[str, str], prefer: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        record = dict(context)
        out: dict[str, str] = {}
        for key, voc in self.groups[group].items():
            for rule in self.rules:
                for k, allowed in rule.then:
                    if k == key and rule.matches(record):
                        voc = voc.restrict(allowed)
            if not voc.values:
                raise ConfigValueError(
                    f"attribute rules leave no value for '{key}' given {record}; loosen the rules or the "
                    "domain style (conf/synth/attributes.yaml)."
                )
            value = voc.draw(rng)  # drawn even when a preference wins, so later draws do not shift
            if prefer and prefer.get(key) in voc.values:
                value = prefer[key]
            out[key] = record[key] = value
        return out

    def sample_identity(self, rng: np.random.Generator) -> dict[str, str]:
        """Identity attributes, in schema order."""
        return self._draw_group("identity", rng, {})

    def sample_camera_profile(
        self, rng: np.random.Generator, prefer: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Words of one camera (environment profile), shared by every identity it sees.

        ``prefer``: value per key to take when the rules allow it (balanced camera sets).
        """
        return self._draw_group("camera_profile", rng, {}, prefer)

    def balanced_camera_preferences(self, rng: np.random.Generator, num_cameras: int) -> list[dict[str, str]]:
        """Per camera, a preferred value per profile key: each key cycles through a shuffled list of its
        (positive-weight) values, so ``n`` cameras cover ``min(n, |vocabulary|)`` distinct values."""
        cycles = {}
        for key, voc in self.groups["camera_profile"].items():
            values = [v for v, w in zip(voc.values, voc.weights) if w > 0] or list(voc.values)
            cycles[key] = [values[i] for i in rng.permutation(len(values))]
        return [{k: c[i % len(c)] for k, c in cycles.items()} for i in range(num_cameras)]

    def sample_image(
        self, rng: np.random.Generator, identity: Mapping[str, str], profile: Mapping[str, str]
    ) -> dict[str, str]:
        """Per-image environment words (weather, viewpoint), given the identity and camera profile."""
        return self._draw_group("image", rng, {**identity, **profile})
