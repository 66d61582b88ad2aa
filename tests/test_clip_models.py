"""CLIP-ReID and PDM on tiny data: two stages in one run, freezing rules, resume, cache, messages."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import TINY, compose_train, run_train

from ppreid.utils.errors import ConfigValueError

CLIP = [o for o in TINY if not o.startswith(("backbone", "trainer.max_epochs"))] + [
    "backbone=clip_tiny",
    "data=market1501",
    "trainer.log_every_n_steps=1",
]


def stages(s1: int, s2: int):
    return [f"model.stage1.epochs={s1}", f"model.stage2.epochs={s2}"]


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _equal(a, b, prefix):
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, prefix
    return all(torch.equal(a[k], b[k]) for k in keys)


def _initial_state(overrides, tmp_path, reid_data_dir):
    """The model's weights before training, as train.py builds them (same seed, same order)."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from ppreid.run.sandbox_clip import resolve_pretrained_sandbox

    cfg = compose_train(overrides, tmp_path / "init", reid_data_dir)
    resolve_pretrained_sandbox(cfg)  # as the run does: backbone.sandbox is the run's, not the backbone's
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return {k: v.clone() for k, v in instantiate(cfg.model).state_dict().items()}


def _two_epoch_run(model: str, data_dir, tmp_path_factory):
    """(results, run dir, overrides) of a 1 + 1 epoch run of ``model`` on tiny Market."""
    out = tmp_path_factory.mktemp(f"{model}_run")
    overrides = CLIP + [f"model={model}"] + stages(1, 1)
    return run_train(overrides, out, data_dir), out, overrides


