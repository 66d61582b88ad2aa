"""Training of the privacy audit's attacker suites (``model=attack``): the cross-domain training pairs
and every attacker kind with its null, trained from scratch on (feature, image) pairs.

``audit`` is the :class:`ppreid.audit.attack.AttackModel` being run (its frozen extractor, image space,
trainer and attacker factories); features are float32 (N,D) on the CPU, images uint8 (N,3,h,w) at the
attack size.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from ppreid.audit.attackers.images import resize, to_uint8

log = logging.getLogger("ppreid.audit.attack")


def limited_steps(trainer, steps: int) -> int:
    """Attacker steps are training batches: a fast dev run takes one, ``limit_train_batches`` caps them."""
    if trainer.fast_dev_run:
        return min(steps, 1)
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(steps, limit)
    return max(1, int(round(steps * float(limit)))) if limit is not None and float(limit) < 1.0 else steps


def train_suite(
    audit, split: str, feats: torch.Tensor, images: torch.Tensor, step_fraction: float = 1.0
) -> dict[str, Any]:
    """Every attacker kind and its null trained from scratch on (feats (N,D), images (N,3,h,w) uint8) for
    ``step_fraction`` of its steps; ``split`` names the suite in the log and the cost (``cross``,
    ``in_domain/<target>``)."""
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    z = (feats - mean) / std
    mean_image = images.float().mean(0, keepdim=True) / 255.0
    gen = torch.Generator().manual_seed(int(torch.initial_seed()) % (2**31))
    shuffled = z[torch.randperm(z.shape[0], generator=gen)]
    suite = {
        "feat_mean": mean,
        "feat_std": std,
        "mean_image": mean_image,
        "pairs": int(z.shape[0]),
        "attackers": {},
        "nulls": {},
        "steps": {},
        "train_time_s": {},
    }
    for name in audit.attacker_names:
        for role, inputs in (("attackers", z), ("nulls", shuffled)):
            attacker = audit.factories[name]()
            attacker.build(feat_dim=z.shape[1], image_size=audit.attack_size)
            attacker.to(audit.device)
            if audit.trainer.fast_dev_run:
                attacker.quick()
            if hasattr(attacker, "bind"):  # white-box: E and this split's standardization and mean image
                attacker.bind(
                    lambda x: (audit.eval_features(audit.space.from_unit(x)) - mean.to(x)) / std.to(x),
                    mean_image.to(audit.device),
                )
            steps = limited_steps(audit.trainer, max(1, round(attacker.steps * step_fraction)))
            if attacker.needs_training:
                label = f"{split}/{name}" + (" null" if role == "nulls" else "")
                log.info("training attacker %s from scratch: %d steps on %d pairs", label, steps, z.shape[0])
                start = audit._clock()
                attacker.fit(inputs, images, label, gen, steps)
                key = name + ("_null" if role == "nulls" else "")
                suite["train_time_s"][key] = round(time.time() - start[0], 2)
                audit._timed(f"{split}/train/{name}", start)
            else:
                attacker.steps = steps
            suite["steps"][name] = steps
            suite[role][name] = attacker
    return suite


@torch.no_grad()
def training_pairs(audit):
    """(features (N,D) float32 on the CPU, images (N,3,h,w) uint8 at the attack size) of the training split.

    With ``train_flip`` the mirror images add pairs, unless flip-test is on (``eval.flip``): the stored
    feature is then the mean over an image and its mirror, and pairing one feature with two images
    would teach the attacker an ambiguity, not a reversal."""
    dm = audit.trainer.datamodule
    dm.setup_sources()
    loader = DataLoader(
        dm.train_dataset(augment=False), batch_size=dm.test_batch_size, shuffle=False, num_workers=dm.num_workers
    )
    mirror = audit.train_flip and not audit.eval_options.flip
    if audit.train_flip and not mirror:
        log.info("model.train_flip is moot with eval.flip=true (flip-averaged features): one pair per image")
    max_batches = (
        1
        if audit.trainer.fast_dev_run
        else (audit.trainer.limit_train_batches if isinstance(audit.trainer.limit_train_batches, int) else None)
    )
    feats, images = [], []
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x = batch["image"].to(audit.device)
        for view in [x, torch.flip(x, dims=[3])] if mirror else [x]:
            feats.append(audit.eval_features(view).float().cpu())
            images.append(to_uint8(resize(audit.space.to_unit(view), audit.attack_size)))
    log.info(
        "features of %d training images extracted (%s)",
        sum(map(len, feats)) // (1 + mirror),
        "and of their mirror images" if mirror else "no mirror images",
    )
    return torch.cat(feats), torch.cat(images)
