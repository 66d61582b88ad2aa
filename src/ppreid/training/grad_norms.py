"""How hard each loss term pulls on a set of parameters: the L2 norm of each term's gradient, measured
apart (``torch.autograd.grad`` with the graph kept, so the step's own backward still runs). A term whose
norm is 0 does not move those parameters, which is what an ablation's null result needs to be read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def term_grad_norms(terms: Mapping[str, torch.Tensor], params: Sequence[torch.Tensor]) -> dict[str, float]:
    """{term: the L2 norm of d term / d params over all ``params``}; 0.0 for a term that does not depend on
    them (no graph, or no path to any of them)."""
    out = {}
    for name, value in terms.items():
        if not value.requires_grad:
            out[name] = 0.0
            continue
        grads = torch.autograd.grad(value, list(params), retain_graph=True, allow_unused=True)
        norms = [g.detach().float().norm() for g in grads if g is not None]
        out[name] = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
    return out


def grad_norm_summary(history: Mapping[str, Sequence[float]], interval: int) -> dict[str, Any]:
    """results.json's summary of the measured norms: per term the last, the mean and how many were measured
    (every ``interval`` steps)."""
    return {
        "interval": interval,
        "terms": {
            name: {"last": values[-1], "mean": sum(values) / len(values), "count": len(values)}
            for name, values in history.items()
        },
    }
