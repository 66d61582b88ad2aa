"""``synth.py``'s job: a composed config -> plan + generator (+ quality filter) -> GenePerson writer.

The generation-relevant part of the config (plan, vocabularies, templates, size, generator,
quality filter) is what ``.synth_config.json`` fingerprints and ``dataset.json`` records; run-time
keys (``out_dir``, ``batch_size``, ``shard``, ``num_shards``, ``progress``,
``generator.num_workers``) are not part of it, so a set made in shards equals a set made in one
go. ``merge_only`` rebuilds the plan from the stored config, so ``python synth.py merge_only=true
out_dir=X`` needs no other argument.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ppreid.synth.attributes import _to_plain
from ppreid.synth.plan import SynthPlan, parse_count_range
from ppreid.synth.set_layout import CONFIG_FILE
from ppreid.synth.writer import GenePersonWriter, check_shard_values
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)
FILTER_KEYS = ("enabled", "max_attempts")
# Generator keys that change speed, never the bytes: not part of the set's configuration.
RUNTIME_GENERATOR_KEYS = ("num_workers", "cache_size")


def resolve_out_dir(value: Any) -> Path:
    """``out_dir`` relative to the directory the command was started in (Hydra may change the cwd)."""
    if value is None or str(value).strip() in ("", "???"):
        raise ConfigValueError("out_dir is not set; pass out_dir=/path/to/GenePerson.")
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import to_absolute_path

        if HydraConfig.initialized():
            return Path(to_absolute_path(str(value)))
    except ImportError:  # pragma: no cover
        pass
    return Path(str(value)).expanduser().resolve()


def _int(cfg: Mapping, key: str, lo: int) -> int:
    v = cfg.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ConfigValueError(f"{key}={v!r} must be an integer >= {lo}.")
    return v


def build_plan(cfg: Mapping) -> SynthPlan:
    """The train plan of a synth config (validated)."""
    plan = {
        "num_identities": _int(cfg, "num_identities", 1),
        "num_cameras": _int(cfg, "num_cameras", 1),
        "seed": _int(cfg, "seed", 0),
        "images_per_identity": list(parse_count_range(cfg.get("images_per_identity"))),
        "split": "train",
    }
    return SynthPlan.from_config(plan, cfg.get("attributes"), cfg.get("prompts"), cfg.get("style"))


def generation_config(cfg: Mapping, plan: SynthPlan) -> dict[str, Any]:
    """The keys whose change would change the images or their records."""
    qf = _to_plain(cfg.get("quality_filter")) or {}
    return {
        "plan": plan.describe(),
        "attributes": _to_plain(cfg.get("attributes")),
        "prompts": _to_plain(cfg.get("prompts")),
        "style": _to_plain(cfg.get("style")) or None,
        "height": _int(cfg, "height", 16),
        "width": _int(cfg, "width", 8),
        "jpeg_quality": _int(cfg, "jpeg_quality", 1),
        "generator": {
            k: v for k, v in (_to_plain(cfg.get("generator")) or {}).items() if k not in RUNTIME_GENERATOR_KEYS
        },
        "quality_filter": qf if qf.get("enabled") else None,
    }


def build_quality_filter(cfg: Mapping) -> Any | None:
    """``quality_filter`` with ``enabled: true`` -> the instantiated filter (its ``_target_``), else None."""
    qf = _to_plain(cfg.get("quality_filter")) or {}
    if not qf.get("enabled"):
        return None
    if "_target_" not in qf:
        raise ConfigValueError(
            "quality_filter.enabled=true needs quality_filter._target_ (e.g. "
            "ppreid.synth.quality_filter.ClipQualityFilter) and its arguments."
        )
    from hydra.utils import instantiate

    return instantiate({k: v for k, v in qf.items() if k not in FILTER_KEYS}, _convert_="all")


def run_synthesis(cfg: Mapping) -> dict[str, Any] | None:
    """Generate this shard (or only merge); returns dataset.json's content once the set is merged."""
    out_dir = resolve_out_dir(cfg.get("out_dir"))
    shard, num_shards = cfg.get("shard", 0), cfg.get("num_shards", 1)
    check_shard_values(shard, num_shards, cfg.get("batch_size", 1))
    progress = bool(cfg.get("progress", True))
    if cfg.get("merge_only", False):
        return merge_existing(out_dir, num_shards)
    plan = build_plan(cfg)
    config = generation_config(cfg, plan)
    qf = config["quality_filter"] or {}  # None unless enabled
    writer = GenePersonWriter(
        out_dir,
        plan,
        None,
        config,
        config["height"],
        config["width"],
        batch_size=cfg.get("batch_size", 1),
        shard=shard,
        num_shards=num_shards,
        max_attempts=int(qf.get("max_attempts", 1)),
        jpeg_quality=config["jpeg_quality"],
        progress=progress,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    writer.check_config()  # before loading a (possibly large) generator
    from hydra.utils import instantiate

    writer.generator = instantiate(cfg.get("generator"), _convert_="all")
    writer.quality_filter = build_quality_filter(cfg)
    return writer.run()


def merge_existing(out_dir: Path, num_shards: int = 1) -> dict[str, Any]:
    """Merge the finished shards in ``out_dir`` using the configuration stored there."""
    path = out_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigValueError(
            f"merge_only=true: {out_dir} has no {CONFIG_FILE}, so it holds no synth.py set to merge. Check out_dir."
        )
    config = json.loads(path.read_text())["config"]
    plan = SynthPlan.from_config(config["plan"], config["attributes"], config["prompts"], config.get("style"))
    writer = GenePersonWriter(
        out_dir,
        plan,
        None,
        config,
        config["height"],
        config["width"],
        num_shards=num_shards,
        jpeg_quality=config["jpeg_quality"],
        progress=False,
    )
    return writer.merge()
