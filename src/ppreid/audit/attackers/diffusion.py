"""The diffusion attacker: a conditional DDPM (``ppreid.nn.diffusion_decoder``) sampled with DDIM."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ppreid.audit.attackers.base import ReversalAttacker
from ppreid.audit.attackers.images import resize
from ppreid.utils.errors import ConfigValueError


def per_image_noise(index: torch.Tensor, sample: int, seed: int, shape: Sequence[int]) -> torch.Tensor:
    """Start noise (B,*shape) of DDIM sample ``sample`` of the images with dataset indices ``index`` (B,):
    each drawn from its own generator seeded by (seed, index, sample), so it does not depend on the batch."""
    out = []
    for i in index.tolist():
        gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(i)) * 64 + int(sample))
        out.append(torch.randn(tuple(shape), generator=gen))
    return torch.stack(out)


class DiffusionAttacker(ReversalAttacker):
    """A conditional DDPM at ``sample_size``, sampled with DDIM and resized to the attack size. The noise
    of each image is seeded by (``seed``, its dataset index), so reconstructions are reproducible and
    independent of the batch size; ``num_samples`` > 1 averages several samples of each feature."""

    def __init__(
        self,
        decoder: Callable[..., nn.Module],
        steps: int = 1500,
        batch_size: int = 64,
        lr: float = 1e-3,
        sample_size: Sequence[int] | None = None,
        seed: int = 0,
        num_samples: int = 1,
        log_every: int = 200,
    ) -> None:
        super().__init__(steps, batch_size, log_every)
        if int(num_samples) < 1:
            raise ConfigValueError(f"DiffusionAttacker: num_samples={num_samples}; give an int >= 1.")
        self.decoder_factory, self.lr, self.seed = decoder, float(lr), int(seed)
        self.num_samples = int(num_samples)
        self.sample_size = tuple(int(s) for s in sample_size) if sample_size else None

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.image_size = tuple(image_size)
        self.decoder = self.decoder_factory(feat_dim=feat_dim, image_size=list(self.sample_size or image_size))
        self.opt = torch.optim.Adam(self.decoder.parameters(), lr=self.lr)

    def quick(self) -> None:
        self.num_samples, self.decoder.inference_steps = 1, 1

    def train_step(self, feat, images):
        loss = self.decoder.loss(feat, resize(images, self.sample_size or images.shape[-2:]))
        self.minimize(self.opt, loss)
        return {"ddpm": loss.item()}

    def val_loss(self, feat, images):
        """The DDPM loss with fixed noise and timesteps (seeded by ``seed``), so evaluations compare."""
        devices = [feat.device] if feat.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return self.decoder.loss(feat, resize(images, self.sample_size or images.shape[-2:]))

    @torch.no_grad()
    def reconstruct(self, feat, index):
        """The mean of ``num_samples`` DDIM samples (1: one sample; more: towards the posterior mean)."""
        shape = (3, *self.decoder.image_size)
        out = (
            sum(
                self.decoder.sample(feat, noise=per_image_noise(index, k, self.seed, shape))
                for k in range(self.num_samples)
            )
            / self.num_samples
        )
        return resize(out, self.image_size).clamp(0.0, 1.0)
