"""Image transforms of the ReID bag of tricks (Luo et al., CVPRW 2019), every value a config value.

train: resize -> horizontal flip -> pad + random crop -> (colour jitter) -> float -> normalize
       -> random erasing (Zhong et al., AAAI 2020; the erased area is filled with 0, i.e. the mean
       colour after normalization).
test:  resize -> float -> normalize (deterministic).
Output: a (3, height, width) float tensor.

A transform takes a PIL image of any size, or an image already *decoded* by :meth:`ReIDTransform.decode`
(a (3, height, width) uint8 tensor: the resized picture), which is what the datamodule keeps in memory
so that files are decoded once per run instead of once per epoch. Both inputs give the same output:
resizing is the PIL resize, and everything after it (flip, pad, crop, erasing: copies and fills) runs on
the uint8 tensor with the same random draws as torchvision's PIL path.

Resize, Compose and Normalize are torchvision's transforms v2 (a plain tensor is treated as an image); the
random steps stay v1 classes (see build_transforms: v2 is slower per call there, or not bit-identical).
Both give bit-identical tensors with the same random draws (tests/test_transforms.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import v2

from ppreid.utils.errors import ConfigValueError

INTERPOLATIONS = {
    "nearest": v2.InterpolationMode.NEAREST,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigValueError(f"transforms: {name}={value} is not a probability in [0, 1].")


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) uint8 tensor (the values ``ToTensor`` would scale by 1/255)."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class ReIDTransform:
    """PIL image or decoded (3, height, width) uint8 tensor -> normalized (3, height, width) float tensor.

    resize: the PIL resize to (height, width); augment: steps on the uint8 tensor (flip, pad + crop,
    colour jitter); erase: random erasing on the normalized tensor (or None).
    """

    def __init__(
        self,
        height: int,
        width: int,
        interpolation: str,
        augment: list,
        mean: Sequence[float],
        std: Sequence[float],
        erase: T.RandomErasing | None = None,
    ) -> None:
        self.height, self.width = int(height), int(width)
        self.interpolation = interpolation
        self.resize = v2.Resize((height, width), interpolation=INTERPOLATIONS[interpolation])
        self.augment = v2.Compose(augment) if augment else None
        self.normalize = v2.Normalize(mean=list(mean), std=list(std))
        self.erase = erase

    @property
    def decode_key(self) -> tuple:
        """Images decoded for this transform can serve any transform with the same key."""
        return (self.height, self.width, self.interpolation)

    def decode(self, img: Image.Image) -> torch.Tensor:
        """The part of the transform that does not change between epochs: resize, as uint8 (3, H, W)."""
        return pil_to_uint8(self.resize(img))

    def __call__(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        x = img if isinstance(img, torch.Tensor) else self.decode(img)
        if x.dtype != torch.uint8 or tuple(x.shape) != (3, self.height, self.width):
            raise ValueError(
                f"ReIDTransform: a decoded image must be a (3, {self.height}, {self.width}) uint8 "
                f"tensor, got {tuple(x.shape)} {x.dtype}."
            )
        if self.augment is not None:
            x = self.augment(x)
        x = self.normalize(x.to(torch.get_default_dtype()).div(255))  # = ToTensor's scaling
        return self.erase(x) if self.erase is not None else x

    def __repr__(self) -> str:
        return (
            f"ReIDTransform(resize={self.height}x{self.width} {self.interpolation}, augment={self.augment}, "
            f"normalize={self.normalize}, erase={self.erase})"
        )


def build_transforms(
    height: int = 256,
    width: int = 128,
    is_train: bool = True,
    flip_prob: float = 0.5,
    padding: int = 10,
    random_erasing_prob: float = 0.5,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    color_jitter: float = 0.0,
    interpolation: str = "bilinear",
    erasing_scale: Sequence[float] = (0.02, 0.4),
    erasing_ratio: Sequence[float] = (0.3, 3.33),
) -> ReIDTransform:
    """PIL image (or its decoded uint8 tensor) -> normalized (3, height, width) tensor.

    color_jitter: strength of brightness/contrast/saturation jitter (0 = off; hue is not changed), applied
    by torchvision's tensor implementation.
    erasing_scale / erasing_ratio: area fraction and aspect-ratio range of the erased rectangle.
    """
    if height <= 0 or width <= 0:
        raise ConfigValueError(f"transforms: image size {height}x{width} must be positive.")
    if padding < 0 or color_jitter < 0:
        raise ConfigValueError(f"transforms: padding={padding} and color_jitter={color_jitter} must be >= 0.")
    if len(mean) != 3 or len(std) != 3:
        raise ConfigValueError(f"transforms: mean={list(mean)} and std={list(std)} need 3 values (RGB).")
    if interpolation not in INTERPOLATIONS:
        raise ConfigValueError(
            f"transforms: interpolation '{interpolation}' is not one of {', '.join(INTERPOLATIONS)}."
        )
    _check_prob("flip_prob", flip_prob)
    _check_prob("random_erasing_prob", random_erasing_prob)

    # The random steps are torchvision's v1 classes on purpose. v2 draws the same numbers and (except colour
    # jitter) gives the same tensors, but on a decoded 256x128 uint8 image its per-call dispatch made flip
    # 1.2x, Pad and RandomCrop 1.6x and RandomErasing 1.2-1.5x slower (2000 calls, one thread; torchvision
    # 0.29). v2's ColorJitter is faster but its uint8 saturation writes the grayscale and blend sums as
    # mul().add_(alpha=...), moving some pixels by 1 (67 of 100 factors): numbers would move.
    augment = []
    if is_train:
        if flip_prob > 0:
            augment.append(T.RandomHorizontalFlip(p=flip_prob))
        if padding > 0:
            augment += [T.Pad(padding), T.RandomCrop((height, width))]
        if color_jitter > 0:
            augment.append(T.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    erase = None
    if is_train and random_erasing_prob > 0:
        erase = T.RandomErasing(p=random_erasing_prob, scale=tuple(erasing_scale), ratio=tuple(erasing_ratio), value=0)
    return ReIDTransform(height, width, interpolation, augment, mean, std, erase)
