"""The attackers of the privacy audit and its measures, one by one (src/ppreid/audit/attackers, src/ppreid/metrics)."""

from __future__ import annotations

import functools

import pytest
import torch

from ppreid.audit.attackers.diffusion import DiffusionAttacker
from ppreid.audit.attackers.images import ImageSpace
from ppreid.audit.attackers.optim import OptimAttacker, total_variation
from ppreid.metrics.attribute_probe import balanced_accuracy, probe_attributes
from ppreid.metrics.privacy import normalized_leakage, random_rank1
from ppreid.nn.diffusion_decoder import DiffusionDecoder


def _diffusion_attacker(num_samples: int = 2) -> DiffusionAttacker:
    decoder = functools.partial(DiffusionDecoder, block_out_channels=[8, 16], inference_steps=2)
    attacker = DiffusionAttacker(decoder, steps=1, batch_size=4, seed=3, num_samples=num_samples)
    attacker.build(feat_dim=5, image_size=[16, 8])
    return attacker.eval()


def test_diffusion_reconstructions_do_not_depend_on_the_batch():
    """The noise of each image is seeded by its dataset index: one batch of 6 == batches of 4 + 2 == any order."""
    torch.manual_seed(0)
    attacker = _diffusion_attacker()
    feat, index = torch.randn(6, 5), torch.arange(100, 106)
    whole = attacker.reconstruct(feat, index)
    parts = torch.cat([attacker.reconstruct(feat[:4], index[:4]), attacker.reconstruct(feat[4:], index[4:])])
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-6)
    order = torch.tensor([5, 3, 1, 0, 2, 4])
    torch.testing.assert_close(attacker.reconstruct(feat[order], index[order]), whole[order], rtol=0, atol=1e-6)
    assert whole.shape == (6, 3, 16, 8)
    # another index, another noise: the same feature gives another sample
    other = attacker.reconstruct(feat[:1], torch.tensor([7]))
    assert not torch.allclose(other, whole[:1])


def test_optim_inversion_matches_the_feature_and_starts_from_the_mean():
    """A linear 'extractor' (the image's channel means): gradient descent recovers images with the target
    feature; with zero steps the reconstruction is the mean image (its prior)."""
    torch.manual_seed(0)

    def features_of(x):  # (B,3,h,w) -> (B,3)
        return x.mean(dim=(2, 3))

    truth = torch.rand(4, 3, 12, 6)
    mean_image = torch.full((1, 3, 12, 6), 0.5)
    attacker = OptimAttacker(steps=150, batch_size=3, lr=0.1, tv_weight=0.0, l2_weight=0.0)
    attacker.build(feat_dim=3, image_size=[12, 6])
    attacker.bind(features_of, mean_image)
    with torch.inference_mode():  # the audit calls it inside Lightning's test loop
        recon = attacker.reconstruct(features_of(truth), torch.arange(4))
    assert recon.shape == truth.shape and not recon.requires_grad
    assert (features_of(recon) - features_of(truth)).abs().max() < 0.02
    attacker.steps = 0
    torch.testing.assert_close(
        attacker.reconstruct(features_of(truth), torch.arange(4)), mean_image.expand(4, -1, -1, -1), atol=0.02, rtol=0
    )


def test_total_variation_on_hand_worked_images():
    flat = torch.zeros(1, 3, 4, 4)
    stripes = torch.zeros(1, 3, 4, 4)
    stripes[..., 1::2] = 1.0  # every horizontal neighbour differs by 1, vertical ones by 0
    assert total_variation(flat).item() == 0.0
    assert total_variation(stripes).item() == pytest.approx(1.0)


