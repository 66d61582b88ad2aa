"""CLIP-ReID as published: its features and necks, its per-epoch learning rates, its stage-1 batches;
PDM's terms measuring what they say; checkpoints that never reload pretrained weights."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from conftest import compose_train, run_train
from test_clip_models import CLIP, stages

from ppreid.utils.errors import ConfigValueError


def _stage_lrs(cfg, k: int, model_epochs: int):
    """(per-epoch learning rates of the weight group, of the bias group) of stage k as the model schedules
    them: the rate each 0-based epoch trains at (before the scheduler steps at its end)."""
    from hydra.utils import instantiate

    stage = instantiate(cfg.model[f"stage{k}"], _convert_="all")
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    bias_lr = stage["optimizer"].keywords["lr"] * float(stage.get("bias_lr_factor", 1.0))
    opt = stage["optimizer"](params=[{"params": [params[0]]}, {"params": [params[1]], "lr": bias_lr}])
    sch = stage["scheduler"](optimizer=opt, max_epochs=model_epochs, key=f"model.stage{k}.scheduler")
    weights, biases = [], []
    for _ in range(model_epochs):
        weights.append(opt.param_groups[0]["lr"])
        biases.append(opt.param_groups[1]["lr"])
        opt.step()
        sch.step()
    return weights, biases


def _reference_stage2(e: int, base: float, warmup_factor: float, milestones) -> float:
    """CLIP-ReID's WarmupMultiStepLR after ``scheduler.step()`` at the start of 1-based epoch e."""
    warm = warmup_factor * (1 - e / 10) + e / 10 if e < 10 else 1.0
    return base * warm * 0.1 ** sum(m <= e for m in milestones)


def _reference_stage1(e: int, epochs: int) -> float:
    """timm's CosineLRScheduler (warm-up 5 from 1e-5, floor 1e-6) after ``step(e)``, 1-based epoch e."""
    if e < 5:
        return 1e-5 + e * (3.5e-4 - 1e-5) / 5
    if e >= epochs:
        return 1e-6
    return 1e-6 + 0.5 * (3.5e-4 - 1e-6) * (1 + math.cos(math.pi * e / epochs))


@pytest.mark.parametrize(
    "backbone, s1_epochs, s2_epochs, base, warmup, milestones, wd",
    [
        ("clip_vit_b16", 120, 60, 5e-6, 0.1, (30, 50), 1e-4),
        ("clip_rn50", 60, 120, 3.5e-4, 0.01, (40, 70), 5e-4),
    ],
)
def test_published_learning_rates_per_epoch(backbone, s1_epochs, s2_epochs, base, warmup, milestones, wd, tmp_path):
    cfg = compose_train(["experiment=clipreid_market1501", f"backbone={backbone}"], tmp_path)
    assert (cfg.model.stage1.epochs, cfg.model.stage2.epochs) == (s1_epochs, s2_epochs)
    assert cfg.model.stage2.optimizer.weight_decay == wd == cfg.model.stage2.weight_decay_bias
    s2, s2_bias = _stage_lrs(cfg, 2, s2_epochs)
    s1, _ = _stage_lrs(cfg, 1, s1_epochs)
    print(f"\n{backbone} stage 2 (1-based epoch: lr):", ", ".join(f"{e + 1}: {lr:.3g}" for e, lr in enumerate(s2)))
    print(f"{backbone} stage 1 (1-based epoch: lr):", ", ".join(f"{e + 1}: {lr:.3g}" for e, lr in enumerate(s1)))
    for e in range(1, s2_epochs + 1):
        expected = _reference_stage2(e, base, warmup, milestones)
        assert s2[e - 1] == pytest.approx(expected, rel=1e-9), e
        assert s2_bias[e - 1] == pytest.approx(2 * expected, rel=1e-9), e  # the bias learning-rate factor
    for e in range(1, s1_epochs + 1):
        assert s1[e - 1] == pytest.approx(_reference_stage1(e, s1_epochs), rel=1e-9), e
    # spot values of the ViT recipe from its definition: epoch 1 trains at 5e-6 * 0.19
    if backbone == "clip_vit_b16":
        assert s2[0] == pytest.approx(5e-6 * 0.19) and s2[29] == pytest.approx(5e-7) and s2[49] == pytest.approx(5e-8)
        assert s1[0] == pytest.approx(7.8e-5) and s1[-1] == pytest.approx(1e-6)


