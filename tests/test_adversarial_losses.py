"""ppreid.losses.adversarial on hand-worked cases (the expected values are computed by hand below)."""

from __future__ import annotations

import math

import pytest
import torch

from ppreid.losses.adversarial import (
    GAN_LOSSES,
    d_hinge_loss,
    d_logistic_loss,
    d_lsgan_loss,
    g_hinge_loss,
    g_logistic_loss,
    g_lsgan_loss,
    gan_losses,
    l1_reconstruction,
    l2_reconstruction,
    neg_pixel_similarity,
    r1_penalty,
    ssim_similarity_loss,
)
from ppreid.utils.errors import ConfigValueError

REAL = torch.tensor([2.0, -0.5])
FAKE = torch.tensor([0.5, -3.0])


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_hinge_by_hand():
    # real: relu(1 - 2) = 0, relu(1 + 0.5) = 1.5 -> 0.75; fake: relu(1 + 0.5) = 1.5, relu(1 - 3) = 0 -> 0.75
    assert d_hinge_loss(REAL, FAKE).item() == pytest.approx(1.5)
    # generator: -mean(0.5, -3) = 1.25
    assert g_hinge_loss(FAKE).item() == pytest.approx(1.25)
    # gradient: only the real score inside the margin (-0.5) and the fake one (0.5) get -1/B, +1/B
    real, fake = REAL.clone().requires_grad_(), FAKE.clone().requires_grad_()
    d_hinge_loss(real, fake).backward()
    assert real.grad.tolist() == [0.0, -0.5] and fake.grad.tolist() == [0.5, 0.0]


def test_lsgan_by_hand():
    # real: (2-1)^2 = 1, (-0.5-1)^2 = 2.25 -> mean 1.625 -> x0.5 = 0.8125
    # fake: 0.5^2 = 0.25, 3^2 = 9 -> mean 4.625 -> x0.5 = 2.3125;  total 3.125
    assert d_lsgan_loss(REAL, FAKE).item() == pytest.approx(3.125)
    # generator: (0.5-1)^2 = 0.25, (-3-1)^2 = 16 -> mean 8.125 -> x0.5 = 4.0625
    assert g_lsgan_loss(FAKE).item() == pytest.approx(4.0625)
    # at the optimum (real scores 1, fake scores 0) the discriminator loss is 0
    assert d_lsgan_loss(torch.ones(3), torch.zeros(3)).item() == 0.0


def test_logistic_by_hand():
    expected_d = (softplus(-2.0) + softplus(0.5)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2
    assert d_logistic_loss(REAL, FAKE).item() == pytest.approx(expected_d, abs=1e-6)
    assert g_logistic_loss(FAKE).item() == pytest.approx((softplus(-0.5) + softplus(3.0)) / 2, abs=1e-6)


@pytest.mark.parametrize("kind", sorted(GAN_LOSSES))
def test_scores_b1_same_as_b_and_bad_shapes(kind):
    d_loss, g_loss = gan_losses(kind)
    assert d_loss(REAL[:, None], FAKE[:, None]).item() == pytest.approx(d_loss(REAL, FAKE).item())
    assert g_loss(FAKE[:, None]).item() == pytest.approx(g_loss(FAKE).item())
    with pytest.raises(ValueError, match=r"\(B,\) or \(B,1\)"):
        d_loss(torch.zeros(2, 2), FAKE)
    with pytest.raises(ValueError, match=r"\(B,\) or \(B,1\)"):
        g_loss(torch.zeros(2, 1, 1))


def test_gan_losses_registry():
    assert gan_losses("hinge") == (d_hinge_loss, g_hinge_loss)
    assert gan_losses("lsgan") == (d_lsgan_loss, g_lsgan_loss)
    assert gan_losses("logistic") == (d_logistic_loss, g_logistic_loss)
    with pytest.raises(ConfigValueError, match=r"kind='wgan' is unknown; use one of hinge, lsgan, logistic"):
        gan_losses("wgan")


def test_r1_linear_discriminator_closed_form():
    # D(x) = <w, x> + b has grad_x D = w for every image -> R1 = 0.5 * ||w||^2.
    # w = 0.5 everywhere on 3x4x2 = 24 entries: ||w||^2 = 24 * 0.25 = 6 -> R1 = 3.
    w = torch.full((3, 4, 2), 0.5, requires_grad=True)
    x = torch.rand(5, 3, 4, 2).requires_grad_()
    scores = (x * w).sum(dim=(1, 2, 3)) + 1.0
    r1 = r1_penalty(scores, x)
    assert r1.item() == pytest.approx(3.0)
    # create_graph=True: the penalty trains D; d/dw (0.5 ||w||^2) = w
    r1.backward()
    assert torch.allclose(w.grad, w.detach())
    # (B,1) scores give the same value
    assert r1_penalty(((x * w).sum(dim=(1, 2, 3)) + 1.0)[:, None], x).item() == pytest.approx(3.0)


def test_r1_quadratic_discriminator_by_hand():
    # D(x) = sum(x^2): grad = 2x -> 0.5 * mean_i 4 ||x_i||^2 = 2 * mean_i ||x_i||^2.
    # x_0 = 1 everywhere on 2x1x1 (||x_0||^2 = 2), x_1 = 0 -> 2 * (2 + 0) / 2 = 2.
    x = torch.stack([torch.ones(2, 1, 1), torch.zeros(2, 1, 1)]).requires_grad_()
    assert r1_penalty(x.pow(2).sum(dim=(1, 2, 3)), x).item() == pytest.approx(2.0)


def test_r1_needs_images_with_grad():
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="requires_grad_"):
        r1_penalty(x.sum(dim=(1, 2, 3)), x)