def test_image_space_round_trip():
    space = ImageSpace((8, 4), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    unit = torch.rand(2, 3, 8, 4)
    torch.testing.assert_close(space.to_unit(space.from_unit(unit)), unit)
    assert space.from_unit(torch.rand(2, 3, 16, 8)).shape == (2, 3, 8, 4)


def test_random_rank1_and_normalized_leakage_on_a_hand_worked_case():
    """One set as queries and gallery: ids 1,1,2,2,3 with cameras 0,1,0,1,0. Query 0 (id 1, cam 0) may be
    ranked against 4 images (itself dropped), 1 of them a match: 1/4; the same for queries 1-3; query 4
    (id 3) has no match left and is skipped: chance = 1/4."""
    pids, cams = torch.tensor([1, 1, 2, 2, 3]), torch.tensor([0, 1, 0, 1, 0])
    assert random_rank1(pids, pids, cams, cams) == pytest.approx(0.25)
    assert normalized_leakage(0.25, 0.25, 1.0) == 0.0
    assert normalized_leakage(1.0, 0.25, 1.0) == 1.0
    assert normalized_leakage(0.625, 0.25, 0.75) == pytest.approx(0.75)
    assert normalized_leakage(0.5, 0.25, 0.25) is None  # the judge itself is at chance


def test_balanced_accuracy_and_probes_on_hand_built_features():
    assert balanced_accuracy(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 0, 1])) == pytest.approx(0.5)
    assert balanced_accuracy(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    torch.manual_seed(0)
    n = 80
    view = torch.randint(0, 4, (n,))
    gender = torch.randint(0, 2, (n,))
    feats = torch.randn(n, 6) * 0.1
    feats[:, :4] += torch.nn.functional.one_hot(view, 4).float() * 2  # the viewpoint is written in the feature
    attrs = [
        {"viewpoint": ["front", "back", "left", "right"][v], "gender": ["male", "female"][g], "weather": "none"}
        for v, g in zip(view.tolist(), gender.tolist())
    ]
    out = probe_attributes(
        feats[:40],
        attrs[:40],
        feats[40:],
        attrs[40:],
        {"nuisance": ["viewpoint", "weather"], "soft_biometric": ["gender", "age_group"]},
    )
    assert out["nuisance"]["viewpoint"]["balanced_accuracy"] == 1.0 and out["nuisance"]["viewpoint"]["chance"] == 0.25
    assert abs(out["soft_biometric"]["gender"]["gain"]) < 0.25  # not in the feature: near chance
    assert out["nuisance"]["mean_gain"] == pytest.approx(0.75)
    assert "weather" in out["skipped"] and "age_group" in out["skipped"]


def test_reconstruction_captions_name_the_attacker_and_ssim(tmp_path, monkeypatch):
    from ppreid.audit import report as attack_report
    from ppreid.callbacks import pictures

    seen = {}

    def fake_grid(images, captions, columns):
        seen["captions"], seen["width"] = list(captions), images[0].size[0]
        return pictures.Image.new("RGB", (4, 4))

    monkeypatch.setattr(pictures, "captioned_grid", fake_grid)
    real = torch.rand(2, 3, 64, 32)
    attack_report.save_reconstructions(
        tmp_path / "r.png", real, {"l1": real, "diffusion": real * 0}, torch.tensor([7, 8]), torch.arange(2)
    )
    assert seen["captions"][:3] == [
        "real id 7",
        "SSIM 1.00",
        f"SSIM {seen['captions'][2][-4:]}",
    ]  # attackers: column titles
    assert seen["width"] >= attack_report.CAPTION_WIDTH


def test_gan_attacker_steps_are_the_defences_reversal_step():
    """One GAN convention for defence and audit: the attacker's steps are ReversalStep calls (L1 alone in the
    warm-up, then D every step with its R1), and they fit a feature -> image map that a linear decoder can learn."""
    from ppreid.audit.attackers.decoder import GANAttacker
    from ppreid.nn.discriminator import FeatureConditionedDiscriminator
    from ppreid.nn.feature_decoder import FeatureDecoder
    from ppreid.privacy.reversal import ReversalStep

    torch.manual_seed(0)
    attacker = GANAttacker(
        functools.partial(FeatureDecoder, base_channels=16, min_channels=8),
        functools.partial(FeatureConditionedDiscriminator, base_channels=8, max_channels=16),
        steps=40,
        batch_size=8,
        lr=3e-3,
        adv_weight=0.01,
        r1_gamma=0.1,
        l1_warmup=0.5,
        log_every=0,
    )
    attacker.build(feat_dim=6, image_size=[16, 8])
    assert isinstance(attacker.step, ReversalStep) and attacker.step.generator is attacker.decoder
    feats = torch.randn(32, 6)
    images = (torch.sigmoid(feats[:, :3, None, None]).expand(-1, -1, 16, 8) * 255).to(torch.uint8)
    before = (attacker.reconstruct(feats, None) - images.float() / 255).abs().mean()
    attacker.fit(feats, images, "toy", torch.Generator().manual_seed(0))
    clock = attacker.step.clock
    assert clock["batches"] == clock["g_steps"] == 40
    assert clock["d_steps"] == clock["r1_steps"] == 20  # the second half, every step
    after = (attacker.reconstruct(feats, None) - images.float() / 255).abs().mean()
    assert after < 0.5 * before
    with pytest.raises(Exception, match="gan_loss|unknown"):
        GANAttacker(None, None, gan_loss="wasserstein-ish")
