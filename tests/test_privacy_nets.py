"""FeatureDecoder and FeatureConditionedDiscriminator: shapes, gradients, spectral norm, a tiny overfit."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ppreid.losses.adversarial import l1_reconstruction, r1_penalty
from ppreid.nn.discriminator import FeatureConditionedDiscriminator, auto_num_downsamples
from ppreid.nn.feature_decoder import FeatureDecoder, auto_num_upsamples
from ppreid.utils.errors import ConfigValueError

SIZES = [(128, 64), (256, 128), (40, 24)]


def assert_all_params_get_grad(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name} has a zero / non-finite gradient"


# ----------------------------------------------------------------------------- decoder


def test_auto_num_upsamples():
    # start maps: 128x64 -> 4x2 (n=5), 256x128 -> 4x2 (n=6), 32x16 -> 4x2 (n=3), 40x24 -> 5x3 (n=3)
    assert [auto_num_upsamples(h, w) for h, w in [(128, 64), (256, 128), (32, 16), (40, 24)]] == [5, 6, 3, 3]
    assert auto_num_upsamples(31, 16) == 0


@pytest.mark.parametrize("size", SIZES)
def test_decoder_shapes_range_and_gradients(size):
    torch.manual_seed(0)
    dec = FeatureDecoder(feat_dim=24, image_size=size, base_channels=32, min_channels=8)
    h, w = size
    n = dec.num_upsamples
    assert dec.start_shape == (32, h // 2**n, w // 2**n)
    feat = 3.0 * torch.randn(3, 24)
    out = dec(feat)
    assert out.shape == (3, 3, h, w)
    assert out.min() >= 0 and out.max() <= 1
    l1_reconstruction(out, torch.rand(3, 3, h, w)).backward()
    assert_all_params_get_grad(dec)
    dec.eval()
    assert dec(feat[:1]).shape == (1, 3, h, w)


def test_decoder_options():
    torch.manual_seed(0)
    feat = torch.randn(2, 8)
    dec = FeatureDecoder(8, [128, 64], base_channels=16, min_channels=4, num_upsamples=4)
    assert dec.start_shape == (16, 8, 4) and dec(feat).shape == (2, 3, 128, 64)
    # channels halve from base_channels down to min_channels: 16 -> 8 -> 4 -> 4 -> 4
    assert [b.skip.out_channels for b in dec.blocks] == [8, 4, 4, 4]
    dec = FeatureDecoder(8, (32, 16), 16, 4, norm="group", norm_groups=4, activation="leaky_relu")
    assert any(isinstance(m, nn.GroupNorm) for m in dec.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in dec.modules())
    dec = FeatureDecoder(8, (32, 16), 16, 4, norm="none", out_activation="clamp")
    out = 10 * dec(10 * feat)
    assert out.min() >= 0 and out.max() <= 10


def test_decoder_errors():
    with pytest.raises(ConfigValueError, match=r"not divisible by 2\^num_upsamples = 32"):
        FeatureDecoder(8, (100, 64), num_upsamples=5)
    with pytest.raises(ConfigValueError, match="no factor 2"):
        FeatureDecoder(8, (31, 16))
    with pytest.raises(ConfigValueError, match="norm='layer' is unknown; use one of batch, group, none"):
        FeatureDecoder(8, (32, 16), norm="layer")
    with pytest.raises(ConfigValueError, match="out_activation='tanh' is unknown"):
        FeatureDecoder(8, (32, 16), out_activation="tanh")
    with pytest.raises(ConfigValueError, match="min_channels=64 > base_channels=32"):
        FeatureDecoder(8, (32, 16), base_channels=32, min_channels=64)
    with pytest.raises(ConfigValueError, match="image_size"):
        FeatureDecoder(8, (32,))
    with pytest.raises(ValueError, match=r"expects features \(B,8\)"):
        FeatureDecoder(8, (32, 16))(torch.randn(2, 9))


def test_decoder_overfits_four_images():
    # 4 fixed random 32x16 images from 4 fixed random features: the decoder can memorise them (L1)
    torch.manual_seed(0)
    feats, images = torch.randn(4, 16), torch.rand(4, 3, 32, 16)
    dec = FeatureDecoder(16, (32, 16), base_channels=64, min_channels=32)
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss = l1_reconstruction(dec(feats), images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 8, (losses[0], losses[-1])  # about / 17 on this seed


# ----------------------------------------------------------------------------- discriminator


def test_auto_num_downsamples():
    # last maps: 128x64 -> 8x4, 256x128 -> 8x4, 32x16 -> 8x4, 40x24 -> 10x6
    assert [auto_num_downsamples(h, w) for h, w in [(128, 64), (256, 128), (32, 16), (40, 24)]] == [4, 5, 2, 2]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_discriminator_shapes_and_gradients(size, conditioning):
    torch.manual_seed(0)
    disc = FeatureConditionedDiscriminator(12, size, base_channels=8, max_channels=32, conditioning=conditioning)
    images, feat = torch.rand(3, 3, *size), torch.randn(3, 12)
    scores = disc(images, feat)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    # the score depends on the feature (it is a conditional discriminator)
    assert not torch.allclose(disc(images, torch.randn(3, 12)), scores)
    scores.pow(2).sum().backward()
    assert_all_params_get_grad(disc)


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_discriminator_concat_stages(stage):
    torch.manual_seed(0)
    # 32x16 has 2 down-samplings: stage 0 is the image, 1 the 16x8 map, 2 the last 8x4 map
    disc = FeatureConditionedDiscriminator(
        6, (32, 16), base_channels=8, conditioning="concat", concat_channels=5, concat_stage=stage
    )
    convs = [disc.stem[0], disc.stages[0][0], disc.stages[1][0], disc.last[0]]
    reads = [stage == 0, False, stage == 1, stage == 2]
    plain_in = [3, 8, 16, 32]
    assert [c.in_channels for c in convs] == [p + 5 * r for p, r in zip(plain_in, reads)]
    images, feat = torch.rand(2, 3, 32, 16), torch.randn(2, 6)
    disc(images, feat).sum().backward()
    assert_all_params_get_grad(disc)


def test_spectral_norm_wraps_every_layer():
    torch.manual_seed(0)
    for conditioning in ("projection", "concat"):
        disc = FeatureConditionedDiscriminator(12, (32, 16), base_channels=8, conditioning=conditioning)
        layers = [m for m in disc.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) == 6  # stem, 2 stages, last, out, embed / feat_proj
        assert all(parametrize.is_parametrized(m, "weight") for m in layers)
        assert all(hasattr(m.parametrizations.weight, "original") for m in layers)
        # the effective weights have spectral norm ~1 (power iteration; exact in the limit)
        for _ in range(5):
            disc(torch.rand(2, 3, 32, 16), torch.randn(2, 12))
        for m in layers:
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
            assert sigma == pytest.approx(1.0, abs=0.05)

    plain = FeatureConditionedDiscriminator(12, (32, 16), base_channels=8, spectral_norm=False)
    layers = [m for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 6 and not any(parametrize.is_parametrized(m) for m in layers)


def test_r1_through_discriminator_trains_it():
    torch.manual_seed(0)
    disc = FeatureConditionedDiscriminator(12, (32, 16), base_channels=8)
    real = torch.rand(4, 3, 32, 16).requires_grad_()
    penalty = r1_penalty(disc(real, torch.randn(4, 12)), real)
    assert penalty.ndim == 0 and penalty.item() > 0
    penalty.backward()  # double backward through spectral norm and LeakyReLU
    # grad_x D of a piecewise-linear net does not depend on its biases, so only weights get R1 gradient
    weights = {n: p for n, p in disc.named_parameters() if "weight" in n}
    assert len(weights) == 6
    for name, p in weights.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_discriminator_errors():
    with pytest.raises(ConfigValueError, match="conditioning='film' is unknown; use one of projection, concat"):
        FeatureConditionedDiscriminator(12, (32, 16), conditioning="film")
    with pytest.raises(ConfigValueError, match="concat_stage=3"):
        FeatureConditionedDiscriminator(12, (32, 16), conditioning="concat", concat_stage=3)
    with pytest.raises(ConfigValueError, match="num_downsamples=5"):
        FeatureConditionedDiscriminator(12, (32, 16), num_downsamples=5)
    disc = FeatureConditionedDiscriminator(12, (32, 16), base_channels=8)
    with pytest.raises(ValueError, match=r"expects images \(B,3,32,16\)"):
        disc(torch.rand(2, 3, 64, 32), torch.randn(2, 12))
    with pytest.raises(ValueError, match=r"expects features \(2,12\)"):
        disc(torch.rand(2, 3, 32, 16), torch.randn(3, 12))
