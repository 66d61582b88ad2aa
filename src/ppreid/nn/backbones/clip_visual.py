"""One open_clip CLIP model, both towers: the image tower is the backbone, the text tower is handed over.

CLIP is pretrained on square 224x224 images; ReID crops are 2:1. The image tower is built
for the new size and pretrained positional embeddings are resized by 2-D interpolation of
their grid (class / mean token kept as is), as CLIP-ReID does. The text tower of the same
model is built beside it and loaded from the same weights, but it is not a registered
submodule: image-only models (BoT) keep it out of their checkpoints, and a CLIP prompt
model takes it with `text_tower()` and registers it itself (as `text_encoder`).

Model configs shipped as data in `model_configs/` (e.g. `clip-tiny`, a CPU-sized CLIP)
are registered with open_clip on import, so `model_name: clip-tiny` works offline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import _build_text_tower, _build_vision_tower
from torch import nn

from ppreid.nn.attention_rows import block_rows
from ppreid.nn.backbones.pretrained import StateDict, _load_strict, load_pretrained
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger("ppreid.nn")

RESNET_STRIDE = 32
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
# top-level keys of the text tower in an open_clip CLIP state dict (logit_scale / logit_bias belong to neither tower)
TEXT_KEY_ROOTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")

if not all(path.stem in open_clip.list_models() for path in MODEL_CONFIGS.glob("*.json")):
    open_clip.add_model_config(MODEL_CONFIGS)


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


def split_clip_state(state: StateDict) -> tuple[StateDict, StateDict | None]:
    """(visual, text) parts of a CLIP state dict; text is None for a visual-only one (no `visual.*` or text keys)."""
    if not any(k.startswith("visual.") for k in state):
        return state, None
    visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    text = {k: v for k, v in state.items() if k.split(".", 1)[0] in TEXT_KEY_ROOTS}
    return visual, (text or None)


def clip_state_dict(visual: nn.Module, text_tower: nn.Module, logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """A full open_clip CLIP state dict: ``visual.*``, the text tower's keys, ``logit_scale``."""
    state = {f"visual.{k}": v.detach().cpu().clone() for k, v in visual.state_dict().items()}
    state.update({k: v.detach().cpu().clone() for k, v in text_tower.state_dict().items()})
    state["logit_scale"] = logit_scale.detach().cpu().clone().reshape(())
    return state


