"""Map-style datasets over parser records, and the store of images decoded once per run.

Each item carries its dataset ``index`` so evaluation under DDP can put gathered features back in
dataset order and drop padding duplicates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

# v1 on purpose: v2 has no ToTensor (deprecated there), and v2's to_dtype scales by *(1/255), not /255.
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset

from ppreid.data.datasets.base import ReIDRecord
from ppreid.utils.errors import BadImageError

REDOWNLOAD = "re-download the dataset (or re-run synth.py for a GenePerson folder)"


class ImageReadError(BadImageError):
    """An unreadable image; stays one line when raised in a DataLoader worker.

    torch re-raises a worker's exception in the main process as ``type(err)(message)`` with the worker's
    traceback prepended to the message; this class keeps only the original message.
    """

    def __init__(self, message: str = "") -> None:
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and "Traceback" in message and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def read_image(path: str) -> Image.Image:
    """Fully decode ``path`` as RGB; a missing, truncated or corrupt file raises :class:`ImageReadError`."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(
            f"image {path} does not exist. The dataset folder changed after it was parsed; {REDOWNLOAD}."
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageReadError(
            f"cannot read image {path} ({type(err).__name__}: {err}). The file is corrupt or truncated: "
            f"{REDOWNLOAD}, or delete the file (and its line in the list file, for list-based datasets "
            f"such as MSMT17)."
        ) from None


def unreadable_images_message(failures: Sequence[tuple[str, str]], total: int) -> str:
    """One message naming every unreadable file (path and reason) and the fix."""
    lines = [
        f"{len(failures)} of {total} images cannot be read (every image is decoded once at start, data.verify_images):"
    ]
    lines += [f"  {path}: {reason}" for path, reason in failures]
    lines.append(
        f"Fix: {REDOWNLOAD}, or delete these files (and their lines in the list files, for list-based "
        "datasets such as MSMT17); data.verify_images=false skips the check (a file is then reported "
        "when it is read)."
    )
    return "\n".join(lines)


def _reason(err: ImageReadError, path: str) -> str:
    text = str(err)
    if text.startswith(f"cannot read image {path} ("):
        return text[len(f"cannot read image {path} (") :].split("). The file", 1)[0]
    return "file does not exist" if "does not exist" in text else text


def decode_all(
    paths: Sequence[str],
    decode: Callable[[Image.Image], Any] | None = None,
    threads: int = 0,
    progress: bool = False,
    desc: str = "decoding images",
) -> tuple[list[Any], list[tuple[str, str]]]:
    """Decode every file of ``paths`` once: ``(decoded, failures)``.

    decoded[i] is ``decode(image)`` (None: nothing kept; None also where the file failed);
    failures lists ``(path, reason)`` of every unreadable file, in ``paths`` order.
    threads: worker threads (PIL decodes without the GIL); 0 = up to 8, one per CPU.
    """
    threads = threads or max(1, min(8, os.cpu_count() or 1))

    def one(path: str):
        try:
            img = read_image(path)
        except ImageReadError as err:
            return None, (path, _reason(err, path))
        return (decode(img) if decode is not None else None), None

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc=desc, unit="img", mininterval=1.0, leave=False)
    decoded, failures = [], []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for value, failure in pool.map(one, paths, chunksize=64):
            decoded.append(value)
            if failure is not None:
                failures.append(failure)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return decoded, failures


class ImageStore:
    """Images decoded once and kept in memory: one (N, 3, H, W) uint8 tensor and a path -> row map.

    Built by the datamodule for a transform's :attr:`~ppreid.data.transforms.ReIDTransform.decode_key`
    (input size and interpolation), so a training epoch reads memory instead of decoding files. One
    tensor (not N small ones) so DataLoader workers share it, forked or spawned.
    """

    def __init__(self, key: tuple) -> None:
        self.key = key
        self.images = torch.empty(0, 3, key[0], key[1], dtype=torch.uint8)
        self.row: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.row)

    @property
    def nbytes(self) -> int:
        return self.images.numel()

    def missing(self, paths: Iterable[str]) -> list[str]:
        """The paths not in the store, each once, in first-seen order."""
        return list(dict.fromkeys(p for p in paths if p not in self.row))

    def add(self, paths: Sequence[str], images: Sequence[torch.Tensor]) -> None:
        if not paths:
            return
        start = len(self.row)
        self.images = torch.cat([self.images, torch.stack(list(images))])
        self.row.update({p: start + i for i, p in enumerate(paths)})

    def get(self, path: str) -> torch.Tensor | None:
        i = self.row.get(path)
        return None if i is None else self.images[i]


class ImageDataset(Dataset):
    """``records[i]`` -> ``{"image": (3, H, W) float tensor, "pid": int, "camid": int, "domain": int,
    "index": i}`` (``domain``: the record's source dataset in multi-source training).

    store: decoded images to use instead of the files (for the records it holds; others are read from
    disk); the transform must accept them (:class:`~ppreid.data.transforms.ReIDTransform` does).
    Without a transform the image is returned at its own size, scaled to [0, 1].
    """

    def __init__(
        self,
        records: Sequence[ReIDRecord],
        transform: Callable[[Any], torch.Tensor] | None = None,
        store: ImageStore | None = None,
    ):
        self.records = list(records)
        self.transform = transform
        self.store = store if transform is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        img = self.store.get(rec.path) if self.store is not None else None
        if img is None:
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

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        return {"pid": rec.pid, "camid": rec.camid, "domain": rec.domain, "index": i}


class TwoViewDataset(Dataset):
    """``records[i]`` -> ``{"image", "image_restyled", "index"}``: the image and a photometrically
    re-styled copy (seeded by ``i``, see :mod:`ppreid.data.restyle`), both through ``transform``. Reads the
    files (the re-styling works on the image at its own size)."""

    def __init__(
        self,
        records: Sequence[ReIDRecord],
        transform: Callable[[Image.Image], torch.Tensor],
        restyle_strength: float = 1.0,
    ):
        self.records = list(records)
        self.transform = transform
        self.restyle_strength = float(restyle_strength)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from ppreid.data.restyle import restyle

        img = read_image(self.records[i].path)
        return {
            "image": self.transform(img),
            "image_restyled": self.transform(restyle(img, i, self.restyle_strength)),
            "index": i,
        }
