"""Cross-domain evaluation of checkpoints: the model comes from the checkpoint, not from the command."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY, load_script, run_script, run_train, train_cli

from ppreid.utils.errors import ConfigValueError

TINY_ARCH = ["backbone.channels=[8,16,16,32]", "backbone.out_dim=32"]


@pytest.fixture(scope="module")
def market_ckpt(reid_data_dir, tmp_path_factory):
    """A checkpoint trained 2 epochs on tiny Market-1501 (7 of its 8 identities after the val split)."""
    out = tmp_path_factory.mktemp("market_ckpt")
    res = run_train(
        TINY + ["data=market1501", "trainer.max_epochs=2", "data.val_split.identities=1"], out, reid_data_dir
    )
    return out / "checkpoints" / "last.ckpt", res


@pytest.mark.slow
def test_checkpoint_carries_its_model_spec(market_ckpt):
    ckpt = torch.load(market_ckpt[0], map_location="cpu", weights_only=True)
    spec = ckpt["ppreid"]
    assert spec["choices"]["model"] == "bot" and spec["choices"]["backbone"] == "tiny_cnn"
    assert spec["num_classes"] == 7  # 8 training identities, 1 held out for validation
    assert spec["input"] == {
        "height": 32,
        "width": 16,
        "mean": pytest.approx([0.485, 0.456, 0.406]),
        "std": pytest.approx([0.229, 0.224, 0.225]),
    }
    assert spec["model"]["backbone"]["channels"] == [8, 16, 16, 32]
    assert ckpt["state_dict"]["neck.classifier.weight"].shape == (7, 32)


@pytest.mark.slow
def test_evaluate_on_another_dataset_without_the_training_set(market_ckpt, reid_data_dir, tmp_path):
    """A Market checkpoint on a Duke-layout folder whose source differs (and Market is gone), with the
    default backbone config (a different tiny_cnn size): the model is rebuilt from the checkpoint."""
    ckpt, _ = market_ckpt
    data = tmp_path / "data"
    shutil.copytree(reid_data_dir / "DukeMTMC-reID", data / "DukeMTMC-reID")
    overrides = [o for o in TINY if not o.startswith("backbone.")] + [
        "data=dukemtmc",
        "train=false",
        f"ckpt_path={ckpt}",
        "data.height=64",
        "data.width=32",
    ]
    res = run_train(overrides, tmp_path / "run", data)
    m = res["test"]["dukemtmc"]
    assert set(m) == {"R1", "R5", "R10", "mAP", "mINP"} and 0.0 <= m["mAP"] <= 1.0
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written["test"] == res["test"] and written["train"] is False
    assert written["identity"]["backbone"] == "tiny_cnn" and written["identity"]["targets"] == ["dukemtmc"]


@pytest.mark.slow
def test_eval_with_same_data_reproduces_training_metrics(market_ckpt, reid_data_dir, tmp_path):
    ckpt, trained = market_ckpt
    res = run_train(
        TINY + ["data=market1501", "train=false", f"ckpt_path={ckpt}", "data.val_split.identities=1"],
        tmp_path,
        reid_data_dir,
    )
    assert res["test"] == trained["test"]


def _as_before_the_package_move(node):
    """A config tree whose ``_target_`` names are the pre-package ones (``src.models.bot.BoTModel``)."""
    old = {"ppreid.training.schedulers": "src.models.schedulers", "ppreid.": "src."}
    if isinstance(node, dict):
        out = {k: _as_before_the_package_move(v) for k, v in node.items()}
        target = out.get("_target_")
        if isinstance(target, str):
            for new, before in old.items():
                if target.startswith(new):
                    out["_target_"] = before + target[len(new) :]
                    break
        return out
    if isinstance(node, list):
        return [_as_before_the_package_move(v) for v in node]
    return node


@pytest.mark.slow
def test_checkpoint_of_the_old_module_paths_still_evaluates(market_ckpt, reid_data_dir, tmp_path):
    """A checkpoint written before the package move (targets ``src.models.bot.BoTModel``,
    ``src.models.schedulers.*``, ``src.losses.*``) evaluates to the same metrics; embed's loader reads it."""
    from ppreid.training.checkpoint import load_model_from_checkpoint, modern_target, read_checkpoint

    ckpt, trained = market_ckpt
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["ppreid"] = _as_before_the_package_move(state["ppreid"])
    assert state["ppreid"]["model"]["_target_"] == "src.models.bot.BoTModel"
    assert state["ppreid"]["model"]["scheduler"]["_target_"].startswith("src.models.schedulers.")
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    assert read_checkpoint(old)["ppreid"]["model"]["_target_"] == "ppreid.models.bot.BoTModel"
    model, spec = load_model_from_checkpoint(old)
    assert type(model).__name__ == "BoTModel" and spec["num_classes"] == 7
    res = run_train(
        TINY + ["data=market1501", "train=false", f"ckpt_path={old}", "data.val_split.identities=1"],
        tmp_path / "run",
        reid_data_dir,
    )
    assert res["test"] == trained["test"]
    assert modern_target("src.models.privacy.pool.DecoderPoolDefence") == "ppreid.privacy.pool.DecoderPoolDefence"
    assert modern_target("src.nn.attackers.x.Y") == "ppreid.audit.attackers.x.Y"
    assert modern_target("src.utils.csv_logger.CSVLogger") == "ppreid.training.csv_logger.CSVLogger"
    assert modern_target("src.models.attack.AttackModel") == "ppreid.audit.attack.AttackModel"
    assert modern_target("torch.optim.Adam") == "torch.optim.Adam" and modern_target("srcx.a") == "srcx.a"