def test_recipe_follows_the_backbone_and_the_row(tmp_path):
    vit = compose_train(["experiment=clipreid_market1501"], tmp_path / "vit")
    rn = compose_train(["experiment=clipreid_market1501", "backbone=clip_rn50"], tmp_path / "rn")
    assert vit.loss.ce_ls.weight == 0.25 and rn.loss.ce_ls.weight == 1.0
    assert list(vit.data.train_transforms.mean) == [0.5] * 3 and list(rn.data.test_transforms.std)[0] == 0.229
    assert vit.backbone.pretrained == "openai" == rn.backbone.pretrained and rn.backbone.last_stride == 1
    # supervised rows train on every identity; DG rows keep the source validation split
    assert vit.data.val_split.identities == 0
    dg = compose_train(["experiment=dppp_market1501_clipreid"], tmp_path / "dg")
    assert dg.data.val_split.identities == 0.1
    # random weights only when asked for; the sandbox's clip_tiny has no OpenAI weights: its default is the
    # person-aligned sandbox CLIP (backbone.pretrained=sandbox)
    assert (
        compose_train(["model=pdm", "data=genepers", "backbone.pretrained=null"], tmp_path / "r").backbone.pretrained
        is None
    )
    assert compose_train(["model=pdm"], tmp_path / "s").backbone.pretrained == "sandbox"


