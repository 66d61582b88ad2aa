"""model=privacy_gan: phases, lazy E / G / D updates read from the optimizer states, resume, NaN, DDP."""

from __future__ import annotations

import json
import logging
import math
import re

import pytest
import torch
from conftest import TINY, compose_train, run_train

from ppreid.utils.errors import ConfigValueError, find_input_error

# A tiny reversal module and a short schedule: epoch 0 E alone, epoch 1 R alone, epoch 2+ joint.
PGAN = TINY + [
    "data=market1501",
    "model=privacy_gan",
    "model.phases.reversal_from=1",
    "model.phases.joint_from=2",
    "model.generator.base_channels=32",
    "model.generator.min_channels=8",
    "model.discriminator.base_channels=8",
    "model.discriminator.max_channels=32",
    "model.pool.decoder.base_channels=16",
    "model.pool.decoder.min_channels=8",
    "callbacks.fresh_probe.steps=3",
    "callbacks.fresh_probe.decoder.base_channels=16",
    "callbacks.fresh_probe.decoder.min_channels=8",
    "model.adversary.steps_per_batch=1",
    "model.adversary.pretrain_steps=0",
]
E_PREFIXES = ("backbone.", "neck.")
R_PREFIXES = ("defence.generator.", "defence.discriminator.")


def _ckpt(out):
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _optimizer_steps(ckpt) -> list:
    """Steps each optimizer (E, G, D) took, from its Adam state (0 for one that never stepped)."""
    steps = []
    for state in ckpt["optimizer_states"]:
        counts = {int(s["step"]) for s in state["state"].values()}
        assert len(counts) <= 1, counts
        steps.append(counts.pop() if counts else 0)
    return steps


def _batches_per_epoch(overrides, tmp_path, data_dir, world_size: int = 1) -> int:
    from hydra.utils import instantiate

    from ppreid.data.samplers import RandomIdentitySampler

    dm = instantiate(compose_train(overrides, tmp_path / "cfg", data_dir).data, _convert_="all")
    dm.setup_sources()
    sampler = RandomIdentitySampler(
        [r.pid for r in dm.train_records], dm.batch_size, dm.num_instances, num_replicas=world_size, rank=0
    )
    return len(sampler) // dm.batch_size


@pytest.mark.slow
def test_step_counts_of_e_g_d_follow_lazy_updates(reid_data_dir, tmp_path, monkeypatch):
    from ppreid.callbacks import loss_curves

    drawn = []
    monkeypatch.setattr(loss_curves, "plot_loss_curves", lambda **spec: drawn.append(spec))
    over = PGAN + ["trainer.max_epochs=3", "model.d_every=4", "model.r1_every=2", "model.g_every=1"]
    res = run_train(over, tmp_path / "run", reid_data_dir)
    # loss_curves.png: a panel per module, every module's terms, the three phases shaded
    (spec,) = drawn
    panels = spec["panels"]
    assert list(panels)[:3] == ["extractor losses", "generator losses", "discriminator losses"]
    assert {"loss", "loss_ce_ls", "loss_triplet", "loss_privacy"} <= set(panels["extractor losses"])
    assert set(panels["generator losses"]) == {"loss_g_pixel", "loss_g_ssim", "loss_g_adv"}
    assert {"loss_d", "r1"} <= set(panels["discriminator losses"])
    assert [e for e, _ in panels["generator losses"]["loss_g_pixel"]] == [1, 2]  # the reversal and joint epochs
    assert spec["phases"] == [(0, 1, "extractor alone"), (1, 2, "adversaries alone"), (2, 3, "joint")]
    assert not spec["notes"]
    n = _batches_per_epoch(over, tmp_path, reid_data_dir)
    ckpt = _ckpt(tmp_path / "run")
    e, g, d = _optimizer_steps(ckpt)
    r_batches = 2 * n  # the reversal epoch and the joint epoch
    assert (e, g, d) == (2 * n, r_batches, math.ceil(r_batches / 4))  # E: E-alone + joint epochs
    state = ckpt["privacy_gan"]
    assert state["phase"] == "joint" and state["boundaries"] == {"reversal_from": 1, "joint_from": 2}
    assert state["counters"] == {
        "e_steps": e,
        "g_steps": g,
        "d_steps": d,
        "r1_steps": math.ceil(d / 2),
        "r_batches": r_batches,
        "pretrain_steps": 0,
    }
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["model"] == "privacy_gan" and set(written["test"]["market1501"]) >= {"R1", "mAP"}
    assert written["test"] == res["test"]


