"""``--help`` of each entry point lists only its own config groups (train.py and synth.py share conf/).

Hydra's default help lists every group under conf/. The help template (conf/hydra/default.yaml) calls
the resolver ``ppreid_groups`` with the entry's config name instead; it reads that config's defaults
list and lists the options of those groups only (files starting with ``_`` are building blocks, hidden).
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import yaml

CONF = Path(__file__).resolve().parents[2] / "conf"
RESOLVER = "ppreid_groups"


def entry_groups(config_name: str) -> List[str]:
    """Config groups named in the defaults list of ``conf/<config_name>.yaml``, in order."""
    text = (CONF / f"{config_name}.yaml").read_text()
    defaults = (yaml.safe_load(text) or {}).get("defaults") or []
    groups = []
    for item in defaults:
        if not isinstance(item, dict):
            continue
        for key in item:
            group = key.split("@")[0].replace("override ", "").strip().lstrip("/")
            if group and group not in groups and group != "hydra":
                groups.append(group)
    return groups


def groups_help(config_name: str) -> str:
    """``group: option, option`` lines for the groups of ``config_name``."""
    lines = []
    for group in entry_groups(config_name):
        folder = CONF / group
        options = sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")) if folder.is_dir() else []
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def register_help_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, groups_help)