@pytest.mark.parametrize(
    "backbone, dims, test_dim", [("clip_vit_b16", (768, 768, 512), 1280), ("clip_rn50", (1024, 2048, 1024), 3072)]
)
def test_published_features_and_test_feature(backbone, dims, test_dim, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train(
        ["model=clipreid", f"backbone={backbone}", "backbone.pretrained=null", "data.height=64", "data.width=32"],
        tmp_path,
    )
    model = instantiate(cfg.model, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        feats = model.backbone.forward_features(x)
        assert tuple(f.shape[1] for f in feats.values()) == dims
        assert torch.allclose(feats["proj"], model.backbone(x), atol=1e-4)  # one pass, the same projection
        assert model.extract_features(x).shape == (2, test_dim)
        model.test_feature = "proj"
        assert model.extract_features(x).shape == (2, dims[2])
    assert model.neck.in_dim == dims[1] and model.neck_proj.in_dim == dims[2]


def test_stage2_sums_id_over_two_classifiers_and_triplet_over_three_features(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train(CLIP + ["model=clipreid", "model.stage2_loss.i2t_weight=0"], tmp_path)
    model = instantiate(cfg.model, num_classes=4).train()
    images, pids = torch.randn(8, 3, 32, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    terms = {k: v.detach() for k, v in model._stage2_losses({"image": images, "pid": pids}).items()}
    feats = model.backbone.forward_features(images)
    ce, tri = model.loss_fns["ce_ls"], model.loss_fns["triplet"]
    expected_ce = ce(model.neck(feats["final"])[1], pids) + ce(model.neck_proj(feats["proj"])[1], pids)
    expected_tri = sum(tri(feats[k], pids) for k in ("intermediate", "final", "proj"))
    assert set(terms) == {"ce_ls", "triplet"}
    assert float(terms["ce_ls"]) == pytest.approx(float(model.loss_weights["ce_ls"] * expected_ce.detach()), rel=1e-4)
    assert float(terms["triplet"]) == pytest.approx(
        float(model.loss_weights["triplet"] * expected_tri.detach()), rel=1e-4
    )


@pytest.mark.slow
def test_stage1_batches_are_chunks_of_a_permutation_of_every_image(reid_data_dir, tmp_path):
    from ppreid.data.samplers import PermutationChunkSampler

    sampler = PermutationChunkSampler(10, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(first) == list(range(10)) and sorted(sampler) == list(range(10)) and list(sampler) != first
    shards = [list(PermutationChunkSampler(10, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    # a real run: ceil(N / chunk) stage-1 steps per epoch, the remainder kept
    res_dir = tmp_path / "run"
    run_train(
        CLIP + ["model=clipreid", "model.stage1.batch_size=7", "data.val_split.identities=0"] + stages(1, 1),
        res_dir,
        reid_data_dir,
    )
    ckpt = torch.load(res_dir / "checkpoints" / "stage1.ckpt", map_location="cpu", weights_only=False)
    steps = max(int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values())
    assert steps == math.ceil(32 / 7)  # tiny Market: 8 identities x 4 images


@pytest.mark.slow
def test_validation_is_skipped_while_the_image_encoder_is_frozen(reid_data_dir, tmp_path):
    run_train(CLIP + ["model=clipreid"] + stages(2, 1), tmp_path, reid_data_dir)
    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    val_epochs = sorted({int(r["epoch"]) for r in rows if r.get("val/mAP")})
    assert val_epochs == [2]


@pytest.mark.slow
def test_fast_dev_runs_take_each_stage_step_and_normalise_the_bank(reid_data_dir, tmp_path, monkeypatch):
    """A fast dev run checks stage 1's real step; with model.stage1.epochs=0 it checks stage 2's."""
    from ppreid.models.pdm import PDMModel

    seen = {}
    original = PDMModel._step

    def spy(self, stage, terms):
        seen[stage] = set(terms)
        if stage == 2:
            seen["bank_norms"] = self.text_bank.norm(dim=1)
        return original(self, stage, terms)

    monkeypatch.setattr(PDMModel, "_step", spy)
    fdr = CLIP + ["model=pdm", "debug=fdr", "model.stage2_loss.normalize=true"]
    run_train(fdr, tmp_path / "stage1", reid_data_dir)
    run_train(fdr + ["model.stage1.epochs=0"], tmp_path / "stage2", reid_data_dir)
    assert {"identity", "content_invariance"} <= seen[1] and {"ce_ls", "i2t_ce", "style_mixed"} <= seen[2]
    norms = seen["bank_norms"]
    assert torch.allclose(norms[norms > 0], torch.ones_like(norms[norms > 0]), atol=1e-5)


def test_content_invariance_is_zero_for_identical_inputs_in_training_mode():
    from ppreid.nn.inversion import TextualInversion

    torch.manual_seed(0)
    inv = TextualInversion(16, 8, num_words=2, hidden_dim=32, dropout=0.5, word_norm=1.5).train()
    x = torch.randn(6, 16)
    a, b = inv.forward_paired(x, x.clone())
    assert torch.equal(a, b)
    assert (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).abs().max() < 1e-6
    assert torch.allclose(a.norm(dim=-1), torch.full((6, 2), 1.5), atol=1e-5)
    inv.eval()
    a, b = inv.forward_paired(x, torch.randn(6, 16))
    assert torch.allclose(a, inv(x), atol=1e-6)  # eval: no dropout, the plain forward


def test_restyled_views_only_when_a_term_uses_them(tmp_path):
    from hydra.utils import instantiate

    on = instantiate(compose_train(CLIP + ["model=pdm"], tmp_path / "a").model)
    off = instantiate(
        compose_train(
            CLIP + ["model=pdm", "model.stage1_loss.terms.content_invariance.enabled=false"], tmp_path / "b"
        ).model
    )
    assert on.cache_restyled and not off.cache_restyled
    # the pseudo-word norm is part of the state (a checkpoint carries the value training used)
    assert "inversion_content.word_norm" in on.state_dict() and float(on.inversion_content.word_norm) > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=clipreid", "+model.stage2_loss.i2t_wieght=1"], "model.stage2_loss: unknown key(s) i2t_wieght"),
        (["model=pdm", "+model.stage2_loss.terms.i2t.wieght=1"], "model.stage2_loss.terms.i2t: unknown key(s) wieght"),
        (["model=pdm", "model.stage2_loss.terms.style_mixed.input=fresh"], "choose cached or current"),
        (["model=clipreid", "+model.stage1.lr=1"], "model.stage1: unknown key(s) lr"),
        (["model=clipreid", "model.test_feature=both"], "model.test_feature='both'"),
    ],
)
def test_misspelt_keys_are_refused(overrides, message, tmp_path):
    _refused(lambda: _build(CLIP + overrides, tmp_path), message)


def _build(overrides, tmp_path):
    from hydra.utils import instantiate

    return instantiate(compose_train(overrides, tmp_path).model)


def _refused(fn, message: str) -> None:
    """``fn`` stops with a ConfigValueError (possibly wrapped by Hydra) whose text holds ``message``."""
    from ppreid.utils.errors import find_input_error

    with pytest.raises(Exception) as err:
        fn()
    found = find_input_error(err.value)
    assert isinstance(found, ConfigValueError) and message in str(found), err.value


def _clip_tiny_weights(tmp_path, visual_only: bool):
    from ppreid.nn.backbones.clip_visual import OpenCLIPVisual

    torch.manual_seed(1)
    m = OpenCLIPVisual("clip-tiny", image_size=(32, 16))
    state = {f"visual.{k}": v for k, v in m.visual.state_dict().items()}
    if not visual_only:
        state.update(m.text_tower().state_dict())
    path = tmp_path / ("visual.pt" if visual_only else "clip.pt")
    torch.save(state, path)
    return path


def test_a_weights_file_without_the_text_tower_is_refused(tmp_path):
    path = _clip_tiny_weights(tmp_path, visual_only=True)
    _refused(
        lambda: _build(CLIP + ["model=clipreid", f"backbone.pretrained={path}"], tmp_path / "x"),
        "holds image-tower weights only",
    )


def test_evaluating_a_checkpoint_never_reloads_the_pretrained_weights(reid_data_dir, tmp_path):
    path = _clip_tiny_weights(tmp_path, visual_only=False)
    trained = run_train(
        CLIP + ["model=clipreid", f"backbone.pretrained={path}"] + stages(1, 1), tmp_path / "run", reid_data_dir
    )
    path.unlink()  # the weights file is gone: the checkpoint alone must do
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    res = run_train(CLIP + ["train=false", f"ckpt_path={ckpt}"], tmp_path / "eval", reid_data_dir)
    assert res["test"] == trained["test"]
