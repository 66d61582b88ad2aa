"""``own_reconstructions.png``: what a privacy model's *own* decoders make of its features.

Rows: the real images (held-out source identities, test transforms, at the reconstruction size), each of
the defence's decoders (the GAN's G, every decoder of a pool), and the running mean training image (the
feature-blind guess of ``ssim_gain``); each reconstruction captioned with its SSIM to the real image (the row's first picture also with the
row's name: ``G``, ``d0``, ``d1``, ... for a pool's decoders, ``mean``).
Fresh attackers (the audit, the fresh probe) are what privacy is judged by; this picture shows what E
was trained against. Defences without a decoder (dependence, bottleneck alone) write no picture.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from ppreid.callbacks.pictures import captioned_grid, labelled_sheet, to_pil
from ppreid.metrics.privacy import ssim

log = logging.getLogger(__name__)

ROW_NAMES = {"G": "generator G", "mean": "mean image"}  # pool decoders d0, d1, ...: "decoder d0"


def reconstruction_sheet(real: torch.Tensor, rows: dict[str, torch.Tensor]) -> Image.Image:
    """real (N,3,h,w) and rows name -> (N,3,h,w) or (1,3,h,w), all in [0, 1] -> one picture, a row each."""
    n, scale = real.shape[0], max(1, 64 // real.shape[-1])

    def pil(image: torch.Tensor) -> Image.Image:
        out = to_pil(image)
        return out.resize((out.width * scale, out.height * scale), Image.NEAREST)

    images, captions = [pil(im) for im in real], ["real"] + [""] * (n - 1)
    for name, recon in rows.items():
        recon = recon.expand_as(real).clamp(0.0, 1.0)
        scores = ssim(recon, real, check_range=False)
        images += [pil(im) for im in recon]
        captions += [f"{name} {float(s):.2f}" if i == 0 else f"{float(s):.2f}" for i, s in enumerate(scores)]
    return labelled_sheet(
        captioned_grid(images, captions, columns=n),
        images[0].size,
        row_labels=["real image"] + [ROW_NAMES.get(name, f"decoder {name}") for name in rows],
        legend=[
            "columns: held-out source images; rows: the real image, what each of the defence's own decoders",
            "makes of its feature, and the mean training image (the feature-blind guess)",
            "captions: SSIM to the real image (1 = the same picture)",
        ],
    )


def _held_out_images(datamodule, count: int) -> torch.Tensor | None:
    from ppreid.data.image_dataset import ImageDataset

    if getattr(datamodule, "has_val", False):
        records = datamodule.val_set.records
    else:
        records = getattr(datamodule, "train_records", None)
    if not records:
        return None
    step = max(1, len(records) // count)
    dataset = ImageDataset(records[::step][:count], datamodule._transform(is_train=False))
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])


@torch.no_grad()
def save_own_reconstructions(model, datamodule, path: Path, count: int = 8) -> Path | None:
    """Write the picture for ``model`` (a PrivacyGANModel) to ``path``; None when it has no decoder."""
    from ppreid.metrics.images import to_unit_images

    images = _held_out_images(datamodule, count)
    if images is None:
        return None
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        images = images.to(model.device)
        stored = model.extract_features(images)
        rows = model.defence.reconstruct(stored)
    finally:
        for m, mode in modes.items():
            m.training = mode
    if not rows:
        return None
    real = to_unit_images(images, model.input_mean, model.input_std, model.image_size)
    sheet = reconstruction_sheet(real.cpu(), {**{k: v.cpu() for k, v in rows.items()}, "mean": model.mean_image.cpu()})
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    log.info("the defence's own reconstructions written to %s", path)
    return path
