"""Identity-level image-image contrast: the no-text control of language-image pre-training.

The same batches, positives and budget as the identity-level image-text loss
(:func:`ppreid.losses.contrastive.clip_contrastive_loss` with PLIP's identity positives), with the
captions replaced by the other images of the batch: what the pre-training learns without language.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def image_identity_contrast(
    image: torch.Tensor, pids: torch.Tensor, logit_scale: torch.Tensor, max_scale: float = 100.0
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) over the (B, E) image features of a P x K batch.

    logits = exp(logit_scale) * cos(i, j), an image's own column left out; the target of row i is uniform
    over the other images of its identity (multi-positive InfoNCE, soft targets); rows without another
    image of their identity are left out (0 if none has one). ``logit_scale`` is clamped at
    ``log(max_scale)`` as CLIP does.
    """
    scale = logit_scale.clamp(max=math.log(max_scale)).exp()
    feats = F.normalize(image, dim=-1)
    logits = scale * feats @ feats.t()
    self_mask = torch.eye(len(pids), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    pos = (pids[:, None] == pids[None, :]) & ~self_mask
    has = pos.any(1)
    if not has.any():
        return feats.sum() * 0.0
    log_prob = F.log_softmax(logits[has], dim=1).masked_fill(self_mask[has], 0.0)
    target = pos[has].float() / pos[has].sum(1, keepdim=True)
    return -(target * log_prob).sum(1).mean()
