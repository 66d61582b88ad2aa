"""Pictures for a person to look at: a captioned batch grid and torchreid-style ranked lists.

Inputs are (B,3,H,W) float images in [0, 1] or image files; outputs are PIL images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

GREEN, RED, GREY, WHITE, BLACK = (0, 170, 0), (220, 0, 0), (60, 60, 60), (255, 255, 255), (0, 0, 0)


def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3,H,W) in [0, 1] -> RGB PIL image."""
    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def captioned_grid(
    images: Sequence[Image.Image], captions: Sequence[str], columns: int = 16, caption_height: int = 14, gap: int = 2
) -> Image.Image:
    """Tile images (all resized to the first one's size) with a caption line under each."""
    if not images:
        raise ValueError("captioned_grid needs at least one image")
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    cols = min(columns, len(images))
    sheet = Image.new("RGB", (cols * (w + gap) + gap, rows * (h + caption_height + gap) + gap), WHITE)
    draw, font = ImageDraw.Draw(sheet), _font()
    for i, (img, text) in enumerate(zip(images, captions)):
        x, y = gap + (i % columns) * (w + gap), gap + (i // columns) * (h + caption_height + gap)
        sheet.paste(img.convert("RGB").resize((w, h)), (x, y))
        draw.text((x + 1, y + h + 1), text, fill=BLACK, font=font)
    return sheet


def batch_grid(
    images: torch.Tensor,
    pids: Sequence[int],
    camids: Sequence[int],
    num_instances: int,
    captions: Sequence[str] | None = None,
) -> Image.Image:
    """A P x K training batch: one row per identity (K images), captioned ``id <pid> c<camera>`` (or ``captions``)."""
    pil = [to_pil(im) for im in images]
    captions = list(captions) if captions is not None else [f"id {int(p)} c{int(c) + 1}" for p, c in zip(pids, camids)]
    columns = max(num_instances, 1) * max(1, 16 // max(num_instances, 1))
    return captioned_grid(pil, captions, columns=columns)


def ranked_list(
    query: Image.Image,
    gallery: Sequence[Image.Image],
    matches: Sequence[bool],
    query_caption: str = "",
    gallery_captions: Sequence[str] | None = None,
    size: tuple = (64, 128),
    border: int = 3,
    gap: int = 4,
) -> Image.Image:
    """One row: the query (grey border), then its ranked gallery, green border = same identity, red = not."""
    w, h = size
    n = len(gallery)
    row = Image.new("RGB", ((n + 1) * (w + 2 * border + gap) + gap * 3, h + 2 * border + 16), WHITE)
    draw, font = ImageDraw.Draw(row), _font(10)
    captions = list(gallery_captions or [""] * n)

    def paste(img: Image.Image, x: int, colour, text: str) -> None:
        draw.rectangle([x, 0, x + w + 2 * border - 1, h + 2 * border - 1], fill=colour)
        row.paste(img.convert("RGB").resize((w, h)), (x + border, border))
        draw.text((x + 1, h + 2 * border + 1), text, fill=BLACK, font=font)

    paste(query, 0, GREY, query_caption)
    for k, (img, ok) in enumerate(zip(gallery, matches)):
        x = (k + 1) * (w + 2 * border + gap) + gap * 3
        paste(img, x, GREEN if ok else RED, captions[k] or f"#{k + 1}")
    return row


def legend_row(width: int, lines: Sequence[str], height: int = 14) -> Image.Image:
    """A white strip of legend lines, with green / red / grey swatches for lines that start with them."""
    row = Image.new("RGB", (width, height * len(lines) + 4), WHITE)
    draw, font = ImageDraw.Draw(row), _font(10)
    swatch = {"green": GREEN, "red": RED, "grey": GREY}
    for i, text in enumerate(lines):
        y, x = 2 + i * height, 4
        colour = swatch.get(text.split(" ", 1)[0])
        if colour is not None:
            draw.rectangle([x, y + 2, x + 10, y + 10], fill=colour)
            x += 16
        draw.text((x, y), text, fill=BLACK, font=font)
    return row


def stack_rows(rows: list[Image.Image], gap: int = 6) -> Image.Image:
    width = max(r.size[0] for r in rows)
    sheet = Image.new("RGB", (width, sum(r.size[1] for r in rows) + gap * (len(rows) - 1)), WHITE)
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.size[1] + gap
    return sheet


def labelled_sheet(
    sheet: Image.Image,
    tile: tuple[int, int],
    column_labels: Sequence[str] = (),
    row_labels: Sequence[str] = (),
    legend: Sequence[str] = (),
    caption_height: int = 14,
    gap: int = 2,
) -> Image.Image:
    """A :func:`captioned_grid` sheet (tiles of ``tile`` = (w, h)) with a label over each column, a label
    left of each row and legend lines on top, so the picture says what its rows and columns are."""
    w, h = tile
    font = _font(10)
    left = 4 + max((int(font.getlength(t)) for t in row_labels), default=0) if row_labels else 0
    top = 14 if column_labels else 0
    body = Image.new("RGB", (left + sheet.width, top + sheet.height), WHITE)
    body.paste(sheet, (left, top))
    draw = ImageDraw.Draw(body)
    for c, text in enumerate(column_labels):
        x = left + gap + c * (w + gap)
        draw.text((x + 1, 1), text, fill=BLACK, font=font)
    for r, text in enumerate(row_labels):
        y = top + gap + r * (h + caption_height + gap) + h // 2 - 6
        draw.text((2, y), text, fill=BLACK, font=font)
    if not legend:
        return body
    width = max([body.width] + [int(font.getlength(t)) + 24 for t in legend])
    return stack_rows([legend_row(width, list(legend)), body], gap=2)
