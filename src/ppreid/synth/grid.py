"""``samples.jpg``: a contact sheet of a GenePerson set, one column per identity, for a person to look at."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

MAX_THUMB_HEIGHT = 256


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def contact_sheet(
    columns: Sequence[Sequence[Path]], gap: int = 2, captions: Sequence[str] | None = None
) -> Image.Image:
    """Tile images: ``columns[i]`` are the images of identity i, top to bottom.

    Thumbnails keep the first image's size (downscaled to at most 256 px high); blank cells stay grey.
    ``captions``: one text per column (e.g. ``id 3`` and its clothes), printed above it; lines split on
    newlines.
    """
    pairs = [(list(c), (captions[i] if captions else "")) for i, c in enumerate(columns) if c]
    columns = [c for c, _ in pairs]
    texts = [t for _, t in pairs]
    if not columns:
        raise ValueError("contact_sheet needs at least one image")
    with Image.open(columns[0][0]) as first:
        w, h = first.size
    if h > MAX_THUMB_HEIGHT:
        w, h = max(1, round(w * MAX_THUMB_HEIGHT / h)), MAX_THUMB_HEIGHT
    rows = max(len(c) for c in columns)
    font_size = max(8, min(12, w // 6))
    lines = max((t.count("\n") + 1 for t in texts if t), default=0)
    top = lines * (font_size + 2) + (2 if lines else 0)
    sheet = Image.new("RGB", (len(columns) * (w + gap) + gap, top + rows * (h + gap) + gap), (128, 128, 128))
    draw, font = ImageDraw.Draw(sheet), _font(font_size)
    for i, col in enumerate(columns):
        if texts[i]:
            draw.multiline_text((gap + i * (w + gap) + 1, 1), texts[i], fill=(255, 255, 255), font=font, spacing=2)
        for j, path in enumerate(col):
            with Image.open(path) as im:
                thumb = im.convert("RGB")
                if thumb.size != (w, h):
                    thumb = thumb.resize((w, h), Image.BILINEAR)
                sheet.paste(thumb, (gap + i * (w + gap), top + gap + j * (h + gap)))
    return sheet


UPPER_WORDS = ("upper_colour", "upper_pattern", "upper_type")


def identity_caption(entry: dict) -> str:
    """``id 3`` over the identity's upper garment in the record's (and the prompt's) words, pattern
    included: ``grey checked`` / ``tank top``. A pattern's second colour is the renderer's choice (from
    the identity seed, not in the record), so without the pattern word a grey garment with yellow checks
    would be captioned plain "grey"."""
    attrs = entry.get("attributes", {})
    colour = " ".join(
        str(attrs[k]).replace("_", " ")
        for k in UPPER_WORDS[:2]
        if k in attrs and str(attrs[k]) not in ("plain", "none")
    )
    kind = str(attrs.get("upper_type", "")).replace("_", " ")
    return "\n".join([f"id {entry.get('pid')}"] + [t for t in (colour, kind) if t])


def sample_columns(
    images_by_identity: Sequence[Sequence[Path]], num_identities: int = 8, images_per_identity: int = 4
) -> list[list[Path]]:
    """The first ``num_identities`` identities with their first ``images_per_identity`` images."""
    return [list(imgs)[:images_per_identity] for imgs in list(images_by_identity)[:num_identities]]
