"""Stage-1 generator ``diffusion``: any diffusers text-to-image pipeline, batched and seeded per image.

Why each choice:
- One pipeline call per batch (prompt lists), so a GPU (or CPU threads) work on many images at once.
- Every image's starting noise is drawn from its own CPU ``torch.Generator`` seeded with
  ``request.seed``: an image depends on its seed, not on the batch it lands in, and the same seed
  gives the same noise on CPU and GPU. The same per-image generators drive stochastic schedulers.
- Identity look: the shared appearance text of an identity (prompt builder) plus, optionally, a
  shared identity noise. With ``identity_noise_mix = a`` the initial latents are
  ``sqrt(a) * z_id + sqrt(1 - a) * z_img``, with ``z_id`` drawn from ``request.identity_seed`` and
  ``z_img`` from ``request.seed``; both are N(0, I) and independent, so the mix is N(0, I) again
  (the distribution the model expects) while images of one identity share a fraction ``a`` of
  their noise, hence composition and colours. ``a = 0`` (default): independent images.
- Long attribute prompts: CLIP reads 77 tokens. With ``max_prompt_chunks > 1`` (SD 1.x/2.x style
  pipelines) a prompt is encoded in 75-token chunks that are concatenated along the sequence axis
  (the UNet's cross-attention takes any length), so late attributes are not cut off. A prompt of at
  most 75 tokens gives exactly the pipeline's own embedding.
- ``render_scale``: Stable Diffusion 1.x is poor far below its 512 px training size; with
  ``render_scale = 2`` a 256 x 128 request is rendered at 512 x 256 and resized (Lanczos) down.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ppreid.synth.generators.base import ImageGenerator, ImageRequest
from ppreid.utils.device import resolve_device
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)

SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "dpm++_sde": "DPMSolverSDEScheduler",
    "unipc": "UniPCMultistepScheduler",
}
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
LOCAL_FOLDER_HINT = (
    "To use a local copy, save the pipeline once where it is available, e.g. "
    "`DiffusionPipeline.from_pretrained('stable-diffusion-v1-5/stable-diffusion-v1-5')"
    ".save_pretrained('/path/to/sd-folder')`, then run with generator.pretrained=/path/to/sd-folder"
)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on GPU (bf16 where fp16 is unsupported, i.e. compute capability < 5.3), fp32 on CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.float16 if torch.cuda.get_device_capability(device) >= (5, 3) else torch.bfloat16
    if dtype not in DTYPES:
        raise ConfigValueError(f"generator.dtype={dtype!r} is not known; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _looks_like_path(value: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else (absolute, ./, ~, a/b/c) is meant as a folder."""
    return (
        os.path.isabs(value)
        or value.startswith((".", "~"))
        or value.count("/") > 1
        or (os.sep != "/" and os.sep in value)
    )


