"""The epoch schedule of the privacy models and the module modes of each phase.

Three phases, each boundary an epoch value (an int epoch or a fraction of the run, ``model.phases``):

- ``extractor``: E alone (train mode), the defence's modules idle;
- ``reversal``: the defence's adversaries alone on E's features, E in eval mode (neither its weights
  nor its BN statistics move); skipped for defences without an adversary;
- ``joint``: both train, E in train mode.

Modes are set once per epoch, at its start (``apply_phase_modes``), never inside a training step:
Lightning restores the modes it found around its own validation, so an epoch keeps the modes of its
phase, and a run resumed inside any phase (a fresh process, every module in train mode) trains exactly
as an uninterrupted one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ppreid.training.schedulers import resolve_epochs
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)

PHASES = ("extractor", "reversal", "joint")
PHASE_KEYS = ("reversal_from", "joint_from")


def phase_values(phases: dict[str, Any] | None, defaults=(0.625, 0.75)) -> dict[str, Any]:
    phases = dict(phases or {})
    unknown = sorted(set(phases) - set(PHASE_KEYS))
    if unknown:
        raise ConfigValueError(
            f"model.phases: unknown key(s) {', '.join(unknown)}; known: reversal_from, "
            "joint_from (epoch values: an int epoch or a fraction of the run)."
        )
    return {k: phases.get(k, d) for k, d in zip(PHASE_KEYS, defaults)}


def resolve_boundaries(values: dict[str, Any], length: int, has_adversary: bool) -> dict[str, int]:
    """Epoch values -> int epochs; without an adversary the reversal phase is empty (joint from reversal_from)."""
    rev = resolve_epochs(values["reversal_from"], length, "model.phases.reversal_from", allow_end=True)
    joint = resolve_epochs(values["joint_from"], length, "model.phases.joint_from", allow_end=True)
    if joint < rev:
        raise ConfigValueError(
            f"model.phases: joint_from (epoch {joint}) comes before reversal_from (epoch {rev}); the order is "
            "extractor alone, then the reversal module alone, then joint. Set joint_from >= reversal_from."
        )
    if not has_adversary:
        joint = rev
    return {"reversal_from": rev, "joint_from": joint}


def phase_of(epoch: int, boundaries: dict[str, int]) -> str:
    if epoch < boundaries["reversal_from"]:
        return "extractor"
    return "reversal" if epoch < boundaries["joint_from"] else "joint"


def apply_phase_modes(phase: str, extractor: Iterable[nn.Module], adversaries: Iterable[nn.Module]) -> None:
    """Train / eval mode of E's modules and the defence's modules for ``phase``."""
    for module in extractor:
        module.train(phase != "reversal")
    for module in adversaries:
        module.train(phase != "extractor")


def fit_boundaries(
    kept: dict[str, int] | None, resolved: dict[str, int], defence_name: str, max_epochs: int | None, quiet: bool
) -> dict[str, int]:
    """The boundaries of a fit: a resumed checkpoint's (``kept``) or this config's (``resolved``); logged
    unless ``quiet`` (a fast dev run)."""
    boundaries = resolved if kept is None else kept
    if kept is not None and kept != resolved and not quiet:
        log.warning("model.phases: the resumed checkpoint's phases %s are kept (this config gives %s)", kept, resolved)
    if not quiet:
        b = boundaries
        log.info(
            "phases: extractor alone for epochs [0, %d), the %s defence's adversaries alone [%d, %d), joint [%d, %d)",
            b["reversal_from"],
            defence_name,
            b["reversal_from"],
            b["joint_from"],
            b["joint_from"],
            max_epochs,
        )
    return boundaries


def seed_epoch(base_seed: int, epoch: int) -> None:
    """Seed Python's, numpy's and torch's RNGs by (seed, epoch): every epoch draws the same numbers, resumed or not."""
    seed = (base_seed * 7919 + epoch) % (2**31)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
