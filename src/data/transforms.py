"""Image transforms of the ReID bag of tricks (Luo et al., CVPRW 2019), every value a config value.

train: resize -> horizontal flip -> pad + random crop -> (colour jitter) -> tensor -> normalize
       -> random erasing (Zhong et al., AAAI 2020; the erased area is filled with 0, i.e. the mean
       colour after normalization).
test:  resize -> tensor -> normalize (deterministic).
Output: a (3, height, width) float tensor.
"""
from __future__ import annotations

from typing import Sequence

import torchvision.transforms as T

from src.utils.errors import ConfigValueError

INTERPOLATIONS = {"nearest": T.InterpolationMode.NEAREST, "bilinear": T.InterpolationMode.BILINEAR,
                  "bicubic": T.InterpolationMode.BICUBIC}


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigValueError(f"transforms: {name}={value} is not a probability in [0, 1].")


def build_transforms(height: int = 256, width: int = 128, is_train: bool = True,
                     flip_prob: float = 0.5, padding: int = 10, random_erasing_prob: float = 0.5,
                     mean: Sequence[float] = (0.485, 0.456, 0.406),
                     std: Sequence[float] = (0.229, 0.224, 0.225), color_jitter: float = 0.0,
                     interpolation: str = "bilinear",
                     erasing_scale: Sequence[float] = (0.02, 0.4),
                     erasing_ratio: Sequence[float] = (0.3, 3.33)) -> T.Compose:
    """PIL image -> normalized (3, height, width) tensor.

    color_jitter: strength of brightness/contrast/saturation jitter (0 = off; hue is not changed).
    erasing_scale / erasing_ratio: area fraction and aspect-ratio range of the erased rectangle.
    """
    if height <= 0 or width <= 0:
        raise ConfigValueError(f"transforms: image size {height}x{width} must be positive.")
    if padding < 0 or color_jitter < 0:
        raise ConfigValueError(f"transforms: padding={padding} and color_jitter={color_jitter} must be >= 0.")
    if len(mean) != 3 or len(std) != 3:
        raise ConfigValueError(f"transforms: mean={list(mean)} and std={list(std)} need 3 values (RGB).")
    if interpolation not in INTERPOLATIONS:
        raise ConfigValueError(f"transforms: interpolation '{interpolation}' is not one of "
                               f"{', '.join(INTERPOLATIONS)}.")
    _check_prob("flip_prob", flip_prob)
    _check_prob("random_erasing_prob", random_erasing_prob)

    steps = [T.Resize((height, width), interpolation=INTERPOLATIONS[interpolation])]
    if is_train:
        if flip_prob > 0:
            steps.append(T.RandomHorizontalFlip(p=flip_prob))
        if padding > 0:
            steps += [T.Pad(padding), T.RandomCrop((height, width))]
        if color_jitter > 0:
            steps.append(T.ColorJitter(brightness=color_jitter, contrast=color_jitter,
                                       saturation=color_jitter))
    steps += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    if is_train and random_erasing_prob > 0:
        steps.append(T.RandomErasing(p=random_erasing_prob, scale=tuple(erasing_scale),
                                     ratio=tuple(erasing_ratio), value=0))
    return T.Compose(steps)