@pytest.mark.slow
def test_g_every_and_no_discriminator(reid_data_dir, tmp_path, monkeypatch):
    """g_every=2 halves G's steps; d_weight=0 (the conventional defence) never steps D (its loss-curve
    panel says so)."""
    from ppreid.callbacks import loss_curves

    drawn = []
    monkeypatch.setattr(loss_curves, "plot_loss_curves", lambda **spec: drawn.append(spec))
    over = PGAN + ["trainer.max_epochs=3", "model.g_every=2", "model.d_weight=0", "model.privacy_loss=neg_pixel"]
    run_train(over, tmp_path / "run", reid_data_dir)
    assert drawn[0]["notes"] == {"discriminator losses": "discriminator: not trained (took no step in this run)"}
    n = _batches_per_epoch(over, tmp_path, reid_data_dir)
    assert _optimizer_steps(_ckpt(tmp_path / "run")) == [2 * n, math.ceil(2 * n / 2), 0]


@pytest.mark.slow
def test_each_phase_leaves_the_other_modules_unchanged(reid_data_dir, tmp_path, monkeypatch):
    from ppreid.models.privacy_gan import PrivacyGANModel

    snapshots = {}

    def snap(model, key):
        snapshots[key] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    start, end = PrivacyGANModel.on_fit_start, PrivacyGANModel.on_train_epoch_end
    monkeypatch.setattr(PrivacyGANModel, "on_fit_start", lambda self: (start(self), snap(self, "start")))
    monkeypatch.setattr(PrivacyGANModel, "on_train_epoch_end", lambda self: (snap(self, self.current_epoch), end(self)))
    run_train(PGAN + ["trainer.max_epochs=3"], tmp_path, reid_data_dir)

    def same(a, b, prefixes):
        keys = [k for k in snapshots[a] if k.startswith(prefixes)]
        assert keys
        return all(torch.equal(snapshots[a][k], snapshots[b][k]) for k in keys)

    assert same("start", 0, R_PREFIXES)  # E alone: G and D untouched
    assert not same("start", 0, E_PREFIXES)
    assert same(0, 1, E_PREFIXES)  # R alone: E's weights and BN statistics frozen
    assert not same(0, 1, R_PREFIXES)
    assert not same(1, 2, E_PREFIXES) and not same(1, 2, R_PREFIXES)  # joint: both move


@pytest.mark.slow
def test_resume_in_the_joint_phase_continues_the_counters(reid_data_dir, tmp_path, monkeypatch):
    from ppreid.models.privacy_gan import PrivacyGANModel

    over = PGAN + ["model.d_every=4", "model.r1_every=2", "trainer.max_epochs=4"]
    run_train(over, tmp_path / "straight", reid_data_dir)
    end = PrivacyGANModel.on_train_epoch_end

    def stop_after_epoch_2(self):  # the same run, interrupted after its first joint epoch
        end(self)
        self.trainer.should_stop = self.current_epoch == 2

    with monkeypatch.context() as patch:
        patch.setattr(PrivacyGANModel, "on_train_epoch_end", stop_after_epoch_2)
        run_train(over, tmp_path / "first", reid_data_dir)
    first = _ckpt(tmp_path / "first")
    assert first["privacy_gan"]["phase"] == "joint" and first["epoch"] == 2
    run_train(
        over + [f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}"], tmp_path / "resumed", reid_data_dir
    )
    straight, resumed = _ckpt(tmp_path / "straight"), _ckpt(tmp_path / "resumed")
    assert resumed["privacy_gan"] == straight["privacy_gan"]
    assert _optimizer_steps(resumed) == _optimizer_steps(straight)
    assert _optimizer_steps(resumed)[0] > _optimizer_steps(first)[0]
    # the same seed gives the same weights and BN statistics, resumed or not (a fresh process starts every
    # module in train mode: modes come from the phase, augmentations from an RNG seeded per epoch)
    differ = [k for k, v in straight["state_dict"].items() if not torch.equal(v, resumed["state_dict"][k])]
    assert not differ, differ[:5]


