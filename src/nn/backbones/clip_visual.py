"""open_clip image tower (ViT or ModifiedResNet) at a ReID aspect ratio, e.g. 256x128.

CLIP is pretrained on square 224x224 images; ReID crops are 2:1. The tower is built for
the new size and pretrained positional embeddings are resized by 2-D interpolation of
their grid (class / mean token kept as is), as CLIP-ReID does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import _build_vision_tower
from torch import nn

from src.nn.backbones.pretrained import StateDict, load_pretrained
from src.utils.errors import ConfigValueError

RESNET_STRIDE = 32


def resize_grid_pos_embed(
    pos: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Resize a (P + h*w, D) positional embedding (row-major grid after P prefix tokens) to (P + H*W, D).

    The prefix (class token / attention-pool mean token) is copied unchanged. `old_grid`
    defaults to the square grid implied by the token count.
    """
    prefix, grid = pos[:num_prefix_tokens], pos[num_prefix_tokens:]
    n, dim = grid.shape
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ConfigValueError(
                f"positional embedding with {n} grid tokens is not a square grid; pass old_grid=(h, w) explicitly."
            )
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ConfigValueError(
            f"positional embedding has {n} grid tokens, but old_grid={old_grid} needs {old_grid[0] * old_grid[1]}."
        )
    if tuple(old_grid) == tuple(new_grid):
        return pos.clone()
    img = grid.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2).float()
    align = False if mode in ("bilinear", "bicubic") else None
    img = F.interpolate(img, size=tuple(new_grid), mode=mode, align_corners=align)
    grid = img.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], dim).to(pos.dtype)
    return torch.cat([prefix, grid], dim=0)


def _visual_only(state: StateDict) -> StateDict:
    """Accept a full CLIP state dict (`visual.*` keys) or a visual-only one."""
    if any(k.startswith("visual.") for k in state):
        return {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    return state


class OpenCLIPVisual(nn.Module):
    """(B,3,H,W) -> projected CLIP image embedding (B,out_dim); out_dim = the model's embed_dim.

    `model_name`: any name open_clip.get_model_config accepts (built-in, or `local-dir:PATH`
    with an open_clip_config.json). `pretrained`: None, an open_clip tag for this model
    (downloads: opt-in), or a local full-CLIP / visual-only weights file.
    `quick_gelu`: None = what the tag/model config says; set true for a file of OpenAI weights.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        pretrained: str | None = None,
        image_size: Sequence[int] = (256, 128),
        quick_gelu: bool | None = None,
        pos_embed_interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        cfg = open_clip.get_model_config(model_name)
        if cfg is None:
            raise ConfigValueError(
                f"OpenCLIPVisual: model_name={model_name!r} is not an open_clip model config. "
                "Use a built-in name such as 'ViT-B-16' or 'RN50' (see open_clip.list_models()), "
                "or 'local-dir:PATH' for a folder with open_clip_config.json."
            )
        vision_cfg = dict(cfg["vision_cfg"])
        if vision_cfg.get("timm_model_name"):
            raise ConfigValueError(
                f"OpenCLIPVisual: {model_name!r} wraps a timm tower; only native open_clip ViT and ModifiedResNet "
                "towers are supported (their positional embeddings are resized here). Use e.g. ViT-B-16 or RN50."
            )
        height, width = (int(s) for s in image_size)
        self.image_size = (height, width)
        self.is_resnet = isinstance(vision_cfg["layers"], (list, tuple))
        stride = RESNET_STRIDE if self.is_resnet else int(vision_cfg.get("patch_size", 16))
        if height % stride or width % stride:
            raise ConfigValueError(
                f"OpenCLIPVisual: image_size={list(self.image_size)} must be divisible by {stride} for {model_name}; "
                "use e.g. [256, 128]."
            )
        self.grid_size = (height // stride, width // stride)
        self.model_name = model_name
        self.pos_embed_interpolation = pos_embed_interpolation

        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if quick_gelu is None:
            tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained in tags else {}
            quick_gelu = bool(tag_cfg.get("quick_gelu", cfg.get("quick_gelu", False)))
        self.quick_gelu = quick_gelu

        if self.is_resnet:
            self.visual = _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=quick_gelu)
            pool = self.visual.attnpool
            dim = pool.positional_embedding.shape[1]
            n_tokens = self.grid_size[0] * self.grid_size[1] + 1
            pool.positional_embedding = nn.Parameter(torch.randn(n_tokens, dim) / dim**0.5)
            self._pos_key = "attnpool.positional_embedding"
        else:
            vision_cfg["image_size"] = self.image_size
            self.visual = _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=quick_gelu)
            self._pos_key = "positional_embedding"
        self.out_dim = int(cfg["embed_dim"])

        tag_loaders = {tag: (lambda tag=tag: self._tag_state(tag)) for tag in tags}
        load_pretrained(self.visual, pretrained, kind=f"clip {model_name}", tags=tag_loaders, convert=self._adapt_state)

    def _tag_state(self, tag: str) -> StateDict:
        """Download (opt-in) the tag's CLIP weights at their native size and return the visual part."""
        model = open_clip.create_model(self.model_name, pretrained=tag, force_quick_gelu=self.quick_gelu)
        return model.visual.state_dict()

    def _adapt_state(self, state: StateDict) -> StateDict:
        state = _visual_only(state)
        pos = state.get(self._pos_key)
        if pos is not None and pos.ndim == 2:
            n_new = self.grid_size[0] * self.grid_size[1] + 1
            if pos.shape[0] != n_new:
                state = dict(state)
                state[self._pos_key] = resize_grid_pos_embed(pos, self.grid_size, mode=self.pos_embed_interpolation)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)