def test_reconstruction_losses_by_hand():
    recon = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    target = torch.zeros(2, 2)
    # |.|: 0 + 0.5 + 1 + 0.25 = 1.75 -> /4 = 0.4375;  ^2: 0 + 0.25 + 1 + 0.0625 = 1.3125 -> /4 = 0.328125
    assert l1_reconstruction(recon, target).item() == pytest.approx(0.4375)
    assert l2_reconstruction(recon, target).item() == pytest.approx(0.328125)
    assert neg_pixel_similarity(recon, target).item() == pytest.approx(-0.4375)
    assert neg_pixel_similarity(recon, target, kind="l2").item() == pytest.approx(-0.328125)
    # minimising neg_pixel_similarity moves the reconstruction away from the target
    r = recon.clone().requires_grad_()
    neg_pixel_similarity(r, torch.full((2, 2), 0.6)).backward()
    # d/dr of -mean|r - 0.6| = -sign(r - 0.6) / 4: r < 0.6 -> +0.25 (a descent step lowers r), r > 0.6 -> -0.25
    assert r.grad.tolist() == [[0.25, 0.25], [-0.25, 0.25]]
    with pytest.raises(ValueError, match="differ in shape"):
        l1_reconstruction(recon, torch.zeros(2, 3))
    with pytest.raises(ConfigValueError, match="kind='ssim' is unknown; use one of l1, l2"):
        neg_pixel_similarity(recon, target, kind="ssim")


def test_ssim_similarity_loss_by_hand():
    # image 0: identical -> SSIM 1; image 1: constants 0.3 vs 0.5 -> (0.3 + 1e-4) / (0.34 + 1e-4)
    target = torch.full((2, 3, 12, 12), 0.5, dtype=torch.float64)
    recon = target.clone()
    recon[1] = 0.3
    expected = (1.0 + 0.3001 / 0.3401) / 2
    assert ssim_similarity_loss(recon, target).item() == pytest.approx(expected, abs=1e-10)
    # kwargs reach ssim: data_range 255 on 255-scaled images gives the same value
    assert ssim_similarity_loss(255 * recon, 255 * target, data_range=255.0).item() == pytest.approx(expected)
    # gradient reaches the reconstruction (it is the extractor's loss through a fixed decoder)
    r = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0)).requires_grad_()
    ssim_similarity_loss(r, torch.rand(2, 3, 12, 12)).backward()
    assert r.grad is not None and r.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ in shape"):
        ssim_similarity_loss(r, torch.rand(2, 3, 12, 13))


def test_ssim_gain_by_hand():
    from ppreid.losses.adversarial import ssim_gain_loss
    from ppreid.metrics.privacy import ssim

    gen = torch.Generator().manual_seed(0)
    real = torch.rand(4, 3, 16, 16, generator=gen)
    blind = torch.full((1, 3, 16, 16), 0.5)
    floor = ssim(blind.expand_as(real), real)
    # a perfect reconstruction gains 1 - SSIM(blind, real); the blind guess itself gains nothing
    assert ssim_gain_loss(real, real, blind).item() == pytest.approx(float((1 - floor).mean()), abs=1e-5)
    assert ssim_gain_loss(blind.expand_as(real), real, blind).item() == pytest.approx(0.0, abs=1e-6)
    # no per-image floor: an image the decoder does worse on than the blind guess counts negative
    inverted = 1.0 - real
    assert float(ssim(inverted, real).mean()) < -0.5
    gains = ssim(inverted, real) - floor
    assert ssim_gain_loss(inverted, real, blind).item() == pytest.approx(float(gains.mean()), abs=1e-5)