def load_text2image_pipeline(
    pretrained: str | None,
    dtype: torch.dtype = torch.float32,
    local_files_only: bool = False,
    variant: str | None = None,
):
    """Load a diffusers text-to-image pipeline from a local folder or a hub id, safety checker off.

    Raises ConfigValueError naming the value, how it was tried (folder / hub id, offline or not)
    and how to give a local folder.
    """
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    if pretrained is None or str(pretrained).strip() in ("", "???"):
        raise ConfigValueError(
            "generator=diffusion needs generator.pretrained: a local diffusers pipeline folder "
            "(saved with save_pretrained, holding model_index.json) or a hub id such as "
            f"stable-diffusion-v1-5/stable-diffusion-v1-5. {LOCAL_FOLDER_HINT}"
        )
    value = os.path.expanduser(str(pretrained))
    is_dir = os.path.isdir(value)
    if not is_dir and (_looks_like_path(value) or os.path.exists(value)):
        raise ConfigValueError(
            f"generator.pretrained={pretrained!r} looks like a local path, but no folder exists there "
            f"(a diffusers pipeline folder holding model_index.json is expected; single .safetensors/.ckpt "
            f"files are not read). {LOCAL_FOLDER_HINT}"
        )
    if is_dir and not (Path(value) / "model_index.json").exists():
        raise ConfigValueError(
            f"generator.pretrained={pretrained!r} is a folder but not a diffusers pipeline: it has no "
            f"model_index.json (expected layout: model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
            f"scheduler/). {LOCAL_FOLDER_HINT}"
        )
    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    tried = (
        "a local folder"
        if is_dir
        else (
            "a Hugging Face hub id, offline (local cache only: HF_HUB_OFFLINE or generator.local_files_only)"
            if offline
            else "a Hugging Face hub id (download or local cache)"
        )
    )
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": offline}
    if variant:
        kwargs["variant"] = variant
    try:
        if is_dir:
            index = json.loads((Path(value) / "model_index.json").read_text())
        else:
            index = DiffusionPipeline.load_config(value, local_files_only=offline)
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(value, **kwargs)
        except ValueError as auto_err:  # a pipeline class the auto mapping does not know
            log.info("AutoPipelineForText2Image failed (%s); trying DiffusionPipeline", auto_err)
            pipe = DiffusionPipeline.from_pretrained(value, **kwargs)
    except Exception as err:
        raise ConfigValueError(
            f"could not load a diffusers text-to-image pipeline from generator.pretrained={pretrained!r}: "
            f"tried it as {tried} and got {type(err).__name__}: {str(err).rstrip('.')}. {LOCAL_FOLDER_HINT}"
        ) from err
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None
    return pipe


