"""Global pooling of a backbone feature map (B,C,h,w) -> (B,C); a vector (B,D) passes through.

The pass-through lets one model config pool CNN maps and CLIP towers (already pooled) alike.
"""

from __future__ import annotations

import torch
from torch import nn

from ppreid.utils.errors import ConfigValueError


class _GlobalPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return x
        if x.dim() != 4:
            raise ValueError(f"pooling expects (B,C,h,w) or (B,D), got shape {tuple(x.shape)}")
        return self.pool(x)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AvgPool(_GlobalPool):
    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class MaxPool(_GlobalPool):
    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3))


class GeM(_GlobalPool):
    """Generalized mean: (mean(clamp(x, eps)^p))^(1/p); p=1 is average, p->inf is max."""

    def __init__(self, p: float = 3.0, learnable: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if p <= 0:
            raise ConfigValueError(f"GeM: p={p}; the generalized-mean exponent must be > 0 (3.0 is the usual value).")
        p_tensor = torch.tensor(float(p))
        if learnable:
            self.p = nn.Parameter(p_tensor)
        else:
            self.register_buffer("p", p_tensor)
        self.eps = eps

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


POOLINGS: dict[str, type[_GlobalPool]] = {"avg": AvgPool, "max": MaxPool, "gem": GeM}


def build_pooling(name: str = "avg", **kwargs) -> nn.Module:
    """Pooling by name ("avg" | "gem" | "max"); kwargs go to the class (GeM: p, learnable, eps)."""
    if name not in POOLINGS:
        raise ConfigValueError(f"pooling={name!r} is unknown; use one of {sorted(POOLINGS)}.")
    return POOLINGS[name](**kwargs)
