"""Hydra's composition errors (an unknown key, a value of the wrong type, an unknown group option) as one
line naming the key or option and what is valid, without a traceback or Hydra's HYDRA_FULL_ERROR hint.

:func:`run_reporting_compose_errors` runs an entry point's ``@hydra.main`` function. Only errors raised
before the task function starts are rewritten (the entry point calls :func:`task_started` first thing);
errors of the run itself keep Hydra's usual report. ``HYDRA_FULL_ERROR=1`` set by the user: Hydra's
full report, as always.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable

from ppreid.utils.paths import CONF_DIR

_FULL_ERROR = "HYDRA_FULL_ERROR"
_state = {"task_started": False, "set_full_error": False, "config_name": "train"}


def task_started() -> None:
    """Called by the task function: from here on, errors are the run's, reported by Hydra as usual."""
    _state["task_started"] = True
    if _state["set_full_error"]:
        os.environ.pop(_FULL_ERROR, None)
        _state["set_full_error"] = False


def _entry_groups() -> list[str]:
    from ppreid.config.config_groups import entry_groups

    return entry_groups(_state["config_name"])


def group_options(group: str) -> list[str]:
    """The selectable options of ``conf/<group>/`` (``_`` building blocks and schemas left out)."""
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_")) if folder.is_dir() else []


def _override_value(key: str) -> str | None:
    for arg in sys.argv[1:]:
        name, _, value = arg.partition("=")
        if name.lstrip("+~") == key:
            return value
    return None


def describe(exc: BaseException) -> str | None:
    """One line for a composition error, or None when ``exc`` is not one we know."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

    text = str(exc)
    missing = re.search(r"Could not (?:find|load) '([^']+)'", text)
    if isinstance(exc, MissingConfigException) or missing:
        if missing is None:
            return None
        group, _, option = missing.group(1).rpartition("/")
        options = group_options(group)
        if not group or not options:
            return f"config '{missing.group(1)}' not found under conf/."
        close = difflib.get_close_matches(option, options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"{group}={option} is not an option of group {group}; {hint}choose one of: {', '.join(options)}."
    cause = exc if isinstance(exc, OmegaConfBaseException) else (exc.__cause__ or exc.__context__)
    if not isinstance(cause, OmegaConfBaseException):
        return None
    key = getattr(cause, "full_key", None) or ""
    where = re.match(r"In '([^']+)'", text)
    source = f"conf/{where.group(1)}.yaml sets " if where and "/" in where.group(1) else ""
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        parent, _, name = key.rpartition(".")
        known = _keys_of(parent)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {parent + '.' if parent else ''}{close[0]}?" if close else ""
        if close and not parent and close[0] in _entry_groups():
            value = _override_value(key)
            hint = f"; did you mean the config group {close[0]}={value}?"
        adding = "" if source or "config group" in hint else " (+key=value adds a key the config does not have)"
        return f"{source}{key}: no such key in {parent or 'the config'}{hint}{adding}"
    if isinstance(cause, ValidationError):
        value = _override_value(key)
        shown = f"{key}={value}" if value is not None and not source else key
        reason = str(getattr(cause, "msg", cause)).splitlines()[0]
        return f"{source}{shown}: {reason}."
    return None


def _keys_of(parent: str) -> list[str]:
    """The keys a schema gives ``parent`` (``trainer``, ``data.val_split``, ...), for a did-you-mean."""
    from dataclasses import fields, is_dataclass

    from ppreid.config.schemas import SCHEMAS

    if not parent:  # a top-level name: the entry point's groups and keys
        from ppreid.config.config_groups import entry_groups, top_level_keys

        name = _state["config_name"]
        return sorted(set(entry_groups(name)) | set(top_level_keys(name)))
    group, _, rest = parent.partition(".")
    names: set[str] = set()
    for schema in SCHEMAS.get(group, {}).values():
        node = schema
        for part in rest.split(".") if rest else []:
            hints = {f.name: f.type for f in fields(node)} if is_dataclass(node) else {}
            node = globals_type(schema, hints.get(part))
        if is_dataclass(node):
            names.update(f.name for f in fields(node))
    return sorted(names)


def globals_type(schema: type, annotation):
    """The class an annotation string names in ``schema``'s module (schemas use postponed annotations)."""
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules[schema.__module__]
    return getattr(module, annotation, None)


def run_reporting_compose_errors(main: Callable[[], object], config_name: str) -> None:
    """Run ``main`` (a ``@hydra.main`` function of ``conf/<config_name>.yaml``); a composition error exits 1
    with one ``error:`` line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _state["config_name"] = config_name
    user_full_error = os.environ.get(_FULL_ERROR) == "1"
    if not user_full_error:  # Hydra re-raises instead of printing its own report
        os.environ[_FULL_ERROR] = "1"
        _state["set_full_error"] = True
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        line = None if (user_full_error or _state["task_started"]) else describe(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
