"""GPU check step 4 (``benchmarks/gpu_check.py``): synthesis images/s of the ``diffusion`` generator with a
random-weight pipeline of Stable Diffusion 1.5's size (nothing downloaded), batch 1 and 8, DDIM."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from gpu_check_core import Check

DIFFUSION_CONFIG_STEPS = 30  # conf/generator/diffusion.yaml: what synthesis runs by default


def build_random_sd_pipeline(dry_run: bool, device: torch.device, tokenizer_dir: Path):
    """A random-weight StableDiffusionPipeline assembled from diffusers / transformers blocks.

    GPU: Stable Diffusion 1.5's sizes: UNet (320, 640, 1280, 1280), 2 layers per block, cross-attention
    768, 8 heads (860M parameters); VAE (128, 256, 512, 512); a 12-layer, 768-wide CLIP ViT-L/14-size
    text encoder; CLIP's real 49,408-token tokenizer (built offline from open_clip's BPE merges); SD 1.5's
    scheduler config. Dry run: the tiny blocks of src/ppreid/synth/tiny_pipelines.py. Weights are created on
    ``device`` (fast random init).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ppreid.synth.tiny_pipelines import (
        CLIP_CONTEXT_LENGTH,
        CLIP_VOCAB_SIZE,
        assemble_sd_pipeline,
        write_clip_tokenizer,
    )

    if dry_run:
        unet_kw = dict(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=16,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=(2, 4),
            norm_num_groups=32,
        )
        vae_kw = dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, sample_size=32, norm_num_groups=8)
        text_kw = dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, projection_dim=32
        )
    else:
        unet_kw = dict(
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            sample_size=64,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        vae_kw = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512, norm_num_groups=32)
        text_kw = dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **unet_kw)
        n = len(vae_kw["block_out_channels"])
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            **vae_kw,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=CLIP_VOCAB_SIZE,
                max_position_embeddings=CLIP_CONTEXT_LENGTH,
                bos_token_id=CLIP_VOCAB_SIZE - 2,
                eos_token_id=CLIP_VOCAB_SIZE - 1,
                pad_token_id=CLIP_VOCAB_SIZE - 1,
                **text_kw,
            )
        )
    tokenizer = CLIPTokenizer.from_pretrained(
        str(write_clip_tokenizer(tokenizer_dir)), model_max_length=CLIP_CONTEXT_LENGTH
    )
    pipe = assemble_sd_pipeline(unet, vae, text_encoder, tokenizer)
    sizes = {
        k: sum(p.numel() for p in m.parameters()) / 1e6
        for k, m in (("unet", unet), ("vae", vae), ("text", text_encoder))
    }
    return pipe, sizes


def synthesis_requests(count: int, height: int, width: int):
    """``count`` image requests with real GenePerson attribute prompts (a plan of 8 images per identity)."""
    from ppreid.synth.plan import SynthPlan

    plan = SynthPlan.from_config(
        {"num_identities": max(1, math.ceil(count / 8)), "num_cameras": 4, "seed": 0, "images_per_identity": [8, 8]}
    )
    images = [img for ident in plan.identities() for img in ident.images]
    return [img.request(height, width) for img in images[:count]]


def step_diffusion(chk: Check) -> None:
    """Images/s of the ``diffusion`` generator (src/ppreid/synth/generators/diffusion.py: tokenizing the attribute
    prompts in up to 3 chunks, classifier-free guidance 7.5, DDIM, VAE decoding, PIL images) with the
    random-weight pipeline handed to it in place of a folder. Each batch size is timed at two step
    counts, which also gives the images/s at the config's 30 steps (fixed cost + steps x cost per step)."""
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    height, width = (64, 32) if chk.dry_run else (512, 256)
    batches = (1, 2) if chk.dry_run else (1, 8)
    steps_lo, steps_hi = (1, 2) if chk.dry_run else (4, 8)
    repeats = 1 if chk.dry_run else 2
    built = None
    with chk.setting("build the pipeline"):
        built = diffusion_generator(chk, height, width, max(batches))
        generator, what, requests = built
        generator.steps = 1
        for bs in batches:  # warm-up: kernels of both shapes
            generator.generate(requests[:bs])
    if built is None:
        return
    for bs in batches:
        with chk.setting(f"batch {bs}"):
            chk.reset_peak()
            seconds = {}
            for steps in (steps_lo, steps_hi):
                generator.steps = steps
                seconds[steps] = min(chk.timed(lambda: generator.generate(requests[:bs]))[1] for _ in range(repeats))
            per_step = (seconds[steps_hi] - seconds[steps_lo]) / (steps_hi - steps_lo)
            if per_step <= 0:  # timing noise: charge everything to the steps
                per_step = seconds[steps_hi] / steps_hi
            fixed = max(0.0, seconds[steps_hi] - steps_hi * per_step)
            chk.add(f"{what}, batch {bs}, {steps_hi} DDIM steps", bs / seconds[steps_hi], "images/s")
            chk.add(
                f"{what}, batch {bs}, {DIFFUSION_CONFIG_STEPS} steps (extrapolated from {steps_lo} and {steps_hi})",
                bs / (fixed + DIFFUSION_CONFIG_STEPS * per_step),
                "images/s",
            )
            chk.add_peak(f"{what}, batch {bs}")


def diffusion_generator(chk: Check, height: int, width: int, count: int):
    """(DiffusionGenerator on the random-weight pipeline, description, ``count`` requests)."""
    import ppreid.synth.generators.diffusion as diffusion_module

    pipe, sizes = build_random_sd_pipeline(chk.dry_run, chk.device, chk.workdir / "sd_tokenizer")
    original = diffusion_module.load_text2image_pipeline
    diffusion_module.load_text2image_pipeline = lambda pretrained, dtype=torch.float32, *a, **k: pipe.to(dtype=dtype)
    try:
        generator = diffusion_module.DiffusionGenerator(
            pretrained="random-weight pipeline",
            steps=1,
            guidance_scale=7.5,
            scheduler="ddim",
            dtype="auto",
            device=chk.device.type,
            max_prompt_chunks=3,
        )
    finally:
        diffusion_module.load_text2image_pipeline = original
    kind = "tiny" if chk.dry_run else "SD 1.5-size"
    chk.add(
        f"random-weight {kind} pipeline: UNet {sizes['unet']:.1f}M + VAE {sizes['vae']:.1f}M + CLIP text encoder "
        f"{sizes['text']:.1f}M parameters",
        sum(sizes.values()),
        "M params",
    )
    dtype = str(generator.dtype).replace("torch.", "")
    return generator, f"{height}x{width} {dtype}, CFG 7.5", synthesis_requests(count, height, width)
