"""Checkpoints that carry their own model: read safely, rebuild the model, check the architecture.

Every checkpoint written by train.py holds, besides Lightning's state, the model's **build spec**
under the key ``ppreid``::

    {"format": 1,
     "model": <the resolved model config, backbone and loss terms included>,
     "choices": {"model": "bot", "backbone": "tiny_cnn", ...},
     "input": {"height": 128, "width": 64, "mean": [...], "std": [...]},
     "num_classes": 270}

so ``python train.py train=false ckpt_path=X data=<any data>`` rebuilds exactly the trained model
(architecture, number of training identities) and feeds it images the way it was trained, without
the training data or the training config.

Checkpoints written before the code became the ``ppreid`` package name their classes by the old module
paths (``src.models.bot.BoTModel``); :func:`read_checkpoint` translates them (:data:`LEGACY_MODULES`), so
such a checkpoint evaluates, resumes and feeds ``embed.py`` / the privacy audit as before.
"""

from __future__ import annotations

import contextlib
import logging
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ppreid.utils.errors import ConfigValueError

SPEC_KEY = "ppreid"  # the checkpoint key holding a run's build spec (architecture, input, training run)

log = logging.getLogger(__name__)

SPEC_FORMAT = 1
# Config groups that decide a model's architecture (compared between a checkpoint and the command).
ARCHITECTURE_GROUPS = ("model", "backbone")
HOW_TO_GET_ONE = "a checkpoints/last.ckpt written by `python train.py` (see the run folder)"


# Module paths before the package move -> now (first matching prefix wins; any other ``src.X`` -> ``ppreid.X``).
LEGACY_MODULES = (
    ("src.models.attack", "ppreid.audit.attack"),
    ("src.models.privacy", "ppreid.privacy"),
    ("src.models.schedulers", "ppreid.training.schedulers"),
    ("src.models.checkpoint", "ppreid.training.checkpoint"),
    ("src.models.feature_cache", "ppreid.training.feature_cache"),
    ("src.models.clip_alignment", "ppreid.metrics.clip_alignment"),
    ("src.utils.resolvers", "ppreid.config.resolvers"),
    ("src.utils.config_groups", "ppreid.config.config_groups"),
    ("src.utils.run_checks", "ppreid.config.run_checks"),
    ("src.utils.csv_logger", "ppreid.training.csv_logger"),
    ("src.nn.attackers", "ppreid.audit.attackers"),
    ("src.nn.backbones.sandbox_clip", "ppreid.run.sandbox_clip"),
    ("src", "ppreid"),
)
# Backbone config keys that the run reads, not the backbone (an old clip_tiny config passed ``sandbox``).
RUN_ONLY_BACKBONE_KEYS = {"ppreid.nn.backbones.clip_visual.OpenCLIPVisual": ("sandbox",)}


def modern_target(name: str) -> str:
    """An old ``_target_`` (``src.models.bot.BoTModel``) -> its ``ppreid`` path; any other name unchanged."""
    for old, new in LEGACY_MODULES:
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return name