@pytest.mark.slow
def test_modes_and_bn_statistics_follow_the_phases(reid_data_dir, tmp_path, monkeypatch):
    """E trains (train mode, BN statistics move) alone and in the joint phase; it is frozen (eval mode,
    statistics fixed) while the reversal module trains alone; validation in between changes nothing."""
    from ppreid.models.privacy_gan import PrivacyGANModel

    seen = {}
    step, end = PrivacyGANModel.training_step, PrivacyGANModel.on_train_epoch_end

    def record(self, batch, batch_idx):
        entry = seen.setdefault(self.current_epoch, {"bn_start": self.neck.bn.running_mean.clone()})
        entry.setdefault("e_modes", set()).update(m.training for m in self.extractor_modules())
        entry.setdefault("r_modes", set()).update(m.training for m in self.defence.modules())
        return step(self, batch, batch_idx)

    def close(self):
        seen[self.current_epoch]["bn_end"] = self.neck.bn.running_mean.clone()
        end(self)

    monkeypatch.setattr(PrivacyGANModel, "training_step", record)
    monkeypatch.setattr(PrivacyGANModel, "on_train_epoch_end", close)
    run_train(PGAN + ["trainer.max_epochs=4"], tmp_path, reid_data_dir)  # epochs: E, R, joint, joint
    assert [seen[e]["e_modes"] for e in range(4)] == [{True}, {False}, {True}, {True}]
    assert [seen[e]["r_modes"] for e in range(4)] == [{False}, {True}, {True}, {True}]
    moved = [not torch.equal(seen[e]["bn_start"], seen[e]["bn_end"]) for e in range(4)]
    assert moved == [True, False, True, True]


@pytest.mark.slow
@pytest.mark.parametrize(
    "defence, extra, optimizers",
    [
        ("pool", ["model.pool.size=2", "model.pool.warmup_batches=1"], 2),
        ("dependence", ["model.dependence.measure=hsic"], 1),
        ("ridge", ["model.privacy_terms={image: 0.0, swap: 1.0, background: 1.0}"], 1),
        ("none", ["model.privacy_weight=0", "model.bottleneck={beta: 0.01, stored: sample}"], 1),
    ],
)
def test_each_defence_trains_and_writes_its_pictures_and_probe(defence, extra, optimizers, reid_data_dir, tmp_path):
    out = tmp_path / "run"
    over = PGAN + [
        "trainer.max_epochs=3",
        f"model.defence={defence}",
        "callbacks.fresh_probe.every_n_epochs=2",
        "data.val_split.identities=4",
        *extra,
    ]
    res = run_train(over, out, reid_data_dir)
    ckpt = _ckpt(out)
    assert len(ckpt["optimizer_states"]) == optimizers
    scalars = res["scalars"]
    assert {"val/probe_ssim", "val/probe_ssim_null", "val/probe_ssim_gain", "val/probe_mean_image_ssim"} <= set(scalars)
    assert (out / "loss_curves.png").is_file()
    assert (out / "own_reconstructions.png").is_file() == (defence == "pool")
    n = _batches_per_epoch(over, tmp_path, reid_data_dir)
    if defence == "pool":  # E alone, the pool alone, joint (one restart at the joint epoch)
        assert ckpt["privacy_gan"]["counters"]["r_batches"] == 2 * n
        assert ckpt["state_dict"]["defence.born"].tolist() == [2, 0]
        assert ckpt["state_dict"]["defence.steps"].tolist() == [n, 2 * n]
        assert "train/loss_privacy" in scalars
    elif defence == "dependence":  # no adversary: no reversal phase, the penalty from epoch 1 on
        assert ckpt["privacy_gan"]["boundaries"] == {"reversal_from": 1, "joint_from": 1}
        assert ckpt["privacy_gan"]["counters"]["e_steps"] == 3 * n and 0.0 <= scalars["train/loss_privacy"] <= 1.0
    elif defence == "ridge":  # nothing to train: no reversal phase, the swap and background terms from epoch 1 on
        assert ckpt["privacy_gan"]["boundaries"] == {"reversal_from": 1, "joint_from": 1}
        assert ckpt["privacy_gan"]["counters"]["e_steps"] == 3 * n
        assert {"train/privacy_swap", "train/privacy_background"} <= set(scalars)
        assert not any(k.startswith("defence.") for k in ckpt["state_dict"])
    else:
        assert "train/kl" in scalars and "defence.generator.fc.weight" not in ckpt["state_dict"]
        assert "bottleneck.mean_head.weight" in ckpt["state_dict"]
    assert res["test"]["market1501"]["mAP"] >= 0.0