@pytest.mark.slow
def test_command_line_eval_option_applies_to_checkpoint_model(market_ckpt, reid_data_dir, tmp_path):
    """model.neck_feat=before is an evaluation choice: it overrides the checkpoint's value."""
    ckpt, trained = market_ckpt
    res = run_train(
        TINY + ["data=market1501", "train=false", f"ckpt_path={ckpt}", "model.neck_feat=before"],
        tmp_path,
        reid_data_dir,
    )
    assert res["test"] != trained["test"]


@pytest.mark.slow
def test_architecture_mismatch_is_one_message_naming_both(market_ckpt, reid_data_dir, tmp_path):
    proc = train_cli(
        "train=false",
        f"ckpt_path={market_ckpt[0]}",
        "backbone=resnet50",
        "data=market1501",
        data_dir=reid_data_dir,
        run_dir=tmp_path,
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "tiny_cnn" in last and "backbone=resnet50" in last and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_mismatching_backbone_parameters_list_the_keys(market_ckpt, reid_data_dir, tmp_path):
    from ppreid.utils.errors import ConfigValueError

    with pytest.raises(ConfigValueError, match=r"wrong shapes.*backbone\.") as err:
        run_train(
            TINY
            + [
                "data=market1501",
                "train=false",
                f"ckpt_path={market_ckpt[0]}",
                "backbone.channels=[4,8,8,16]",
                "backbone.out_dim=16",
            ],
            tmp_path,
            reid_data_dir,
        )
    assert "size mismatch" not in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "truncated", "text", "folder", "weights_only"])
def test_bad_ckpt_path_is_one_clear_line(kind, market_ckpt, tmp_path):
    ckpt = market_ckpt[0]
    if kind == "missing":
        path = tmp_path / "nope.ckpt"
    elif kind == "truncated":
        path = tmp_path / "cut.ckpt"
        path.write_bytes(ckpt.read_bytes()[:4096])
    elif kind == "text":
        path = tmp_path / "notes.ckpt"
        path.write_text("not a checkpoint\n")
    elif kind == "folder":
        path = ckpt.parent.parent
    else:  # a plain state dict: a weights file, not a run checkpoint
        path = tmp_path / "weights.pth"
        torch.save({"w": torch.zeros(2)}, path)
    proc = train_cli("train=false", f"ckpt_path={path}", "debug=fdr", run_dir=tmp_path / "run")
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ckpt_path=") and str(path) in last, last
    assert "Traceback" not in proc.stderr and "weights_only=False" not in proc.stderr


