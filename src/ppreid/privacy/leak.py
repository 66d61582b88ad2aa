"""A positive control for the privacy audit: an extractor branch that stores what ReID does not need.

``model.leak=background`` adds ``BackgroundLeak`` to E: a thumbnail of the image's background (the outer
``border`` fraction of the width on each side, where a person crop shows the scene, each band
average-pooled to ``rows`` x 1 cells: 3 x rows x 2 values) goes through a linear projection (initialised
to ``scale`` x identity) and is **added** to the last 3 x rows x 2 dimensions of E's pooled feature,
before the BNNeck. The stored feature then carries a small picture of the scene: an audit must see it (a
background gain far above the unprotected model's), and a defence that works must remove it at almost no
mAP cost (E may shrink the projection or drown it in its own dimensions).

The ReID losses see the leaky feature but never train the branch (``ppreid.models.privacy_gan`` gives them
the branch's output detached, and the branch no weight decay): only a privacy loss moves it, so an
unprotected run keeps the leak as it was built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ppreid.utils.errors import ConfigValueError

LEAKS = ("none", "background")


class BackgroundLeak(nn.Module):
    """images (B,3,H,W) (the model's normalized input) -> (B,feat_dim): zeros but the last ``thumb_dim``
    dimensions, which hold the projected background thumbnail (``thumbnail``: (B, 3 x rows x 2))."""

    def __init__(self, feat_dim: int, border: float = 0.25, rows: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < float(border) < 0.5:
            raise ConfigValueError(f"model.leak_branch.border={border}: give a fraction of the width in (0, 0.5).")
        if isinstance(rows, bool) or int(rows) < 1:
            raise ConfigValueError(f"model.leak_branch.rows={rows}: give an int >= 1 (cells per band).")
        self.border, self.rows, self.feat_dim = float(border), int(rows), int(feat_dim)
        self.thumb_dim = 3 * self.rows * 2
        if self.thumb_dim > self.feat_dim:
            raise ConfigValueError(
                f"model.leak_branch.rows={rows}: the thumbnail ({self.thumb_dim} values) is larger than "
                f"E's feature ({self.feat_dim}); lower rows."
            )
        self.proj = nn.Linear(self.thumb_dim, self.thumb_dim)
        with torch.no_grad():
            self.proj.weight.copy_(float(scale) * torch.eye(self.thumb_dim))
            self.proj.bias.zero_()

    def thumbnail(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B, 3 x rows x 2): the left and right background bands, average-pooled to rows x 1."""
        width = images.shape[-1]
        band = max(1, round(self.border * width))
        left = F.adaptive_avg_pool2d(images[..., :band], (self.rows, 1))
        right = F.adaptive_avg_pool2d(images[..., width - band :], (self.rows, 1))
        return torch.cat([left, right], dim=3).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        leak = self.proj(self.thumbnail(images))
        return F.pad(leak, (self.feat_dim - self.thumb_dim, 0))


def build_leak(kind: str, feat_dim: int, options: dict | None) -> BackgroundLeak | None:
    """``model.leak`` (none | background) with its ``model.leak_branch`` options."""
    if kind not in LEAKS:
        raise ConfigValueError(f"model.leak={kind!r} is unknown; use one of {', '.join(LEAKS)}.")
    return BackgroundLeak(feat_dim, **dict(options or {})) if kind == "background" else None
