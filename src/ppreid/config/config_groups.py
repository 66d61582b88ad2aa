"""Config groups as a user sees them: per entry point (``--help``) and by their effective option.

- ``--help`` of each entry point lists only its own groups (train.py and synth.py share conf/): the
  help template (conf/hydra/default.yaml) calls the resolver ``ppreid_groups`` with the entry's config
  name; it reads that config's defaults list. Options whose file starts with ``_`` are building blocks
  (hidden).
- :func:`effective_choice`: a building block that only extends one option (``backbone/_clip_sandbox``
  = ``clip_tiny``) is reported as that option in results and checkpoints.
"""

from __future__ import annotations

import yaml

from ppreid.utils.paths import CONF_DIR

CONF = CONF_DIR


def entry_groups(config_name: str) -> list[str]:
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


def effective_choice(group: str, option):
    """The option a ``_``-prefixed building block stands for (its single defaults entry), else ``option``."""
    if not isinstance(option, str) or not option.startswith("_"):
        return option
    path = CONF / group / f"{option}.yaml"
    try:
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
    except OSError:
        return option
    names = [d for d in defaults if isinstance(d, str) and d != "_self_"]
    return names[0] if len(names) == 1 else option


def top_level_keys(config_name: str) -> list[str]:
    """Keys that ``conf/<config_name>.yaml`` itself sets (besides its defaults list)."""
    data = yaml.safe_load((CONF / f"{config_name}.yaml").read_text()) or {}
    return [k for k in data if k != "defaults"]
