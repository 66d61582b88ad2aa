"""Tiny random-weight models for offline tests: a Stable Diffusion pipeline and an open_clip CLIP.

Nothing is downloaded. The SD tokenizer's ``vocab.json``/``merges.txt`` are built from the BPE
merges that open_clip ships (``bpe_simple_vocab_16e6.txt.gz``), exactly as OpenAI CLIP's
``SimpleTokenizer`` builds its vocabulary, so token ids equal the real SD 1.x tokenizer's.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch

CLIP_VOCAB_SIZE = 49408
CLIP_CONTEXT_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's reversible byte -> printable unicode map (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab token -> id, merges) of CLIP's BPE, from open_clip's bundled merges file."""
    import open_clip

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += [BOS, EOS]
    assert len(vocab) == CLIP_VOCAB_SIZE, len(vocab)
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_clip_tokenizer(folder: str | os.PathLike) -> Path:
    """Write CLIP's ``vocab.json`` + ``merges.txt`` (the files ``CLIPTokenizer.from_pretrained`` reads) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    return folder


def build_tiny_sd_pipeline(
    path: str | os.PathLike,
    unet_channels: tuple[int, int] = (32, 64),
    vae_channels: tuple[int, ...] = (8, 16, 16, 16),
    text_hidden: int = 32,
    seed: int = 0,
):
    """Assemble and ``save_pretrained`` a random-weight StableDiffusionPipeline at ``path``.

    UNet: 2 blocks (``unet_channels``), 1 layer each, cross-attention dim = ``text_hidden``;
    VAE: ``len(vae_channels)`` blocks, 4 latent channels; 4 blocks make latents image / 8 like real SD;
    text encoder: 2-layer CLIP text transformer with the real 49,408-token vocabulary.
    Returns ``path``. Building is skipped when ``path/model_index.json`` exists already.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=tuple(unet_channels),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_hidden,
        attention_head_dim=(2, 4),
        norm_num_groups=min(32, unet_channels[0]),
    )
    vae = AutoencoderKL(
        block_out_channels=list(vae_channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(vae_channels),
        latent_channels=4,
        layers_per_block=1,
        sample_size=32,
        norm_num_groups=min(vae_channels),
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=text_hidden,
            intermediate_size=2 * text_hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=CLIP_VOCAB_SIZE,
            max_position_embeddings=CLIP_CONTEXT_LENGTH,
            projection_dim=text_hidden,
            bos_token_id=CLIP_VOCAB_SIZE - 2,
            eos_token_id=CLIP_VOCAB_SIZE - 1,
            pad_token_id=CLIP_VOCAB_SIZE - 1,
        )
    )
    tok_dir = write_clip_tokenizer(path.parent / (path.name + "_tokenizer_src"))
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=CLIP_CONTEXT_LENGTH)
    assemble_sd_pipeline(unet, vae, text_encoder, tokenizer).save_pretrained(str(path))
    return path


def assemble_sd_pipeline(unet, vae, text_encoder, tokenizer):
    """A StableDiffusionPipeline of these blocks with Stable Diffusion 1.5's scheduler config (PNDM,
    scaled-linear betas) and no safety checker: the tests' tiny pipeline and the GPU check's full-size one."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


TINY_OPEN_CLIP_NAME = "tiny-test-ViT"


def build_tiny_open_clip(folder: str | os.PathLike, name: str = TINY_OPEN_CLIP_NAME, seed: int = 0) -> tuple[str, Path]:
    """Register a tiny open_clip model config ``name`` and save random weights for it.

    The config json is written to ``folder/<name>.json`` and registered with
    ``open_clip.add_model_config``; weights go to ``folder/<name>.pt``.
    Returns ``(model_name, weights_path)``, the two values ``ClipQualityFilter`` takes.
    """
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {
            "context_length": CLIP_CONTEXT_LENGTH,
            "vocab_size": CLIP_VOCAB_SIZE,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    cfg_path = folder / f"{name}.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_path)
    weights = folder / f"{name}.pt"
    if not weights.exists():
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
        torch.save(model.state_dict(), weights)
    return name, weights
