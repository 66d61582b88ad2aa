"""Stochastic bottleneck after the BNNeck (variational information bottleneck, Alemi et al. ICLR 2017;
MID, Wang et al. AAAI 2021, against model inversion).

h (B,D) -> mean mu (B,D) and log-variance (B,D) heads; a sample z = mu + exp(logvar / 2) * eps.
``kl`` is KL(N(mu, sigma^2) || N(0, I)) per image, the variational upper bound of I(image; z) that
the training loss weighs with ``beta``.

**What the bound covers**: the sample z. The mean mu is a deterministic function of the image, for
which the KL term bounds nothing. So ``stored: sample`` (the default) stores what the bound is about;
``stored: mean`` stores mu, better for retrieval but outside the bound (its privacy must be measured,
by the audit). A stored sample is **seeded per image**: the noise comes from a generator seeded by
``sample_seed`` and the CRC32 of the image's pixels (its input values rounded to 1e-3), so an image always gets the same stored
feature, whatever the batch it comes in (and an attacker cannot average many samples of one image).

The heads start as the identity (mu = h) and a small constant variance (``init_logvar``).
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from ppreid.utils.errors import ConfigValueError

STORED = ("sample", "mean")


class VariationalBottleneck(nn.Module):
    def __init__(
        self,
        dim: int,
        stored: str = "sample",
        sample_seed: int = 0,
        init_logvar: float = -2.0,
        min_logvar: float = -10.0,
        max_logvar: float = 4.0,
    ) -> None:
        super().__init__()
        if stored not in STORED:
            raise ConfigValueError(f"model.bottleneck.stored={stored!r} is unknown; use one of {', '.join(STORED)}.")
        if not min_logvar < max_logvar:
            raise ConfigValueError(f"model.bottleneck: min_logvar={min_logvar} must be below max_logvar={max_logvar}.")
        self.stored, self.sample_seed = stored, int(sample_seed)
        self.min_logvar, self.max_logvar = float(min_logvar), float(max_logvar)
        self.mean_head = nn.Linear(dim, dim)
        self.logvar_head = nn.Linear(dim, dim)
        with torch.no_grad():
            self.mean_head.weight.copy_(torch.eye(dim))
            self.mean_head.bias.zero_()
            self.logvar_head.weight.zero_()
            self.logvar_head.bias.fill_(float(init_logvar))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,D) -> (mu (B,D), logvar (B,D)), logvar clamped to [min_logvar, max_logvar]."""
        return self.mean_head(h), self.logvar_head(h).clamp(self.min_logvar, self.max_logvar)

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """(B,) KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 sum(mu^2 + exp(logvar) - logvar - 1)."""
        return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(1)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(mu) if noise is None else noise
        return mu + (0.5 * logvar).exp() * noise

    def training_outputs(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """E's training forward from its BNNeck output h (B,D): (z, a random sample (B,D) the classifier sees;
        the stored feature (B,D), z or mu by ``stored``; the KL per image (B,))."""
        mu, logvar = self(h)
        z = self.sample(mu, logvar)
        stored = z if self.stored == "sample" else mu
        return z, stored, self.kl(mu, logvar)

    def image_noise(self, images: torch.Tensor, dim: int) -> torch.Tensor:
        """(B,3,H,W) -> (B,dim) standard normal noise, each row seeded by the image's content."""
        pixels = (images.detach().float() * 1000.0).round().to(torch.int64).cpu().numpy()
        rows = []
        for image in pixels:
            gen = torch.Generator().manual_seed(self.sample_seed * 2**32 + zlib.crc32(image.tobytes()))
            rows.append(torch.randn(dim, generator=gen))
        return torch.stack(rows).to(images.device)

    def stored_feature(self, h: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The feature a gallery stores for images (B,3,H,W) with BNNeck output h (B,D)."""
        mu, logvar = self(h)
        if self.stored == "mean":
            return mu
        return self.sample(mu, logvar, self.image_noise(images, mu.shape[1]))
