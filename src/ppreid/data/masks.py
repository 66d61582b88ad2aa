"""Person masks of the procedural data: ``X.mask.png`` beside ``X.jpg`` (255 = person, the image's size),
named by a record's ``mask`` (GenePerson manifests; real datasets have none). Read by the privacy audit's
region measures and by the defences' background term."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def load_masks(paths: Sequence[str], size: tuple[int, int]) -> torch.Tensor:
    """Person masks (PNG files, 255 = person, the image's size) -> bool (N,1,h,w) at ``size`` = (h, w)
    (bilinear resize of the image's own size, then > 50%: as the images are resized)."""
    out = []
    for path in paths:
        with Image.open(path) as im:
            small = im.convert("L").resize((size[1], size[0]), Image.BILINEAR)
        out.append(torch.from_numpy(np.asarray(small) > 127))
    return torch.stack(out).unsqueeze(1)