def build_scheduler(name: str, current):
    """A scheduler by short name (``ddim``, ``dpm++``, ``euler``, ``pndm``, ...) or diffusers class name,
    built ``from_config`` of the pipeline's own scheduler so betas and timestep spacing are kept."""
    import diffusers

    cls_name = SCHEDULERS.get(name.lower(), name)
    cls = getattr(diffusers, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ConfigValueError(
            f"generator.scheduler={name!r} is not known; use one of {', '.join(SCHEDULERS)}, "
            "a diffusers scheduler class name, or null for the pipeline's own"
        )
    return cls.from_config(current.config)


class DiffusionGenerator(ImageGenerator):
    """Text-to-image diffusion generator (config group ``generator=diffusion``).

    Args:
        pretrained: local pipeline folder or hub id (hub is opt-in: only if the user names one).
        steps / guidance_scale: ``num_inference_steps`` / classifier-free guidance weight.
        scheduler: None keeps the pipeline's scheduler; else a short name from ``SCHEDULERS``.
        dtype / device: ``auto`` = fp16 on cuda, fp32 on cpu (see :func:`resolve_dtype`).
        identity_noise_mix: fraction ``a`` in [0, 1] of initial noise shared by an identity.
        max_prompt_chunks: 75-token chunks a prompt may span (1 = the pipeline's truncation at 77).
        render_scale: render at (height, width) * scale, then resize to the requested size.
        local_files_only: never touch the network when ``pretrained`` is a hub id.
        variant: weights variant to load (e.g. ``fp16``), or None.
    """

    name = "diffusion"

    def __init__(
        self,
        pretrained: str | None,
        steps: int = 30,
        guidance_scale: float = 7.5,
        scheduler: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        enable_attention_slicing: bool = False,
        identity_noise_mix: float = 0.0,
        max_prompt_chunks: int = 3,
        render_scale: float = 1.0,
        local_files_only: bool = False,
        variant: str | None = None,
    ) -> None:
        if int(steps) < 1:
            raise ConfigValueError(f"generator.steps={steps} must be >= 1")
        if not 0.0 <= float(identity_noise_mix) <= 1.0:
            raise ConfigValueError(f"generator.identity_noise_mix={identity_noise_mix} must be in [0, 1]")
        if int(max_prompt_chunks) < 1:
            raise ConfigValueError(f"generator.max_prompt_chunks={max_prompt_chunks} must be >= 1")
        if float(render_scale) <= 0:
            raise ConfigValueError(f"generator.render_scale={render_scale} must be > 0")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.steps = int(steps)
        self.guidance_scale = float(guidance_scale)
        self.identity_noise_mix = float(identity_noise_mix)
        self.max_prompt_chunks = int(max_prompt_chunks)
        self.render_scale = float(render_scale)
        self.model_id = str(pretrained)
        pipe = load_text2image_pipeline(pretrained, self.dtype, local_files_only, variant)
        if scheduler:
            pipe.scheduler = build_scheduler(str(scheduler), pipe.scheduler)
        if enable_attention_slicing:
            pipe.enable_attention_slicing()
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        self._call_params = set(inspect.signature(self.pipe.__call__).parameters)
        self._sd_like = (
            all(getattr(self.pipe, n, None) is not None for n in ("unet", "tokenizer", "text_encoder"))
            and getattr(self.pipe, "text_encoder_2", None) is None
        )
        if self.identity_noise_mix > 0 and not self._latents_supported():
            raise ConfigValueError(
                f"generator.identity_noise_mix={identity_noise_mix} needs a UNet latent pipeline "
                f"(Stable Diffusion style); {type(self.pipe).__name__} is not one: set it to 0"
            )
        log.info(
            "diffusion generator: %s (%s) on %s, %s, scheduler %s",
            self.model_id,
            type(self.pipe).__name__,
            self.device,
            self.dtype,
            type(self.pipe.scheduler).__name__,
        )

    # ---------------------------------------------------------------- helpers
    def _latents_supported(self) -> bool:
        return (
            "latents" in self._call_params
            and getattr(self.pipe, "unet", None) is not None
            and hasattr(self.pipe, "vae_scale_factor")
        )

    def render_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the pipeline renders at, a multiple of the VAE scale factor."""
        step = int(getattr(self.pipe, "vae_scale_factor", 8))
        h, w = round(height * self.render_scale), round(width * self.render_scale)
        if h % step or w % step:
            raise ConfigValueError(
                f"height x width = {height} x {width} at generator.render_scale={self.render_scale} gives "
                f"{h} x {w}, which is not a multiple of the pipeline's VAE factor {step}; pick sizes that are"
            )
        return h, w

    def initial_latents(self, requests: Sequence[ImageRequest], height: int, width: int) -> torch.Tensor:
        """Initial noise (B, C, height / f, width / f) in fp32 on CPU, before the scheduler's sigma scaling.

        Row i = sqrt(a) * z(identity_seed_i) + sqrt(1 - a) * z(seed_i), z(s) = randn from a CPU
        generator seeded with s; a = ``identity_noise_mix``.
        """
        f = int(self.pipe.vae_scale_factor)
        shape = (1, int(self.pipe.unet.config.in_channels), height // f, width // f)
        a = self.identity_noise_mix
        rows = []
        for r in requests:
            z = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(r.seed)))
            if a > 0:
                z_id = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(r.identity_seed)))
                z = math.sqrt(a) * z_id + math.sqrt(1.0 - a) * z
            rows.append(z)
        return torch.cat(rows)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.pipe.tokenizer(texts, add_special_tokens=False, truncation=False).input_ids

    def prompt_chunks(self, prompts: list[str], negatives: list[str]) -> list[int]:
        """Per request: 75-token chunks its prompt and negative prompt need, capped at ``max_prompt_chunks``."""
        body = self.pipe.tokenizer.model_max_length - 2
        n = [
            max(1, math.ceil(len(p) / body), math.ceil(len(q) / body))
            for p, q in zip(self._token_ids(prompts), self._token_ids(negatives))
        ]
        if max(n) > self.max_prompt_chunks:
            log.warning(
                "a prompt needs %d chunks of %d tokens; only %d are encoded (generator.max_prompt_chunks)",
                max(n),
                body,
                self.max_prompt_chunks,
            )
        return [min(k, self.max_prompt_chunks) for k in n]

    def encode_prompts(self, texts: list[str], n_chunks: int) -> torch.Tensor:
        """Embeddings (B, 77 * n_chunks, D) of texts for SD-style pipelines.

        Each text is tokenized without truncation and cut into (model_max_length - 2)-token chunks,
        each wrapped in BOS ... EOS + padding like the pipeline's own ``encode_prompt``; the chunk
        encodings are concatenated. With n_chunks = 1 this equals the pipeline's embedding.
        """
        tok, enc = self.pipe.tokenizer, self.pipe.text_encoder
        width = tok.model_max_length
        body = width - 2
        ids_all = self._token_ids(texts)
        use_mask = bool(getattr(enc.config, "use_attention_mask", False))
        chunks = []
        for c in range(n_chunks):
            rows, masks = [], []
            for ids in ids_all:
                part = [tok.bos_token_id] + ids[c * body : (c + 1) * body] + [tok.eos_token_id]
                masks.append([1] * len(part) + [0] * (width - len(part)))
                rows.append(part + [tok.pad_token_id] * (width - len(part)))
            input_ids = torch.tensor(rows, device=self.device)
            mask = torch.tensor(masks, device=self.device) if use_mask else None
            chunks.append(enc(input_ids, attention_mask=mask)[0])
        return torch.cat(chunks, dim=1).to(dtype=enc.dtype)

    # ---------------------------------------------------------------- interface
    @torch.inference_mode()
    def generate(self, requests: list[ImageRequest]) -> list[Image.Image]:
        """RGB images of the requested size, one pipeline call per batch.

        With ``max_prompt_chunks > 1`` requests are grouped by the chunk count their prompts need
        (one call per group; a single group whenever every prompt fits 75 tokens), so an image never
        depends on the other prompts of its batch.
        """
        if not requests:
            return []
        sizes = {(r.height, r.width) for r in requests}
        if len(sizes) != 1:
            raise ValueError(f"all requests of a batch must share height x width, got {sorted(sizes)}")
        ((height, width),) = sizes
        if not (self._sd_like and self.max_prompt_chunks > 1):
            images = self._call(requests, None)
        else:
            chunks = self.prompt_chunks([r.prompt for r in requests], [r.negative_prompt or "" for r in requests])
            images = [None] * len(requests)
            for n in sorted(set(chunks)):
                idx = [i for i, k in enumerate(chunks) if k == n]
                for i, img in zip(idx, self._call([requests[i] for i in idx], n)):
                    images[i] = img
        out = []
        for img in images:
            img = img.convert("RGB")
            if img.size != (width, height):
                img = img.resize((width, height), Image.LANCZOS)
            out.append(img)
        return out

    def _call(self, requests: list[ImageRequest], n_chunks: int | None) -> list[Image.Image]:
        """One pipeline call; prompts as text (n_chunks None) or as chunked embeddings."""
        rh, rw = self.render_size(requests[0].height, requests[0].width)
        prompts = [r.prompt for r in requests]
        negatives = [r.negative_prompt or "" for r in requests]
        kwargs: dict[str, Any] = dict(
            height=rh,
            width=rw,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance_scale,
            generator=[torch.Generator("cpu").manual_seed(int(r.seed)) for r in requests],
            output_type="pil",
        )
        if n_chunks is not None:
            kwargs["prompt_embeds"] = self.encode_prompts(prompts, n_chunks)
            kwargs["negative_prompt_embeds"] = self.encode_prompts(negatives, n_chunks)
        else:
            kwargs["prompt"] = prompts
            kwargs["negative_prompt"] = negatives
        if self._latents_supported():
            kwargs["latents"] = self.initial_latents(requests, rh, rw).to(self.device, self.dtype)
        return self.pipe(**{k: v for k, v in kwargs.items() if k in self._call_params}).images
