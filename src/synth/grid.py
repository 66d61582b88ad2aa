"""``samples.jpg``: a contact sheet of a GenePerson set, one column per identity, for a person to look at."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from PIL import Image

MAX_THUMB_HEIGHT = 256


def contact_sheet(columns: Sequence[Sequence[Path]], gap: int = 2) -> Image.Image:
    """Tile images: ``columns[i]`` are the images of identity i, top to bottom.

    Thumbnails keep the first image's size (downscaled to at most 256 px high); blank cells stay grey.
    """
    columns = [list(c) for c in columns if c]
    if not columns:
        raise ValueError("contact_sheet needs at least one image")
    with Image.open(columns[0][0]) as first:
        w, h = first.size
    if h > MAX_THUMB_HEIGHT:
        w, h = max(1, round(w * MAX_THUMB_HEIGHT / h)), MAX_THUMB_HEIGHT
    rows = max(len(c) for c in columns)
    sheet = Image.new("RGB", (len(columns) * (w + gap) + gap, rows * (h + gap) + gap), (128, 128, 128))
    for i, col in enumerate(columns):
        for j, path in enumerate(col):
            with Image.open(path) as im:
                thumb = im.convert("RGB")
                if thumb.size != (w, h):
                    thumb = thumb.resize((w, h), Image.BILINEAR)
                sheet.paste(thumb, (gap + i * (w + gap), gap + j * (h + gap)))
    return sheet


def sample_columns(images_by_identity: Sequence[Sequence[Path]], num_identities: int = 8,
                   images_per_identity: int = 4) -> List[List[Path]]:
    """The first ``num_identities`` identities with their first ``images_per_identity`` images."""
    return [list(imgs)[:images_per_identity] for imgs in list(images_by_identity)[:num_identities]]