def test_ssim_gain_has_no_floor_a_negative_image_still_gives_gradient():
    """Two images: one reconstructed well (gain > 0), one worse than the blind guess (gain < 0). A per-image
    clamp at 0 would give the second no gradient; the loss without a floor gives both one."""
    from ppreid.losses.adversarial import ssim_gain_loss
    from ppreid.metrics.privacy import ssim

    gen = torch.Generator().manual_seed(1)
    real = torch.rand(2, 3, 16, 16, generator=gen)
    blind = torch.full((1, 3, 16, 16), 0.5)
    recon = torch.stack([real[0] * 0.9 + 0.05, 1.0 - real[1]]).requires_grad_()
    gains = ssim(recon.detach(), real) - ssim(blind.expand_as(real), real)
    assert gains[0] > 0 > gains[1]
    loss = ssim_gain_loss(recon, real, blind)
    assert loss.item() == pytest.approx(float(gains.mean()), abs=1e-5)
    loss.backward()
    assert recon.grad[1].abs().sum() > 0  # the negative image still moves E
    assert recon.grad[0].abs().sum() > 0


def test_ssim_reconstruction_by_hand():
    from ppreid.losses.adversarial import ssim_reconstruction

    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert ssim_reconstruction(x, x).item() == pytest.approx(0.0, abs=1e-5)
    assert ssim_reconstruction(1.0 - x, x).item() > 1.5  # SSIM of an inverted image is about -1


def test_swap_partners_pair_images_of_one_identity():
    from ppreid.losses.adversarial import swap_partners

    pids = torch.tensor([3, 3, 7, 5, 7, 3])
    # identity 3 at rows 0, 1, 5 (cyclic: 0->1, 1->5, 5->0); 7 at rows 2, 4; 5 alone
    assert swap_partners(pids).tolist() == [1, 5, 4, -1, 2, 0]


def test_swap_gain_by_hand():
    """Rows 0 and 1 share an identity, row 2 has none to swap with. A decoder that returns each photo exactly
    gains 1 - SSIM(x_1, x_0) on row 0 and 1 - SSIM(x_0, x_1) on row 1; one that returns the same image for
    both photos of the identity gains nothing."""
    from ppreid.losses.adversarial import swap_gain_loss, swap_partners
    from ppreid.metrics.privacy import ssim

    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    partner = swap_partners(torch.tensor([1, 1, 2]))
    cross = ssim(x[[1, 0]], x[[0, 1]])
    assert swap_gain_loss(x, x, partner).item() == pytest.approx(float((1 - cross).mean()), abs=1e-5)
    same = torch.stack([x[0], x[0], x[2]])
    assert swap_gain_loss(same, x, partner).item() == pytest.approx(0.0, abs=1e-6)
    recon = x.clone().requires_grad_()
    value = swap_gain_loss(recon, x, swap_partners(torch.tensor([1, 2, 3])))
    assert value.item() == 0.0
    value.backward()  # no partner anywhere: zero, and still a graph


def test_background_mask_and_gain_by_hand():
    from ppreid.losses.adversarial import background_gain_loss, background_mask
    from ppreid.metrics.privacy import ssim

    mask = background_mask(16, 16, 0.25)
    assert mask[0, 0, 0].tolist() == [1.0] * 4 + [0.0] * 8 + [1.0] * 4
    with pytest.raises(ConfigValueError, match=r"border=0.6: give a fraction of the width in \(0, 0.5\)"):
        background_mask(16, 16, 0.6)
    gen = torch.Generator().manual_seed(4)
    real = torch.rand(2, 3, 16, 16, generator=gen)
    blind = torch.full((1, 3, 16, 16), 0.5)
    # right in the person (the centre), the blind guess in the background: no background gain
    person_only = blind.expand_as(real) * mask + real * (1 - mask)
    assert background_gain_loss(person_only, real, blind, mask).item() == pytest.approx(0.0, abs=1e-6)
    # right in the background: the gain of the masked images
    bg_only = real * mask + blind.expand_as(real) * (1 - mask)
    expected = ssim(real * mask, real * mask) - ssim(blind.expand_as(real) * mask, real * mask)
    assert background_gain_loss(bg_only, real, blind, mask).item() == pytest.approx(float(expected.mean()), abs=1e-5)
    assert float(expected.mean()) > 0.1  # diluted by the person region, equal (0) in both images


def test_fake_realism_by_hand():
    from ppreid.losses.adversarial import fake_realism

    # hinge: relu(1 + 0.5) = 1.5, relu(1 - 3) = 0 -> 0.75; lsgan: 0.5 * (0.25 + 9) / 2 = 2.3125
    assert fake_realism("hinge", FAKE).item() == pytest.approx(0.75)
    assert fake_realism("lsgan", FAKE).item() == pytest.approx(2.3125)
    assert fake_realism("logistic", FAKE).item() == pytest.approx((softplus(0.5) + softplus(-3.0)) / 2)
    with pytest.raises(ConfigValueError, match="kind='wgan' is unknown"):
        fake_realism("wgan", FAKE)
