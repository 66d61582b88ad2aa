"""Contrastive losses between image and text features (CLIP-ReID, PDM, ``model=clip_pretrain``).

CLIP-ReID feeds raw (unnormalized) projected features with temperature 1; that is the default
of `SupConLoss` and `i2t_cross_entropy`. `info_nce` follows CLIP's own loss (L2-normalized
features) by default. Every choice is an argument, so a config can set it. ``clip_contrastive_loss`` is
CLIP's own symmetric loss (learnable logit scale), with the batch's positives of ``batch_positives``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppreid.utils.errors import ConfigValueError


def _check_temperature(temperature: float, where: str) -> float:
    if not temperature > 0:
        raise ConfigValueError(f"{where}: temperature={temperature}; must be > 0 (CLIP-ReID uses 1.0).")
    return float(temperature)


def _logits(a: torch.Tensor, b: torch.Tensor, temperature: float, normalize: bool) -> torch.Tensor:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"features of widths {a.shape[-1]} and {b.shape[-1]} cannot be compared.")
    if normalize:
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    return a @ b.t() / temperature


class SupConLoss(nn.Module):
    """Supervised contrastive loss of anchors against a contrast set (Khosla et al. 2020; CLIP-ReID).

    forward(anchors (B,E), contrast (M,E), anchor_labels (B,), contrast_labels (M,)) -> scalar:
    logits = anchors @ contrast.T / temperature; per anchor, minus the mean over its positives
    (contrast entries with its label) of the log-softmax over all M; averaged over the anchors
    that have a positive (0 if none has). CLIP-ReID stage 1 calls it both ways:
    `loss(img, txt, y, y) + loss(txt, img, y, y)`.
    """

    def __init__(self, temperature: float = 1.0, normalize: bool = False) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature, "SupConLoss")
        self.normalize = normalize

    def forward(
        self,
        anchors: torch.Tensor,
        contrast: torch.Tensor,
        anchor_labels: torch.Tensor,
        contrast_labels: torch.Tensor,
    ) -> torch.Tensor:
        log_prob = F.log_softmax(_logits(anchors, contrast, self.temperature, self.normalize), dim=1)
        positive = (anchor_labels.view(-1, 1) == contrast_labels.view(1, -1)).to(log_prob.dtype)
        n_pos = positive.sum(dim=1)
        has_pos = n_pos > 0
        if not has_pos.any():
            return log_prob.sum() * 0.0
        mean_log_prob_pos = (positive * log_prob).sum(dim=1)[has_pos] / n_pos[has_pos]
        return -mean_log_prob_pos.mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}"


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07, normalize: bool = True) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss): row i of `a` (N,E) matches row i of `b` (N,E), every other row is a negative.

    Mean of the cross-entropies a->b and b->a over logits a @ b.T / temperature.
    """
    logits = _logits(a, b, _check_temperature(temperature, "info_nce"), normalize)
    targets = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets))


def i2t_cross_entropy(
    image_features: torch.Tensor,
    text_bank: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    normalize: bool = False,
) -> torch.Tensor:
    """Image->text cross-entropy: each image (B,E) classified among the text features of all identities (C,E).

    logits = image_features @ text_bank.T / temperature; targets smoothed to (1-eps)*onehot + eps/C.
    CLIP-ReID stage 2: raw features, temperature 1, eps 0.1.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigValueError(
            f"i2t_cross_entropy: label_smoothing={label_smoothing}; must be in [0, 1) (CLIP-ReID: 0.1)."
        )
    logits = _logits(image_features, text_bank, _check_temperature(temperature, "i2t_cross_entropy"), normalize)
    return F.cross_entropy(logits, labels.long(), label_smoothing=label_smoothing)


# ----------------------------------------------------------------------------- CLIP's own (model=clip_pretrain)
def clip_contrastive_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor,
    positives: torch.Tensor | None = None,
    max_scale: float = 100.0,
) -> torch.Tensor:
    """CLIP's symmetric cross-entropy over (B, E) image and (B, E) text features of B pairs.

    ``positives``: optional (B, B) bool, image i matches text j (PLIP's identity-level contrast);
    each row's / column's target is uniform over its positives (the diagonal must be set).
    ``logit_scale`` is the log of the inverse temperature, clamped at ``log(max_scale)`` as CLIP does.
    """
    scale = logit_scale.clamp(max=math.log(max_scale)).exp()
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    if positives is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    pos = positives.float()
    rows = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    cols = -(pos / pos.sum(0, keepdim=True) * F.log_softmax(logits, dim=0)).sum(0).mean()
    return (rows + cols) / 2


def identity_positives(pids: torch.Tensor, kinds: Sequence[str]) -> torch.Tensor:
    """(B, B) bool: image i matches text j if j is its own text, or if they share the identity and text j
    describes the person (a ``full`` or ``content`` caption; a style caption matches its own image only)."""
    person = torch.tensor([k != "style" for k in kinds], device=pids.device)
    same = (pids[:, None] == pids[None, :]) & person[None, :]
    return same | torch.eye(len(pids), dtype=torch.bool, device=pids.device)


def caption_truth_positives(attributes: Sequence[Mapping[str, str]], stated: Sequence[Sequence[str]]) -> torch.Tensor:
    """(B, B) bool: image i matches text j when text j is true of image i, i.e. image i's record has the
    value of every attribute that caption j states (``stated[j]``, from ``Captioner.describe``). A caption
    naming a few attributes ("an elderly female, with a cap") then has every image it describes as a
    positive instead of as a false negative (UniCL's label-aware contrast, Yang et al., CVPR 2022; PLIP's
    identity positives are the special case of a caption stating a whole identity). The diagonal is set."""
    keys = sorted({k for ks in stated for k in ks})
    n = len(attributes)
    if not keys:  # captions that state nothing are true of every image
        return torch.ones(n, n, dtype=torch.bool)
    codes: dict[str, dict[str, int]] = {k: {} for k in keys}
    values = torch.tensor([[codes[k].setdefault(str(a.get(k)), len(codes[k])) for k in keys] for a in attributes])
    said = torch.tensor([[k in set(ks) for k in keys] for ks in stated])
    differ = values[:, None, :] != values[None, :, :]  # (B_image, B_text, K)
    return ~(differ & said[None, :, :]).any(-1) | torch.eye(n, dtype=torch.bool)


def batch_positives(
    pids: torch.Tensor,
    kinds: Sequence[str],
    attributes: Sequence[Mapping[str, str]],
    stated: Sequence[Sequence[str]],
    identity_level: bool = False,
    caption_truth: bool = False,
) -> torch.Tensor | None:
    """The contrastive positives of a batch: None (CLIP's one-to-one pairs), or the (B, B) union of
    PLIP's identity positives (``identity_level``) and the caption-truth positives (``caption_truth``)."""
    out = identity_positives(pids, kinds) if identity_level else None
    if caption_truth:
        truth = caption_truth_positives(attributes, stated).to(pids.device)
        out = truth if out is None else out | truth
    return out
