"""Feature -> image by conditional diffusion: the diffusion reversal attacker of the privacy audit.

A small diffusers ``UNet2DModel`` (no attention) denoises images (B,3,h,w) scaled to [-1, 1]; the
feature (B,D) enters as the UNet's class embedding (``class_embed_type="identity"``: an MLP maps it to
the time-embedding width and it is added to the timestep embedding of every residual block). Trained
as a DDPM (``loss``), sampled with DDIM (``sample``, ``inference_steps`` deterministic steps, eta 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppreid.nn.feature_decoder import image_hw
from ppreid.utils.errors import ConfigValueError

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class DiffusionDecoder(nn.Module):
    """feature (B,feat_dim) -> image (B,3,H,W) in [0, 1], a conditional DDPM sampled with DDIM.

    ``block_out_channels``: one UNet level per entry (H and W must be divisible by 2^(levels-1));
    ``prediction_type``: what the UNet predicts (epsilon | sample | v_prediction);
    ``beta_schedule``: diffusers' name (linear | scaled_linear | squaredcos_cap_v2).
    """

    def __init__(
        self,
        feat_dim: int,
        image_size: Sequence[int],
        block_out_channels: Sequence[int] = (16, 32, 64),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: str = "epsilon",
        inference_steps: int = 20,
    ) -> None:
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

        height, width = image_hw("DiffusionDecoder", image_size)
        channels = [int(c) for c in block_out_channels]
        levels = len(channels)
        if levels < 1 or min(channels) < 1 or any(c % int(norm_num_groups) for c in channels):
            raise ConfigValueError(
                f"DiffusionDecoder: block_out_channels={channels} must be positive multiples of "
                f"norm_num_groups={norm_num_groups}."
            )
        scale = 2 ** (levels - 1)
        if height % scale or width % scale:
            raise ConfigValueError(
                f"DiffusionDecoder: image_size={[height, width]} is not divisible by 2^{levels - 1} = {scale} "
                f"({levels} UNet levels); use fewer block_out_channels or another size."
            )
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigValueError(
                f"DiffusionDecoder: prediction_type={prediction_type!r} is unknown; use one of "
                f"{', '.join(PREDICTION_TYPES)}."
            )
        if int(inference_steps) < 1 or int(train_timesteps) < int(inference_steps):
            raise ConfigValueError(
                f"DiffusionDecoder: inference_steps={inference_steps} must be in 1..train_timesteps={train_timesteps}."
            )
        self.feat_dim, self.image_size = int(feat_dim), (height, width)
        self.inference_steps = int(inference_steps)
        embed_dim = channels[0] * 4  # UNet2DModel's time-embedding width
        self.unet = UNet2DModel(
            sample_size=(height, width),
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(channels),
            layers_per_block=int(layers_per_block),
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=int(norm_num_groups),
            add_attention=False,
            class_embed_type="identity",
        )
        self.condition = nn.Sequential(nn.Linear(self.feat_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        kwargs = dict(
            num_train_timesteps=int(train_timesteps), beta_schedule=beta_schedule, prediction_type=prediction_type
        )
        self.train_scheduler = DDPMScheduler(**kwargs)
        # "trailing" spacing starts at the last training step (pure noise), as few DDIM steps need
        self.sample_scheduler = DDIMScheduler(**kwargs, clip_sample=True, timestep_spacing="trailing")

    def _check(self, feat: torch.Tensor) -> None:
        if feat.dim() != 2 or feat.shape[1] != self.feat_dim:
            raise ValueError(f"DiffusionDecoder: expects features (B,{self.feat_dim}), got {tuple(feat.shape)}.")

    def loss(self, feat: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """DDPM training loss (MSE to the scheduler's target) for images (B,3,H,W) in [0, 1]."""
        self._check(feat)
        x0 = images * 2.0 - 1.0
        noise = torch.randn_like(x0)
        steps = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noisy = self.train_scheduler.add_noise(x0, noise, steps)
        pred = self.unet(noisy, steps, class_labels=self.condition(feat)).sample
        kind = self.train_scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "sample":
            target = x0
        else:
            target = self.train_scheduler.get_velocity(x0, noise, steps)
        return F.mse_loss(pred, target)

    @torch.no_grad()
    def sample(
        self,
        feat: torch.Tensor,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """DDIM sampling (eta 0, ``steps`` or ``inference_steps``): features (B,D) -> images (B,3,H,W) in [0, 1].

        The start is ``noise`` (B,3,H,W) when given (e.g. drawn per image from its own seed, so a sample
        does not depend on its batch), else drawn from ``generator``.
        """
        self._check(feat)
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(int(steps or self.inference_steps), device=feat.device)
        cond = self.condition(feat)
        shape = (feat.shape[0], 3, *self.image_size)
        if noise is not None and tuple(noise.shape) != shape:
            raise ValueError(f"DiffusionDecoder.sample: noise of shape {tuple(noise.shape)}, expected {shape}.")
        x = noise if noise is not None else torch.randn(shape, generator=generator, device="cpu")
        x = x.to(feat.device)
        for t in scheduler.timesteps:
            out = self.unet(x, t, class_labels=cond).sample
            x = scheduler.step(out, t, x, eta=0.0).prev_sample
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
