"""Train/test transforms: shapes, exact normalization, determinism, each augmentation's effect."""

import numpy as np
import pytest
import torch
from PIL import Image

from ppreid.data.transforms import build_transforms
from ppreid.utils.errors import ConfigValueError

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
    expected = torch.tensor([(255 / 255 - MEAN[0]) / STD[0], (128 / 255 - MEAN[1]) / STD[1], (0 - MEAN[2]) / STD[2]])
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


def _torchvision_reference(height, width, is_train, flip_prob=0.5, padding=10, random_erasing_prob=0.5):
    """The PIL pipeline of the BoT transforms written out with torchvision (what the transforms must equal)."""
    import torchvision.transforms as T

    steps = [T.Resize((height, width))]
    if is_train:
        steps += [T.RandomHorizontalFlip(flip_prob), T.Pad(padding), T.RandomCrop((height, width))]
    steps += [T.ToTensor(), T.Normalize(MEAN, STD)]
    if is_train:
        steps.append(T.RandomErasing(p=random_erasing_prob, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=0))
    return T.Compose(steps)


@pytest.mark.parametrize("is_train", [True, False])
def test_decoded_uint8_input_equals_the_pil_pipeline(is_train):
    """Images decoded once into memory (resized uint8) give exactly the PIL pipeline's tensors, with the same
    random draws (flip, crop offset, erased box): in-memory training sees what file-reading training saw."""
    img = gradient_image(w=50, h=90)  # resized to 64x32 by both
    tf = build_transforms(height=64, width=32, is_train=is_train)
    ref = _torchvision_reference(64, 32, is_train)
    decoded = tf.decode(img)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 64, 32)
    for seed in range(12):
        torch.manual_seed(seed)
        expected = ref(img)
        torch.manual_seed(seed)
        from_pil = tf(img)
        torch.manual_seed(seed)
        from_memory = tf(decoded)
        assert torch.equal(from_pil, expected) and torch.equal(from_memory, expected), seed


def test_decoded_input_of_the_wrong_size_is_refused():
    tf = build_transforms(height=64, width=32, is_train=False)
    with pytest.raises(ValueError, match=r"\(3, 64, 32\) uint8"):
        tf(torch.zeros(3, 32, 16, dtype=torch.uint8))


def _torchvision_v1_train_reference(height, width, color_jitter):
    """The train transform written with torchvision's v1 classes on the decoded uint8 tensor, in the same order
    and with the same parameters (what the v2 transforms must equal bit for bit)."""
    import torchvision.transforms as T1

    augment = T1.Compose(
        [
            T1.RandomHorizontalFlip(0.5),
            T1.Pad(10),
            T1.RandomCrop((height, width)),
            T1.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter),
        ]
    )
    normalize = T1.Normalize(MEAN, STD)
    erase = T1.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.33), value=0)
    return lambda decoded: erase(normalize(augment(decoded).to(torch.get_default_dtype()).div(255)))


def test_v2_transforms_equal_the_v1_pipeline_bit_for_bit():
    """The transforms (v2 Resize, Compose, Normalize around v1 random steps) draw the same random numbers and
    compute the same values as an all-v1 pipeline: 50 draws of the train
    transform (flip, pad + crop, colour jitter, random erasing) and of the test transform, from the PIL image and
    from its decoded uint8 tensor, each draw after its own seed and all 50 in one stream after one seed (what a
    DataLoader worker does: any extra or missing random draw would shift every later image)."""
    import torchvision.transforms as T1

    img = gradient_image(w=50, h=90)
    height, width = 64, 32
    train = build_transforms(height=height, width=width, is_train=True, color_jitter=0.3)
    test = build_transforms(height=height, width=width, is_train=False)
    decoded_v1 = torch.from_numpy(np.asarray(T1.Resize((height, width))(img)).copy()).permute(2, 0, 1)
    assert torch.equal(train.decode(img), decoded_v1)
    train_v1 = _torchvision_v1_train_reference(height, width, color_jitter=0.3)
    test_v1 = T1.Compose([T1.Resize((height, width)), T1.ToTensor(), T1.Normalize(MEAN, STD)])

    for seed in range(50):
        torch.manual_seed(seed)
        expected = train_v1(decoded_v1)
        for source in (img, decoded_v1):
            torch.manual_seed(seed)
            assert torch.equal(train(source), expected), seed
        assert torch.equal(test(img), test_v1(img)) and torch.equal(test(decoded_v1), test_v1(img))

    for source in (img, decoded_v1):
        torch.manual_seed(123)
        expected = [train_v1(decoded_v1) for _ in range(50)]
        torch.manual_seed(123)
        got = [train(source) for _ in range(50)]
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
        assert len({e.numpy().tobytes() for e in expected}) > 40  # the draws really vary
