"""Losses of the feature-reversal GAN and of the extractor that resists it.

Discriminator outputs are raw scores (logits), (B,) or (B,1). Every loss returns a scalar
mean over the batch. Three families:

- GAN losses, picked by name with ``gan_losses(kind)``: ``hinge`` (Lim & Ye 2017; SNGAN,
  BigGAN), ``lsgan`` (Mao et al. 2017, targets 1 for real and 0 for fake) and ``logistic``
  (the non-saturating loss of Goodfellow et al. 2014, StyleGAN's default);
- the R1 gradient penalty of the discriminator on real images (Mescheder et al. 2018);
- reconstruction losses for the decoder (L1, L2) and privacy losses for the extractor, which
  minimises the similarity between the decoder's reconstruction and the input image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ppreid.metrics.privacy import ssim
from ppreid.utils.errors import ConfigValueError


def _scores(name: str, scores: torch.Tensor) -> torch.Tensor:
    """(B,) or (B,1) discriminator scores -> (B,)."""
    if scores.dim() == 2 and scores.shape[1] == 1:
        return scores[:, 0]
    if scores.dim() != 1:
        raise ValueError(f"{name}: expects discriminator scores of shape (B,) or (B,1), got {tuple(scores.shape)}.")
    return scores


def _same_shape(name: str, recon: torch.Tensor, target: torch.Tensor) -> None:
    if recon.shape != target.shape:
        raise ValueError(
            f"{name}: reconstruction {tuple(recon.shape)} and target {tuple(target.shape)} differ in shape; "
            "decode to the input's image size."
        )


# ----------------------------------------------------------------------------- GAN losses


def d_hinge_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E[relu(1 - D(real))] + E[relu(1 + D(fake))]."""
    real, fake = _scores("d_hinge_loss", real_scores), _scores("d_hinge_loss", fake_scores)
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_hinge_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-E[D(fake)]."""
    return -_scores("g_hinge_loss", fake_scores).mean()


def d_lsgan_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """0.5 E[(D(real) - 1)^2] + 0.5 E[D(fake)^2] (the 1/2 of Mao et al.'s objective)."""
    real, fake = _scores("d_lsgan_loss", real_scores), _scores("d_lsgan_loss", fake_scores)
    return 0.5 * (real - 1.0).pow(2).mean() + 0.5 * fake.pow(2).mean()


def g_lsgan_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """0.5 E[(D(fake) - 1)^2]: the generator pushes fakes to the real target 1."""
    return 0.5 * (_scores("g_lsgan_loss", fake_scores) - 1.0).pow(2).mean()


def d_logistic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E[softplus(-D(real))] + E[softplus(D(fake))]: binary cross-entropy on logits."""
    real, fake = _scores("d_logistic_loss", real_scores), _scores("d_logistic_loss", fake_scores)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_logistic_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """E[softplus(-D(fake))]: the non-saturating generator loss, -log sigmoid(D(fake))."""
    return F.softplus(-_scores("g_logistic_loss", fake_scores)).mean()


DLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GLoss = Callable[[torch.Tensor], torch.Tensor]

GAN_LOSSES: dict[str, tuple[DLoss, GLoss]] = {
    "hinge": (d_hinge_loss, g_hinge_loss),
    "lsgan": (d_lsgan_loss, g_lsgan_loss),
    "logistic": (d_logistic_loss, g_logistic_loss),
}


def gan_losses(kind: str) -> tuple[DLoss, GLoss]:
    """(d_loss(real_scores, fake_scores), g_loss(fake_scores)) for kind in GAN_LOSSES."""
    if kind not in GAN_LOSSES:
        raise ConfigValueError(f"gan_losses: kind={kind!r} is unknown; use one of {', '.join(GAN_LOSSES)}.")
    return GAN_LOSSES[kind]


def r1_penalty(real_scores: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 = 0.5 * E[||grad_x D(x)||^2] on real images x (StyleGAN2's convention).

    The 1/2 is the one in Mescheder et al.'s gamma/2, so the loss term is ``gamma * r1_penalty``
    (lazy R1: ``gamma * r1_every * r1_penalty`` every ``r1_every`` steps). ``real_images`` must
    have had requires_grad set before the discriminator saw them; the graph is kept
    (create_graph=True) so the penalty trains the discriminator.
    """
    scores = _scores("r1_penalty", real_scores)
    if not real_images.requires_grad:
        raise ValueError(
            "r1_penalty: real_images does not require grad; call real_images.requires_grad_() "
            "before the discriminator's forward pass."
        )
    (grad,) = torch.autograd.grad(scores.sum(), real_images, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------- reconstruction / privacy


def l1_reconstruction(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over every element; the decoder minimises it."""
    _same_shape("l1_reconstruction", recon, target)
    return (recon - target).abs().mean()


def l2_reconstruction(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over every element; the decoder minimises it."""
    _same_shape("l2_reconstruction", recon, target)
    return (recon - target).pow(2).mean()


RECONSTRUCTION_LOSSES = {"l1": l1_reconstruction, "l2": l2_reconstruction}


def neg_pixel_similarity(recon: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Minus the reconstruction error (``-l1_reconstruction`` or ``-l2_reconstruction``).

    The extractor minimises it, i.e. it pushes the decoder's reconstruction of its feature away
    from the input image (the conventional defence of Xiao et al. 2020). For images in [0, 1]
    it is bounded below by -1.
    """
    if kind not in RECONSTRUCTION_LOSSES:
        raise ConfigValueError(
            f"neg_pixel_similarity: kind={kind!r} is unknown; use one of {', '.join(RECONSTRUCTION_LOSSES)}."
        )
    return -RECONSTRUCTION_LOSSES[kind](recon, target)


def ssim_similarity_loss(recon: torch.Tensor, target: torch.Tensor, **ssim_kwargs) -> torch.Tensor:
    """Mean per-image SSIM (ppreid.metrics.privacy.ssim) between reconstruction and input.

    The extractor minimises it: a reconstruction that is structurally unlike the input leaks
    less. ``ssim_kwargs`` (data_range, window_size, sigma, k1, k2, check_range) go to ssim.
    """
    _same_shape("ssim_similarity_loss", recon, target)
    return ssim(recon, target, **ssim_kwargs).mean()


def fake_realism(kind: str, scores: torch.Tensor) -> torch.Tensor:
    """The fake half of D's loss of ``kind`` (hinge / lsgan / logistic): low when D calls the images fake.

    The extractor minimises it with ``privacy_loss=realism``: its features should decode to images the
    discriminator rejects as not being the person behind the feature.
    """
    scores = _scores("fake_realism", scores)
    if kind == "hinge":
        return F.relu(1.0 + scores).mean()
    if kind == "lsgan":
        return 0.5 * scores.pow(2).mean()
    if kind == "logistic":
        return F.softplus(scores).mean()
    raise ConfigValueError(f"fake_realism: kind={kind!r} is unknown; use one of {', '.join(GAN_LOSSES)}.")


def ssim_gain_loss(recon: torch.Tensor, target: torch.Tensor, blind: torch.Tensor) -> torch.Tensor:
    """Mean over images of SSIM(recon, target) - SSIM(blind, target), with no floor.

    ``blind`` (B,3,H,W) or (1,3,H,W) is a feature-blind prediction of the target (e.g. the running mean
    training image). Minimised by the extractor. No image is clamped at 0: a per-image floor gives E no
    gradient from every image its decoder already fails on, and with a decoder near the blind guess that
    is about half of them (E's gradient then nearly vanishes).
    """
    _same_shape("ssim_gain_loss", recon, target)
    blind = blind.expand_as(target)
    with torch.no_grad():
        floor = ssim(blind, target, check_range=False)
    return (ssim(recon, target, check_range=False) - floor).mean()


def ssim_reconstruction(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean per-image SSIM: the structural half of the adversaries' L1 + SSIM loss (0 for a perfect
    reconstruction)."""
    _same_shape("ssim_reconstruction", recon, target)
    return 1.0 - ssim(recon, target, check_range=False).mean()


def swap_partners(pids: torch.Tensor) -> torch.Tensor:
    """(B,) identities -> (B,) index of another image of the same identity in the batch (the next one of
    its identity, cyclically, in batch order), or -1 for an image whose identity appears once."""
    pids = pids.view(-1)
    partner = torch.full_like(pids, -1, dtype=torch.long)
    for pid in torch.unique(pids):
        rows = torch.nonzero(pids == pid).view(-1)
        if rows.numel() > 1:
            partner[rows] = rows.roll(-1)
    return partner


def swap_gain_loss(recon: torch.Tensor, target: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """The image-specific leak a decoder reads from E's features: mean over the images i with a partner
    j = ``partner[i]`` (same identity, another photo) of SSIM(recon_i, x_i) - SSIM(recon_j, x_i).

    ``recon`` (B,3,H,W): the decoder's images of the batch's own features, so recon_j = G(f_j). The
    difference is what f_i says about *this* photo beyond what any photo of the person says; the
    identity's garments appear in both terms and cancel, so E is not pushed against what ReID needs.
    No floor. 0 (with a gradient of 0) when no image has a partner."""
    _same_shape("swap_gain_loss", recon, target)
    keep = partner >= 0
    if not bool(keep.any()):
        return recon.sum() * 0.0
    own = ssim(recon[keep], target[keep], check_range=False)
    swapped = ssim(recon[partner[keep]], target[keep], check_range=False)
    return (own - swapped).mean()


def background_mask(height: int, width: int, border: float, device=None) -> torch.Tensor:
    """(1,1,H,W) proxy of the background when no person mask is known: 1 in the outer ``border`` fraction
    of the width on each side (where a person crop shows the scene), 0 in the centre."""
    if not 0.0 < float(border) < 0.5:
        raise ConfigValueError(f"background border={border}: give a fraction of the width in (0, 0.5).")
    band = max(1, round(float(border) * width))
    mask = torch.zeros(1, 1, height, width, device=device)
    mask[..., :band] = 1.0
    mask[..., width - band :] = 1.0
    return mask


def background_gain_loss(
    recon: torch.Tensor, target: torch.Tensor, blind: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The SSIM gain over the blind guess inside the background: mean over images of
    SSIM(recon * m, x * m) - SSIM(blind * m, x * m), m the background mask ((B,1,H,W) or (1,1,H,W), 1 =
    background). The person region is zero in all three images, so it adds the same constant to both
    terms and cancels: only the background moves the loss. No floor."""
    _same_shape("background_gain_loss", recon, target)
    mask = mask.to(target).expand(target.shape[0], 1, *target.shape[2:])
    blind = blind.expand_as(target)
    with torch.no_grad():
        floor = ssim(blind * mask, target * mask, check_range=False)
    return (ssim(recon * mask, target * mask, check_range=False) - floor).mean()
