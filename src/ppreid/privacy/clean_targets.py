"""What the feature-privacy defences reconstruct: a training batch's **clean** images (the test transforms:
no pad, crop, flip or erasing) and their person masks, looked up by ``batch["index"]`` in the training set.

The audit attacks E's feature of the clean image, with that image as the target, so the defences' adversaries
and E's privacy loss see the same pair (src/ppreid/models/privacy_gan.py); E's ReID losses keep the augmented
batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ppreid.data.masks import load_masks


def clean_inputs(batch: dict[str, torch.Tensor], clean_set: Any | None) -> torch.Tensor:
    """The batch's training images with the test transforms (B,3,H,W): from the batch (``image_clean``) or
    from ``clean_set`` (the training dataset built with ``augment=False``) at ``batch["index"]``; without
    either (a bare model, no datamodule) the batch's images as given."""
    if "image_clean" in batch:
        return batch["image_clean"]
    if clean_set is None:
        return batch["image"]
    rows = [clean_set[int(i)]["image"] for i in batch["index"].tolist()]
    return torch.stack(rows).to(batch["image"])


def person_masks(
    batch: dict[str, torch.Tensor],
    clean_set: Any | None,
    cache: dict[int, torch.Tensor],
    image_size: tuple[int, int],
) -> torch.Tensor | None:
    """The batch's person masks as fractions (B,1,h,w) at the reconstruction size ``image_size`` (1 = person),
    from the batch (``mask``) or from the training records' mask files (GenePerson sets written by the
    procedural renderer); None where any record has none (real datasets): the defence then uses its border
    proxy. Each image's mask is read once and kept in ``cache`` (training index -> (1,h,w), a few KB)."""
    if "mask" in batch:
        return F.interpolate(batch["mask"].float(), size=image_size, mode="area")
    records = getattr(clean_set, "records", None)
    if not records:
        return None
    rows = []
    for i in batch["index"].tolist():
        cached = cache.get(i)
        if cached is None:
            path = getattr(records[i], "mask", None)
            if not path:
                return None
            # the mask at the image's own size, then area-averaged like the images: person fractions
            full = load_masks([path], tuple(batch["image"].shape[-2:])).float()
            cached = F.interpolate(full, size=image_size, mode="area")[0]
            cache[i] = cached
        rows.append(cached)
    return torch.stack(rows).to(batch["image"].device)
