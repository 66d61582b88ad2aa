"""Diffusion generator, CLIP quality filter and paper preset on tiny random-weight models (offline, CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT as REPO
from conftest import run_synth
from PIL import Image

from ppreid.synth.generators.base import ImageRequest
from ppreid.synth.tiny_pipelines import build_tiny_open_clip, build_tiny_sd_pipeline, clip_bpe_vocab
from ppreid.utils.errors import ConfigValueError

PROMPT = "a full-body photo of an adult female pedestrian, slim build, wearing a red plain t shirt"
NEGATIVE = "cartoon, blurry"


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny_sd") / "pipe")


@pytest.fixture(scope="module")
def gen(tiny_sd):
    from ppreid.synth.generators.diffusion import DiffusionGenerator

    return DiffusionGenerator(str(tiny_sd), steps=2, guidance_scale=5.0)


def req(seed: int, prompt: str = PROMPT, identity_seed: int = 100, height: int = 128, width: int = 64) -> ImageRequest:
    return ImageRequest(
        pid=1,
        camid=0,
        attributes={},
        prompt=prompt,
        negative_prompt=NEGATIVE,
        seed=seed,
        identity_seed=identity_seed,
        height=height,
        width=width,
    )


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_tokenizer_built_from_open_clip_bpe_matches_open_clip(tiny_sd):
    import open_clip
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert len(merges) == 48894
    text = "A photo of a young woman, wearing a red striped T-shirt and blue_jeans; backpack!"
    ours = CLIPTokenizer.from_pretrained(str(tiny_sd / "tokenizer"))(text).input_ids
    ref = open_clip.get_tokenizer("ViT-B-32")(text)[0].tolist()
    assert ours == ref[: len(ours)] and ref[len(ours)] == 0 and ours[0] == 49406 and ours[-1] == 49407


def test_generates_requested_size_deterministically(gen):
    assert gen.name == "diffusion" and gen.device.type == "cpu" and gen.dtype == torch.float32
    a = gen.generate([req(1), req(2), req(3)])
    assert [im.size for im in a] == [(64, 128)] * 3 and all(im.mode == "RGB" for im in a)
    b = gen.generate([req(1), req(2), req(3)])
    assert all(np.array_equal(px(x), px(y)) for x, y in zip(a, b))
    assert np.abs(px(a[0]) - px(a[1])).mean() > 5  # another seed, another image
    assert float(px(a[0]).std()) > 1  # not a blank image


def test_image_depends_on_its_seed_not_its_batch(gen):
    ab = gen.generate([req(5), req(6)])
    ba = gen.generate([req(6), req(5)])
    assert np.array_equal(px(ab[0]), px(ba[1])) and np.array_equal(px(ab[1]), px(ba[0]))
    alone = gen.generate([req(5)])[0]
    # batch size 1 vs 2: CPU float reductions may order differently; at most 1 grey level apart.
    diff = np.abs(px(alone) - px(ab[0]))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_initial_latents_mix_identity_and_image_noise(tiny_sd):
    from ppreid.synth.generators.diffusion import DiffusionGenerator

    g = DiffusionGenerator(str(tiny_sd), steps=2, identity_noise_mix=0.25)
    lat = g.initial_latents([req(7, identity_seed=11), req(8, identity_seed=12)], 128, 64)
    assert lat.shape == (2, 4, 128 // 8, 64 // 8)
    for row, (seed, id_seed) in enumerate([(7, 11), (8, 12)]):
        z_img = torch.randn((1, 4, 16, 8), generator=torch.Generator().manual_seed(seed))
        z_id = torch.randn((1, 4, 16, 8), generator=torch.Generator().manual_seed(id_seed))
        torch.testing.assert_close(lat[row : row + 1], 0.5 * z_id + math.sqrt(0.75) * z_img)


def test_full_identity_noise_makes_same_identity_images_equal(tiny_sd, gen):
    from ppreid.synth.generators.diffusion import DiffusionGenerator

    g = DiffusionGenerator(str(tiny_sd), steps=2, guidance_scale=5.0, identity_noise_mix=1.0)
    shared = g.generate([req(1, identity_seed=42), req(2, identity_seed=42)])
    assert np.array_equal(px(shared[0]), px(shared[1]))  # PNDM is deterministic: noise is all identity
    own = gen.generate([req(1, identity_seed=42), req(2, identity_seed=42)])
    assert np.abs(px(own[0]) - px(own[1])).mean() > 5


def test_chunked_prompt_embeddings(gen):
    short = gen.encode_prompts([PROMPT], 1)
    ref, _ = gen.pipe.encode_prompt(PROMPT, gen.device, 1, False)
    torch.testing.assert_close(short, ref, rtol=0, atol=0)
    long_prompt = ", ".join([PROMPT] * 6)
    n_tokens = len(gen.pipe.tokenizer(long_prompt, add_special_tokens=False).input_ids)
    assert 75 < n_tokens <= 150
    assert gen.prompt_chunks([long_prompt, PROMPT], [NEGATIVE, NEGATIVE]) == [2, 1]
    emb = gen.encode_prompts([long_prompt], 2)
    assert emb.shape == (1, 154, 32)
    truncated, _ = gen.pipe.encode_prompt(long_prompt, gen.device, 1, False)  # the pipeline keeps 75 tokens
    torch.testing.assert_close(emb[:, :77], truncated, rtol=0, atol=0)
    assert not torch.allclose(emb[:, 77:], short)  # the second chunk carries the rest


def test_long_prompt_does_not_change_its_batch_neighbours(gen):
    long_prompt = ", ".join([PROMPT] * 6)
    mixed = gen.generate([req(3), req(4, prompt=long_prompt)])
    alone = gen.generate([req(3)])
    assert np.array_equal(px(mixed[0]), px(alone[0]))
    assert mixed[1].size == (64, 128)


def test_render_scale_renders_larger_and_resizes(tiny_sd):
    from ppreid.synth.generators.diffusion import DiffusionGenerator

    g = DiffusionGenerator(str(tiny_sd), steps=2, render_scale=2.0)
    assert g.render_size(64, 32) == (128, 64)
    assert g.generate([req(1, height=64, width=32)])[0].size == (32, 64)
    with pytest.raises(ConfigValueError, match="multiple of the pipeline's VAE factor 8"):
        g.render_size(62, 32)  # 124 x 64


def test_scheduler_by_name_keeps_the_pipeline_betas(tiny_sd):
    from diffusers import DDIMScheduler, PNDMScheduler

    from ppreid.synth.generators.diffusion import DiffusionGenerator

    g = DiffusionGenerator(str(tiny_sd), steps=2, scheduler="ddim")
    assert isinstance(g.pipe.scheduler, DDIMScheduler)
    assert g.pipe.scheduler.config.beta_end == 0.012 and g.pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert g.generate([req(1)])[0].size == (64, 128)
    with pytest.raises(ConfigValueError, match="generator.scheduler='warp'"):
        DiffusionGenerator(str(tiny_sd), scheduler="warp")
    with pytest.raises(ConfigValueError, match="generator.scheduler='UNet2DModel'"):
        DiffusionGenerator(str(tiny_sd), scheduler="UNet2DModel")
    assert isinstance(DiffusionGenerator(str(tiny_sd)).pipe.scheduler, PNDMScheduler)


def test_device_and_dtype_resolution():
    from ppreid.synth.generators.diffusion import resolve_device, resolve_dtype

    cpu = torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype("fp16", cpu) == torch.float16
    with pytest.raises(ConfigValueError, match="generator.dtype='int8'"):
        resolve_dtype("int8", cpu)
    with pytest.raises(ConfigValueError, match="generator.device='gpu0' is not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda")


def test_unloadable_pretrained_says_what_was_tried(tmp_path):
    from ppreid.synth.generators.diffusion import DiffusionGenerator

    with pytest.raises(ConfigValueError, match="needs generator.pretrained") as err:
        DiffusionGenerator(None)
    assert "save_pretrained" in str(err.value)
    missing = tmp_path / "no_such_folder"
    with pytest.raises(ConfigValueError, match="no folder exists there") as err:
        DiffusionGenerator(str(missing))
    assert str(missing) in str(err.value) and "generator.pretrained=/path/to/sd-folder" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigValueError, match="has no model_index.json"):
        DiffusionGenerator(str(tmp_path / "empty"))
    with pytest.raises(ConfigValueError) as err:
        DiffusionGenerator("no-such-org/no-such-pipeline", local_files_only=True)
    msg = str(err.value)
    assert "'no-such-org/no-such-pipeline'" in msg and "hub id, offline" in msg and "save_pretrained" in msg


def test_bad_generator_values(tiny_sd):
    from ppreid.synth.generators.diffusion import DiffusionGenerator

    for kwargs, text in [
        ({"steps": 0}, "generator.steps=0"),
        ({"identity_noise_mix": 1.5}, "identity_noise_mix=1.5"),
        ({"max_prompt_chunks": 0}, "max_prompt_chunks=0"),
        ({"render_scale": 0}, "render_scale=0"),
    ]:
        with pytest.raises(ConfigValueError, match=text.replace(".", r"\.")):
            DiffusionGenerator(str(tiny_sd), **kwargs)


# ------------------------------------------------------------------ quality filter
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return build_tiny_open_clip(tmp_path_factory.mktemp("tiny_clip"))


def test_quality_filter_scores_are_cosine_similarities(tiny_clip):
    import open_clip

    from ppreid.synth.quality_filter import ClipQualityFilter

    name, weights = tiny_clip
    images = [Image.new("RGB", (64, 128), c) for c in [(200, 30, 30), (20, 200, 40), (10, 10, 10)]]
    images.append(Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 64, 3), dtype=np.uint8)))
    filt = ClipQualityFilter(name, str(weights), threshold=0.0, device="cpu")
    scores = filt.scores(images)
    # independent reference: open_clip directly, whole image padded into the square input
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(weights), image_resize_mode="longest"
    )
    with torch.no_grad():
        f = model.encode_image(torch.stack([preprocess(im) for im in images]))
        t = model.encode_text(open_clip.get_tokenizer(name)(["a photo of a person"]))
    ref = torch.nn.functional.cosine_similarity(f, t, dim=-1)
    np.testing.assert_allclose(scores, ref.numpy(), atol=1e-5)
    assert len(set(np.round(scores, 6))) == 4 and all(-1 <= s <= 1 for s in scores)

    reqs = [req(i) for i in range(4)]
    assert ClipQualityFilter(name, str(weights), threshold=-1.0).accept(images, reqs) == [True] * 4
    assert ClipQualityFilter(name, str(weights), threshold=1.0).accept(images, reqs) == [False] * 4
    mid = float(np.median(scores))
    assert ClipQualityFilter(name, str(weights), threshold=mid).accept(images, reqs) == [s >= mid for s in scores]
    assert sum(s >= mid for s in scores) == 2


def test_quality_filter_bad_values(tiny_clip):
    from ppreid.synth.quality_filter import ClipQualityFilter

    name, weights = tiny_clip
    with pytest.raises(ConfigValueError, match="needs quality_filter.clip_model"):
        ClipQualityFilter(None, None, 0.2)
    with pytest.raises(ConfigValueError, match="'Not-A-Model' is not an open_clip model"):
        ClipQualityFilter("Not-A-Model", None, 0.2)
    with pytest.raises(ConfigValueError, match="neither an existing weights file nor an open_clip tag"):
        ClipQualityFilter(name, "/no/such/weights.pt", 0.2)
    with pytest.raises(ConfigValueError, match="threshold=25"):
        ClipQualityFilter(name, str(weights), 25)
    with pytest.raises(ConfigValueError, match="no such model config file"):
        ClipQualityFilter("/no/such/model.json", None, 0.2)


@pytest.mark.slow
def test_quality_filter_rejections_regenerate_in_synth_py(tiny_clip, tmp_path):
    """threshold 1.0 rejects every image: each is generated max_attempts (3) times, the last one kept."""
    name, weights = tiny_clip
    out = tmp_path / "gp"
    run_synth(
        tmp_path,
        out,
        "num_identities=2",
        "images_per_identity=2",
        "height=64",
        "width=32",
        "quality_filter.enabled=true",
        "quality_filter.max_attempts=3",
        f"quality_filter.clip_model={weights.with_suffix('.json')}",
        f"quality_filter.pretrained={weights}",
        "quality_filter.threshold=1.0",
        "quality_filter.device=cpu",
    )
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["num_images"] == 4 and json.loads((out / "timing.json").read_text())["images_generated"] == 12
    from ppreid.synth.attributes import identity_seed, image_seed
    from ppreid.synth.writer import RESEED_STRIDE

    for line in map(json.loads, (out / "manifest.jsonl").read_text().splitlines()):
        planned = image_seed(identity_seed(0, line["pid"]), int(line["file"][-10:-4]))
        assert line["seed"] == planned + 2 * RESEED_STRIDE


# ------------------------------------------------------------------ configs and synth.py
def compose_synth(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="synth", overrides=overrides)


def test_paper_preset_composes_to_paper_scale(tiny_sd):
    from hydra.utils import instantiate

    cfg = compose_synth(["preset=genepers_paper", f"generator.pretrained={tiny_sd}"])
    assert cfg.num_identities == 6641 and cfg.batch_size == 16 and (cfg.height, cfg.width) == (256, 128)
    lo, hi = cfg.images_per_identity
    expected = cfg.num_identities * (lo + hi) / 2
    assert abs(expected - 130_519) / 130_519 < 0.01  # the paper's count within 1 %
    assert cfg.generator._target_ == "ppreid.synth.generators.diffusion.DiffusionGenerator"
    assert cfg.generator.steps == 30 and cfg.generator.render_scale == 2.0
    g = instantiate(cfg.generator, steps=2)
    assert g.model_id == str(tiny_sd) and g.render_size(cfg.height, cfg.width) == (512, 256)
    unset = compose_synth(["preset=genepers_paper"])
    with pytest.raises(Exception) as err:
        instantiate(unset.generator)
    cause = err.value if isinstance(err.value, ConfigValueError) else err.value.__cause__
    assert isinstance(cause, ConfigValueError) and "needs generator.pretrained" in str(cause)


def identity_words(attributes):
    return [str(v).replace("_", " ") for v in attributes.values() if v != "none"]


@pytest.mark.slow
def test_synth_py_with_tiny_diffusion_pipeline(tiny_sd, tmp_path):
    out = tmp_path / "gp"
    run_synth(
        tmp_path,
        out,
        "generator=diffusion",
        f"generator.pretrained={tiny_sd}",
        "generator.steps=2",
        "height=128",
        "width=64",
        "num_identities=3",
        "images_per_identity=2",
        "batch_size=4",
        timeout=600,
    )
    identities = {
        d["pid"]: d["attributes"] for d in map(json.loads, (out / "identities.jsonl").read_text().splitlines())
    }
    lines = [json.loads(l) for l in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(identities) == 3 and len(lines) == 6
    for line in lines:
        with Image.open(out / line["file"]) as im:
            assert im.size == (64, 128)
        for word in identity_words(identities[line["pid"]]):
            assert word in line["prompt"], (word, line["prompt"])
    files = sorted(p.name for p in (out / "bounding_box_train").iterdir())
    assert files == sorted(Path(l["file"]).name for l in lines)
    meta = json.loads((out / "dataset.json").read_text())
    assert json.dumps(meta).count("diffusion") >= 1 and str(tiny_sd) in json.dumps(meta)
    assert json.loads((out / "timing.json").read_text())["generation_seconds"] > 0
