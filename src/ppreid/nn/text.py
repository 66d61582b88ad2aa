"""Frozen CLIP text encoder that takes token *embeddings*, so prompts can carry learned word vectors.

    enc = TextEncoder(clip_model)   # an open_clip CLIP, or a backbone's text_tower()
    emb = enc.embed(token_ids)      # (B, L) int64 -> (B, L, D) token embeddings
    feat = enc(emb, token_ids)      # (B, L, D) -> (B, E)

`enc(enc.embed(ids), ids)` is `clip_model.encode_text(ids)` (unnormalized). The weights are
shared with the given model, frozen and kept in eval mode; gradients flow only to `emb`.
Its state dict uses open_clip's text key names (`token_embedding.weight`, `transformer.*`, ...).
"""

from __future__ import annotations

import torch
from torch import nn

from ppreid.nn.attention_rows import block_rows
from ppreid.utils.errors import ConfigValueError


class TextEncoder(nn.Module):
    """The text tower of an open_clip CLIP model, fed token embeddings, pooled at end-of-text.

    Accepts an open_clip `CLIP` (text modules at the top level), a `CustomTextCLIP` with a
    native `.text` tower, or an open_clip `TextTransformer` (what `OpenCLIPVisual.text_tower()` returns).
    """

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        tower = clip_model
        if not hasattr(tower, "token_embedding") and isinstance(getattr(tower, "text", None), nn.Module):
            tower = tower.text  # CustomTextCLIP
        missing = [
            n for n in ("token_embedding", "positional_embedding", "transformer", "ln_final") if not hasattr(tower, n)
        ]
        name = type(clip_model).__name__
        if missing:
            raise ConfigValueError(
                f"TextEncoder: {name} has no CLIP text transformer (missing {', '.join(missing)}); "
                "pass an open_clip CLIP model or an OpenCLIPVisual backbone's text_tower()."
            )
        pool_type = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        has_cls = getattr(tower, "cls_emb", None) is not None
        if pool_type != "argmax" or has_cls or getattr(tower, "use_pad_mask", False):
            raise ConfigValueError(
                f"TextEncoder: the text tower of {name} pools with {pool_type!r}{' and a class token' * has_cls}; "
                "only CLIP's end-of-text pooling ('argmax' of the token ids) is supported. "
                "Use a CLIP model such as ViT-B-16."
            )
        self.token_embedding = tower.token_embedding
        self.positional_embedding = tower.positional_embedding
        self.transformer = tower.transformer
        self.ln_final = tower.ln_final
        self.text_projection = tower.text_projection  # Parameter (W, E), nn.Linear, or None
        self.register_buffer("attn_mask", tower.attn_mask, persistent=False)  # causal (L, L) additive mask, or None
        self.context_length = int(self.positional_embedding.shape[0])
        self.requires_grad_(False)
        self.train(False)

    @property
    def width(self) -> int:
        """D: the token-embedding width."""
        return int(self.token_embedding.embedding_dim)

    @property
    def output_dim(self) -> int:
        """E: the text feature width (after the projection)."""
        proj = self.text_projection
        if proj is None:
            return self.width
        return int(proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1])

    @property
    def is_causal(self) -> bool:
        """True when each token sees only earlier ones: then tokens after end-of-text change nothing."""
        return self.attn_mask is not None

    def train(self, mode: bool = True) -> TextEncoder:
        """Always eval: the encoder is frozen, whatever mode its parent model is switched to."""
        return super().train(False)

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 token ids -> (B, L, D) token embeddings (in the transformer's dtype)."""
        return self.token_embedding(token_ids).to(self.transformer.get_cast_dtype())

    def forward(self, embeddings: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, L, D) embeddings, (B or 1, L) ids -> (B, E) features at each row's end-of-text token."""
        batch, length, _ = embeddings.shape
        if length > self.context_length or token_ids.shape[-1] != length:
            raise ValueError(
                f"TextEncoder: embeddings of length {length} with token ids of length {token_ids.shape[-1]}; both "
                f"must be equal and at most the context length {self.context_length}."
            )
        cast_dtype = self.transformer.get_cast_dtype()
        x = embeddings.to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        eot = token_ids.argmax(dim=-1)
        shared_eot = eot.numel() == 1 or bool((eot == eot[0]).all())
        blocks = getattr(self.transformer, "resblocks", None)
        if shared_eot and blocks is not None and len(blocks) > 0 and getattr(self.transformer, "batch_first", True):
            # every row pools at the same end-of-text position: the last block runs for that row only
            for block in blocks[:-1]:
                x = block(x, attn_mask=mask)
            x = self.ln_final(block_rows(blocks[-1], x, eot.flatten()[0], mask))
        else:
            x = self.ln_final(self.transformer(x, attn_mask=mask))
            x = x[torch.arange(batch, device=x.device), eot.expand(batch)]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        if self.text_projection is not None:
            return x @ self.text_projection
        return x