@pytest.fixture(scope="module")
def pdm_run(reid_data_dir, tmp_path_factory):
    return _two_epoch_run("pdm", reid_data_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def clipreid_run(reid_data_dir, tmp_path_factory):
    return _two_epoch_run("clipreid", reid_data_dir, tmp_path_factory)


@pytest.mark.slow
def test_pdm_freezing_rules_on_a_real_run(pdm_run, reid_data_dir, tmp_path):
    res, out, overrides = pdm_run
    init = _initial_state(overrides, tmp_path, reid_data_dir)
    s1, last = _state(out / "checkpoints" / "stage1.ckpt"), _state(out / "checkpoints" / "last.ckpt")
    # the text tower never changes
    assert _equal(init, s1, "text_encoder.") and _equal(s1, last, "text_encoder.")
    # the image encoder does not change in stage 1, and trains in stage 2
    assert _equal(init, s1, "backbone.") and not _equal(s1, last, "backbone.")
    # the inversion networks train in stage 1 and do not change in stage 2
    for name in ("inversion_content.", "inversion_style."):
        assert not _equal(init, s1, name) and _equal(s1, last, name)
    assert int(last["stage2_ready"]) == 1 and last["text_bank"].abs().sum() > 0
    assert set(res["test"]) == {"market1501"} and 0.0 <= res["test"]["market1501"]["mAP"] <= 1.0


@pytest.mark.slow
def test_clipreid_freezing_rules_and_checkpoint_prefixes(clipreid_run):
    _, out, _ = clipreid_run
    s1, last = _state(out / "checkpoints" / "stage1.ckpt"), _state(out / "checkpoints" / "last.ckpt")
    assert _equal(s1, last, "text_encoder.") and _equal(s1, last, "prompt_learner.")
    assert not _equal(s1, last, "backbone.")
    prefixes = {k.split(".")[0] for k in last}
    assert {"backbone", "text_encoder", "prompt_learner", "neck", "text_bank"} <= prefixes
    # the bank holds every identity's prompt feature, computed by the frozen text side
    assert last["text_bank"].shape == (last["prompt_learner.ctx"].shape[0], 128)


@pytest.mark.slow
def test_stage_losses_are_logged_per_stage(pdm_run):
    _, out, _ = pdm_run
    rows = list(csv.DictReader(open(next((out / "csv").rglob("metrics.csv")))))
    stage1 = [r for r in rows if r.get("train/stage1/loss")]
    stage2 = [r for r in rows if r.get("train/stage2/loss")]
    assert stage1 and stage2 and max(int(r["epoch"]) for r in stage1) < min(int(r["epoch"]) for r in stage2)
    for term in ("identity", "style", "composed", "content_invariance", "decorrelation"):
        assert any(r.get(f"train/stage1/loss_{term}") for r in stage1), term
    for term in ("ce_ls", "triplet", "i2t_ce", "style_mixed"):
        assert any(r.get(f"train/stage2/loss_{term}") for r in stage2), term
    assert (out / "loss_curves.png").is_file()


@pytest.mark.slow
def test_resume_inside_stage_2_does_not_repeat_stage_1(pdm_run, reid_data_dir, tmp_path):
    _, out, overrides = pdm_run
    first = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    overrides = [o for o in overrides if "stage2.epochs" not in o] + [
        "model.stage2.epochs=2",
        f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
    ]
    run_train(overrides, tmp_path, reid_data_dir)
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["epoch"] == 2 and first["epoch"] == 1
    rows = list(csv.DictReader(open(next((tmp_path / "csv").rglob("metrics.csv")))))
    assert not any(r.get("train/stage1/loss") for r in rows) and any(r.get("train/stage2/loss") for r in rows)
    # the stage-2 targets came back from the checkpoint instead of being rebuilt from a changed encoder
    assert torch.equal(first["state_dict"]["text_bank"], resumed["state_dict"]["text_bank"])
    # stage 1's optimizer took no further step
    step = lambda ck, i: max(int(s["step"]) for s in ck["optimizer_states"][i]["state"].values())
    assert step(resumed, 0) == step(first, 0) and step(resumed, 1) > step(first, 1)
    assert not (tmp_path / "checkpoints" / "stage1.ckpt").exists()


def test_cached_features_equal_direct_extraction(reid_data_dir, tmp_path):
    from hydra.utils import instantiate

    from ppreid.data.image_dataset import read_image
    from ppreid.run.sandbox_clip import resolve_pretrained_sandbox

    cfg = compose_train(CLIP + ["model=pdm"] + stages(1, 1), tmp_path, reid_data_dir)
    resolve_pretrained_sandbox(cfg)
    model = instantiate(cfg.model)
    dm = instantiate(cfg.data, _convert_="all")
    dm.use_backbone_normalization(model.backbone.input_mean, model.backbone.input_std)
    dm.setup("fit")

    class _Trainer:
        datamodule = dm

    model._trainer = _Trainer()  # the cache only needs the datamodule
    try:
        cache = model.build_cache()
    finally:
        model._trainer = None
    tf = dm._transform(is_train=False)
    model.backbone.eval()
    with torch.no_grad():
        direct = model.backbone(torch.stack([tf(read_image(r.path)) for r in dm.train_records]))
    assert torch.allclose(cache["feats"], direct, atol=1e-5)
    assert cache["restyled"].shape == direct.shape and not torch.allclose(cache["restyled"], direct)


@pytest.mark.slow
def test_ddp_sim_training_and_evaluation_equal_single_process(pdm_run, reid_data_dir, tmp_path):
    _, out, overrides = pdm_run
    ckpt = out / "checkpoints" / "last.ckpt"
    single = run_train(CLIP + ["model=pdm", "train=false", f"ckpt_path={ckpt}"], tmp_path / "cpu", reid_data_dir)
    ddp = run_train(
        CLIP + ["model=pdm", "train=false", f"ckpt_path={ckpt}", "trainer=ddp_sim"], tmp_path / "ddp", reid_data_dir
    )
    assert ddp["test"] == single["test"]
    # a two-stage run under DDP (cache gathered across ranks, unused parameters in each stage)
    res = run_train(
        CLIP + ["model=pdm", "trainer=ddp_sim", "data.val_split.identities=0"] + stages(1, 1),
        tmp_path / "train",
        reid_data_dir,
    )
    assert (tmp_path / "train" / "checkpoints" / "last.ckpt").is_file() and res["test"]["market1501"]


@pytest.mark.slow
def test_eval_from_checkpoint_rebuilds_the_clip_model(clipreid_run, reid_data_dir, tmp_path):
    trained, out, _ = clipreid_run
    res = run_train(
        [o for o in TINY if not o.startswith("backbone")]
        + ["data=market1501", "train=false", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"],
        tmp_path,
        reid_data_dir,
    )
    assert res["test"] == trained["test"]
    assert json.loads((tmp_path / "results.json").read_text())["identity"]["backbone"] == "clip_tiny"


def _spy_on_steps(monkeypatch) -> dict[str, list]:
    """Record the stage of every optimizer step and every feature-cache build of a run."""
    from ppreid.models.two_stage_clip import TwoStageCLIPModule

    seen: dict[str, list] = {"steps": [], "caches": []}
    step, build_cache = TwoStageCLIPModule._step, TwoStageCLIPModule.build_cache

    def spy_step(self, stage, terms):
        seen["steps"].append(stage)
        return step(self, stage, terms)

    def spy_build_cache(self, indices=None):
        seen["caches"].append(indices)
        return build_cache(self, indices)

    monkeypatch.setattr(TwoStageCLIPModule, "_step", spy_step)
    monkeypatch.setattr(TwoStageCLIPModule, "build_cache", spy_build_cache)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("model", ["clipreid", "pdm"])
def test_fast_dev_run_of_the_clip_models_runs_the_real_stage_steps(model, reid_data_dir, tmp_path, monkeypatch):
    """debug=fdr runs stage 1's real step (index batches on the cached features, no validation), and
    model.stage1.epochs=0 debug=fdr stage 2's (text targets from the cache, then image batches)."""
    seen = _spy_on_steps(monkeypatch)
    res = run_train(CLIP + [f"model={model}", "debug=fdr"], tmp_path / "s1", reid_data_dir)
    assert seen == {"steps": [1], "caches": [None]}
    assert "train/stage1/loss" in res["scalars"] and "train/stage2/loss" not in res["scalars"]
    assert not any(k.startswith("val/") for k in res["scalars"])  # stage 1 has no validation to do
    assert res["test"]["market1501"]

    seen = _spy_on_steps(monkeypatch)
    res = run_train(CLIP + [f"model={model}", "debug=fdr", "model.stage1.epochs=0"], tmp_path / "s2", reid_data_dir)
    assert seen["steps"] == [2] and len(seen["caches"]) == (1 if model == "pdm" else 0)
    assert "train/stage2/loss" in res["scalars"] and "val/mAP" in res["scalars"]


def test_default_scale_picks_clip_tiny_and_the_sandbox_recipe(tmp_path):
    sandbox = compose_train(["model=pdm"], tmp_path / "a")
    paper = compose_train(["model=pdm", "data=genepers"], tmp_path / "b")
    assert sandbox.backbone.model_name == "clip-tiny" and paper.backbone.model_name == "ViT-B-16"
    assert sandbox.model.stage1.epochs < paper.model.stage1.epochs == 120
    assert paper.model.stage2.optimizer.lr == 5.0e-6 and paper.loss.ce_ls.weight == 0.25
    chosen = compose_train(["model=clipreid", "data=genepers", "backbone=clip_rn50"], tmp_path / "c")
    assert chosen.backbone.model_name == "RN50"


def test_a_backbone_brings_its_own_start_so_any_backbone_fits_any_recipe(tmp_path):
    """The start is the backbone's default, not the recipe's: clip_tiny starts from the sandbox CLIP on the
    sandbox, ViT-B/16 and RN50 swapped onto the sandbox recipe start from random weights (no sandbox build
    exists for them), and the paper recipes start every tower that has OpenAI weights from them."""
    sandbox = {
        b: compose_train(["model=clipreid", f"backbone={b}"], tmp_path / b) for b in ("clip_tiny", "clip_vit_b16")
    }
    assert sandbox["clip_tiny"].backbone.pretrained == "sandbox"
    assert sandbox["clip_vit_b16"].backbone.pretrained is None
    paper = compose_train(["model=pdm", "data=genepers", "backbone=clip_rn50"], tmp_path / "paper")
    assert paper.backbone.pretrained == "openai"
    tiny_paper = compose_train(["model=pdm", "data=genepers", "backbone=clip_tiny"], tmp_path / "tiny_paper")
    assert tiny_paper.backbone.pretrained is None  # no OpenAI weights exist for clip-tiny


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=pdm", "backbone=tiny_cnn"], "needs a CLIP backbone"),
        (["model=pdm", "model.style_label=domain"], "style_label=domain"),
        (["model=pdm", "model.style_label=weather"], "choose one of camid, domain"),
        (["model=pdm", "model.templates.content='A photo of a person.'"], "no placeholder word 'X'"),
        (["model=clipreid", "trainer.max_epochs=5"], "set the stage epochs instead"),
    ],
)
def test_clear_messages(overrides, message, reid_data_dir, tmp_path):
    from ppreid.utils.errors import find_input_error

    with pytest.raises(Exception) as err:  # as train.py's main sees it (Hydra may wrap it)
        run_train(CLIP + overrides + stages(1, 1), tmp_path, reid_data_dir)
    found = find_input_error(err.value)
    assert isinstance(found, ConfigValueError) and message in str(found), err.value