def test_the_bottleneck_stores_a_seeded_sample_at_evaluation(reid_data_dir, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train(PGAN + ["model.defence=none", "model.bottleneck={beta: 0.01}"], tmp_path)
    model = instantiate(cfg.model).eval()
    images = torch.randn(4, 3, 32, 16)
    feats = model.extract_features(images)
    assert torch.equal(feats[2:], model.extract_features(images[2:]))
    mean = model.bottleneck(model.neck.bn(model.pooled_features(images)))[0]
    assert not torch.allclose(feats, mean)


def test_nan_in_a_gan_loss_stops_the_run_and_keeps_last_ckpt(reid_data_dir, tmp_path, monkeypatch):
    from ppreid.models.privacy_gan import PrivacyGANModel
    from ppreid.nn.discriminator import FeatureConditionedDiscriminator
    from ppreid.utils.errors import TrainingDivergedError, find_reported_error

    state = {"nan": False}
    forward, epoch_start = FeatureConditionedDiscriminator.forward, PrivacyGANModel.on_train_epoch_start
    last = tmp_path / "checkpoints" / "last.ckpt"

    def poisoned(self, images, feat):
        out = forward(self, images, feat)
        return out * float("nan") if state["nan"] else out

    def start(self):
        epoch_start(self)
        if self.current_epoch == 1:  # the joint phase: last.ckpt of epoch 0 exists
            state["bytes"], state["nan"] = last.read_bytes(), True

    monkeypatch.setattr(FeatureConditionedDiscriminator, "forward", poisoned)
    monkeypatch.setattr(PrivacyGANModel, "on_train_epoch_start", start)
    with pytest.raises(TrainingDivergedError, match=r"loss d is nan at global step \d+ \(epoch 1") as err:
        run_train(
            PGAN
            + ["trainer.max_epochs=2", "model.phases.reversal_from=0", "model.phases.joint_from=1", "model.d_every=1"],
            tmp_path,
            reid_data_dir,
        )
    assert find_input_error(err.value) is None  # not an input error ...
    assert find_reported_error(err.value) is err.value  # ... but train.py prints it as one line
    assert last.read_bytes() == state["bytes"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_every=0", r"model.d_every=0: give an int >= 1"),
        ("model.r1_every=-2", r"model.r1_every=-2"),
        ("model.privacy_weight=-0.5", r"model.privacy_weight=-0.5: must be >= 0"),
        ("model.d_weight=-1", r"model.d_weight=-1.0: must be >= 0"),
        ("model.privacy_loss=blur", r"privacy_loss='blur' is unknown; use one of neg_pixel, ssim, ssim_gain, realism"),
        ("model.phases.joint_from=0", r"joint_from \(epoch 0\) comes before reversal_from"),
    ],
)
def test_bad_values_are_clear_messages(override, message, reid_data_dir, tmp_path):
    with pytest.raises(Exception) as err:
        run_train(PGAN + ["trainer.max_epochs=2", "debug=default", override], tmp_path, reid_data_dir)
    found = find_input_error(err.value)
    assert isinstance(found, ConfigValueError), err.value
    assert re.search(message, str(found)), str(found)


