"""The attackers of the privacy audit and its measures, one by one (src/ppreid/audit/attackers, src/ppreid/metrics)."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from ppreid.audit.attackers.base import AuditBinding, Plateau, ReversalAttacker
from ppreid.audit.attackers.diffusion import DiffusionAttacker
from ppreid.audit.attackers.images import ImageSpace
from ppreid.audit.attackers.optim import OptimAttacker, total_variation
from ppreid.metrics.attribute_probe import balanced_accuracy, probe_attributes
from ppreid.metrics.privacy import normalized_leakage, random_rank1
from ppreid.nn.diffusion_decoder import DiffusionDecoder
from ppreid.utils.errors import ConfigValueError


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
    attacker.bind(AuditBinding(nn.Identity(), features_of, torch.zeros(3), torch.ones(3), mean_image))
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
        seen["captions"], seen["width"], seen["columns"] = list(captions), images[0].size[0], columns
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
    # with the records' person masks, a column after the real image shows the person region
    masks = torch.zeros(2, 1, 64, 32)
    masks[:, :, 16:48, 8:24] = 1.0  # a quarter of the image
    attack_report.save_reconstructions(
        tmp_path / "m.png", real, {"l1": real}, torch.tensor([7, 8]), torch.arange(2), masks=masks
    )
    assert seen["captions"][:3] == ["real id 7", "person 25%", "SSIM 1.00"] and seen["columns"] == 3


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


def _stop_step(plateau: Plateau, curve: list[float]) -> int | None:
    """Feed ``curve`` (one evaluation every 10 steps) until the plateau says stop; the step it stops at."""
    for k, value in enumerate(curve):
        if plateau.update(10 * (k + 1), value):
            return 10 * (k + 1)
    return None


def test_plateau_stops_after_patience_evaluations_without_improvement():
    curve = [1.0, 0.8, 0.7, 0.69, 0.7, 0.71, 0.72, 0.5]
    plateau = Plateau(patience=3)
    assert _stop_step(plateau, curve) == 70  # 0.69 at the 4th evaluation, then 3 without improvement
    assert (plateau.best, plateau.best_step) == (0.69, 40)
    # an improvement must beat the best by 5% of it: 0.69 > 0.7 * 0.95, so the best stays 0.7
    strict = Plateau(patience=3, min_improvement=0.05)
    assert _stop_step(strict, curve) == 60 and (strict.best, strict.best_step) == (0.7, 30)
    # evaluations before ``start`` (a GAN's L1 warm-up) neither stop nor count as the best
    late = Plateau(patience=1, start=35)
    assert _stop_step(late, [0.1, 0.2, 0.3, 0.9, 0.95]) == 50 and late.best_step == 40
    assert _stop_step(Plateau(patience=2), [1.0, 0.9, 0.8, 0.7]) is None  # still improving
    with pytest.raises(ConfigValueError, match="patience=0 must be >= 1"):
        Plateau(patience=0)


class ScriptedAttacker(ReversalAttacker):
    """A toy attacker whose validation loss follows a script: the weight counts the steps taken."""

    def __init__(self, script, steps=100):
        super().__init__(steps=steps, batch_size=2, log_every=0)
        self.script = script
        self.count = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def train_step(self, feat, images):
        self.count.add_(1)
        return {"l1": float(self.count)}

    def val_loss(self, feat, images):
        return torch.tensor(self.script(int(self.count)))


def test_fit_stops_at_the_plateau_and_keeps_the_best_weights():
    """Validation loss falls to its minimum at step 30, then rises: with evaluations every 10 steps and
    patience 3, training stops at step 60 and the weights of step 30 are the ones kept."""
    attacker = ScriptedAttacker(lambda step: abs(step - 30) / 100 + 0.1)
    feats, images = torch.zeros(8, 4), torch.zeros(8, 3, 11, 11, dtype=torch.uint8)
    stopping = {"eval_every": 10, "patience": 3, "min_improvement": 0.0}
    curve = attacker.fit(feats, images, "toy", torch.Generator().manual_seed(0), 100, (feats[:2], images[:2]), stopping)
    assert curve["step"] == [10, 20, 30, 40, 50, 60]
    assert curve["val"] == pytest.approx([0.3, 0.2, 0.1, 0.2, 0.3, 0.4])
    assert curve["train"] == pytest.approx([5.5, 15.5, 25.5, 35.5, 45.5, 55.5])  # mean l1 since the last evaluation
    assert (curve["best_step"], curve["stopped_step"], curve["stopped"], curve["max_steps"]) == (30, 60, "plateau", 100)
    assert float(attacker.count) == 30  # the best evaluation's weights
    # a curve that keeps falling runs to the step budget
    falling = ScriptedAttacker(lambda step: 1.0 / step, steps=25)
    curve = falling.fit(feats, images, "toy", torch.Generator().manual_seed(0), None, (feats[:2], images[:2]), stopping)
    assert curve["step"] == [10, 20, 25] and curve["stopped"] == "max_steps" and float(falling.count) == 25
    # without held-out pairs: every step, no curve
    plain = ScriptedAttacker(lambda step: 1.0, steps=7)
    curve = plain.fit(feats, images, "toy", torch.Generator().manual_seed(0), None, None, stopping)
    assert curve["step"] == [] and curve["stopped_step"] == 7 and float(plain.count) == 7


def test_gan_attacker_never_stops_in_its_l1_warm_up():
    from ppreid.audit.attackers.decoder import GANAttacker
    from ppreid.nn.discriminator import FeatureConditionedDiscriminator
    from ppreid.nn.feature_decoder import FeatureDecoder

    decoder = functools.partial(FeatureDecoder, base_channels=16, min_channels=8, norm="batch")
    disc = functools.partial(FeatureConditionedDiscriminator, base_channels=8, max_channels=16)
    gan = GANAttacker(decoder, disc, steps=200, l1_warmup=0.5)
    assert gan.plateau_start(200) == 101


def test_fit_stops_at_once_when_sigterm_arrives():
    """The audit trains attackers inside on_test_start, where no Lightning loop checks for SIGTERM:
    ``should_stop`` (the audit passes trainer.received_sigterm) ends training before the next step."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    attacker = ScriptedAttacker(lambda step: 1.0, steps=100)
    feats, images = torch.zeros(8, 4), torch.zeros(8, 3, 11, 11, dtype=torch.uint8)
    asked = []

    def sigterm_after_three_steps() -> bool:
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(SIGTERMException):
        attacker.fit(
            feats, images, "toy", torch.Generator().manual_seed(0), None, None, None, sigterm_after_three_steps
        )
    assert float(attacker.count) == 3  # three steps taken, the fourth never started


