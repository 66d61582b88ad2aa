"""model=attack: the privacy audit of a checkpoint (attackers trained from scratch, SSIM / PSNR, leakage, URR)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, run_train, write_market_tree
from PIL import Image
from torch import nn

from ppreid.models.reid_module import ReIDModule
from ppreid.reports import tables
from ppreid.utils.errors import ConfigValueError, find_input_error

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# Tiny attackers: attack at the TINY input size (32x16), a few steps each.
FAST = [
    "model=attack",
    "model.attackers=[l1,gan,diffusion,optim,own]",  # every kind (the sandbox recipe trains l1 only)
    "model.attack_size=[32,16]",
    "model.l1.steps=5",
    "model.gan.steps=5",
    "model.diffusion.steps=5",
    "model.l1.decoder.base_channels=32",
    "model.gan.decoder.base_channels=32",
    "model.gan.discriminator.base_channels=8",
    "model.gan.discriminator.max_channels=32",
    "model.diffusion.sample_size=null",
    "model.diffusion.decoder.block_out_channels=[8,16]",
    "model.diffusion.decoder.inference_steps=3",
    "model.diffusion.num_samples=1",
    "model.num_pictures=3",
    "model.optim.steps=3",
    "model.probes.steps=20",
    "model.max_scored_images=null",
]


class DownsampledImageExtractor(ReIDModule):
    """A deliberately leaky extractor: the feature is the (normalized) image average-pooled to ``size``."""

    def __init__(self, size=(8, 4), num_classes=None, name: str = "leaky") -> None:
        super().__init__()
        self.size = tuple(size)
        self.scale = nn.Parameter(torch.ones(1))

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(images, self.size).flatten(1) * self.scale


def write_leaky_checkpoint(path: Path, height: int = 32, width: int = 16) -> Path:
    """A checkpoint of this repository's format (state dict + build spec) holding the leaky extractor."""
    spec = {
        "format": 1,
        "model": {"_target_": "test_attack.DownsampledImageExtractor", "size": [8, 4]},
        "choices": {"model": "leaky", "backbone": None, "loss": None},
        "input": {"height": height, "width": width, **IMAGENET},
        "num_classes": 0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": DownsampledImageExtractor().state_dict(), "ppreid": spec, "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> Path:
    """Market layout with 80 training identities (each a random pair of colours) and 12 test identities, so
    an attacker can learn colours it then meets on unseen people."""
    root = tmp_path_factory.mktemp("colour_data")
    write_market_tree(
        root / "Market-1501-v15.09.15",
        list(range(1, 81)),
        list(range(101, 113)),
        cams=4,
        train_per_id=2,
        gallery_per_id=2,
    )
    return root


class ConstantExtractor(ReIDModule):
    """A feature-blind extractor: every image gets the same feature."""

    def __init__(self, dim: int = 8, num_classes=None, name: str = "constant") -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return images.new_ones(images.shape[0], 8) * self.scale


def write_constant_checkpoint(path: Path, height: int = 32, width: int = 16) -> Path:
    spec = {
        "format": 1,
        "model": {"_target_": "test_attack.ConstantExtractor"},
        "choices": {"model": "constant", "backbone": None, "loss": None},
        "input": {"height": height, "width": width, **IMAGENET},
        "num_classes": 0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": ConstantExtractor().state_dict(), "ppreid": spec, "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def leaky_ckpt(tmp_path_factory) -> Path:
    return write_leaky_checkpoint(tmp_path_factory.mktemp("leaky") / "extractor" / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def leaky_audit(colour_data, leaky_ckpt, tmp_path_factory):
    """The leaky extractor audited by l1 and optim (with their nulls), cross-domain and in-domain."""
    out, ckpt = tmp_path_factory.mktemp("leaky_audit"), leaky_ckpt
    res = run_train(
        TINY
        + FAST
        + [
            "data=market1501",
            f"model.extractor_ckpt={ckpt}",
            "model.attackers=[l1,optim]",
            "model.l1.steps=40",
            "model.l1.lr=5e-3",
            "model.optim.steps=20",
            "data.val_split.identities=8",
        ],
        out / "audit",
        colour_data,
    )
    return res, out / "audit", ckpt


@pytest.mark.slow
def test_cross_attackers_are_scored_on_the_held_out_source_identities(leaky_audit):
    """The cross-domain attackers train on the source's training identities only and are scored, beside the
    targets, on the 8 held-out validation identities (2 images each), where the leaky extractor shows its
    leak with no style gap."""
    res, _, _ = leaky_audit
    held = res["privacy_source_val"]
    assert held["num_images"] == held["num_scored"] == 8 * 2
    train = res["audit"]["train"]
    assert train["pairs"] + train["val_pairs"] == (80 - 8) * 2 * 2  # the other 72 identities' images and mirrors
    l1 = held["attackers"]["l1"]
    assert l1["ssim_gain"] > 0.1 and l1["ssim_gain"] == pytest.approx(
        l1["ssim"] - max(l1["null_ssim"], l1["mean_image_ssim"])
    )
    assert held["strongest"] in {"l1", "optim"} and "adversary_strength" not in held  # no own decoder here
    assert "cross/source_val/score" in res["audit"]["cost_s"]


@pytest.mark.slow
def test_a_leaky_extractor_shows_a_large_gain_and_leakage(leaky_audit):
    res, out, _ = leaky_audit
    p = res["privacy"]["market1501"]
    l1 = p["attackers"]["l1"]
    assert l1["ssim"] > p["mean_image_ssim"] + 0.1 and l1["psnr"] > p["mean_image_psnr"] + 3, p
    assert l1["ssim_gain"] == pytest.approx(l1["ssim"] - max(l1["null_ssim"], l1["mean_image_ssim"]))
    assert l1["gain_over_null"] == pytest.approx(l1["ssim"] - l1["null_ssim"])
    assert l1["ssim_gain"] > 0.1 and l1["null_ssim"] < p["mean_image_ssim"] + 0.02, l1  # the null learns no more
    assert p["strongest"] == max(p["attackers"], key=lambda a: p["attackers"][a]["ssim_gain"])
    assert p["ssim_gain"] == p["attackers"][p["strongest"]]["ssim_gain"] >= l1["ssim_gain"]
    # leave-one-out over all 49 test images, judged by the extractor itself (no reference given)
    assert p["num_images"] == p["num_scored"] == 12 + 12 * 3 + 1 and p["leakage_judge"] == "extractor"
    assert p["extractor_r1"] == 1.0 and 0 < p["chance_r1"] < 0.1
    assert l1["leakage_norm"] > 0.5
    assert p["most_leaking"] == max(p["attackers"], key=lambda a: p["attackers"][a]["leakage_norm"])
    assert p["leakage_norm"] == p["attackers"][p["most_leaking"]]["leakage_norm"] >= l1["leakage_norm"]
    assert p["attackers"]["optim"]["ssim_gain"] > 0.02  # 20 inversion steps already beat inverting other features
    inside = p["in_domain"]  # 6 of the 12 test identities train, the other 6 are scored
    assert inside["num_train_identities"] == 6
    assert inside["pairs"] == inside["num_train_images"] - 2  # 10% of the 21 images held out for early stopping
    assert inside["num_scored"] == p["num_images"] - inside["num_train_images"]
    assert {"ssim", "null_ssim", "ssim_gain", "leakage_norm"} <= set(inside["attackers"]["l1"])
    assert set(p["probes"]["skipped"]) >= {"gender", "viewpoint"}  # Market records carry no attributes


@pytest.mark.slow
def test_a_feature_blind_extractor_shows_no_gain(leaky_ckpt, colour_data, tmp_path):
    """Constant features: the attacker is its own null (gain ~0); the leaky extractor as reference judge finds
    no identity in its reconstructions."""
    ckpt = write_constant_checkpoint(tmp_path / "constant" / "checkpoints" / "last.ckpt")
    res = run_train(
        TINY
        + FAST
        + [
            "data=market1501",
            f"model.extractor_ckpt={ckpt}",
            "model.attackers=[l1]",
            "model.audit_split=cross",
            "model.l1.steps=40",
            "model.l1.lr=5e-3",
            f"model.reference_ckpt={leaky_ckpt}",
            "model.probes.enabled=false",
        ],
        tmp_path / "audit",
        colour_data,
    )
    p = res["privacy"]["market1501"]
    l1 = p["attackers"]["l1"]
    # a blind attacker never beats the better blind guess, and scores about as its null
    assert l1["ssim_gain"] < 0.03 and abs(l1["gain_over_null"]) < 0.03, l1
    assert p["leakage_judge"] == "reference" and p["reference_r1"] == 1.0
    assert abs(l1["leakage_norm"]) < 0.25, l1
    assert "in_domain" not in p and "probes" not in p


@pytest.mark.slow
def test_results_json_privacy_section_and_urr(leaky_audit):
    res, out, ckpt = leaky_audit
    written = json.loads((out / "results.json").read_text())
    assert written["test"] == res["test"] and written["model"] == "attack" and written["train"] is False
    p = written["privacy"]["market1501"]
    assert set(p["attackers"]) == {"l1", "optim"}
    for row in list(p["attackers"].values()) + list(p["in_domain"]["attackers"].values()):
        assert {"ssim", "psnr", "null_ssim", "null_psnr", "ssim_gain", "leakage_r1", "leakage_norm"} <= set(row)
        assert -1 <= row["ssim"] <= 1
    assert p["urr"] == pytest.approx(written["test"]["market1501"]["mAP"] / p["attackers"][p["strongest"]]["ssim"])
    audit = written["audit"]
    assert audit["extractor"]["ckpt"] == str(ckpt) and audit["extractor"]["model"] == "leaky"
    assert audit["attack_size"] == [32, 16] and len(audit["group_hash"]) == 16
    assert audit["splits"] == ["cross", "in_domain"]
    assert audit["train"]["steps"] == {"l1": 40, "optim": 20}
    assert {
        "cross/pairs",
        "cross/train/l1",
        "cross/market1501/score",
        "in_domain/market1501/train/l1",
        "probes/market1501",
    } <= set(audit["cost_s"])
    assert audit["cost_total_s"] == pytest.approx(sum(audit["cost_s"].values()), abs=0.2)
    picture = out / "reconstructions_market1501.png"
    from PIL import Image

    with Image.open(picture) as im:
        assert im.size[0] > 3 * 96  # real + two attackers side by side, each at least 96 pixels wide


@pytest.mark.slow
def test_mean_image_control_is_recomputed_from_the_image_files(leaky_audit, colour_data):
    """mean_image_ssim / _psnr equal SSIM / PSNR (ppreid.metrics.privacy, tested against skimage) of the mean
    training image (with mirror images) against every query + gallery image, read independently here."""
    import numpy as np
    from PIL import Image

    from ppreid.metrics.privacy import psnr, ssim

    def read(files):
        return (
            torch.stack(
                [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1) for f in files]
            ).float()
            / 255
        )

    p = leaky_audit[0]["privacy"]["market1501"]
    root = colour_data / "Market-1501-v15.09.15"
    gallery = [f for f in sorted((root / "bounding_box_test").glob("*.jpg")) if not f.name.startswith("-1")]
    test = read(sorted((root / "query").glob("*.jpg")) + gallery)  # the parser leaves out junk (-1)
    train = read(sorted((root / "bounding_box_train").glob("*.jpg")))
    pairs = leaky_audit[0]["audit"]["train"]
    held_out = (pairs["pairs"] + pairs["val_pairs"]) // 2
    assert test.shape[0] == p["num_images"] and held_out == train.shape[0] - 8 * 2  # 8 validation identities
    # the validation identities are not in the training pairs, nor the attackers' held-out 10% of the images;
    # they barely move the mean
    mean = torch.cat([train, train.flip(3)]).mean(0, keepdim=True).expand_as(test)
    assert p["mean_image_ssim"] == pytest.approx(ssim(mean, test).mean().item(), abs=0.01)
    assert p["mean_image_psnr"] == pytest.approx(psnr(mean, test).mean().item(), abs=0.1)


TOY_MINI = [
    "data.prepare.num_identities=12",
    "data.prepare.images_per_identity=4",
    "data.prepare.target_identities=8",
    "data.prepare.gallery_per_identity=3",
    "data.prepare.height=32",
    "data.prepare.width=16",
    "data.prepare.progress=false",
    "data.val_split.identities=2",
]


@pytest.mark.slow
def test_audit_of_a_trained_bot_checkpoint_writes_every_part(tmp_path):
    """A BoT trained on a toy GenePerson-mini, audited by all four attackers with a second BoT as the
    reference judge: nulls and gains, cross-domain and in-domain figures, normalized leakage, attribute
    probes, the optim attacker, the cost per part, and a picture per target."""
    data = tmp_path / "data"
    for seed in (1, 2):
        run_train(TINY + TOY_MINI + [f"seed={seed}"], tmp_path / f"bot{seed}", data)
    ckpt, ref = (tmp_path / f"bot{seed}" / "checkpoints" / "last.ckpt" for seed in (1, 2))
    res = run_train(
        TINY + TOY_MINI + FAST + [f"model.extractor_ckpt={ckpt}", f"model.reference_ckpt={ref}"],
        tmp_path / "audit",
        data,
    )
    assert set(res["privacy"]) == {"night_cctv", "station_indoor", "far_high"}
    for target, p in res["privacy"].items():
        for block in (p, p["in_domain"]):
            assert set(block["attackers"]) == {"l1", "gan", "diffusion", "optim"}
            for row in block["attackers"].values():
                assert row["ssim_gain"] == pytest.approx(row["ssim"] - max(row["null_ssim"], row["mean_image_ssim"]))
                assert 0 <= row["leakage_r1_ref"] <= 1
                # normalized between chance and the judge's R1 on real images (undefined if the judge is at chance)
                assert (row["leakage_norm"] is not None) == (block["reference_r1"] > block["chance_r1"] + 1e-9)
            assert block["leakage_judge"] == "reference" and 0 <= block["reference_r1"] <= 1
            assert block["strongest"] in block["attackers"]
            defined = [a for a, row in block["attackers"].items() if row["leakage_norm"] is not None]
            assert block["most_leaking"] == (
                max(defined, key=lambda a: block["attackers"][a]["leakage_norm"]) if defined else None
            )
        assert p["in_domain"]["num_train_identities"] == 4  # half of the target's 8 identities
        probes = p["probes"]
        assert {"viewpoint", "camera"} <= set(probes["nuisance"]), probes
        assert "background" in set(probes["nuisance"]) | set(probes["skipped"]), probes
        assert "gender" in probes["soft_biometric"], probes
        for domain in ("cross_domain", "in_domain"):
            assert {"image_specific_gain", "background_gain", "person_gain", "probes"} <= set(p[domain])
        for row in (probes["nuisance"]["viewpoint"], probes["soft_biometric"]["gender"]):
            assert 0 <= row["balanced_accuracy"] <= 1 and row["gain"] == pytest.approx(
                row["balanced_accuracy"] - row["chance"]
            )
        assert (tmp_path / "audit" / f"reconstructions_{target}.png").is_file()
    assert res["audit"]["extractor"]["backbone"] == "tiny_cnn" and res["audit"]["cost_total_s"] > 0
    log_text = (tmp_path / "audit" / "train.log").read_text() if (tmp_path / "audit" / "train.log").is_file() else ""
    assert "backbone None" not in log_text


@pytest.mark.slow
def test_audits_of_one_config_pool_and_another_config_does_not(reid_data_dir, tmp_path):
    """Two seeds of one privacy GAN config audit into one table row (equal group hashes), a BoT does not; the
    privacy model's own decoder is scored as attacker ``own``, a BoT's audit skips it."""
    base = TINY + ["data=market1501", "trainer.max_epochs=1"]
    pgan = base + [
        "model=privacy_gan",
        "model.phases.reversal_from=0",
        "model.phases.joint_from=0",
        "model.generator.base_channels=16",
        "model.generator.min_channels=8",
        "model.discriminator.base_channels=8",
        "model.discriminator.max_channels=16",
    ]
    for seed in (1, 2):
        run_train(pgan + [f"seed={seed}"], tmp_path / f"pgan{seed}", reid_data_dir)
    run_train(base + ["model=bot"], tmp_path / "bot", reid_data_dir)
    audits = {}
    for name in ("pgan1", "pgan2", "bot"):
        ckpt = tmp_path / name / "checkpoints" / "last.ckpt"
        audits[name] = run_train(
            TINY
            + FAST
            + [
                "data=market1501",
                f"model.extractor_ckpt={ckpt}",
                "debug=fdr",
                "model.attackers=[l1,own]",
                "model.audit_split=cross",
            ],
            tmp_path / f"audit_{name}",
            reid_data_dir,
        )
    # the privacy model's own decoder (its G) is scored beside the fresh attacker; a BoT has none to score
    assert set(audits["pgan1"]["privacy"]["market1501"]["attackers"]) == {"l1", "own"}
    assert set(audits["bot"]["privacy"]["market1501"]["attackers"]) == {"l1"}
    strength = audits["pgan1"]["privacy"]["market1501"]["cross_domain"]["adversary_strength"]
    own_gain = audits["pgan1"]["privacy"]["market1501"]["attackers"]["own"]["ssim_gain"]
    assert strength["fresh_attacker"] == "l1" and strength["own_gain"] == own_gain
    assert "adversary_strength" not in audits["bot"]["privacy"]["market1501"]
    # on the source's held-out identities too (where the own decoder and the fresh attacker meet no style gap)
    held = audits["pgan1"]["privacy_source_val"]
    assert set(held["attackers"]) == {"l1", "own"} and held["adversary_strength"]["fresh_attacker"] == "l1"
    ext = audits["pgan1"]["audit"]["extractor"]
    assert ext["model"] == "privacy_gan" and ext["seed"] == 1 and ext["privacy"]["privacy_weight"] == 1.0
    hashes = {k: a["audit"]["group_hash"] for k, a in audits.items()}
    assert hashes["pgan1"] == hashes["pgan2"] != hashes["bot"]


@pytest.mark.parametrize("flip, pairs_per_image", [(False, 2), pytest.param(True, 1, marks=pytest.mark.slow)])
def test_flip_test_features_are_paired_with_one_image(flip, pairs_per_image, leaky_ckpt, colour_data, tmp_path):
    """With eval.flip the stored feature is the mean over an image and its mirror: pairing it with both images
    would teach an ambiguity, so the mirror images add pairs only without flip-test."""
    res = run_train(
        TINY
        + FAST
        + [
            "data=market1501",
            f"model.extractor_ckpt={leaky_ckpt}",
            "debug=fdr",
            f"eval.flip={str(flip).lower()}",
            "model.attackers=[l1]",
            "model.audit_split=cross",
        ],
        tmp_path,
        colour_data,
    )
    train = res["audit"]["train"]
    assert train["pairs"] + train["val_pairs"] == 16 * pairs_per_image  # a fast dev run: one batch of 16 images
    assert train["val_pairs"] == 2 * pairs_per_image  # 10% of the 16 images held out, with their mirrors


def test_fast_dev_run_of_the_audit(leaky_ckpt, colour_data, tmp_path):
    res = run_train(
        TINY + FAST + ["data=market1501", f"model.extractor_ckpt={leaky_ckpt}", "model.l1.steps=1000", "debug=fdr"],
        tmp_path,
        colour_data,
    )
    assert res["debug"] and res["partial"]
    assert res["audit"]["train"]["steps"] == {"l1": 1, "gan": 1, "diffusion": 1, "optim": 1}
    p = res["privacy"]["market1501"]
    assert set(p["attackers"]) == set(p["in_domain"]["attackers"]) == {"l1", "gan", "diffusion", "optim"}


@pytest.mark.parametrize(
    "override, message",
    [
        (None, r"model=attack needs the checkpoint to audit: give model.extractor_ckpt=<path>"),
        ("model.attackers=[l1,vae]", r"unknown attacker 'vae'; choose from l1, gan, diffusion, optim"),
        ("model.attack_size=[8,4]", r"model.attack_size=\[8, 4\]: .* >= 11"),
        ("model.audit_split=half", r"model.audit_split='half'; use one of cross, in_domain, both"),
        ("model.max_scored_images=1", r"model.max_scored_images=1; give null \(all\) or an int >= 2"),
    ],
)
def test_bad_audit_settings_are_clear_messages(override, message, leaky_ckpt, colour_data, tmp_path):
    extra = [] if override is None else [f"model.extractor_ckpt={leaky_ckpt}", override]
    with pytest.raises(Exception) as err:
        run_train(TINY + FAST + ["data=market1501", "debug=fdr"] + extra, tmp_path, colour_data)
    found = find_input_error(err.value)
    assert isinstance(found, ConfigValueError) and re.search(message, str(found)), err.value


def test_a_file_that_is_not_a_checkpoint_is_named(colour_data, tmp_path):
    junk = tmp_path / "weights.ckpt"
    junk.write_text("not a checkpoint")
    plain = tmp_path / "plain.pth"
    torch.save({"weight": torch.zeros(2)}, plain)
    for path, message in (
        (junk, "is not a checkpoint of this repository"),
        (plain, "not a Lightning checkpoint"),
        (tmp_path / "missing.ckpt", "no such file"),
    ):
        with pytest.raises(Exception) as err:
            run_train(
                TINY + FAST + ["data=market1501", "debug=fdr", f"model.extractor_ckpt={path}"],
                tmp_path / "o",
                colour_data,
            )
        text = str(find_input_error(err.value))
        assert f"model.extractor_ckpt={path}" in text and message in text, text


def test_the_audit_refuses_to_train(leaky_ckpt, colour_data, tmp_path):
    with pytest.raises(Exception) as err:
        run_train(
            TINY + FAST + ["data=market1501", "debug=fdr", "train=true", f"model.extractor_ckpt={leaky_ckpt}"],
            tmp_path,
            colour_data,
        )
    assert "never trains the extractor" in str(find_input_error(err.value))


# ----------------------------------------------------------------------------- tables of audits
def _write_audit(
    run_dir: Path,
    seed: int,
    group: str,
    m_ap: float,
    ssim: dict,
    experiment: str,
    null: float = 0.2,
    nleak: float = 0.5,
    inside: float = 0.5,
) -> None:
    """An audit's results.json as model=attack writes it (one target, 'night'): every attacker's null scores
    ``null``, the most-leaking attacker ``nleak``; in-domain gains and leakage are ``inside`` x the
    cross-domain ones."""
    attackers = {
        a: {
            "ssim": s,
            "psnr": 10 + 10 * s,
            "null_ssim": null,
            "ssim_gain": s - null,
            "leakage_r1": s / 2,
            "leakage_norm": nleak * s / max(ssim.values()),
        }
        for a, s in ssim.items()
    }
    strongest = max(ssim, key=ssim.get)
    gain = ssim[strongest] - null
    res = {
        "test": {"night": {"R1": 0.5, "mAP": m_ap}},
        "privacy": {
            "night": {
                "mean_image_ssim": 0.2,
                "mean_image_psnr": 12.0,
                "chance_r1": 0.01,
                "attackers": attackers,
                "strongest": strongest,
                "urr": m_ap / ssim[strongest],
                "ssim_gain": gain,
                "most_leaking": strongest,
                "leakage_norm": nleak,
                "in_domain": {"ssim_gain": inside * gain, "leakage_norm": inside * nleak},
                "probes": {"nuisance": {"mean_gain": 0.3}, "soft_biometric": {"mean_gain": 0.1}},
            }
        },
        "audit": {
            "group_hash": group,
            "extractor": {"model": "privacy_gan", "experiment": experiment, "privacy": {"privacy_weight": 1.0}},
        },
        "identity": {
            "model": "attack",
            "data": "genepers_mini",
            "experiment": None,
            "config_hash": f"{group}-{seed}",
        },  # the checkpoint path differs per seed
        "debug": False,
        "partial": False,
        "train": False,
        "seed": seed,
    }
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(res))


def test_tables_pool_audits_per_config_with_gains_and_normalized_leakage(tmp_path, capsys):
    base, rows = tmp_path / "unprotected", tmp_path / "all"
    _write_audit(base / "1", 1, "g0", 0.40, {"l1": 0.50, "gan": 0.40}, "privacy_sandbox_unprotected")
    _write_audit(base / "2", 2, "g0", 0.44, {"l1": 0.30, "gan": 0.40}, "privacy_sandbox_unprotected")
    _write_audit(rows / "gan1", 1, "g1", 0.40, {"l1": 0.20, "gan": 0.25}, "privacy_sandbox_gan", nleak=0.2)
    _write_audit(rows / "gan2", 2, "g1", 0.38, {"l1": 0.30, "gan": 0.20}, "privacy_sandbox_gan", nleak=0.3)
    assert tables.main([str(rows), "--baseline", str(base), "--format", "csv", "--mean-only"]) == 0
    out = list(__import__("csv").reader(capsys.readouterr().out.splitlines()))
    header, row = out[0], out[1]
    assert header[:4] == ["extractor.model", "extractor.experiment", "runs", "seeds"]
    assert header[4:] == [
        "mean/R1",
        "mean/mAP",
        "mean/SSIM:l1",
        "mean/gain:l1",
        "mean/SSIM:gan",
        "mean/gain:gan",
        "mean/SSIM:mean_image",
        "mean/gain",
        "mean/gain_in",
        "mean/nleak",
        "mean/nleak_in",
        "mean/probe_nuis",
        "mean/probe_soft",
        "mean/URR",
        "mean/nURR",
    ]
    assert row[:4] == ["privacy_gan", "privacy_sandbox_gan", "2", "1,2"]  # seeds pooled, audits are not eval-only
    cell = dict(zip(header, row))
    assert cell["mean/mAP"] == "39.0 ± 1.4" and cell["mean/SSIM:l1"] == "0.250 ± 0.071"
    # strongest: gan (0.25) in run 1, l1 (0.30) in run 2; gains over the null (0.2): 0.05 and 0.10
    assert cell["mean/gain"] == "0.075 ± 0.035" and cell["mean/gain_in"] == "0.037 ± 0.018"
    assert cell["mean/nleak"] == "25.0 ± 7.1" and cell["mean/nleak_in"] == "12.5 ± 3.5"
    assert cell["mean/probe_nuis"] == "30.0 ± 0.0" and cell["mean/probe_soft"] == "10.0 ± 0.0"
    # URR = mAP / strongest SSIM: 1.6 and 1.2667
    assert cell["mean/URR"] == "1.433 ± 0.236"
    # baseline: mAP 0.42, strongest SSIM (0.5 + 0.4) / 2 = 0.45; nURR = (mAP / 0.42) / (SSIM / 0.45)
    expected = [(0.40 / 0.42) / (0.25 / 0.45), (0.38 / 0.42) / (0.30 / 0.45)]
    mean = sum(expected) / 2
    std = (sum((v - mean) ** 2 for v in expected)) ** 0.5
    assert cell["mean/nURR"] == f"{mean:.3f} ± {std:.3f}"


def test_tables_privacy_metrics_by_name_and_bad_baseline(tmp_path, capsys):
    _write_audit(tmp_path / "a" / "1", 1, "g1", 0.4, {"l1": 0.2}, "x")
    _write_audit(tmp_path / "b" / "1", 1, "g2", 0.4, {"l1": 0.3}, "y")
    assert (
        tables.main(
            [
                str(tmp_path / "a"),
                "--metrics",
                "mAP",
                "SSIM:strongest",
                "PSNR:mean_image",
                "null:l1",
                "nleak:l1",
                "--format",
                "csv",
                "--mean-only",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("mean/mAP,mean/SSIM:strongest,mean/PSNR:mean_image,mean/null:l1,mean/nleak:l1")
    assert lines[1].endswith("40.0,0.200,12.00,0.200,50.0")
    assert tables.main([str(tmp_path / "a"), "--baseline", str(tmp_path)]) == 2  # two configs
    assert "audits of 2 configs" in capsys.readouterr().err
    assert tables.main([str(tmp_path / "a"), "--metrics", "SSIM"]) == 2
    assert "gain:strongest" in capsys.readouterr().err


def test_privacy_plot_writes_the_tradeoff_png_and_names_the_best_point(tmp_path, capsys):
    from ppreid.reports import privacy_plot

    _write_audit(tmp_path / "base" / "1", 1, "g0", 0.42, {"l1": 0.45}, "unprotected", nleak=0.6)
    _write_audit(tmp_path / "sweep" / "a", 1, "g1", 0.41, {"l1": 0.30}, "privacy_gan", nleak=0.2)
    _write_audit(tmp_path / "sweep" / "b", 1, "g2", 0.30, {"l1": 0.21}, "privacy_gan_strong", nleak=0.0)
    out = tmp_path / "tradeoff.png"
    assert (
        privacy_plot.main(
            [str(tmp_path / "sweep"), str(tmp_path / "base"), "--baseline", str(tmp_path / "base"), "--out", str(out)]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert out.stat().st_size > 0
    # gains over the null 0.2: baseline 0.25, privacy_gan 0.10 (x0.40), leakage 60 -> 20 (x0.33): worst 0.40
    assert "| privacy_gan w=1 | 1 | 41.0 | 0.100 | 0.050 | 20.0 | 10.0 | -1.0 | 0.40 |" in text
    assert (
        "best point within 2 mAP points: privacy_gan w=1: every gain and leakage at most 0.40 x the baseline's, "
        "mAP -1.0 points (goal: at most 0.5 x: reached)"
    ) in text


def test_privacy_plot_seeds_compares_like_with_like(tmp_path, capsys):
    from ppreid.reports import privacy_plot

    def audit(path, seed, group, m_ap, ssim, experiment):
        _write_audit(path, seed, group, m_ap, ssim, experiment)
        res = json.loads((path / "results.json").read_text())
        res["audit"]["extractor"]["seed"] = seed
        (path / "results.json").write_text(json.dumps(res))

    audit(tmp_path / "base" / "1", 1, "g0", 0.50, {"l1": 0.40}, "unprotected")
    audit(tmp_path / "base" / "2", 2, "g0", 0.30, {"l1": 0.30}, "unprotected")
    audit(tmp_path / "sweep" / "1", 1, "g1", 0.45, {"l1": 0.36}, "privacy_gan")
    assert (
        privacy_plot.main(
            [str(tmp_path), "--baseline", str(tmp_path / "base"), "--seeds", "1", "--out", str(tmp_path / "t.png")]
        )
        == 0
    )
    text = capsys.readouterr().out
    # against seed 1 alone (mAP 50, gain 0.20): gain 0.16 (x0.80), -5 points (against both seeds: +5 points)
    assert "| privacy_gan w=1 | 1 | 45.0 | 0.160 | 0.080 | 50.0 | 25.0 | -5.0 | 1.00 |" in text
    assert privacy_plot.main([str(tmp_path), "--seeds", "7", "--out", str(tmp_path / "t.png")]) == 2
    assert "with extractor seeds [7]" in capsys.readouterr().err


def test_privacy_plot_labels_name_the_loss_only_for_decoder_defences(tmp_path):
    from ppreid.reports import privacy_plot

    for name, privacy in (
        ("gan", {"privacy_weight": 3.0, "privacy_loss": "ssim_gain", "defence": "gan"}),
        ("dep", {"privacy_weight": 0.3, "privacy_loss": "ssim_gain", "defence": "dependence"}),
        ("vib", {"privacy_weight": 0.0, "privacy_loss": "ssim_gain", "defence": "none", "bottleneck": {"beta": 3e-4}}),
    ):
        _write_audit(tmp_path / name / "1", 1, name, 0.4, {"l1": 0.3}, f"privacy_sandbox_{name}")
        res = json.loads((tmp_path / name / "1" / "results.json").read_text())
        res["audit"]["extractor"]["privacy"] = privacy
        (tmp_path / name / "1" / "results.json").write_text(json.dumps(res))
    runs = [tables.load_result(p) for p in tables.find_results([str(tmp_path)])]
    labels = sorted(p["label"] for p in privacy_plot.points(runs))
    assert labels == [
        "privacy_sandbox_dep w=0.3",
        "privacy_sandbox_gan ssim_gain w=3",
        "privacy_sandbox_vib beta=0.0003",
    ]


def test_reconstruction_pictures_say_what_their_rows_and_columns_are(tmp_path):
    """reconstructions_<target>.png (audit) and own_reconstructions.png (privacy models): a legend on top,
    the attackers named over their columns / the decoders left of their rows."""
    from PIL import Image

    from ppreid.audit.report import save_reconstructions
    from ppreid.callbacks.pictures import captioned_grid
    from ppreid.callbacks.privacy_pictures import reconstruction_sheet

    real = torch.rand(4, 3, 32, 16, generator=torch.Generator().manual_seed(0))
    recons = {"l1": real * 0.5, "gan": real * 0.25}
    path = tmp_path / "reconstructions_market1501.png"
    save_reconstructions(path, real, recons, torch.arange(4), torch.arange(3))
    with Image.open(path) as im:
        bare = captioned_grid([Image.new("RGB", (96, 192))] * 9, [""] * 9, columns=3)  # the tiles alone
        assert im.size[1] >= bare.size[1] + 3 * 14 + 14  # three legend lines and the column labels on top
        top = np.asarray(im.convert("L"))[: 3 * 14]
        assert (top < 100).any()  # legend text
    own = reconstruction_sheet(real, {"G": real * 0.5, "mean": real.mean(0, keepdim=True)})
    bare = captioned_grid([Image.new("RGB", (64, 128))] * 12, [""] * 12, columns=4)
    assert own.size[0] > bare.size[0] and own.size[1] > bare.size[1]  # row labels left, legend on top
    left = np.asarray(own.convert("L"))[:, : own.size[0] - bare.size[0]]
    assert (left < 100).any()


# ----------------------------------------------------------------------------- audit v3 on masked records
BACKGROUNDS = ["street", "park", "campus", "plaza"]
BG_COLOURS = [(40, 40, 40), (40, 160, 40), (160, 120, 60), (200, 200, 220)]


def write_masked_genepers(root: Path, train_ids: int = 40, test_ids: int = 10) -> Path:
    """A GenePerson-format set (bounding_box_train/ query/ bounding_box_test/ + manifest.jsonl) of 32x16 images:
    a person box in the identity's two colours on a camera's background, each record naming its attributes
    and a person mask (``mask``: the box, 255 = person). The background colour and the illumination are
    what a leaky feature tells beyond the person."""
    lines = []
    for split in ("bounding_box_train", "query", "bounding_box_test", "masks"):
        (root / split).mkdir(parents=True, exist_ok=True)

    def image(split: str, pid: int, cam: int, k: int) -> None:
        rng = np.random.default_rng(pid)
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        light = 0.7 if k % 2 else 1.0
        img = np.zeros((32, 16, 3), np.float32)
        img[:] = BG_COLOURS[cam]
        mask = np.zeros((32, 16), np.uint8)
        img[8:16, 6:10], img[16:25, 6:10] = top, bottom  # narrow: 11x11 SSIM windows centred on background too
        mask[8:25, 6:10] = 255
        noise = np.random.default_rng(pid * 100 + cam * 10 + k).normal(0, 6, img.shape)
        name = f"{pid:05d}_c{cam + 1}_{k:06d}.jpg"
        Image.fromarray(np.clip(img * light + noise, 0, 255).astype(np.uint8)).save(root / split / name)
        Image.fromarray(mask).save(root / "masks" / f"{split}_{name[:-4]}.png")
        attrs = {
            "background": BACKGROUNDS[cam],
            "illumination": "dim" if k % 2 else "bright",
            "camera": f"look{cam}",
            "viewpoint": ["front", "back"][(pid + k) % 2],
            "gender": ["male", "female"][pid % 2],
            "build": ["slim", "heavy"][(pid // 2) % 2],
            "hair_style": ["short", "long"][(pid // 4) % 2],
        }
        entry = {"file": f"{split}/{name}", "pid": pid, "camid": cam, "seed": 1, "attributes": attrs}
        lines.append(json.dumps({**entry, "mask": f"masks/{split}_{name[:-4]}.png"}))

    for pid in range(1, train_ids + 1):
        for k in range(3):
            image("bounding_box_train", pid, (pid + k) % 4, k)
    for pid in range(101, 101 + test_ids):
        image("query", pid, 0, 0)
        for k in range(1, 4):
            image("bounding_box_test", pid, k, k)
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def masked_data(tmp_path_factory) -> Path:
    return write_masked_genepers(tmp_path_factory.mktemp("masked") / "GenePerson")


def test_masked_records_reach_the_dataset(masked_data):
    from ppreid.data.datasets import build_dataset

    splits = build_dataset("genepers", str(masked_data))
    for rec in splits.train[:2] + splits.query[:1] + splits.gallery[:1]:
        assert rec.mask and Path(rec.mask).is_file() and Path(rec.mask).parent.name == "masks"
        assert rec.attributes["background"] in BACKGROUNDS


@pytest.mark.slow
def test_audit_v3_results_per_domain_on_masked_records(masked_data, leaky_ckpt, tmp_path):
    """A leaky extractor (the image pooled to 8x4) audited on records with person masks: per domain
    (``cross_domain``, ``in_domain``) the swap test, the region gains and the probes; gains over max(null,
    mean image); attackers stop at their validation plateau, their curves in results.json and a PNG."""
    run_train(
        TINY
        + FAST
        + [
            "data=genepers",
            f"data.root={masked_data}",
            f"data.targets=[{{dataset:genepers,root:'{masked_data}',name:gp}}]",
            f"model.extractor_ckpt={leaky_ckpt}",
            "model.attackers=[l1]",
            "model.l1.steps=30",
            "model.l1.lr=5e-3",
            "model.early_stopping.eval_every=5",
            "model.early_stopping.patience=2",
            "model.early_stopping.val_fraction=0.2",
            "model.probes.steps=60",
        ],
        tmp_path,
        None,
    )
    written = json.loads((tmp_path / "results.json").read_text())
    p = written["privacy"]["gp"]
    for domain in ("cross_domain", "in_domain"):
        block = p[domain]
        assert {"image_specific_gain", "background_gain", "person_gain", "probes"} <= set(block), domain
        for key in ("image_specific_gain", "background_gain", "person_gain"):
            assert isinstance(block[key], float) and -1 <= block[key] <= 1, (domain, key, block[key])
        nuisance = block["probes"]["nuisance"]
        assert {"background", "illumination", "camera", "viewpoint"} <= set(nuisance)
        assert set(block["probes"]["soft_biometric"]) >= {"gender", "build", "hair_style"}
        # the pooled image shows the background colour: far above chance; the viewpoint is not in the pixels
        assert nuisance["background"]["points"] > 40, nuisance
        assert nuisance["background"]["points"] == pytest.approx(100 * nuisance["background"]["gain"])
    for block in (p, p["in_domain"]):
        row = block["attackers"]["l1"]
        assert row["ssim_gain"] == pytest.approx(row["ssim"] - max(row["null_ssim"], row["mean_image_ssim"]))
        for region in ("person", "background"):
            assert row[f"{region}_gain"] == pytest.approx(
                row[f"{region}_ssim"] - max(row[f"{region}_null_ssim"], row[f"{region}_mean_image_ssim"])
            )
        assert block["num_swap_pairs"] > 0 and "regions" not in block
    assert p["cross_domain"]["image_specific_gain"] == p["attackers"]["l1"]["image_specific_gain"]
    curves = written["audit"]["curves"]
    assert set(curves) == {"cross", "in_domain/gp"} and set(curves["cross"]) == {"l1", "l1_null"}
    for curve in curves["cross"].values():
        assert curve["step"] and len(curve["step"]) == len(curve["val"]) == len(curve["train"])
        assert curve["stopped_step"] <= 30 and curve["best_step"] in curve["step"]
        assert curve["stopped"] in ("plateau", "max_steps")
    assert written["audit"]["train"]["steps"]["l1"] == curves["cross"]["l1"]["stopped_step"]
    assert (tmp_path / "attacker_curves.png").is_file()


def test_without_masks_the_region_keys_are_null_with_a_note(leaky_ckpt, colour_data, tmp_path):
    res = run_train(
        TINY + FAST + ["data=market1501", f"model.extractor_ckpt={leaky_ckpt}", "model.attackers=[l1]", "debug=fdr"],
        tmp_path,
        colour_data,
    )
    p = res["privacy"]["market1501"]
    for block in (p["cross_domain"], p["in_domain"]):
        assert block["background_gain"] is None and block["person_gain"] is None
    assert "no person masks" in p["regions"] and "person_ssim" not in p["attackers"]["l1"]
