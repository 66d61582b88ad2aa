"""The defences' adversaries before the joint phase: their options (``model.adversary``), the bank of E's
frozen features of every clean training image they are pre-trained on (as the audit trains a fresh
attacker), and, under DDP, rank 0's adversaries handed to every rank (after ResSFL, Li et al. CVPR 2022:
an attacker as strong as the audit's, not one that grows up with E)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ppreid.privacy.reversal import positive_int
from ppreid.utils.errors import ConfigValueError, check_known_keys

log = logging.getLogger(__name__)

ADVERSARY_KEYS = ("steps_per_batch", "pretrain_steps", "pretrain_batch_size", "ssim_weight")


@dataclass(frozen=True)
class AdversaryOptions:
    """``model.adversary``: adversary steps per E step (step 1 of two-step training), pre-training steps and
    their batch size, and the weight of SSIM beside L1 in the adversaries' own loss."""

    steps_per_batch: int = 1
    pretrain_steps: int = 0
    pretrain_batch_size: int = 64
    ssim_weight: float = 0.0

    @classmethod
    def from_config(cls, adversary: dict[str, Any] | None) -> AdversaryOptions:
        adv = dict(adversary or {})
        check_known_keys(adv, ADVERSARY_KEYS, "model.adversary")
        pretrain_steps = int(adv.get("pretrain_steps", 0))
        if pretrain_steps < 0:
            raise ConfigValueError(f"model.adversary.pretrain_steps={pretrain_steps}: give an int >= 0.")
        return cls(
            steps_per_batch=positive_int("model.adversary.steps_per_batch", adv.get("steps_per_batch", 1)),
            pretrain_steps=pretrain_steps,
            pretrain_batch_size=positive_int("model.adversary.pretrain_batch_size", adv.get("pretrain_batch_size", 64)),
            ssim_weight=adv.get("ssim_weight", 0.0),
        )


def feature_bank(
    batches: Iterable[dict[str, torch.Tensor]],
    features: Callable[[torch.Tensor], torch.Tensor],
    unit_images: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    first_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E's features (N,D) of every batch's images and the images as targets, (N,3,h,w) uint8 (a quarter of
    the memory of floats); ``first_only`` stops after one batch (a fast dev run)."""
    feats, reals = [], []
    for batch in batches:
        inputs = batch["image"].to(device)
        feats.append(features(inputs))
        reals.append((unit_images(inputs) * 255.0).round().to(torch.uint8))
        if first_only:
            break
    return torch.cat(feats), torch.cat(reals)


def pretrain_on_bank(
    step: Callable[[torch.Tensor, torch.Tensor, bool], None],
    feats: torch.Tensor,
    reals: torch.Tensor,
    steps: int,
    batch_size: int,
    seed: int,
    on_step: Callable[[int], None] | None = None,
    name: str = "",
) -> None:
    """``steps`` calls of ``step(features (B,D), targets (B,3,h,w) in [0,1], record)`` on random batches of
    the bank (drawn with a generator seeded by ``seed``, so a resumed run draws the same); the last step is
    recorded; ``on_step(k)`` after each."""
    gen = torch.Generator().manual_seed(seed)
    n, size = reals.shape[0], min(batch_size, reals.shape[0])
    for k in range(steps):
        idx = torch.randint(0, n, (size,), generator=gen).to(feats.device)
        step(feats[idx], reals[idx].float() / 255.0, k == steps - 1)
        if on_step is not None:
            on_step(k)
        if k % 100 == 0 or k == steps - 1:
            log.info("pre-training the %s defence's adversaries: step %d/%d", name, k + 1, steps)


def share_adversaries(
    strategy: Any, defence: torch.nn.Module, optimizers: Sequence[Any], mean_image: torch.Tensor
) -> None:
    """Under DDP each rank pre-trains on its own shard (no gradient sync outside a training step): every
    rank then takes rank 0's adversaries, their optimizer states and its mean image, so the joint phase
    starts in step."""
    optimizers = [getattr(o, "optimizer", o) for o in optimizers]
    state = strategy.broadcast(
        {
            "defence": defence.state_dict(),
            "optimizers": [o.state_dict() for o in optimizers],
            "mean_image": mean_image,
        },
        src=0,
    )
    defence.load_state_dict(state["defence"])
    mean_image.copy_(state["mean_image"])
    for optimizer, saved in zip(optimizers, state["optimizers"]):
        optimizer.load_state_dict(saved)