@pytest.mark.slow
def test_embed_folder_of_crops(market_ckpt, reid_data_dir, tmp_path):
    query = reid_data_dir / "Market-1501-v15.09.15" / "query"
    out = tmp_path / "q.npz"
    proc = run_script("embed.py", str(market_ckpt[0]), str(query), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = np.load(out)
    files = sorted(query.glob("*.jpg"))
    assert d["features"].shape == (len(files), 32) and list(d["paths"]) == [str(p) for p in files]
    assert list(d["pids"]) == [int(p.name[:4]) for p in files] and set(d["camids"]) == {0}
    # the same features as the evaluation path computes (model rebuilt from the checkpoint)
    from ppreid.data.image_dataset import read_image
    from ppreid.data.transforms import build_transforms
    from ppreid.training.checkpoint import load_model_from_checkpoint

    model, spec = load_model_from_checkpoint(market_ckpt[0])
    tf = build_transforms(32, 16, is_train=False)
    with torch.no_grad():
        ref = model.extract_features(torch.stack([tf(read_image(str(files[0])))]))
    assert np.allclose(d["features"][0], ref[0].numpy(), atol=1e-5)
    bad = run_script("embed.py", str(market_ckpt[0]), str(tmp_path / "none"))
    assert bad.returncode == 1 and "no such folder" in bad.stderr.strip().splitlines()[-1]


def test_embed_a_dataset_folder_takes_only_its_person_images(market_ckpt, reid_data_dir, tmp_path):
    """A GenePerson folder: the crops of its split folders, not the contact sheet samples.jpg beside them."""
    people = tmp_path / "GenePerson"
    shutil.copytree(reid_data_dir / "Market-1501-v15.09.15" / "query", people / "bounding_box_train")
    (people / "manifest.jsonl").write_text("")
    shutil.copy(next((people / "bounding_box_train").glob("*.jpg")), people / "samples.jpg")
    out = tmp_path / "g.npz"
    proc = run_script("embed.py", str(market_ckpt[0]), str(people), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    crops = sorted((people / "bounding_box_train").glob("*.jpg"))
    assert list(np.load(out)["paths"]) == [str(p) for p in crops]
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and skipped[0].startswith("skipped 1 image(s)") and "samples.jpg" in skipped[0]


def test_list_crops_skips_images_beside_split_folders(tmp_path):
    embed = load_script("embed.py")

    for rel in (
        "mini/night/query/0001_c1_0.jpg",
        "mini/night/bounding_box_test/0001_c2_0.jpg",
        "mini/night/card.png",
        "plain/a.jpg",
        "plain/sub/b.png",
        "GenePerson/samples.jpg",
        "GenePerson/bounding_box_train/x.jpg",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "GenePerson" / "manifest.jsonl").write_text("")
    crops, skipped = embed.list_crops(tmp_path)
    names = lambda paths: sorted(p.relative_to(tmp_path).as_posix() for p in paths)
    assert names(skipped) == ["GenePerson/samples.jpg", "mini/night/card.png"]
    assert names(crops) == [
        "GenePerson/bounding_box_train/x.jpg",
        "mini/night/bounding_box_test/0001_c2_0.jpg",
        "mini/night/query/0001_c1_0.jpg",
        "plain/a.jpg",
        "plain/sub/b.png",
    ]
    assert embed.list_crops(tmp_path / "plain")[1] == []  # a plain folder of crops: every image
    (tmp_path / "GenePerson" / "bounding_box_train" / "x.jpg").unlink()
    with pytest.raises(ConfigValueError, match="holds no person images .*1 beside a dataset's split folders"):
        embed.list_crops(tmp_path / "GenePerson")
