"""The attacker ``own``: the audited checkpoint's own reversal decoder, exactly as its defence trained it.

A privacy defence is only as good as the adversary it trains against. This attacker answers "was the
defence's adversary as strong as the audit's?": it scores the decoder stored in the checkpoint (the GAN
defence's G, or the first decoder of a pool) on the audit's images, beside the fresh attackers, with the
same gains, swap test and regions. On the unprotected row (privacy_weight=0, where the adversaries train
but E ignores them) ``own``'s gain over ``l1``'s is the adversary-strength ratio.

Nothing is trained. The decoder reads the stored feature through the defence's own standardization
(running statistics); the audit's standardized features (B,D) are mapped back to raw features first.
Checkpoints without a decoder (BoT, CLIP models, the dependence defence) skip this attacker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from ppreid.audit.attackers.base import AuditBinding
from ppreid.audit.attackers.images import resize
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger("ppreid.audit.attack")


class OwnDecoderAttacker(nn.Module):
    """The checkpoint's decoder named ``decoder`` (null: the first the defence lists, ``G`` for the GAN
    defence, ``d0`` for a pool); ``bind`` gives it the defence and the audit's standardization."""

    needs_training = False
    steps = 0

    def __init__(self, decoder: str | None = None, log_every: int = 0) -> None:
        super().__init__()
        self.decoder_name = decoder
        self.defence: nn.Module | None = None
        self.feat_mean: torch.Tensor | None = None
        self.feat_std: torch.Tensor | None = None

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.image_size = tuple(int(s) for s in image_size)

    def bind(self, binding: AuditBinding) -> None:
        """The audited model's defence (``reconstruct(raw feats) -> {name: images}``) and the audit's
        standardization of this split (``feat_mean``, ``feat_std`` (D,)), undone before the decoder reads."""
        self.defence = binding.extractor.defence
        self.feat_mean, self.feat_std = binding.feat_mean, binding.feat_std

    def quick(self) -> None:
        pass

    @torch.no_grad()
    def reconstruct(self, feat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Standardized features (B,D) -> the defence decoder's images (B,3,h,w) in [0, 1] at the attack size."""
        if self.defence is None:
            raise RuntimeError("OwnDecoderAttacker.reconstruct before bind(): the audit binds it first.")
        raw = feat * self.feat_std.to(feat) + self.feat_mean.to(feat)
        was_training = self.defence.training
        self.defence.eval()
        out = self.defence.reconstruct(raw)
        self.defence.train(was_training)
        name = self.decoder_name or next(iter(out))
        return resize(out[name].float().clamp(0.0, 1.0), self.image_size)


def decoder_names(model: nn.Module) -> list[str]:
    """The reversal decoders a checkpoint's model carries (``[]`` unless it is a privacy model whose defence
    has an adversary: the GAN's ``G``, a pool's ``d0``, ``d1``, ...)."""
    from ppreid.models.privacy_gan import PrivacyGANModel

    if not isinstance(model, PrivacyGANModel) or not model.defence.has_adversary:
        return []
    defence = model.defence
    was_training = defence.training
    defence.eval()
    with torch.no_grad():
        names = list(defence.reconstruct(torch.zeros(2, defence.feat_dim)))
    defence.train(was_training)
    return names


def with_own_decoder(attackers: list[str], model: nn.Module, ckpt: str) -> list[str]:
    """``attackers`` without ``own`` when the audited ``model`` (from ``ckpt``) has no decoder of its own
    (a log line says so); an error when nothing would be left."""
    if "own" not in attackers:
        return attackers
    names = decoder_names(model)
    if names:
        log.info("attacker own: the checkpoint's decoder %s, as its defence trained it", names[0])
        return attackers
    log.info("attacker own skipped: %s has no reversal decoder of its own", ckpt)
    rest = [a for a in attackers if a != "own"]
    if not rest:
        raise ConfigValueError(
            f"model.attackers=[own] but {ckpt} has no decoder of its own; add a learned "
            "attacker, e.g. model.attackers=[l1,own]."
        )
    return rest
