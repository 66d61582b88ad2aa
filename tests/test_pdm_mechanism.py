"""PDM as a mechanism that acts: identity-level (P x K) stage-1 batches, a content invariance whose gradient
reaches the image encoder, and the per-term gradient norms on the encoder that make an ablation readable."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_train, run_train
from test_clip_models import CLIP, stages


def _pdm(tmp_path, reid_data_dir, extra=()):
    from hydra.utils import instantiate

    from ppreid.run.sandbox_clip import resolve_pretrained_sandbox

    cfg = compose_train(CLIP + ["model=pdm", *extra] + stages(1, 1), tmp_path, reid_data_dir)
    resolve_pretrained_sandbox(cfg)
    torch.manual_seed(0)
    return cfg, instantiate(cfg.model)


def test_both_pdm_recipes_draw_p_by_k_stage1_batches_and_clipreid_keeps_its_chunks(tmp_path):
    for scale in ([], ["data=genepers"]):
        pdm = compose_train(["model=pdm", *scale], tmp_path / f"pdm{len(scale)}")
        assert pdm.model.stage1.batch_size is None
        assert (pdm.data.batch_size, pdm.data.num_instances) == (64, 4)  # P x K = 16 x 4
    assert compose_train(["model=clipreid"], tmp_path / "clipreid").model.stage1.batch_size == 64


def test_stage1_batches_are_p_identities_by_k_images(reid_data_dir, tmp_path):
    """The datamodule feeds PDM's stage 1 index batches of P identities x K images (TINY: 8 = 4 x 2)."""
    from hydra.utils import instantiate

    cfg, model = _pdm(tmp_path, reid_data_dir)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    dm.trainer = SimpleNamespace(lightning_module=model, world_size=1, global_rank=0)
    assert model.stage == 1 and model.train_inputs == "indices" and model.index_batch_size is None
    batches = list(dm.train_dataloader())
    assert batches and len(batches) * 8 >= len(dm.train_records) // 2
    k = cfg.data.num_instances
    p = cfg.data.batch_size // k
    for batch in batches:
        assert set(batch) == {"pid", "camid", "domain", "index"}  # indices only: no image is read
        counts = Counter(batch["pid"].tolist())
        assert len(counts) == p and set(counts.values()) == {k}
        assert all(dm.train_records[int(i)].pid == int(y) for i, y in zip(batch["index"], batch["pid"]))


def test_stage2_content_invariance_sends_a_gradient_to_the_image_encoder_only(reid_data_dir, tmp_path):
    _, model = _pdm(tmp_path, reid_data_dir)
    model.inversion_content.eval()
    images = torch.randn(4, 3, 32, 16)
    feats = model.backbone.forward_features(images)["proj"]
    ids, styles = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    value = model.cross_style_word_disagreement(feats, ids, styles)
    assert value is not None and 0 < float(value.detach()) < 2
    value.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in model.inversion_content.parameters())  # phi_c stays as stage 1 left it
    # no pair of the same identity in different styles: no term
    assert model.cross_style_word_disagreement(feats.detach(), ids, torch.tensor([0, 0, 1, 1])) is None
    # the value by hand for one pair: 1 - mean word cosine of the two images' words
    words = torch.nn.functional.normalize(model.frozen_content_words(feats.detach()), dim=-1)
    one = model.cross_style_word_disagreement(feats.detach()[:2], ids[:2], styles[:2])
    assert torch.allclose(one, 1 - (words[0] * words[1]).sum(-1).mean(), atol=1e-6)


def test_stage2_text_losses_hold_content_invariance_when_on(reid_data_dir, tmp_path):
    off = ["model.stage2_loss.terms.i2t.enabled=false", "model.stage2_loss.terms.style_mixed.enabled=false"]
    batch = {"pid": torch.tensor([0, 0, 1, 1]), "camid": torch.tensor([0, 1, 0, 1]), "index": torch.arange(4)}
    feats = torch.randn(4, 128, requires_grad=True)
    _, on = _pdm(tmp_path / "on", reid_data_dir, off)
    assert set(on.stage2_text_losses(feats, batch)) == {"content_invariance"}
    _, none = _pdm(tmp_path / "off", reid_data_dir, [*off, "model.stage2_loss.terms.content_invariance.enabled=false"])
    assert none.stage2_text_losses(feats, batch) == {}


def test_image_grad_norms_by_hand(reid_data_dir, tmp_path):
    """term = 3 x sum of every encoder weight: its gradient is 3 everywhere, norm 3 sqrt(#weights); a term
    with no path to the encoder sends 0."""
    _, model = _pdm(tmp_path, reid_data_dir)
    logged = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, value)
    params = [p for p in model.backbone.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    for _ in range(2):
        model._log_image_grad_norms(
            {"three": 3 * sum(p.sum() for p in params), "text_only": torch.ones((), requires_grad=True) * 2}
        )
    assert logged["train/grad_norm_image/three"] == pytest.approx(3 * n**0.5, rel=1e-5)
    assert logged["train/grad_norm_image/text_only"] == 0.0
    summary = model.extra_results["grad_norm_image"]
    assert summary["interval"] == 50 and summary["terms"]["three"]["count"] == 2
    assert summary["terms"]["three"]["mean"] == pytest.approx(3 * n**0.5, rel=1e-5)
    assert all(p.grad is None for p in params)  # measuring leaves the step's gradients alone


@pytest.mark.slow
def test_a_stage2_run_logs_each_terms_image_grad_norm_into_results(reid_data_dir, tmp_path):
    res = run_train(CLIP + ["model=pdm", "debug=fdr", "model.stage1.epochs=0"], tmp_path, reid_data_dir)
    for term in ("ce_ls", "triplet", "i2t_ce", "style_mixed", "content_invariance"):
        assert f"train/grad_norm_image/{term}" in res["scalars"], term
    written = json.loads((tmp_path / "results.json").read_text())["grad_norm_image"]
    assert written["interval"] == 50
    assert written["terms"]["content_invariance"]["last"] > 0 and written["terms"]["i2t_ce"]["last"] > 0


def test_prompts_with_their_constant_prefix_computed_once_equal_the_plain_encoder(reid_data_dir, tmp_path):
    """encode_with_prefix == composer(enc, ...) in value and in the gradient of the placeholder vectors,
    for PDM's three templates (prefixes of 5, 4 and 2 rows)."""
    from ppreid.nn.prompt_prefix import encode_with_prefix

    _, model = _pdm(tmp_path, reid_data_dir)
    enc, d = model.text_encoder, model.text_encoder.width
    torch.manual_seed(1)
    for composer in (model.content_prompt, model.style_prompt, model.composed_prompt):
        vectors = {w: torch.randn(5, n, d) * 0.02 for w, n in composer.counts.items()}
        plain = {w: v.clone().requires_grad_() for w, v in vectors.items()}
        fast = {w: v.clone().requires_grad_() for w, v in vectors.items()}
        a, b = composer(model.text_encoder, **plain), encode_with_prefix(enc, composer, **fast)
        assert a.shape == b.shape == (5, model.embed_dim)
        assert torch.allclose(a, b, atol=1e-5), composer.template
        weights = torch.randn_like(a)
        (a * weights).sum().backward()
        (b * weights).sum().backward()
        for w in vectors:
            scale = float(plain[w].grad.abs().max())
            assert torch.allclose(plain[w].grad, fast[w].grad, atol=1e-5 * scale), (composer.template, w)
