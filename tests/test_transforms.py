"""Train/test transforms: shapes, exact normalization, determinism, each augmentation's effect."""
import pytest
import torch
from PIL import Image

from src.data.transforms import build_transforms
from src.utils.errors import ConfigValueError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def gradient_image(w: int = 32, h: int = 64) -> Image.Image:
    img = Image.new("RGB", (w, h))
    img.putdata([(4 * x % 256, 3 * y % 256, (x * y) % 256) for y in range(h) for x in range(w)])
    return img


def test_shapes():
    img = gradient_image()
    torch.manual_seed(0)
    assert build_transforms(is_train=True)(img).shape == (3, 256, 128)
    assert build_transforms(is_train=False)(img).shape == (3, 256, 128)
    assert build_transforms(height=32, width=16, is_train=True, color_jitter=0.2)(img).shape == (3, 32, 16)


def test_test_transform_is_exact_and_deterministic():
    t = build_transforms(height=8, width=4, is_train=False)
    out = t(Image.new("RGB", (20, 40), (255, 128, 0)))
    expected = torch.tensor([(255 / 255 - MEAN[0]) / STD[0], (128 / 255 - MEAN[1]) / STD[1],
                             (0 - MEAN[2]) / STD[2]])
    assert torch.allclose(out, expected[:, None, None].expand(3, 8, 4), atol=1e-6)
    img = gradient_image()
    torch.manual_seed(0)
    a = build_transforms(is_train=False)(img)
    torch.manual_seed(1)
    assert torch.equal(a, build_transforms(is_train=False)(img))


def test_augmentations():
    img = gradient_image()
    test = build_transforms(height=64, width=32, is_train=False)(img)
    off = build_transforms(height=64, width=32, flip_prob=0.0, padding=0, random_erasing_prob=0.0)
    assert torch.equal(off(img), test)
    flip = build_transforms(height=64, width=32, flip_prob=1.0, padding=0, random_erasing_prob=0.0)
    assert torch.equal(flip(img), test.flip(-1))
    erase = build_transforms(height=64, width=32, flip_prob=0.0, padding=0, random_erasing_prob=1.0)
    torch.manual_seed(0)
    erased = erase(img)
    changed = (erased != test).any(0)
    frac = changed.float().mean().item()
    assert 0.0 < frac <= 0.4 + 1e-6 and (erased[:, changed] == 0).all()
    crop = build_transforms(height=64, width=32, flip_prob=0.0, padding=10, random_erasing_prob=0.0)
    outs = set()
    for seed in range(8):
        torch.manual_seed(seed)
        out = crop(img)
        assert out.shape == (3, 64, 32)
        outs.add(out.numpy().tobytes())
    assert len(outs) > 1  # different crop offsets


def test_bad_values():
    with pytest.raises(ConfigValueError, match="flip_prob=1.5"):
        build_transforms(flip_prob=1.5)
    with pytest.raises(ConfigValueError, match="256x0"):
        build_transforms(width=0)
    with pytest.raises(ConfigValueError, match="lanczos"):
        build_transforms(interpolation="lanczos")
