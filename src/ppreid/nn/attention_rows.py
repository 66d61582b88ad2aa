"""A transformer block evaluated at a few query rows only (exact; the keys and values use every row).

CLIP pools a sequence at one token (the image class token, the text end-of-text token). The last
block's output matters only there, so its attention and MLP need to run only for that row:
``block_rows(block, x, row)`` equals ``block(x)[:, row]`` to float tolerance and costs ~1/L of the
block's query-side work.
"""

from __future__ import annotations

import torch
from open_clip.transformer import ResidualAttentionBlock


def block_rows(
    block: torch.nn.Module, x: torch.Tensor, row: int | torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, L, D) batch-first input -> (B, D) output of ``block`` at position ``row``.

    ``row``: one position shared by the batch (an int or a 0-d tensor). ``attn_mask``: the additive
    (L, L) mask of the full sequence (its ``row`` line is used). Blocks other than open_clip's standard
    :class:`ResidualAttentionBlock` (or ones with cross-attention) run in full and are then indexed.
    """
    row = int(row)
    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv") or not block.attn.batch_first:
        return block(x, attn_mask=attn_mask)[:, row]
    h = block.ln_1(x)
    query = h[:, row : row + 1]
    mask = None if attn_mask is None else attn_mask[row : row + 1, : x.shape[1]].to(h.dtype)
    attended = block.attn(query, h, h, need_weights=False, attn_mask=mask)[0]
    y = x[:, row : row + 1] + block.ls_1(attended)
    y = y + block.ls_2(block.mlp(block.ln_2(y)))
    return y[:, 0]
