"""Fresh probe: every few epochs, how well does a *new* decoder reverse the extractor's features?

A defence trained against its own decoders can fool them and still leak to a decoder trained later and
from scratch (the audit's attackers). This callback measures that during training, on held-out
**source** identities only (the validation split; never the targets):

1. the stored features (``extract_features``, eval mode) and images of the validation split, its
   identities split in two halves (seeded);
2. a new decoder (``decoder``, an L1 decoder as the audit's ``l1`` attacker) is trained from scratch on
   the first half (features standardised with that half's statistics), ``steps`` steps of
   ``batch_size``, at most ``max_passes`` passes over that half;
3. the **null**: the same decoder, same seed and steps, trained on the same images with the features
   shuffled (the feature-blind best this decoder can do);
4. both are scored on the second half: ``val/probe_ssim``, ``val/probe_ssim_null`` and
   ``val/probe_ssim_gain`` = their difference (what the feature gives the decoder), with
   ``val/probe_mean_image_ssim`` (the first half's mean image as a guess) beside them.

``val/probe_ssim_gain`` (lower = more private) with ``val/mAP`` is what model selection reads, never the
defence's own decoders' losses and never a test metric. Runs at the end of every ``every_n_epochs``-th
training epoch and of the last one; skipped in a fast dev run and without a validation split. The
probe draws its own random numbers (a forked, seeded RNG): training is unchanged by it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from ppreid.losses.adversarial import l1_reconstruction
from ppreid.metrics.images import to_unit_images
from ppreid.metrics.privacy import ssim
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)


class FreshProbeCallback(pl.Callback):
    def __init__(
        self,
        decoder: Callable[..., nn.Module],
        every_n_epochs: int = 8,
        steps: int = 300,
        batch_size: int = 64,
        lr: float = 1e-3,
        image_size: Sequence[int] = (64, 32),
        seed: int = 0,
        max_passes: int = 100,
    ) -> None:
        super().__init__()
        if int(every_n_epochs) < 1 or int(steps) < 1 or int(batch_size) < 1:
            raise ConfigValueError(
                f"callbacks.fresh_probe: every_n_epochs={every_n_epochs}, steps={steps} and "
                f"batch_size={batch_size} must be >= 1."
            )
        self.decoder_factory, self.every_n_epochs, self.steps = decoder, int(every_n_epochs), int(steps)
        self.batch_size, self.lr, self.seed = int(batch_size), float(lr), int(seed)
        self.max_passes = int(max_passes)
        self.image_size = tuple(int(s) for s in image_size)
        self.results: dict[int, dict[str, float]] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        epoch = trainer.current_epoch
        due = (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 == trainer.max_epochs
        if trainer.fast_dev_run or not due or dm is None or not dm.has_val:
            return
        start = time.time()
        result = self.probe(pl_module, dm)
        self.results[epoch] = result
        for key, value in result.items():
            pl_module.log(f"val/probe_{key}", value)
        log.info(
            "fresh probe (epoch %d): SSIM %.3f, null %.3f, gain %.3f, mean image %.3f (%.0f s)",
            epoch,
            result["ssim"],
            result["ssim_null"],
            result["ssim_gain"],
            result["mean_image_ssim"],
            time.time() - start,
        )

    @torch.no_grad()
    def _pairs(self, model: pl.LightningModule, dm):
        from ppreid.data.image_dataset import ImageDataset

        records = dm.val_set.records
        loader = DataLoader(
            ImageDataset(records, dm._transform(is_train=False)),
            batch_size=dm.test_batch_size,
            shuffle=False,
            num_workers=0,
        )
        mean, std = dm.normalization(train=False)
        mean = torch.tensor(mean, device=model.device).view(1, 3, 1, 1)
        std = torch.tensor(std, device=model.device).view(1, 3, 1, 1)
        modes = {m: m.training for m in model.modules()}
        model.eval()
        feats, images = [], []
        try:
            for batch in loader:
                x = batch["image"].to(model.device)
                feats.append(model.extract_features(x).float())
                images.append(to_unit_images(x, mean, std, self.image_size))
        finally:
            for m, mode in modes.items():
                m.training = mode
        return torch.cat(feats), torch.cat(images), torch.tensor([r.pid for r in records])

    def probe(self, model: pl.LightningModule, dm) -> dict[str, float]:
        feats, images, pids = self._pairs(model, dm)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            ids = pids.unique()
            first = ids[torch.randperm(len(ids))[: max(1, len(ids) // 2)]]
            train = torch.isin(pids, first)
            if train.all():
                raise ConfigValueError(
                    "callbacks.fresh_probe needs at least 2 validation identities; raise data.val_split.identities."
                )
            f_train, f_test = feats[train], feats[~train]
            mu, sd = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
            z_train, z_test = (f_train - mu) / sd, (f_test - mu) / sd
            x_train, x_test = images[train], images[~train]
            shuffled = z_train[torch.randperm(len(z_train))]
            with torch.enable_grad():
                real = self._fit_and_score(z_train, x_train, z_test, x_test)
                null = self._fit_and_score(shuffled, x_train, z_test, x_test)
        mean_image = ssim(x_train.mean(0, keepdim=True).expand_as(x_test), x_test, check_range=False).mean()
        return {"ssim": real, "ssim_null": null, "ssim_gain": real - null, "mean_image_ssim": float(mean_image)}

    def _fit_and_score(self, z_train, x_train, z_test, x_test) -> float:
        """A decoder from scratch (seeded) on (z_train, x_train); its mean SSIM on (z_test, x_test)."""
        torch.manual_seed(self.seed + 1)
        decoder = self.decoder_factory(feat_dim=z_train.shape[1], image_size=list(self.image_size)).to(z_train.device)
        opt = torch.optim.Adam(decoder.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed + 2)
        decoder.train()
        batch = min(self.batch_size, len(z_train))
        steps = min(self.steps, self.max_passes * -(-len(z_train) // batch))  # a small split: fewer steps
        for _ in range(steps):
            idx = torch.randint(0, len(z_train), (batch,), generator=gen)
            loss = l1_reconstruction(decoder(z_train[idx]), x_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        decoder.eval()
        with torch.no_grad():
            recon = torch.cat([decoder(z_test[i : i + 256]) for i in range(0, len(z_test), 256)])
            return float(ssim(recon.clamp(0, 1), x_test, check_range=False).mean())
