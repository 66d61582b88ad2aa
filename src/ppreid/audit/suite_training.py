"""Training of the privacy audit's attacker suites (``model=attack``): the cross-domain training pairs
and every attacker kind with its null, trained from scratch on (feature, image) pairs; the cross-domain
suite scored on the source's held-out identities (``score_source_val``).

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

from ppreid.audit import report, scoring
from ppreid.audit.attackers.base import AuditBinding
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


def held_out_split(image_ids: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Bool mask (N,) of the pairs whose source image is held out for early stopping: a seeded ``fraction``
    of the distinct ``image_ids`` (N,) (an image and its mirror share an id, so both sides never share a
    photo); none with ``fraction`` 0 or fewer than 4 images."""
    ids = image_ids.unique()
    count = int(round(float(fraction) * ids.numel()))
    if count < 1 or ids.numel() < 4:
        return torch.zeros_like(image_ids, dtype=torch.bool)
    gen = torch.Generator().manual_seed(int(seed))
    held = ids[torch.randperm(ids.numel(), generator=gen)[: min(count, ids.numel() - 2)]]
    return torch.isin(image_ids, held)


def train_suite(
    audit,
    split: str,
    feats: torch.Tensor,
    images: torch.Tensor,
    step_fraction: float = 1.0,
    image_ids: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Every attacker kind and its null trained from scratch on (feats (N,D), images (N,3,h,w) uint8) for at
    most ``step_fraction`` of its steps, until its loss on held-out pairs plateaus (``audit.early_stopping``:
    ``val_fraction`` of the source images, ``image_ids`` (N,) naming each pair's source image, default one
    image per pair); ``split`` names the suite in the log, the cost and the curves (``cross``,
    ``in_domain/<target>``). The standardization and the mean image are the training pairs'."""
    stopping = dict(audit.early_stopping)
    ids = torch.arange(feats.shape[0]) if image_ids is None else image_ids
    held = held_out_split(ids, stopping.get("val_fraction", 0.0), audit.split_seed) if stopping.get("enabled") else None
    if held is not None and held.any():
        val_feats, val_images = feats[held], images[held]
        feats, images = feats[~held], images[~held]
    else:
        val_feats = val_images = None
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-6)
    z = (feats - mean) / std
    mean_image = images.float().mean(0, keepdim=True) / 255.0
    gen = torch.Generator().manual_seed(int(torch.initial_seed()) % (2**31))
    shuffled = z[torch.randperm(z.shape[0], generator=gen)]
    val = {}
    if val_feats is not None:
        val_z = (val_feats - mean) / std
        val = {
            "attackers": (val_z, val_images),
            "nulls": (val_z[torch.randperm(val_z.shape[0], generator=gen)], val_images),
        }
    suite = {
        "feat_mean": mean,
        "feat_std": std,
        "mean_image": mean_image,
        "pairs": int(z.shape[0]),
        "val_pairs": 0 if val_feats is None else int(val_feats.shape[0]),
        "attackers": {},
        "nulls": {},
        "steps": {},
        "train_time_s": {},
        "curves": {},
    }
    binding = AuditBinding(
        extractor=audit.extractor,
        features_of=lambda x: (audit.eval_features(audit.space.from_unit(x)) - mean.to(x)) / std.to(x),
        feat_mean=mean,
        feat_std=std,
        mean_image=mean_image.to(audit.device),
    )
    for name in audit.attacker_names:
        for role, inputs in (("attackers", z), ("nulls", shuffled)):
            attacker = audit.factories[name]()
            attacker.build(feat_dim=z.shape[1], image_size=audit.attack_size)
            attacker.to(audit.device)
            if audit.trainer.fast_dev_run:
                attacker.quick()
            if hasattr(attacker, "bind"):  # optim, own: E, this split's standardization and mean image
                attacker.bind(binding)
            steps = limited_steps(audit.trainer, max(1, round(attacker.steps * step_fraction)))
            key = name + ("_null" if role == "nulls" else "")
            if attacker.needs_training:
                label = f"{split}/{name}" + (" null" if role == "nulls" else "")
                log.info(
                    "training attacker %s from scratch: at most %d steps on %d pairs (%d held out)",
                    label,
                    steps,
                    z.shape[0],
                    suite["val_pairs"],
                )
                start = audit._clock()
                curve = attacker.fit(
                    inputs, images, label, gen, steps, val.get(role), stopping, lambda: audit.trainer.received_sigterm
                )
                suite["train_time_s"][key] = round(time.time() - start[0], 2)
                suite["curves"][key] = curve
                audit._timed(f"{split}/train/{name}", start)
                if role == "attackers":
                    suite["steps"][name] = curve["stopped_step"]
            else:
                attacker.steps = steps
                suite["steps"][name] = steps
            suite[role][name] = attacker
    return suite


@torch.no_grad()
def training_pairs(audit):
    """The training split's pairs: (features (N,D) float32 on the CPU, images (N,3,h,w) uint8 at the attack
    size, image ids (N,): the index of each pair's training record).

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
    feats, images, ids = [], [], []
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x = batch["image"].to(audit.device)
        for view in [x, torch.flip(x, dims=[3])] if mirror else [x]:
            feats.append(audit.eval_features(view).float().cpu())
            images.append(to_uint8(resize(audit.space.to_unit(view), audit.attack_size)))
            ids.append(batch["index"].cpu())
    log.info(
        "features of %d training images extracted (%s)",
        sum(map(len, feats)) // (1 + mirror),
        "and of their mirror images" if mirror else "no mirror images",
    )
    return torch.cat(feats), torch.cat(images), torch.cat(ids)


def score_source_val(audit) -> dict[str, Any] | None:
    """The cross-domain attackers (trained on the source's training identities) scored on the source's
    held-out validation identities: no style gap, images no attacker and no defence adversary has seen.
    This is where ``adversary_strength`` compares the defence's own decoder with a fresh attacker on equal
    terms (results.json ``privacy_source_val``); None without a validation split."""
    dm = audit.trainer.datamodule
    val_set = getattr(dm, "val_set", None)
    if val_set is None:
        return None
    start = audit._clock()
    store: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for i, batch in enumerate(dm.eval_loader(val_set)):
            if audit.trainer.fast_dev_run and i:
                break
            audit.collect(store, {k: v.to(audit.device) if torch.is_tensor(v) else v for k, v in batch.items()})
    data = scoring.target_data(val_set, store)
    everyone = torch.ones(len(data["pids"]), dtype=torch.bool)
    res, _ = scoring.score_suite(audit, audit.suites["cross"], data, everyone, None)
    audit._timed("cross/source_val/score", start)
    report.log_target("the source's held-out identities", "cross-domain attackers", res)
    return {
        "split": "attackers trained on the source's training identities, scored on its held-out validation identities",
        "num_images": int(everyone.sum()),
        **res,
    }