def test_own_decoder_reads_the_raw_feature_the_defence_stored():
    """The audit hands attackers standardized features; the checkpoint's own decoder must see the raw stored
    feature (its defence standardizes with its own running statistics), at the attack size."""
    from ppreid.audit.attackers.own import OwnDecoderAttacker

    class EchoDefence(torch.nn.Module):  # a decoder that paints each image with its feature's first value
        def reconstruct(self, feat):
            return {"G": feat[:, :1, None, None].expand(-1, 3, 4, 2)}

    attacker = OwnDecoderAttacker()
    attacker.build(feat_dim=3, image_size=[8, 4])
    mean, std = torch.tensor([0.5, 0.0, 0.0]), torch.tensor([0.25, 1.0, 1.0])
    extractor = torch.nn.Module()
    extractor.defence = EchoDefence()
    attacker.bind(AuditBinding(extractor, lambda x: x, mean, std, torch.zeros(1, 3, 8, 4)))
    raw = torch.tensor([[0.25, 7.0, 7.0], [0.75, -3.0, 1.0], [2.0, 0.0, 0.0]])
    out = attacker.reconstruct((raw - mean) / std, torch.arange(3))
    assert out.shape == (3, 3, 8, 4)
    assert out[:, 0, 0, 0].tolist() == pytest.approx([0.25, 0.75, 1.0])  # the raw value, clamped to [0, 1]
