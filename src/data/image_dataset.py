"""A map-style dataset over parser records: loads the image, applies the transform.

Each item carries its dataset ``index`` so evaluation under DDP can put gathered features back in
dataset order and drop padding duplicates.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from src.data.datasets.base import ReIDRecord
from src.utils.errors import BadImageError


def read_image(path: str) -> Image.Image:
    """Fully decode ``path`` as RGB; a missing, truncated or corrupt file raises :class:`BadImageError`."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise BadImageError(
            f"image {path} does not exist. The dataset folder changed after it was parsed; "
            f"re-download the dataset (or re-run synth.py for a GenePerson folder).") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImageError(
            f"cannot read image {path} ({type(err).__name__}: {err}). The file is corrupt or truncated: "
            f"re-download the dataset (or re-run synth.py for a GenePerson folder), or delete the file "
            f"(and its line in the list file, for list-based datasets such as MSMT17).") from None


class ImageDataset(Dataset):
    """``records[i]`` -> ``{"image": (3, H, W) float tensor, "pid": int, "camid": int, "domain": int,
    "index": i}`` (``domain``: the record's source dataset in multi-source training).

    Without a transform the image is returned at its own size, scaled to [0, 1].
    """

    def __init__(self, records: Sequence[ReIDRecord],
                 transform: Optional[Callable[[Image.Image], torch.Tensor]] = None):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        rec = self.records[i]
        img = read_image(rec.path)
        image = self.transform(img) if self.transform is not None else TF.to_tensor(img)
        return {"image": image, "pid": rec.pid, "camid": rec.camid, "domain": rec.domain, "index": i}


class IndexDataset(Dataset):
    """``records[i]`` -> ``{"pid", "camid", "domain", "index"}`` without reading the image: the batches of
    a training stage that works on cached features (looked up by ``index``)."""

    def __init__(self, records: Sequence[ReIDRecord]):
        self.records = list(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        rec = self.records[i]
        return {"pid": rec.pid, "camid": rec.camid, "domain": rec.domain, "index": i}


class TwoViewDataset(Dataset):
    """``records[i]`` -> ``{"image", "image_restyled", "index"}``: the image and a photometrically
    re-styled copy (seeded by ``i``, see :mod:`src.data.restyle`), both through ``transform``."""

    def __init__(self, records: Sequence[ReIDRecord], transform: Callable[[Image.Image], torch.Tensor],
                 restyle_strength: float = 1.0):
        self.records = list(records)
        self.transform = transform
        self.restyle_strength = float(restyle_strength)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        from src.data.restyle import restyle

        img = read_image(self.records[i].path)
        return {"image": self.transform(img), "image_restyled": self.transform(restyle(img, i, self.restyle_strength)),
                "index": i}