class OpenCLIPVisual(nn.Module):
    """(B,3,H,W) -> projected CLIP image embedding (B,out_dim); out_dim = the model's embed_dim.

    :meth:`forward_features` gives the three image features CLIP-ReID keeps (``feature_dims``):
    ``intermediate`` (ViT: class token after the second-to-last block; RN: pooled layer3),
    ``final`` (ViT: class token after the last block and ln_post, 768-d for ViT-B/16; RN: pooled
    layer4, 2048-d for RN50) and ``proj`` (the projected embedding, what ``forward`` returns).

    `model_name`: any name open_clip.get_model_config accepts (built-in such as ViT-B-16 / RN50,
    a config of `model_configs/` such as clip-tiny, or `local-dir:PATH` with an open_clip_config.json).
    `pretrained`: None, an open_clip tag for this model (downloads: opt-in), or a local weights
    file: a full CLIP state dict loads both towers, a visual-only one the image tower only. The config value
    ``sandbox`` is resolved to a weights file by the run before the backbone is built
    (``ppreid.run.sandbox_clip.resolve_pretrained_sandbox``); the constructor itself never trains anything.
    `quick_gelu`: None = what the tag/model config says; true for OpenAI's weights (a tag whose
    own setting disagrees gives a one-line warning: the activation must match the weights).
    `last_stride`: ResNet towers only; 1 removes layer4's down-sampling (CLIP-ReID's RN50: a 16x8 map
    at 256x128), 2 keeps CLIP's.
    Inputs are normalized with CLIP's mean / std (`input_mean`, `input_std`).
    """

    input_mean = tuple(open_clip.OPENAI_DATASET_MEAN)
    input_std = tuple(open_clip.OPENAI_DATASET_STD)

    def __init__(
        self,
        model_name: str = "ViT-B-16",
        pretrained: str | None = None,
        image_size: Sequence[int] = (256, 128),
        quick_gelu: bool | None = None,
        pos_embed_interpolation: str = "bilinear",
        last_stride: int = 2,
    ) -> None:
        super().__init__()
        cfg = open_clip.get_model_config(model_name)
        if cfg is None:
            raise ConfigValueError(
                f"OpenCLIPVisual: model_name={model_name!r} is not an open_clip model config. "
                "Use a built-in name such as 'ViT-B-16' or 'RN50' (see open_clip.list_models()), 'clip-tiny', "
                "or 'local-dir:PATH' for a folder with open_clip_config.json."
            )
        vision_cfg, text_cfg = dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
        if vision_cfg.get("timm_model_name") or text_cfg.get("hf_model_name"):
            raise ConfigValueError(
                f"OpenCLIPVisual: {model_name!r} wraps a timm image tower or a Hugging Face text tower; only native "
                "open_clip towers (ViT or ModifiedResNet image tower, CLIP text transformer) are supported. "
                "Use e.g. ViT-B-16, RN50 or clip-tiny."
            )
        height, width = (int(s) for s in image_size)
        self.image_size = (height, width)
        if pretrained == "sandbox":
            raise ConfigValueError(
                "OpenCLIPVisual: pretrained='sandbox' is resolved by the run (train.py builds the person-aligned "
                "CLIP first); outside a run, pass its weights file (data/sandbox-clip/clip_tiny.pt) or null."
            )
        self.is_resnet = isinstance(vision_cfg["layers"], (list, tuple))
        if int(last_stride) not in (1, 2):
            raise ConfigValueError(f"OpenCLIPVisual: last_stride={last_stride}; use 2 (CLIP) or 1 (CLIP-ReID's RN50).")
        self.last_stride = int(last_stride)
        stride = (RESNET_STRIDE // (2 // self.last_stride)) if self.is_resnet else int(vision_cfg.get("patch_size", 16))
        if height % stride or width % stride:
            raise ConfigValueError(
                f"OpenCLIPVisual: image_size={list(self.image_size)} must be divisible by {stride} for {model_name}; "
                "set data.height / data.width accordingly, e.g. 256x128."
            )
        self.grid_size = (height // stride, width // stride)
        self.model_name = model_name
        self.pos_embed_interpolation = pos_embed_interpolation

        tags = open_clip.list_pretrained_tags_by_model(model_name)
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained in tags else {}
        tag_quick_gelu = bool(tag_cfg.get("quick_gelu", cfg.get("quick_gelu", False)))
        if quick_gelu is None:
            quick_gelu = tag_quick_gelu
        elif pretrained in tags and bool(quick_gelu) != tag_quick_gelu:
            log.warning(
                "backbone clip %s: quick_gelu=%s, but the weights of tag '%s' were trained with %s; the "
                "activation must match the weights (set backbone.quick_gelu=%s)",
                model_name,
                quick_gelu,
                pretrained,
                "QuickGELU" if tag_quick_gelu else "GELU",
                str(tag_quick_gelu).lower(),
            )
        self.quick_gelu = bool(quick_gelu)

        # the same builders open_clip.model.CLIP uses, so the two towers' keys are a CLIP state dict's
        if self.is_resnet:
            self.visual = _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=quick_gelu)
            if self.last_stride == 1:
                first = self.visual.layer4[0]  # open_clip down-samples with average pools (weights unchanged)
                first.avgpool = nn.Identity()
                if first.downsample is not None:
                    first.downsample[0] = nn.Identity()
            pool = self.visual.attnpool
            dim = pool.positional_embedding.shape[1]
            n_tokens = self.grid_size[0] * self.grid_size[1] + 1
            pool.positional_embedding = nn.Parameter(torch.randn(n_tokens, dim) / dim**0.5)
            self._pos_key = "attnpool.positional_embedding"
        else:
            vision_cfg["image_size"] = self.image_size
            self.visual = _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=quick_gelu)
            self._pos_key = "positional_embedding"
            v = self.visual
            if v.attn_pool is not None or getattr(v, "final_ln_after_pool", False) or v.pool_type != "tok":
                raise ConfigValueError(
                    f"OpenCLIPVisual: {model_name!r} pools its image tokens with {v.pool_type!r}"
                    f"{' and an attention pool' if v.attn_pool is not None else ''}; only CLIP's class-token "
                    "pooling is supported (e.g. ViT-B-16, clip-tiny)."
                )
        self.out_dim = int(cfg["embed_dim"])
        width = int(vision_cfg["width"])
        # (intermediate, final, proj) widths of forward_features
        self.feature_dims = (width * 16, width * 32, self.out_dim) if self.is_resnet else (width, width, self.out_dim)
        # None: no weights given; True / False: whether the given weights held the text tower
        self.text_tower_loaded: bool | None = None
        self.pretrained = pretrained
        # a plain attribute, not a registered submodule: out of this module's state dict, .to() and .train()
        self.__dict__["_text_tower"] = _build_text_tower(cfg["embed_dim"], text_cfg, quick_gelu=quick_gelu)

        kind = f"clip {model_name}"
        text_part: list[StateDict | None] = []

        def convert(state: StateDict) -> StateDict:
            visual, text = split_clip_state(state)
            text_part.append(text)
            return self._adapt_visual_state(visual)

        tag_loaders = {tag: (lambda tag=tag: self._tag_state(tag)) for tag in tags}
        if load_pretrained(self.visual, pretrained, kind=kind, tags=tag_loaders, convert=convert):
            self.text_tower_loaded = text_part[0] is not None
            if text_part[0] is None:
                log.info(
                    "backbone %s: %s holds image-tower weights only; the text tower stays at random init",
                    kind,
                    pretrained,
                )
            else:
                _load_strict(self._text_tower, text_part[0], kind=f"{kind} text tower", source=str(pretrained))
                log.info("backbone %s: text tower loaded from the same weights (%s)", kind, pretrained)

    def _tag_state(self, tag: str) -> StateDict:
        """Download (opt-in) the tag's full CLIP weights at their native size; offline -> OSError."""
        try:
            model = open_clip.create_model(self.model_name, pretrained=tag, force_quick_gelu=self.quick_gelu)
        except RuntimeError as err:  # open_clip wraps a failed download in a RuntimeError
            if "download" in str(err).lower():
                raise OSError(str(err).removeprefix(f"Failed to download weights for tag '{tag}': ")) from err
            raise
        return model.state_dict()

    def _adapt_visual_state(self, state: StateDict) -> StateDict:
        pos = state.get(self._pos_key)
        if pos is not None and pos.ndim == 2:
            n_new = self.grid_size[0] * self.grid_size[1] + 1
            if pos.shape[0] != n_new:
                state = dict(state)
                state[self._pos_key] = resize_grid_pos_embed(pos, self.grid_size, mode=self.pos_embed_interpolation)
        return state

    def text_tower(self) -> nn.Module:
        """The model's text tower (an open_clip TextTransformer), for `ppreid.nn.text.TextEncoder`.

        Not part of this module's state dict, device moves or train/eval switches: the model that
        takes it registers it (e.g. `self.text_encoder = TextEncoder(backbone.text_tower())`).
        """
        return self._text_tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,3,H,W) -> {"intermediate", "final", "proj"}: (B, d) features of widths ``feature_dims``.

        ViT: the last block computes only the class-token row (its keys and values still use every
        token), so the three features cost one forward pass; ``proj`` equals :meth:`forward`.
        """
        v = self.visual
        if self.is_resnet:
            x = v.stem(x)
            x = v.layer2(v.layer1(x))
            x3 = v.layer3(x)
            x4 = v.layer4(x3)
            return {"intermediate": x3.mean(dim=(2, 3)), "final": x4.mean(dim=(2, 3)), "proj": v.attnpool(x4)}
        x = v._embeds(x)
        blocks = v.transformer.resblocks  # batch-first (open_clip >= 2.24)
        for block in blocks[:-1]:
            x = block(x)
        intermediate = x[:, 0]
        token = block_rows(blocks[-1], x, 0)
        final = v.ln_post(token)
        proj = final @ v.proj if v.proj is not None else final
        return {"intermediate": intermediate, "final": final, "proj": proj}
