"""Language-image pre-training: loss and metrics on hand cases, the weights file, the corpus's
disjointness and vocabulary rule, the sandbox build (tiny), and model=clip_pretrain end to end (tiny)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TINY, compose_train, run_synth, run_train
from test_captions import RECORD

from ppreid.losses.contrastive import clip_contrastive_loss, identity_positives
from ppreid.metrics.clip_alignment import encode_text, encode_texts, text_to_image_report, zero_shot_report
from ppreid.nn.backbones.clip_visual import OpenCLIPVisual, clip_state_dict
from ppreid.synth.attributes import AttributeSchema, identity_seed, load_conf_yaml
from ppreid.synth.captions import Captioner
from ppreid.utils.errors import ConfigValueError

CLIP_TINY = [o for o in TINY if not o.startswith("backbone")] + [
    "backbone=clip_tiny",
    "data.train_transforms.padding=0",
]
TINY_CORPUS = {
    "num_identities": 10,
    "heldout_identities": 4,
    "images_per_identity": 2,
    "num_cameras": 6,
    "height": 32,
    "width": 16,
}


@pytest.fixture(scope="module")
def tower():
    torch.manual_seed(0)
    return OpenCLIPVisual("clip-tiny", image_size=(32, 16)).text_tower().eval()


def test_encode_text_cut_after_end_of_text_equals_the_tower(tower):
    ids = Captioner.from_config().tokenize(["a red jacket", "a photo of a person carrying a backpack at night"])
    with torch.no_grad():
        assert torch.allclose(encode_text(tower, ids), tower(ids), atol=1e-5)


def test_contrastive_loss_hand_cases():
    feats, scale = torch.eye(2), torch.tensor(0.0)  # logits = identity matrix
    assert clip_contrastive_loss(feats, feats, scale).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    everyone = torch.ones(2, 2, dtype=torch.bool)  # uniform targets over both columns
    assert clip_contrastive_loss(feats, feats, scale, everyone).item() == pytest.approx(
        math.log(1 + math.e) - 0.5, abs=1e-6
    )
    assert clip_contrastive_loss(feats, feats, torch.tensor(10.0)).item() == pytest.approx(
        math.log(1 + math.exp(-100)), abs=1e-6
    )  # the scale is clamped at 100
    pos = identity_positives(torch.tensor([3, 3, 5]), ["full", "style", "content"])
    assert pos.tolist() == [[True, False, False], [True, True, False], [False, False, True]]


def test_zero_shot_and_text_to_image_on_features_made_from_their_answers(tower):
    captioner = Captioner.from_config()
    only_gender = Captioner.from_config(
        {**load_conf_yaml("synth/captions.yaml"), "zero_shot": {"gender": "a photo of a {value}"}}
    )
    genders = ["male", "female", "female"]
    feats = encode_texts(tower, only_gender, [f"a photo of a {g}" for g in genders])
    report = zero_shot_report(
        feats, [{"gender": g} for g in genders], tower, only_gender, AttributeSchema.from_config()
    )
    assert report["attributes"]["gender"] == {
        "accuracy": 1.0,
        "chance": 0.5,
        "normalized": 1.0,
        "num_values": 2,
        "num_images": 3,
        "majority": 0.6667,
        "balanced_accuracy": 1.0,
        "balanced_chance": 0.5,
    }
    assert report["mean_normalized"] == 1.0
    records = [dict(RECORD, upper_colour=c) for c in ("red", "teal", "beige")]
    queries = [captioner.caption(r, "content", exclude=("viewpoint",)) for r in records]
    images = encode_texts(tower, captioner, queries)
    metrics, ranking = text_to_image_report(
        torch.cat([images, images.flip(0)]), [1, 2, 3, 3, 2, 1], records + records[::-1], tower, captioner
    )
    assert metrics["R1"] == 1.0 and metrics["R5"] == 1.0 and metrics["num_queries"] == 3
    assert metrics["mAP"] == pytest.approx(1.0) and ranking["match"][:, :2].all()  # its two images come first
    assert metrics["chance_R1"] == pytest.approx(1 / 3, abs=1e-4)


def test_weights_file_loads_both_towers(tmp_path):
    torch.manual_seed(1)
    src = OpenCLIPVisual("clip-tiny", image_size=(64, 32))
    torch.save(clip_state_dict(src.visual, src.text_tower(), torch.tensor(2.0)), tmp_path / "w.pt")
    dst = OpenCLIPVisual("clip-tiny", pretrained=str(tmp_path / "w.pt"), image_size=(64, 32))
    assert dst.text_tower_loaded is True
    for a, b in zip(
        list(src.visual.state_dict().values()) + list(src.text_tower().state_dict().values()),
        list(dst.visual.state_dict().values()) + list(dst.text_tower().state_dict().values()),
    ):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- corpus
def test_corpus_is_disjoint_from_mini_and_keeps_target_words_out(tmp_path):
    from ppreid.synth.mini import _domain_seed
    from ppreid.synth.plan import SynthPlan
    from ppreid.synth.pretrain_corpus import check_disjoint, corpus_plans, ensure_pretrain_corpus, target_only_words

    with pytest.raises(ConfigValueError, match="pid 250 is also a GenePerson-mini source pid"):
        ensure_pretrain_corpus(tmp_path / "bad", pid_start=250, **TINY_CORPUS)
    clash = SynthPlan.from_config(
        {"num_identities": 2, "num_cameras": 2, "seed": _domain_seed(0, "night_cctv"), "pid_start": 301}
    )
    with pytest.raises(ConfigValueError, match="night_cctv pid 301"):
        check_disjoint({"train": clash}, {"seed": 0, "num_identities": 300, "target_identities": 100, "domains": None})
    only = target_only_words()
    assert only["time_of_day"] == ["night"] and "grainy" in only["camera"] and "street" not in only["background"]
    root = ensure_pretrain_corpus(tmp_path / "corpus", exclude_target_styles=True, **TINY_CORPUS)
    lines = [json.loads(x) for x in (root / "train" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 20 and all(li["pid"] >= 20001 for li in lines)
    used = {w for li in lines for k, w in li["attributes"].items() if k in only}
    assert not used & {w for ws in only.values() for w in ws}
    params = json.loads((root / ".complete.json").read_text())["params"]
    plans = corpus_plans(params)
    assert {li["identity_seed"] for li in lines} == {identity_seed(plans["train"].seed, p) for p in plans["train"].pids}


# ----------------------------------------------------------------------------- sandbox build
def test_sandbox_build_is_reused_rebuilt_and_skipped_under_fast_dev_run(tmp_path):
    from ppreid.run.sandbox_clip import ensure_sandbox_clip

    kw = {
        "corpus": {
            "root": str(tmp_path / "corpus"),
            **{k: v for k, v in TINY_CORPUS.items() if k not in ("height", "width")},
        },
        "training": {"steps": 2, "batch_size": 8},
        "image_size": (32, 16),
        "progress": False,
    }
    assert ensure_sandbox_clip(tmp_path / "clip", quick=True, **kw) is None
    path = ensure_sandbox_clip(tmp_path / "clip", **kw)
    assert path.parent.parent == tmp_path / "clip" and path.parent.name.startswith("v3-text-")
    report = json.loads((path.parent / "results.json").read_text())
    held = report["heldout"]
    assert set(held) >= {"zero_shot", "text_to_image", "image_probe", "zero_shot_vs_probe", "scene_probe"}
    assert {"R1", "mAP"} <= set(held["text_to_image"]) and "mean_normalized" in held["zero_shot"]
    assert set(held["scene_probe"]["attributes"]) == {"background", "camera"}
    assert {"zero_shot_mean", "probe_mean", "ratio"} <= set(held["zero_shot_vs_probe"])
    assert "background" not in held["image_probe"]["attributes"]  # the ceiling reads person attributes only
    assert (path.parent / "text_to_image.png").is_file()
    stamp = path.stat().st_mtime_ns
    assert ensure_sandbox_clip(tmp_path / "clip", **kw).stat().st_mtime_ns == stamp  # reused
    kw["training"]["steps"] = 3
    other = ensure_sandbox_clip(tmp_path / "clip", **kw)  # parameters changed: its own build, the first kept
    assert other.parent != path.parent and other.is_file() and path.stat().st_mtime_ns == stamp
    tower = OpenCLIPVisual("clip-tiny", pretrained=str(path), image_size=(32, 16))
    assert tower.text_tower_loaded
    with pytest.raises(ConfigValueError, match="resolved by the run"):  # a constructor never builds it
        OpenCLIPVisual("clip-tiny", pretrained="sandbox", image_size=(32, 16))


def test_sandbox_build_trains_model_clip_pretrain_with_a_lightning_trainer(tmp_path, monkeypatch):
    """The build is model=clip_pretrain's own training step under Trainer.fit, one call per build step;
    the run resolves pretrained=sandbox to the file before the backbone is built (which never sees it)."""
    from ppreid.models.clip_pretrain import ClipPretrainModel
    from ppreid.run.sandbox_clip import resolve_pretrained_sandbox

    steps = []
    original = ClipPretrainModel.training_step

    def counted(self, batch, batch_idx):
        steps.append((self.global_step, len(batch["index"]), self.train_captioner.context_length))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClipPretrainModel, "training_step", counted)
    corpus = ",".join(f"{k}:{v}" for k, v in TINY_CORPUS.items() if k not in ("height", "width"))
    cfg = compose_train(
        [
            "model=clipreid",
            "data.height=32",
            "data.width=16",
            "backbone.pretrained=sandbox",
            f"backbone.sandbox.root={tmp_path / 'clip'}",
            f"+backbone.sandbox.corpus={{root:{tmp_path / 'corpus'},{corpus}}}",
            "backbone.sandbox.training.steps=3",
            "backbone.sandbox.training.batch_size=8",
            "backbone.sandbox.training.caption_tokens=24",
            "backbone.sandbox.training.precision=32-true",
            "+backbone.sandbox.progress=false",
        ],
        tmp_path / "run",
    )
    resolve_pretrained_sandbox(cfg)
    (build,) = (tmp_path / "clip").glob("v3-text-*")
    assert cfg.backbone.pretrained == str(build / "clip_tiny.pt") and "sandbox" not in cfg.backbone
    assert cfg.model.backbone.pretrained == cfg.backbone.pretrained  # the model's backbone follows
    assert steps == [(0, 8, 24), (1, 8, 24), (2, 8, 24)]
    report = json.loads((build / "results.json").read_text())
    assert report["train"]["steps"] == 3 and report["heldout"]["num_identities"] == 4
    assert set(report["heldout"]) >= {"zero_shot", "text_to_image", "image_probe", "scene_probe"}
    assert (build / "text_to_image.png").is_file() and (build / ".complete.json").is_file()
    assert not list((tmp_path / "clip").glob("*.tmp-*"))  # written in a temporary folder, then renamed


def test_step_schedule_is_clips_warmup_then_cosine_to_zero():
    """model.schedule=steps, hand-worked: 2 warm-up steps of 4: 1/2, 1, then cos from 1 to 0 over 2 steps."""
    from ppreid.training.schedulers import warmup_cosine_factor

    assert [warmup_cosine_factor(s, 4, 2) for s in range(4)] == pytest.approx([0.5, 1.0, 1.0, 0.5])
    assert warmup_cosine_factor(4, 4, 2) == pytest.approx(0.0)


def test_sandbox_weights_are_the_sandbox_default_and_fdr_keeps_random_weights(tmp_path):
    from hydra.utils import instantiate

    assert compose_train(["model=pdm"], tmp_path / "d").backbone.pretrained == "sandbox"
    assert compose_train(["model=clipreid"], tmp_path / "c").backbone.pretrained == "sandbox"
    cfg = compose_train(
        ["model=pdm", "debug=fdr", "data.height=32", "data.width=16", "backbone.pretrained=sandbox"], tmp_path
    )
    assert cfg.backbone.pretrained == "sandbox" and cfg.backbone.sandbox.quick is True
    from ppreid.run.sandbox_clip import resolve_pretrained_sandbox

    resolve_pretrained_sandbox(cfg)  # the run, before the model: nothing built under a fast dev run
    assert cfg.backbone.pretrained is None and "sandbox" not in cfg.backbone
    assert instantiate(cfg.backbone).text_tower_loaded is None  # random weights
    assert compose_train(["model=clipreid", "backbone.pretrained=null"], tmp_path / "n").backbone.pretrained is None


# ----------------------------------------------------------------------------- model=clip_pretrain
@pytest.mark.slow
def test_clip_pretrain_run_writes_weights_and_alignment_sections(tmp_path):
    prepare = [
        "data.prepare.mini.num_identities=8",
        "data.prepare.mini.images_per_identity=4",
        "data.prepare.mini.target_identities=4",
        "data.prepare.mini.gallery_per_identity=2",
        "data.prepare.mini.height=32",
        "data.prepare.mini.width=16",
        "data.prepare.progress=false",
    ]
    prepare += [f"data.prepare.corpus.{k}={v}" for k, v in TINY_CORPUS.items()]
    res = run_train(
        ["model=clip_pretrain"] + CLIP_TINY + prepare + ["trainer.max_epochs=2"], tmp_path / "run", tmp_path / "data"
    )
    assert set(res["zero_shot"]) == {"val", "corpus_heldout", "night_cctv", "station_indoor", "far_high"}
    held = res["zero_shot"]["corpus_heldout"]
    assert held["attributes"]["gender"]["chance"] == 0.5 and -1.0 <= held["mean_normalized"] <= 1.0
    assert set(res["text_to_image"]["night_cctv"]) >= {"R1", "R5", "mAP"}
    for section in ("image_probe", "zero_shot_vs_probe", "scene_probe"):  # probe ceilings and the scene probe
        assert set(res[section]) == set(res["zero_shot"]), section
    assert "background" in res["scene_probe"]["corpus_heldout"]["attributes"]
    assert (tmp_path / "run" / "text_to_image_corpus_heldout.png").is_file()
    weights = tmp_path / "run" / "clip_weights.pt"
    assert res["clip_weights"] == str(weights)
    assert OpenCLIPVisual("clip-tiny", pretrained=str(weights), image_size=(32, 16)).text_tower_loaded


@pytest.mark.slow
def test_paper_scale_continues_clip_on_synth_prompts(reid_data_dir, tmp_path):
    out = tmp_path / "GenePerson"
    run_synth(tmp_path, out, "num_identities=6", "images_per_identity=3", "height=32", "width=16")
    cfg_over = ["model=clip_pretrain", "data=genepers", f"data.root={out}", "backbone.pretrained=null"] + CLIP_TINY
    cfg = compose_train(cfg_over, tmp_path / "c", reid_data_dir)
    assert cfg.model.text_source == "prompts" and cfg.data.name == "genepers"
    res = run_train(cfg_over, tmp_path / "run", reid_data_dir)
    assert "val" in res["zero_shot"] and (tmp_path / "run" / "clip_weights.pt").is_file()


def test_caption_truth_positives_hand_case():
    """Image i matches text j iff image i has every value caption j states (the diagonal always)."""
    from ppreid.losses.contrastive import caption_truth_positives

    images = [{"gender": "male", "hat": "cap"}, {"gender": "male", "hat": "none"}, {"gender": "female", "hat": "cap"}]
    stated = [("gender",), ("hat",), ("gender", "hat")]
    expected = torch.tensor(
        [
            [1, 0, 0],  # image 0 (male, cap): text 1 says "no hat" -> no
            [1, 1, 0],  # image 1 (male, none): text 0 ("a male") is true of it
            [0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(caption_truth_positives(images, stated), expected)
    assert torch.equal(caption_truth_positives(images, [(), (), ()]), torch.ones(3, 3, dtype=torch.bool))
    # as positives of the contrastive loss: a uniform target over them
    loss = clip_contrastive_loss(torch.eye(3), torch.eye(3), torch.tensor(0.0), expected)
    assert torch.isfinite(loss)


def test_zero_shot_report_puts_the_majority_and_balanced_accuracy_beside_chance(tower):
    """Features that always pick 'none' score the majority share as accuracy, but chance as balanced accuracy."""
    from ppreid.metrics.clip_alignment import encode_texts, zero_shot_report

    captioner = Captioner.from_config()
    schema = AttributeSchema.from_config()
    values = list(schema.vocabulary("hat").values)
    attrs = [{"hat": "none"}] * 6 + [{"hat": values[1]}, {"hat": values[2]}]
    none_text = encode_texts(tower, captioner, captioner.zero_shot_prompts("hat", ["none"]))
    feats = none_text.expand(len(attrs), -1)
    hat = zero_shot_report(feats, attrs, tower, captioner, schema)["attributes"]["hat"]
    assert hat["accuracy"] == hat["majority"] == 0.75
    assert hat["balanced_accuracy"] == pytest.approx(1 / 3, abs=1e-4) == hat["balanced_chance"]


# ----------------------------------------------------------------------------- pre-training v2
def test_identity_level_multi_positive_loss_hand_cases():
    """Image i and caption j of one identity are positives (uniform soft targets), across its images.
    pids [7, 7, 9], unit features e1, e2, e3 on both sides, scale 1: logits = I. Rows 0 and 1 target
    (1/2, 1/2, 0): each L - 1/2 with L = log(e + 2); row 2 targets itself: L - 1; the columns are the
    same, so the loss is L - 2/3. The no-text control (image-image, own column left out): f0 = f1 = (1, 0),
    f2 = (0, 1): rows 0 and 1 have logits (1, 0) over the others and target their twin: log(1 + e) - 1;
    row 2 has no other image of its identity and is left out."""
    from ppreid.losses.identity_contrast import image_identity_contrast

    pids, scale = torch.tensor([7, 7, 9]), torch.tensor(0.0)
    pos = identity_positives(pids, ["content"] * 3)
    assert pos.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    feats = torch.eye(3)
    expected = math.log(math.e + 2) - 2 / 3
    assert clip_contrastive_loss(feats, feats, scale, pos).item() == pytest.approx(expected, abs=1e-6)
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert image_identity_contrast(images, pids, scale).item() == pytest.approx(math.log(1 + math.e) - 1, abs=1e-6)
    assert image_identity_contrast(images, torch.tensor([1, 2, 3]), scale).item() == 0.0  # no positive at all


def _colour_pairs(batches, upper, lower):
    """Mean share of identity pairs in a batch that wear the same upper or lower colour."""
    import itertools

    shares = []
    for ids in batches:
        pairs = list(itertools.combinations(sorted(set(ids)), 2))
        shares.append(sum(upper[a] == upper[b] or lower[a] == lower[b] for a, b in pairs) / len(pairs))
    return sum(shares) / len(shares)


def test_colour_aware_sampler_puts_identities_of_one_colour_together():
    import numpy as np

    from ppreid.data.colour_batches import ColourAwareIdentitySampler
    from ppreid.data.samplers import RandomIdentitySampler

    rng = np.random.default_rng(0)
    n_ids, per_id, batch, k = 64, 8, 32, 4
    upper = {p: f"u{int(c)}" for p, c in enumerate(rng.integers(0, 8, n_ids))}
    lower = {p: f"l{int(c)}" for p, c in enumerate(rng.integers(0, 6, n_ids))}
    pids = [p for p in range(n_ids) for _ in range(per_id)]
    colours = {"upper_colour": [upper[p] for p in pids], "lower_colour": [lower[p] for p in pids]}
    plain = RandomIdentitySampler(pids, batch, k, seed=3)
    aware = ColourAwareIdentitySampler(pids, colours, batch, k, group_size=4, seed=3)
    assert len(aware) == len(plain)

    def batches(sampler):
        flat = [pids[i] for i in sampler]
        return [flat[i : i + batch] for i in range(0, len(flat), batch)]

    got = batches(aware)
    for ids in got:  # still P x K: P distinct identities, K images each
        assert len(set(ids)) == batch // k and all(ids[j : j + k] == [ids[j]] * k for j in range(0, batch, k))
    assert len({p for ids in got for p in ids}) == n_ids  # every identity is used in the epoch
    aware_share, plain_share = _colour_pairs(got, upper, lower), _colour_pairs(batches(plain), upper, lower)
    assert aware_share > 0.45 and aware_share > 1.5 * plain_share, (aware_share, plain_share)
    aware.set_epoch(1)
    assert batches(aware) != got  # a new plan each epoch


def test_identity_text_names_the_person_only_and_flip_mirrors_the_viewpoint():
    from ppreid.models.clip_pretrain import augment_batch, check_augment, mirror_record
    from ppreid.synth.pretrain_corpus import identity_caption, person_record

    schema = AttributeSchema.from_config()
    captioner = Captioner.from_config()
    record = dict(RECORD, viewpoint="left")
    scene_words = {record[k].replace("_", " ") for k in schema.environment_keys if record.get(k) not in (None, "none")}
    assert set(person_record(record)) == set(schema.identity_keys)
    rng = __import__("numpy").random.default_rng(0)
    for _ in range(20):
        text, stated = identity_caption(captioner, record, rng)
        assert not any(w in text for w in scene_words | {"left", "right", "view"}), text
        assert set(stated) <= set(schema.identity_keys)
    assert (
        mirror_record(record)["viewpoint"] == "right"
        and mirror_record(record)["upper_colour"] == record["upper_colour"]
    )
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 8, 4)
    out, flipped = augment_batch(images, check_augment({"flip_prob": 1.0}), gen)
    assert flipped.all() and torch.equal(out, images.flip(-1))
    flat = torch.ones(2, 3, 16, 8) * torch.tensor([0.2, 0.5, 0.9])[None, :, None, None]
    out, _ = augment_batch(flat, check_augment({"crop_scale": [0.5, 0.6], "crop_ratio": [0.8, 1.2]}), gen)
    assert torch.allclose(out, flat, atol=1e-6)  # a crop never changes a colour
    with pytest.raises(ConfigValueError, match="crop_scale"):
        check_augment({"crop_scale": [0.9, 0.5]})


@pytest.mark.slow
def test_no_text_control_trains_image_image_in_its_own_build_folder(tmp_path, monkeypatch):
    """text=false: every step is the image-image identity contrast, the text tower is in no optimizer group
    and is never encoded while training; the build key (its folder) differs from the language build's."""
    import ppreid.models.clip_pretrain as cp
    from ppreid.run.sandbox_clip import build_key, ensure_sandbox_clip

    calls, encoded, optimized = [], [], []
    original = cp.image_identity_contrast
    monkeypatch.setattr(cp, "image_identity_contrast", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.setattr(cp, "encode_text", lambda *a, **k: encoded.append(1))
    configure = cp.ClipPretrainModel.configure_optimizers

    def spy(self):
        out = configure(self)
        optimizer = out["optimizer"] if isinstance(out, dict) else out
        optimized.extend(id(p) for g in optimizer.param_groups for p in g["params"])
        text_ids = {id(p) for p in self.text_tower.parameters()}
        optimized.append(bool(text_ids & set(optimized)))
        return out

    monkeypatch.setattr(cp.ClipPretrainModel, "configure_optimizers", spy)
    kw = {
        "corpus": {
            "root": str(tmp_path / "corpus"),
            **{k: v for k, v in TINY_CORPUS.items() if k not in ("height", "width")},
        },
        "training": {"steps": 2, "batch_size": 8, "text": False, "precision": "32-true"},
        "image_size": (32, 16),
        "progress": False,
    }
    path = ensure_sandbox_clip(tmp_path / "clip", **kw)
    assert path.parent.name.startswith("v3-no-text-") and len(calls) == 2 and not encoded
    assert optimized[-1] is False  # no text-tower parameter is optimized
    report = json.loads((path.parent / "results.json").read_text())
    assert report["train"]["text"] is False and "scene_probe" in report["heldout"]
    params = json.loads((path.parent / ".complete.json").read_text())["params"]
    assert build_key(params) == path.parent.name
    with_text = json.loads(json.dumps(params))
    with_text["training"]["text"] = True
    assert build_key(with_text).startswith("v3-text-") and build_key(with_text)[-8:] != path.parent.name[-8:]


def test_identity_text_never_names_what_the_image_hides():
    """Per image, the identity caption leaves out what this image does not show: glasses on a back view
    (its view), shoes the manifest lists as hidden (an occluder); a front view names the glasses."""
    import numpy as np

    from ppreid.synth.pretrain_corpus import identity_caption

    captioner = Captioner.from_config()
    rng = np.random.default_rng(0)
    worn = dict(RECORD, glasses="sunglasses")
    stated = {
        view: set().union(*(identity_caption(captioner, dict(worn, viewpoint=view), rng)[1] for _ in range(30)))
        for view in ("front", "back")
    }
    assert "glasses" in stated["front"] and "glasses" not in stated["back"]
    assert "shoes" in stated["front"]
    occluded = set().union(
        *(identity_caption(captioner, dict(worn, viewpoint="front"), rng, hidden=("shoes",))[1] for _ in range(30))
    )
    assert "shoes" not in occluded and "glasses" in occluded


def test_probe_ceiling_leaves_out_images_whose_view_hides_the_attribute():
    """Glasses are drawn on front views only: features that encode them there give a near-perfect probe once
    back views (where the record still names glasses) are left out; scored on them it could not be."""
    from ppreid.metrics.clip_alignment import image_probe_ceiling

    gen = torch.Generator().manual_seed(0)
    n = 400
    pids = [i // 4 for i in range(n)]
    worn = torch.tensor([(p // 2) % 2 for p in pids])  # both probe halves (even / odd pids) hold both values
    views = ["front" if i % 2 == 0 else "back" for i in range(n)]
    attrs = [{"glasses": "glasses" if w else "none", "viewpoint": v} for w, v in zip(worn.tolist(), views)]
    feats = torch.randn(n, 8, generator=gen) * 0.1
    front = torch.tensor([v == "front" for v in views])
    feats[front, 0] += worn[front].float() * 2 - 1  # the feature sees glasses on front views only
    out = image_probe_ceiling(feats, pids, attrs, ["glasses"])
    assert out["attributes"]["glasses"]["balanced_accuracy"] > 0.95
