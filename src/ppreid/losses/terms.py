"""The ``loss`` config group as a model sees it: named terms, each a loss module and a weight."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)


def build_loss_terms(losses: dict[str, dict[str, Any]], key: str = "loss") -> tuple[nn.ModuleDict, dict[str, float]]:
    """``{name: {fn: module, weight: w}}`` (the ``loss`` config group) -> (ModuleDict, weights).

    Each loss config file has its own top-level key (its file name), so terms never overwrite each
    other; the active terms and their weights are logged once.
    """
    if not losses:
        raise ConfigValueError(f"{key} is empty: choose at least one loss term, e.g. loss=[ce_ls,triplet].")
    fns, weights = {}, {}
    for name, term in losses.items():
        if not isinstance(term, dict) or "fn" not in term:
            raise ConfigValueError(f"{key}.{name} must be {{fn: <loss config>, weight: <float>}}; got {term!r}.")
        weight = float(term.get("weight", 1.0))
        if weight < 0:
            raise ConfigValueError(f"{key}.{name}.weight={weight}: loss weights must be >= 0.")
        fns[name], weights[name] = term["fn"], weight
    log.info("loss terms: %s", " + ".join(f"{w:g} x {n} ({type(fns[n]).__name__})" for n, w in weights.items()))
    return nn.ModuleDict(fns), weights
