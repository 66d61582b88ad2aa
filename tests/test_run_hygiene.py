"""Honest model selection and trustworthy runs: validation split, schedules, loss keys, identity,
evaluation extras, messages, run folders."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, compose_train, run_script, run_train, train_cli
from omegaconf import OmegaConf

from ppreid.data.datasets.base import ReIDRecord
from ppreid.data.val_split import hold_out_identities
from ppreid.training.schedulers import timm_cosine, warmup_multistep
from ppreid.utils.errors import ConfigValueError


# ----------------------------------------------------------------------------- validation split
def _records(num_ids=10, per_id=4, cams=2):
    return [ReIDRecord(f"/x/{p:03d}_{k}.jpg", p, k % cams) for p in range(num_ids) for k in range(per_id)]


def test_val_split_holds_out_whole_identities_and_relabels():
    recs = _records(num_ids=10)
    split = hold_out_identities(recs, 0.2, seed=0)
    held = {Path(r.path).name[:3] for r in split.query}
    assert len(held) == 2 and len(split.query) == 2 and len(split.gallery) == 6
    assert {Path(r.path).name[:3] for r in split.gallery} == held
    assert not held & {Path(r.path).name[:3] for r in split.train}
    assert sorted({r.pid for r in split.train}) == list(range(8))  # relabelled 0..N-1
    assert hold_out_identities(recs, 0.2, seed=0).query == split.query  # seeded
    assert len(hold_out_identities(recs, 3, seed=0).query) == 3  # a count
    assert hold_out_identities(recs, 0, seed=0).query == []


def test_val_split_needs_identities_seen_by_two_cameras():
    recs = _records(num_ids=4, cams=1) + [ReIDRecord("/x/100_0.jpg", 100, 0), ReIDRecord("/x/100_1.jpg", 100, 1)]
    split = hold_out_identities(recs, 1, seed=3)
    assert [r.pid for r in split.query] == [100]
    with pytest.raises(ConfigValueError, match="data.val_split.identities"):
        hold_out_identities(recs, 2, seed=0)
    with pytest.raises(ConfigValueError, match=r"\[0, 1\)"):
        hold_out_identities(recs, 1.5, seed=0)


@pytest.mark.slow
def test_no_target_metric_before_test(market_two_epochs):
    """Validation runs on held-out source identities; target metrics appear only in the test stage."""
    res, run_dir = market_two_epochs  # TINY validates every epoch (trainer.check_val_every_n_epoch=1)
    rows = list(csv.DictReader(open(next((run_dir / "csv").rglob("metrics.csv")))))
    val_rows = [r for r in rows if r.get("val/mAP")]
    assert len(val_rows) == 2  # one validation per epoch
    for row in rows:
        filled = {k for k, v in row.items() if v not in ("", None)}
        if any(k.startswith("test/") for k in filled):
            assert not any(k.startswith(("val/", "train/")) for k in filled)
    train_rows = [i for i, r in enumerate(rows) if r.get("train/loss") or r.get("val/mAP")]
    test_rows = [i for i, r in enumerate(rows) if any(k.startswith("test/") and v for k, v in r.items())]
    assert test_rows and min(test_rows) > max(train_rows)
    assert not any("market1501" in k for r in rows[: min(test_rows)] for k, v in r.items() if v)
    assert set(res["val"]) == {"R1", "R5", "R10", "mAP", "mINP"}


def test_search_optimizes_a_validation_metric():
    cfg = OmegaConf.load(ROOT / "conf" / "hparams_search" / "bot_optuna.yaml")
    assert cfg.optimized_metric.startswith("val/")


@pytest.mark.slow
def test_last_epoch_is_validated_even_off_the_validation_cycle(reid_data_dir, tmp_path):
    res = run_train(
        TINY + ["data=market1501", "trainer.max_epochs=1", "trainer.check_val_every_n_epoch=8"], tmp_path, reid_data_dir
    )
    assert "mAP" in res["val"] and res["scalars"]["val/mAP"] == pytest.approx(res["val"]["mAP"])


# ----------------------------------------------------------------------------- schedules
def _lrs(scheduler, epochs):
    out = []
    for _ in range(epochs):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_schedule_fractions_scale_with_the_run():
    long = _lrs(warmup_multistep(_opt(), warmup_epochs=0.25, milestones=[0.5], gamma=0.1, max_epochs=8), 8)
    short = _lrs(warmup_multistep(_opt(), warmup_epochs=0.25, milestones=[0.5], gamma=0.1, max_epochs=4), 4)
    assert long[0] == pytest.approx(0.01) and long[2] == 1.0 and long[4] == pytest.approx(0.1)
    assert short[0] == pytest.approx(0.01) and short[1] == 1.0 and short[2] == pytest.approx(0.1)
    # a 2-epoch run of the default BoT schedule is not all warm-up
    default = _lrs(warmup_multistep(_opt(), warmup_epochs=0.0625, milestones=[0.9], max_epochs=2), 2)
    assert default == [1.0, 1.0]


def test_absolute_epochs_outside_the_run_are_refused():
    with pytest.raises(ConfigValueError, match=r"warmup_epochs=10 does not fall inside the run.*max_epochs=2"):
        warmup_multistep(_opt(), warmup_epochs=10, milestones=[40, 70], max_epochs=2)
    with pytest.raises(ConfigValueError, match=r"milestones=40"):
        warmup_multistep(_opt(), warmup_epochs=1, milestones=[40], max_epochs=30)
    with pytest.raises(ConfigValueError, match="fraction"):
        warmup_multistep(_opt(), warmup_epochs=2.5, milestones=[0.5], max_epochs=30)
    with pytest.raises(ConfigValueError, match="first milestone"):
        warmup_multistep(_opt(), warmup_epochs=0.6, milestones=[0.5], max_epochs=10)
    # 0.2 of 10 epochs = 2 warm-up epochs: half-way through at epoch 1
    assert timm_cosine(_opt(), max_epochs=10, warmup_epochs=0.2, warmup_lr_init=0.0, epoch_offset=0).lr_lambdas[0](
        1
    ) == pytest.approx(0.5)


def test_run_refuses_a_schedule_outside_the_run(reid_data_dir, tmp_path):
    with pytest.raises(ConfigValueError, match="does not fall inside the run"):
        run_train(
            TINY + ["data=market1501", "trainer.max_epochs=2", "model.scheduler.warmup_epochs=5"],
            tmp_path,
            reid_data_dir,
        )


# ----------------------------------------------------------------------------- loss terms
def test_every_loss_config_has_its_own_key():
    for path in sorted((ROOT / "conf" / "loss").glob("*.yaml")):
        assert list(OmegaConf.load(path).keys()) == [path.stem], path


def test_three_loss_terms_all_active(tmp_path, caplog):
    import logging

    from hydra.utils import instantiate

    cfg = compose_train(TINY + ["loss=[ce_ls,triplet,triplet_soft]"], tmp_path)
    with caplog.at_level(logging.INFO, logger="ppreid.losses.terms"):
        model = instantiate(cfg.model)
    assert list(model.loss_fns) == ["ce_ls", "triplet", "triplet_soft"]
    assert model.loss_fns["triplet"].margin == 0.3 and model.loss_fns["triplet_soft"].margin is None
    assert "1 x ce_ls" in caplog.text and "1 x triplet_soft" in caplog.text


# ----------------------------------------------------------------------------- identity
def test_config_hash_ignores_seed_and_paths_but_not_hyperparameters(tmp_path):
    from ppreid.utils.run_info import experiment_identity

    def identity(overrides, out):
        cfg = compose_train(TINY + overrides, tmp_path / out, data_dir=tmp_path / out / "data")
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved.pop("hydra")
        return experiment_identity(resolved, {"backbone": "tiny_cnn", "experiment": None})

    a, b = identity(["seed=1"], "a"), identity(["seed=2"], "b")
    c = identity(["seed=1", "model.optimizer.lr=0.001"], "c")
    assert a["config_hash"] == b["config_hash"] != c["config_hash"]
    assert a["loss"] == {"ce_ls": 1.0, "triplet": 1.0} and a["epochs"] == 1 and a["data"] == "genepers_mini"


def test_results_json_records_the_identity_and_debug_flags(reid_data_dir, tmp_path):
    run_train(TINY + ["data=market1501", "debug=fdr"], tmp_path, reid_data_dir)
    res = json.loads((tmp_path / "results.json").read_text())
    ident = res["identity"]
    assert ident["model"] == "bot" and ident["backbone"] == "tiny_cnn" and ident["targets"] == ["market1501"]
    assert ident["task_name"] == "debug" and len(ident["config_hash"]) == 16
    assert res["debug"] is True and res["partial"] is True
    resolved = (tmp_path / "config_resolved.yaml").read_text()
    assert "${" not in resolved and str(reid_data_dir) in resolved
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "wandb").exists()  # fdr writes neither


@pytest.mark.slow
def test_full_run_keeps_last_and_best_checkpoint(market_two_epochs):
    _, run_dir = market_two_epochs
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


# ----------------------------------------------------------------------------- evaluation extras
def test_flip_test_is_the_mean_of_image_and_mirror_features():
    from ppreid.models.reid_module import ReIDModule

    class LeftColumn(ReIDModule):
        def extract_features(self, images):
            return images[:, 0, 0, :]  # the first row of channel 0: (B, W)

    model = LeftColumn()
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)
    assert torch.equal(model.eval_features(images), images[:, 0, 0, :])
    model.configure_evaluation({"flip": True})
    expected = torch.tensor([[1.5, 1.5, 1.5, 1.5], [25.5, 25.5, 25.5, 25.5]])
    assert torch.equal(model.eval_features(images), expected)  # row [0,1,2,3] + [3,2,1,0] over 2


@pytest.mark.slow
def test_eval_extras_write_ranked_lists_and_features(reid_data_dir, tmp_path):
    import numpy as np

    res = run_train(
        TINY
        + [
            "data=market1501",
            "trainer.max_epochs=1",
            "eval.export_features=true",
            "eval.flip=true",
            "eval.rerank.enabled=true",
            "eval.ranked_list.num_queries=3",
        ],
        tmp_path,
        reid_data_dir,
    )
    assert (tmp_path / "ranked_market1501.png").is_file()
    d = np.load(tmp_path / "features_market1501.npz")
    q = sorted((reid_data_dir / "Market-1501-v15.09.15" / "query").glob("*.jpg"))
    assert d["query_features"].shape == (len(q), 32) and list(d["query_paths"]) == [str(p) for p in q]
    assert len(d["gallery_pids"]) == len(d["gallery_features"]) == len(d["gallery_paths"])
    # re-ranking was applied: the metrics equal evaluate_distmat on the re-ranked exported features
    from ppreid.metrics.reid import distance_matrix, evaluate_distmat
    from ppreid.metrics.rerank import k_reciprocal_rerank

    qf, gf = torch.from_numpy(d["query_features"]), torch.from_numpy(d["gallery_features"])
    dist = k_reciprocal_rerank(distance_matrix(qf, gf), distance_matrix(qf, qf), distance_matrix(gf, gf))
    ref = evaluate_distmat(dist, d["query_pids"], d["gallery_pids"], d["query_camids"], d["gallery_camids"])
    assert res["test"]["market1501"]["mAP"] == pytest.approx(ref["mAP"], abs=1e-6)


def test_feature_export_writes_the_evaluators_arrays_with_their_paths(tmp_path):
    """features_<target>.npz by hand: 2 queries and 3 gallery images of 2-d features, paths in order."""
    import numpy as np

    from ppreid.metrics.feature_export import write_feature_export

    features = {
        "qf": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        "gf": torch.tensor([[1.0, 1.0], [0.5, 0.0], [0.0, 2.0]]),
        "q_pids": [1, 2],
        "g_pids": [1, 2, 2],
        "q_camids": [0, 0],
        "g_camids": [1, 1, 2],
    }
    path = write_feature_export(tmp_path / "out" / "features_t.npz", features, ["q1.jpg", "q2.jpg"], ["g1", "g2", "g3"])
    d = np.load(path)
    assert d["query_features"].dtype == np.float32 and d["query_features"].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert d["gallery_features"].tolist() == [[1.0, 1.0], [0.5, 0.0], [0.0, 2.0]]
    assert d["gallery_pids"].dtype == np.int64 and d["gallery_pids"].tolist() == [1, 2, 2]
    assert d["gallery_camids"].tolist() == [1, 1, 2] and d["query_camids"].tolist() == [0, 0]
    assert list(d["query_paths"]) == ["q1.jpg", "q2.jpg"] and list(d["gallery_paths"]) == ["g1", "g2", "g3"]
    assert [p.name for p in path.parent.iterdir()] == ["features_t.npz"]  # written atomically, no temp left
    with pytest.raises(ValueError, match="number of paths and of features differ"):
        write_feature_export(tmp_path / "bad.npz", features, ["q1.jpg"], ["g1", "g2", "g3"])


# ----------------------------------------------------------------------------- messages
@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (["seed=abc"], "seed='abc' must be an integer"),
        (["model.backbone=resnet50"], "backbone=resnet50"),
        (["trainer=gpu"], "trainer=cpu"),
    ],
)
def test_bad_values_are_one_clear_line(args, expected, tmp_path):
    if "trainer=gpu" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = train_cli(*args, "debug=fdr", run_dir=tmp_path / "run")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and expected in last and "Traceback" not in proc.stderr, proc.stderr[-1500:]


@pytest.mark.slow
def test_wandb_without_key_says_offline(tmp_path):
    env = {"WANDB_MODE": "", "WANDB_API_KEY": "", "NETRC": str(tmp_path / "no_netrc"), "HOME": str(tmp_path)}
    proc = train_cli("logger=wandb", "trainer.max_epochs=1", run_dir=tmp_path / "run", env=env)
    assert proc.returncode == 1 and "WANDB_MODE=offline" in proc.stderr.strip().splitlines()[-1]


def test_offline_weight_download_names_the_local_file_way(monkeypatch):
    import urllib.error

    from ppreid.nn.backbones import resnet
    from ppreid.nn.backbones.resnet import ResNet50

    def offline():
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(resnet, "_imagenet_state", offline)
    with pytest.raises(ConfigValueError, match=r"tag 'imagenet'.*backbone.pretrained=/path/to/weights"):
        ResNet50(pretrained="imagenet")


def test_experiments_do_not_force_a_gpu():
    for path in (ROOT / "conf" / "experiment").glob("*.yaml"):
        text = path.read_text()
        assert "override /trainer: gpu" not in text and "accelerator: gpu" not in text, path


def test_help_lists_only_the_entry_points_own_groups():
    train = run_script("train.py", "--help").stdout
    synth = run_script("synth.py", "--help").stdout
    groups = lambda text: {line.split(":")[0] for line in text.split("== Config ==")[0].splitlines() if ": " in line}
    assert {"data", "backbone", "loss", "model", "trainer", "experiment"} <= groups(train)
    assert not {"generator", "preset", "synth"} & groups(train)
    assert {"generator", "preset"} <= groups(synth) and not {"data", "model", "trainer"} & groups(synth)
    assert "_reid_base" not in train


def _timm_cosine_by_hand(t: int, base: float, epochs: int, warmup: int, init: float, floor: float) -> float:
    """timm's CosineLRScheduler at epoch t (warmup_prefix off, one cycle): a line from ``init`` to ``base``
    over the warm-up, then ``floor + (base - floor) (1 + cos(pi t / epochs)) / 2`` (t counted from 0), the
    floor from ``epochs`` on."""
    if t < warmup:
        return init + t * (base - init) / warmup
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * t / epochs)) if t < epochs else floor


@pytest.mark.parametrize(
    "overrides, stage",
    [
        (["model=clipreid"], "stage1"),  # sandbox: 20 epochs, 2 of warm-up (pdm's stage 1 too)
        (["model=clipreid", "data=market1501", "backbone=clip_vit_b16"], "stage1"),  # paper ViT: 120, 5
        (["model=clipreid", "data=market1501", "backbone=clip_rn50"], "stage1"),  # paper RN50: 60, 5
        (["model=clip_pretrain"], None),  # sandbox: 6 epochs
        (["model=clip_pretrain", "data=market1501"], None),  # paper: 10 epochs
    ],
)
def test_timm_cosine_learning_rate_of_every_epoch(overrides, stage, tmp_path):
    """Every config with timm's cosine: the learning rate each epoch trains at (stepped as Lightning does,
    once after each epoch) is timm's value at t = epoch + 1, by hand and bit for bit as before the switch
    from timm's private ``_get_lr`` to its public ``step``."""
    from hydra.utils import instantiate
    from timm.scheduler.cosine_lr import CosineLRScheduler

    cfg = compose_train(overrides, tmp_path)
    node = cfg.model[stage] if stage else cfg.model
    epochs = int(node.epochs) if stage else int(cfg.trainer.max_epochs)
    sched_cfg, base = node.scheduler, float(node.optimizer.lr)
    assert sched_cfg._target_.endswith("timm_cosine") and sched_cfg.epoch_offset == 1
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=base)
    lrs = _lrs(instantiate(sched_cfg)(optimizer=opt, max_epochs=epochs), epochs)

    warmup = round(float(sched_cfg.warmup_epochs) * epochs)
    init, floor = float(sched_cfg.warmup_lr_init), float(sched_cfg.lr_min)
    hand = [_timm_cosine_by_hand(k + 1, base, epochs, warmup, init, floor) for k in range(epochs)]
    assert lrs == pytest.approx(hand, rel=1e-12, abs=0)
    # before: timm's private _get_lr on a shadow optimizer, as a LambdaLR factor
    shadow = CosineLRScheduler(
        torch.optim.SGD([torch.zeros(1)], lr=base),
        t_initial=epochs,
        lr_min=floor,
        warmup_t=warmup,
        warmup_lr_init=init,
        cycle_limit=1,
        t_in_epochs=True,
    )
    before_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=base)
    before = torch.optim.lr_scheduler.LambdaLR(before_opt, lambda e: shadow._get_lr(e + 1)[0] / base)
    assert lrs == _lrs(before, epochs)