def modern_config(node: Any) -> Any:
    """A copy of a plain config tree (dicts / lists) with old ``_target_`` names translated
    (:func:`modern_target`) and the keys a backbone no longer takes dropped (:data:`RUN_ONLY_BACKBONE_KEYS`)."""
    if isinstance(node, Mapping):
        out = {k: modern_config(v) for k, v in node.items()}
        target = out.get("_target_")
        if isinstance(target, str):
            out["_target_"] = modern_target(target)
            for key in RUN_ONLY_BACKBONE_KEYS.get(out["_target_"], ()):
                out.pop(key, None)
        return out
    if isinstance(node, list):
        return [modern_config(v) for v in node]
    return node


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Load a Lightning checkpoint of this repository (weights-only unpickling, on the CPU).

    A missing file, a truncated or corrupt file, and a file that is not a Lightning checkpoint each
    give one ConfigValueError naming ``key``, the path and what to pass instead.
    """
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ConfigValueError(f"{key}={path}: no such file. Give {HOW_TO_GET_ONE}.")
    if p.is_dir():
        hint = p / "checkpoints" / "last.ckpt"
        more = f" (did you mean {hint}?)" if hint.is_file() else ""
        raise ConfigValueError(
            f"{key}={path} is a folder{more}; give the checkpoint file itself, e.g. {HOW_TO_GET_ONE}."
        )
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError):
        size = p.stat().st_size
        kind = "not a complete checkpoint archive" if _looks_like_zip(p) else "not a PyTorch checkpoint file"
        raise ConfigValueError(
            f"{key}={path} ({size} bytes) cannot be read: it is truncated or corrupt ({kind}). Copy it again, "
            f"or use {HOW_TO_GET_ONE}."
        ) from None
    except Exception:  # the weights-only unpickler refused an object: not written by this repository
        raise ConfigValueError(
            f"{key}={path} is not a checkpoint of this repository (it holds objects other than tensors and plain "
            f"data, or is not a PyTorch file at all). Use {HOW_TO_GET_ONE}."
        ) from None
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        what = f"keys {sorted(ckpt)[:6]}" if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ConfigValueError(
            f"{key}={path} is not a Lightning checkpoint (it holds {what}, no 'state_dict'); a plain weights "
            f"file goes to backbone.pretrained=, a run's checkpoint to {key}= ({HOW_TO_GET_ONE})."
        )
    ckpt = dict(ckpt)
    for section in (SPEC_KEY, "hyper_parameters"):
        if isinstance(ckpt.get(section), Mapping):
            ckpt[section] = modern_config(ckpt[section])
    return ckpt


def _looks_like_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def build_spec(
    model_cfg: DictConfig | Mapping,
    choices: Mapping[str, Any],
    height: int,
    width: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> dict[str, Any]:
    """The build spec a checkpoint carries (``num_classes`` is added when it is saved)."""
    model = OmegaConf.to_container(model_cfg, resolve=True) if isinstance(model_cfg, DictConfig) else dict(model_cfg)
    return {
        "format": SPEC_FORMAT,
        "model": model,
        "choices": {g: _choice_str(choices.get(g)) for g in ("model", "backbone", "loss")},
        "input": {
            "height": int(height),
            "width": int(width),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
        },
    }


def _choice_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or OmegaConf.is_list(value):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def spec_of(ckpt: Mapping[str, Any]) -> dict[str, Any] | None:
    spec = ckpt.get(SPEC_KEY)
    return dict(spec) if isinstance(spec, Mapping) and spec.get("format") == SPEC_FORMAT else None


def describe(spec: Mapping[str, Any]) -> str:
    """e.g. ``bot with backbone tiny_cnn (270 training identities, input 128x64)``."""
    c, i = spec.get("choices", {}), spec.get("input", {})
    return (
        f"{c.get('model')} with backbone {c.get('backbone')} ({spec.get('num_classes')} training identities, "
        f"input {i.get('height')}x{i.get('width')})"
    )


def check_architecture(
    spec: Mapping[str, Any], choices: Mapping[str, Any], explicit: Iterable[str], path: str, key: str = "ckpt_path"
) -> None:
    """Refuse a checkpoint whose model/backbone differs from one the command asked for.

    ``explicit``: the groups the command line chose (``backbone=resnet50``); for those a different
    choice in the checkpoint is an error naming both. Groups left at their default follow the checkpoint.
    """
    saved = spec.get("choices", {})
    for group in ARCHITECTURE_GROUPS:
        asked = _choice_str(choices.get(group))
        if group in explicit and saved.get(group) is not None and asked != saved.get(group):
            raise ConfigValueError(
                f"{key}={path} holds a {describe(spec)}, but {group}={asked} was asked for. Drop "
                f"{group}={asked} to evaluate the checkpoint as it was trained, or give a checkpoint of a "
                f"{asked} {'model' if group == 'model' else 'backbone'}."
            )


def explicit_overrides(task_overrides: Sequence[str]) -> dict[str, list[str]]:
    """Command-line overrides split into chosen groups and set keys: ``{"groups": [...], "keys": [...]}``."""
    groups, keys = [], []
    for item in task_overrides:
        name = item.split("=", 1)[0].lstrip("+~")
        if "." in name or "/" in name:
            keys.append(name)
        else:
            groups.append(name)
    return {"groups": groups, "keys": keys}


# Loggers of the backbone builders that announce where a backbone's weights come from.
WEIGHT_LOGGERS = ("ppreid.nn",)


class _DropInitialWeightsNews(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "random init" not in record.getMessage()


@contextlib.contextmanager
def weights_from_checkpoint(path: str | Path) -> Iterator[None]:
    """Build a model whose weights ``path`` then replaces: the backbone's "starting from random init" is not
    what the run uses, so it is not logged; where the weights do come from is logged once instead."""
    drop = _DropInitialWeightsNews()
    loggers = [logging.getLogger(name) for name in WEIGHT_LOGGERS]
    for lg in loggers:
        lg.addFilter(drop)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(drop)
    log.info("weights: all from the checkpoint %s", path)


def without_pretrained(model_cfg: Any) -> DictConfig:
    """A copy of a model config whose backbones load no pretrained weights: a checkpoint's weights replace
    them anyway, so evaluating or resuming it must not download (or look for) the original weights again."""
    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    model_cfg = OmegaConf.create(model_cfg)

    def clear(node: Any) -> None:
        if isinstance(node, DictConfig):
            if "_target_" in node and "pretrained" in node:
                node.pretrained = None
            for value in node.values():
                clear(value)

    clear(model_cfg)
    return model_cfg


def model_config_from_spec(spec: Mapping[str, Any], cfg: DictConfig, set_keys: Sequence[str]) -> DictConfig:
    """The checkpoint's model config, with the command line's own ``model.*`` / ``backbone.*`` values on top
    (e.g. ``model.neck_feat=before`` evaluates the pre-BNNeck feature of a trained checkpoint). Pretrained
    weights are not loaded (:func:`without_pretrained`)."""
    model_cfg = without_pretrained(OmegaConf.create(spec["model"]))
    for key in set_keys:
        if key.startswith("model."):
            target = key[len("model.") :]
        elif key.startswith("backbone."):
            target = "backbone." + key[len("backbone.") :]
        else:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.select(model_cfg, target, default="__missing__") != "__missing__":
            OmegaConf.update(model_cfg, target, value, merge=False)
            log.info("checkpoint model config: %s set from the command line", target)
    return model_cfg


def load_model_weights(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    path: str,
    key: str = "ckpt_path",
    lazy_prefixes: Sequence[str] = (),
) -> None:
    """Load ``state_dict`` strictly, or raise one message listing the keys that do not match.

    ``lazy_prefixes``: parameters the model builds (or sizes) later, at fit (e.g. the classifier, sized
    by the number of training identities); their keys and shapes in the checkpoint are not an error.
    """
    problems = state_dict_mismatch(model.state_dict(), state_dict, lazy_prefixes)
    if problems:
        raise ConfigValueError(
            f"{key}={path} does not match the model's architecture ({problems}). The checkpoint was trained "
            "with another model/backbone config; evaluate it without model/backbone overrides, or give the "
            "matching checkpoint."
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k in model.state_dict()}, strict=False)


def state_dict_mismatch(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], lazy_prefixes: Sequence[str] = ()
) -> str:
    """'' when ``given`` fits ``expected``; else a short description of the first mismatching keys."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected and not k.startswith(tuple(lazy_prefixes))]
    wrong = [
        f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape) and not k.startswith(tuple(lazy_prefixes))
    ]
    parts = []
    for name, keys in (
        ("wrong shapes (checkpoint vs model)", wrong),
        ("missing keys", missing),
        ("unexpected keys", unexpected),
    ):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            parts.append(f"{len(keys)} {name}: {', '.join(keys[:3])}{more}")
    return "; ".join(parts)


def load_model_from_checkpoint(path: str | Path, key: str = "ckpt_path"):
    """(model in eval mode with the checkpoint's weights, its build spec): the model exactly as trained."""
    from hydra.utils import instantiate

    ckpt = read_checkpoint(path, key)
    spec = spec_of(ckpt)
    if spec is None:
        raise ConfigValueError(
            f"{key}={path} holds no model spec (written by an older version of this repository); evaluate it with "
            "`python train.py train=false ckpt_path=... model=... backbone=...` giving its configs instead."
        )
    with weights_from_checkpoint(path):
        model = instantiate(without_pretrained(OmegaConf.create(spec["model"])), num_classes=spec["num_classes"])
        load_model_weights(model, ckpt["state_dict"], str(path), key, model.lazy_state_prefixes)
    model.build_spec = {k: v for k, v in spec.items() if k != "num_classes"}
    return model.eval(), spec