def test_realism_needs_the_discriminator(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train(PGAN + ["model.privacy_loss=realism", "model.d_weight=0"], tmp_path)
    with pytest.raises(Exception) as err:
        instantiate(cfg.model)
    assert "privacy_loss=realism needs the discriminator" in str(find_input_error(err.value))


@pytest.mark.parametrize(
    "privacy_loss",
    [pytest.param("neg_pixel", marks=pytest.mark.slow), pytest.param("ssim", marks=pytest.mark.slow), "realism"],
)
def test_fast_dev_run_runs_every_step_of_each_privacy_loss(privacy_loss, reid_data_dir, tmp_path, caplog):
    """The joint phase from epoch 0, so the fast dev run's one batch takes the joint phase's real step."""
    joint = [o for o in PGAN if not o.startswith("model.phases.")] + [
        "model.phases.reversal_from=0",
        "model.phases.joint_from=0",
    ]
    with caplog.at_level(logging.INFO, logger="train"):
        res = run_train(joint + ["debug=fdr", f"model.privacy_loss={privacy_loss}"], tmp_path, reid_data_dir)
    assert not (tmp_path / "checkpoints").exists()  # and the run says so, with the way to get one
    assert caplog.messages[-1] == (
        "debug=fdr writes no checkpoint; run without debug=fdr (or with trainer.max_epochs=1) "
        "to get one to evaluate or audit"
    )
    scalars = res["scalars"]
    assert {"train/loss_privacy", "train/loss_d", "train/r1", "train/loss_g_pixel", "train/loss_g_adv"} <= set(scalars)
    assert res["test"]["market1501"]["mAP"] >= 0.0


@pytest.mark.slow
def test_ddp_sim_keeps_every_rank_in_step(reid_data_dir, tmp_path):
    over = PGAN + [
        "trainer=ddp_sim",
        "trainer.max_epochs=2",
        "model.phases.reversal_from=0",
        "model.phases.joint_from=1",
        "model.d_every=2",
        "data.val_split.identities=0",
        "model.adversary.pretrain_steps=2",  # each rank on its shard, then rank 0's adversaries for all
    ]
    res = run_train(over, tmp_path / "run", reid_data_dir)
    n = _batches_per_epoch(over, tmp_path, reid_data_dir, world_size=2)
    assert _optimizer_steps(_ckpt(tmp_path / "run")) == [n, 2 * n + 2, math.ceil((2 * n + 2) / 2)]
    assert 0.0 <= res["test"]["market1501"]["mAP"] <= 1.0


@pytest.mark.parametrize(
    "row",
    [
        "sandbox_gan",
        "sandbox_pool",
        "sandbox_dependence",
        "sandbox_bottleneck",
        "market1501_gan",
        "market1501_pool",
        "market1501_dependence",
        "market1501_bottleneck",
    ],
)
def test_every_privacy_row_builds_its_defence(row, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train([f"experiment=privacy_{row}", "backbone=tiny_cnn", "backbone.pretrained=null"], tmp_path)
    model = instantiate(cfg.model)
    kind = row.split("_", 1)[1]
    assert model.defence_name == {"bottleneck": "none"}.get(kind, kind)
    assert (model.bottleneck is not None) == (kind == "bottleneck")
    assert cfg.callbacks.fresh_probe.every_n_epochs >= 1  # model selection reads the fresh probe


def test_checkpoints_from_before_the_defence_modules_still_load(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train(PGAN, tmp_path)
    model = instantiate(cfg.model)
    old = {
        k.replace("defence.", "", 1): v
        for k, v in model.state_dict().items()
        if k not in ("mean_image", "images_seen") and ".standardizer." not in k
    }  # generator.* / discriminator.* at the top level, no feature standardizer
    fresh = instantiate(cfg.model)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.defence.generator.fc.weight, model.defence.generator.fc.weight)


# ----------------------------------------------------------------------------- positive control: the leak
SANDBOX_TINY = ["backbone=tiny_cnn", "backbone.pretrained=null"]


def _scenes(n: int, seed: int) -> torch.Tensor:
    """(n,3,128,64) normalized inputs: a random colour per background cell (left / right bands, 4 rows) and a
    random 'person' in the centre."""
    gen = torch.Generator().manual_seed(seed)
    cells = torch.rand(n, 3, 4, 2, generator=gen)
    images = torch.nn.functional.interpolate(cells, size=(128, 64), mode="nearest")
    images[..., 16:48] = torch.rand(n, 3, 1, 1, generator=gen) * 0.5 + torch.rand(n, 3, 128, 32, generator=gen) * 0.5
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    return (images - mean) / std


def _linear_r2(x_train, y_train, x_test, y_test) -> float:
    """R^2 on held-out rows of a least-squares fit y ~ [x, 1]."""
    ones = torch.ones(len(x_train), 1)
    w = torch.linalg.lstsq(torch.cat([x_train, ones], 1).double(), y_train.double()).solution
    pred = torch.cat([x_test, torch.ones(len(x_test), 1)], 1).double() @ w
    return float(1 - ((pred - y_test) ** 2).sum() / ((y_test - y_test.mean(0)) ** 2).sum())


def test_the_leaky_feature_linearly_predicts_the_background_thumbnail(tmp_path):
    """model.leak=background: a linear read-out of the stored feature gives the background thumbnail back
    (held-out images); the same extractor without the branch does much worse."""
    from hydra.utils import instantiate

    r2 = {}
    for leak in ("background", "none"):
        torch.manual_seed(0)
        cfg = compose_train(["experiment=privacy_sandbox_unprotected", f"model.leak={leak}", *SANDBOX_TINY], tmp_path)
        model = instantiate(cfg.model).eval()
        images = _scenes(500, seed=1)
        with torch.no_grad():
            feats = model.extract_features(images)
        thumbs = model.leak.thumbnail(images) if model.leak is not None else r2["thumbs"]
        r2["thumbs"] = thumbs
        r2[leak] = _linear_r2(feats[:400], thumbs[:400], feats[400:], thumbs[400:])
    assert model.leak is None and feats.shape[1] == 256
    assert r2["background"] > 0.95, r2
    assert r2["background"] - r2["none"] > 0.2, r2


def test_the_reid_losses_never_train_the_leak_branch_the_privacy_loss_does(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train(["experiment=privacy_sandbox_gan", "model.leak=background", *SANDBOX_TINY], tmp_path)
    model = instantiate(cfg.model, num_classes=4).train()
    images, pids = _scenes(8, seed=2), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = model._forward_extractor(images)
    reid = torch.nn.functional.cross_entropy(out["logits"], pids) + out["metric"].pow(2).mean()
    reid.backward(retain_graph=True)
    assert model.leak.proj.weight.grad is None or model.leak.proj.weight.grad.abs().max() == 0
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.backbone.parameters())
    out["stored"].pow(2).sum().backward()
    assert model.leak.proj.weight.grad.abs().max() > 0


def test_every_row_faces_the_audits_decoder_and_learning_rates(tmp_path):
    """BatchNorm decoders, the audit's learning rates, several adversary steps per E step, L1 + SSIM, a
    pre-training length: the same for the GAN and the pool."""
    from pathlib import Path

    from omegaconf import OmegaConf

    attack = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "attack.yaml").model
    for row in ("unprotected", "conventional", "gan", "pool"):
        cfg = compose_train([f"experiment=privacy_sandbox_{row}", *SANDBOX_TINY], tmp_path)
        m = cfg.model
        assert m.generator.norm == m.pool.decoder.norm == attack.gan.decoder.norm == "batch"
        assert m.g_optimizer.lr == m.pool.optimizer.lr == attack.gan.lr == attack.l1.lr
        assert m.d_optimizer.lr == attack.gan.d_lr
        assert m.adversary.steps_per_batch > 1 and m.adversary.pretrain_steps > 0 and m.adversary.ssim_weight > 0
        assert (m.pool.decoder.base_channels, m.pool.decoder.min_channels) == (
            m.generator.base_channels,
            m.generator.min_channels,
        )


@pytest.mark.slow
def test_adversary_steps_per_e_step_and_pretraining_are_counted(reid_data_dir, tmp_path):
    """Epoch 0 E alone, epoch 1 joint: 5 pre-training steps at the joint phase's start, then 3 adversary
    steps per E step (G steps every call, D every 4th call)."""
    over = [o for o in PGAN if not o.startswith(("model.phases.", "model.adversary."))] + [
        "trainer.max_epochs=2",
        "model.phases.reversal_from=1",
        "model.phases.joint_from=1",
        "model.adversary.steps_per_batch=3",
        "model.adversary.pretrain_steps=5",
        "model.d_every=4",
        "model.leak=background",
    ]
    run_train(over, tmp_path / "run", reid_data_dir)
    n = _batches_per_epoch(over, tmp_path, reid_data_dir)
    ckpt = _ckpt(tmp_path / "run")
    counters = ckpt["privacy_gan"]["counters"]
    assert counters["e_steps"] == 2 * n and counters["pretrain_steps"] == 5
    assert counters["r_batches"] == counters["g_steps"] == 5 + 3 * n
    assert counters["d_steps"] == math.ceil((5 + 3 * n) / 4)
    steps = [{int(s["step"]) for s in state["state"].values()} for state in ckpt["optimizer_states"]]
    # E's weights step every E step, the leak branch only in the joint ones (only the privacy loss moves it)
    assert steps == [{2 * n, n}, {5 + 3 * n}, {math.ceil((5 + 3 * n) / 4)}]


def test_person_masks_come_from_the_training_records_mask_files(tmp_path):
    """The defences' background term reads the procedural masks of the batch's records (area-averaged to the
    reconstruction size, 1 = person); a record without a mask (a real dataset) gives None: the border proxy."""
    from types import SimpleNamespace

    import numpy as np
    from hydra.utils import instantiate
    from PIL import Image

    cfg = compose_train(["experiment=privacy_sandbox_gan", *SANDBOX_TINY], tmp_path)
    model = instantiate(cfg.model)
    h, w = 16, 8
    person = np.zeros((h, w), np.uint8)
    person[4:12, 2:6] = 255  # a 8 x 4 person box in a 16 x 8 image
    Image.fromarray(person).save(tmp_path / "a.mask.png")
    Image.fromarray(np.full((h, w), 255, np.uint8)).save(tmp_path / "b.mask.png")
    model._clean_set = SimpleNamespace(
        records=[SimpleNamespace(mask=str(tmp_path / "a.mask.png")), SimpleNamespace(mask=str(tmp_path / "b.mask.png"))]
    )
    batch = {"image": torch.zeros(2, 3, h, w), "index": torch.tensor([1, 0])}
    masks = model._person_masks(batch)
    assert masks.shape == (2, 1, *model.image_size)
    assert torch.allclose(masks[0], torch.ones_like(masks[0]))  # b: all person
    assert abs(masks[1].mean().item() - 32 / 128) < 1e-6  # a: 32 of 128 pixels are the person
    model._mask_cache.clear()
    model._clean_set.records.append(SimpleNamespace(mask=None))
    assert model._person_masks({"image": torch.zeros(2, 3, h, w), "index": torch.tensor([0, 2])}) is None