@pytest.mark.slow
def test_mini_dppp_tables_from_real_runs(reid_data_dir, tmp_path, capsys):
    """The DPPP comparison (source x model) and the PDM ablation at toy size: real runs of the real row
    configs on tiny RandPerson / Market / Duke folders, tabulated by experiments/tables.py with the
    published figures below our rows."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    from ppreid.reports import tables

    clip_toy = [o for o in CLIP if not o.startswith("data=")] + stages(1, 1)
    results = {}
    for row, model in (("bot", "bot"), ("clipreid", "clipreid"), ("pdm", "pdm")):
        toy = TINY if model == "bot" else clip_toy
        results[row] = run_train(
            [f"experiment=dppp_randperson_{model}", "backbone.pretrained=null"] + toy,
            tmp_path / "main" / row,
            reid_data_dir,
        )
    ablation = run_train(
        ["experiment=pdm_without_style", "data=dg_randperson"] + clip_toy,
        tmp_path / "ablation" / "without_style",
        reid_data_dir,
    )

    published = str(repo / "experiments" / "published" / "dppp.yaml")
    assert (
        tables.main(
            [
                str(tmp_path / "main"),
                "--label",
                "model",
                "data",
                "--targets",
                "market1501",
                "dukemtmc",
                "--published",
                published,
                "--format",
                "csv",
            ]
        )
        == 0
    )
    table = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    ours = {r["model"]: r for r in table if r["source"] == "ours"}
    assert set(ours) == {"bot", "clipreid", "pdm"}
    for model, row in ours.items():
        assert row["data"] == "dg_randperson" and row["runs"] == "1"
        for target in ("market1501", "dukemtmc"):
            for metric in ("R1", "mAP"):
                assert row[f"{target}/{metric}"] == f"{100 * results[model]['test'][target][metric]:.1f}"
        mean_map = (results[model]["test"]["market1501"]["mAP"] + results[model]["test"]["dukemtmc"]["mAP"]) / 2
        assert row["mean/mAP"] == f"{100 * mean_map:.1f}"
    theirs = [r for r in table if r["source"] != "ours"]
    assert theirs and all(r["runs"] == "-" for r in theirs)
    dppp = next(r for r in theirs if r["model"] == "pdm" and r["data"] == "genepers")
    assert dppp["market1501/mAP"] == "n/a" and "DPPP" in dppp["source"]
    unreal = next(r for r in theirs if r["data"] == "dg_unrealperson")
    assert unreal["market1501/R1"] == "79.0" and unreal["market1501/mAP"] == "-" and unreal["mean/R1"] == "-"

    # the ablation table: full PDM and PDM without the style loss, one row each, never pooled
    assert (
        tables.main(
            [
                str(tmp_path / "main" / "pdm"),
                str(tmp_path / "ablation"),
                "--label",
                "model",
                "experiment",
                "--format",
                "csv",
            ]
        )
        == 0
    )
    rows = {r["experiment"]: r for r in csv.DictReader(capsys.readouterr().out.splitlines())}
    assert set(rows) == {"dppp_randperson_pdm", "pdm_without_style"}
    m = ablation["test"]["market1501"]["mAP"]
    assert rows["pdm_without_style"]["market1501/mAP"] == f"{100 * m:.1f}"
