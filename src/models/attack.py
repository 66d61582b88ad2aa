"""Privacy audit of any checkpoint of this repository: train reversal attackers on its frozen features.

``python train.py model=attack model.extractor_ckpt=<checkpoints/last.ckpt> [data=...]``

1. The extractor E is rebuilt from its checkpoint alone (``load_model_from_checkpoint``) and frozen;
   the run feeds every image at E's own input size and normalization.
2. Features of the *training split* of the data config are extracted (and of their mirror images with
   ``train_flip``); each attacker of ``attackers`` is trained **from scratch** on (feature, image)
   pairs, the images un-normalized to [0, 1] and resized to ``attack_size``:
   ``l1`` (a residual decoder, L1 loss: the conventional reversal), ``gan`` (the decoder plus a
   feature-conditioned discriminator), ``diffusion`` (a conditional DDPM, DDIM sampling).
3. Test: E's utility on every target (the shared evaluation path, ``test`` in results.json), and
   per target on query + gallery: the SSIM / PSNR of each attacker's reconstructions against the real
   images at ``attack_size``; ``mean_image_ssim``, the SSIM of predicting the mean training image (the
   control: an attacker counts only above it); ``leakage_r1``, the rank-1 of matching each query's
   reconstruction (fed back through E) against the real gallery features, ``chance_r1`` = 1 / gallery
   identities, and ``leakage_r1_ref`` with an independent ``reference_ckpt``. ``strongest`` is the
   attacker with the highest SSIM and ``urr`` = mAP / its SSIM (the utility-reversibility ratio).

Outputs: the ``privacy`` and ``audit`` sections of results.json (``extra_results``), and
``reconstructions_<target>.png`` (rows: real | each attacker), also logged to wandb.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from src.losses.adversarial import gan_losses, l1_reconstruction, r1_penalty
from src.metrics.privacy import psnr, ssim
from src.metrics.reid import evaluate_features
from src.models.checkpoint import load_model_from_checkpoint
from src.models.reid_module import ReIDModule
from src.utils.errors import ConfigValueError

log = logging.getLogger(__name__)

ATTACKERS = ("l1", "gan", "diffusion")
SSIM_WINDOW = 11
HOW_TO_GET_ONE = ("a checkpoints/last.ckpt written by `python train.py` (model=bot, clipreid, pdm or privacy_gan), "
                  "e.g. model.extractor_ckpt=logs/train/runs/<run>/checkpoints/last.ckpt")


# ----------------------------------------------------------------------------- attackers
class ReversalAttacker(nn.Module):
    """Learns feature -> image from (feature, image) pairs; features arrive standardized (B,D), images
    (B,3,h,w) in [0, 1] at the attack size. Subclasses build their networks in ``build`` and implement
    ``train_step`` (one optimization step, returns its losses) and ``reconstruct``."""

    def __init__(self, steps: int, batch_size: int, log_every: int = 200) -> None:
        super().__init__()
        if int(steps) < 1 or int(batch_size) < 1:
            raise ConfigValueError(f"{type(self).__name__}: steps={steps} and batch_size={batch_size} must be >= 1.")
        self.steps, self.batch_size, self.log_every = int(steps), int(batch_size), int(log_every)

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        raise NotImplementedError

    def train_step(self, feat: torch.Tensor, images: torch.Tensor) -> Dict[str, float]:
        raise NotImplementedError

    def quick(self) -> None:
        """Cheapest settings for a fast dev run (after ``build``): nothing to change by default."""

    def reconstruct(self, feat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def minimize(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One optimizer step on ``loss`` (gradients cleared first)."""
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def fit(self, feats: torch.Tensor, images: torch.Tensor, name: str, generator: torch.Generator,
            steps: Optional[int] = None) -> float:
        """``steps`` (default ``self.steps``) steps on random batches of (feats (N,D), images (N,3,h,w) uint8);
        returns the seconds taken."""
        start = time.time()
        self.train()
        n = feats.shape[0]
        steps = self.steps if steps is None else int(steps)
        for step in range(steps):
            idx = torch.randint(0, n, (min(self.batch_size, n),), generator=generator)
            losses = self.train_step(feats[idx].to(self.device), images[idx].to(self.device).float() / 255.0)
            if self.log_every and (step % self.log_every == 0 or step == steps - 1):
                text = ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
                log.info("attacker %s: step %d/%d, %s (%.0f s)", name, step + 1, steps, text, time.time() - start)
        self.eval()
        return time.time() - start

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class L1Attacker(ReversalAttacker):
    """The conventional reversal: a residual up-sampling decoder trained with the L1 loss."""

    def __init__(self, decoder: Callable[..., nn.Module], steps: int = 1500, batch_size: int = 64,
                 lr: float = 1e-3, log_every: int = 200) -> None:
        super().__init__(steps, batch_size, log_every)
        self.decoder_factory, self.lr = decoder, float(lr)

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.decoder = self.decoder_factory(feat_dim=feat_dim, image_size=list(image_size))
        self.opt = torch.optim.Adam(self.decoder.parameters(), lr=self.lr)

    def train_step(self, feat, images):
        loss = l1_reconstruction(self.decoder(feat), images)
        self.minimize(self.opt, loss)
        return {"l1": loss.item()}

    @torch.no_grad()
    def reconstruct(self, feat):
        return self.decoder(feat)


class GANAttacker(ReversalAttacker):
    """Decoder + feature-conditioned discriminator: ``l1_weight`` x L1 + ``adv_weight`` x the GAN loss.

    The first ``l1_warmup`` fraction of the steps trains the decoder with L1 alone (as SRGAN starts from
    its MSE network): the adversarial term then sharpens a decoder that already reconstructs.
    """

    def __init__(self, decoder: Callable[..., nn.Module], discriminator: Callable[..., nn.Module],
                 steps: int = 1500, batch_size: int = 64, lr: float = 1e-3, d_lr: float = 2e-4,
                 betas: Sequence[float] = (0.5, 0.999), gan_loss: str = "hinge", l1_weight: float = 1.0,
                 adv_weight: float = 0.05, r1_gamma: float = 0.0, l1_warmup: float = 0.5,
                 log_every: int = 200) -> None:
        super().__init__(steps, batch_size, log_every)
        if not 0.0 <= float(l1_warmup) <= 1.0:
            raise ConfigValueError(f"GANAttacker: l1_warmup={l1_warmup} is a fraction of the steps, in [0, 1].")
        self.l1_warmup, self.step_count = float(l1_warmup), 0
        self.decoder_factory, self.disc_factory = decoder, discriminator
        self.lr, self.d_lr, self.betas = float(lr), float(d_lr), tuple(float(b) for b in betas)
        self.d_loss_fn, self.g_loss_fn = gan_losses(gan_loss)
        self.l1_weight, self.adv_weight, self.r1_gamma = float(l1_weight), float(adv_weight), float(r1_gamma)

    def build(self, feat_dim: int, image_size: Sequence[int]) -> None:
        self.decoder = self.decoder_factory(feat_dim=feat_dim, image_size=list(image_size))
        self.discriminator = self.disc_factory(feat_dim=feat_dim, image_size=list(image_size))
        self.opt_g = torch.optim.Adam(self.decoder.parameters(), lr=self.lr, betas=self.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.d_lr, betas=self.betas)

    def fit(self, feats, images, name, generator, steps=None):
        self.step_count, self.total_steps = 0, self.steps if steps is None else int(steps)
        return super().fit(feats, images, name, generator, steps)

    def train_step(self, feat, images):
        self.step_count += 1
        fake = self.decoder(feat)
        if self.step_count <= self.l1_warmup * self.total_steps:
            l1 = l1_reconstruction(fake, images)
            self.minimize(self.opt_g, self.l1_weight * l1)
            return {"l1": l1.item()}
        real = images.requires_grad_(self.r1_gamma > 0)
        real_scores = self.discriminator(real, feat)
        d_loss = self.d_loss_fn(real_scores, self.discriminator(fake.detach(), feat))
        if self.r1_gamma > 0:
            d_loss = d_loss + self.r1_gamma * r1_penalty(real_scores, real)
        self.minimize(self.opt_d, d_loss)
        self.discriminator.requires_grad_(False)
        l1 = l1_reconstruction(fake, images.detach())
        adv = self.g_loss_fn(self.discriminator(fake, feat))
        self.discriminator.requires_grad_(True)
        self.minimize(self.opt_g, self.l1_weight * l1 + self.adv_weight * adv)
        return {"l1": l1.item(), "g_adv": adv.item(), "d": d_loss.item()}

    @torch.no_grad()
    def reconstruct(self, feat):
        return self.decoder(feat)


class DiffusionAttacker(ReversalAttacker):
    """A conditional DDPM (``src.nn.diffusion_decoder``) at ``sample_size``, sampled with DDIM and
    resized to the attack size. A fixed seed makes the samples reproducible; ``num_samples`` > 1
    averages several samples of each feature."""

    def __init__(self, decoder: Callable[..., nn.Module], steps: int = 1500, batch_size: int = 64,
                 lr: float = 1e-3, sample_size: Optional[Sequence[int]] = None, seed: int = 0,
                 num_samples: int = 1, log_every: int = 200) -> None:
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

    def _to_sample_size(self, images: torch.Tensor) -> torch.Tensor:
        if self.sample_size is None or tuple(images.shape[-2:]) == self.sample_size:
            return images
        return F.interpolate(images, size=self.sample_size, mode="bilinear", align_corners=False, antialias=True)

    def train_step(self, feat, images):
        loss = self.decoder.loss(feat, self._to_sample_size(images))
        self.minimize(self.opt, loss)
        return {"ddpm": loss.item()}

    @torch.no_grad()
    def reconstruct(self, feat):
        """The mean of ``num_samples`` DDIM samples (1: one sample; more: towards the posterior mean)."""
        gen = torch.Generator().manual_seed(self.seed)
        out = sum(self.decoder.sample(feat, generator=gen) for _ in range(self.num_samples)) / self.num_samples
        if tuple(out.shape[-2:]) != self.image_size:
            out = F.interpolate(out, size=self.image_size, mode="bilinear", align_corners=False).clamp(0.0, 1.0)
        return out


# ----------------------------------------------------------------------------- helpers
def _resize(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()


def _run_identity(ckpt_path: str) -> Dict[str, Any]:
    """What the checkpoint's run folder says about it (``<run>/results.json`` next to ``checkpoints/``)."""
    results = Path(ckpt_path).expanduser().resolve().parent.parent / "results.json"
    try:
        res = json.loads(results.read_text())
    except (OSError, ValueError):
        return {}
    overrides = [o for o in res.get("overrides") or [] if not o.split("=", 1)[0].lstrip("+~") in ("seed", "ckpt_path")
                 and not o.startswith("hydra.")]
    return {"identity": res.get("identity"), "seed": res.get("seed"), "overrides": overrides,
            "test": res.get("test"), "results": str(results)}


def _describe(obj: Any) -> Any:
    """Attacker settings as plain data (a ``functools.partial`` -> its target and keywords), for hashing."""
    import functools

    if isinstance(obj, functools.partial):
        return {"_target_": f"{obj.func.__module__}.{obj.func.__qualname__}",
                **{k: _describe(v) for k, v in obj.keywords.items()}}
    if isinstance(obj, dict):
        return {k: _describe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_describe(v) for v in obj]
    return obj


def _spec_hash(spec: Dict[str, Any]) -> str:
    blob = json.dumps({k: spec.get(k) for k in ("model", "choices", "input")}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- the audit
class AttackModel(ReIDModule):
    """Frozen extractor (from ``extractor_ckpt``) + reversal attackers trained from scratch at test time."""

    loads_own_weights = True  # train=false without ckpt_path: the extractor comes from model.extractor_ckpt

    def __init__(
        self,
        extractor_ckpt: Optional[str] = None,
        attackers: Sequence[str] = ATTACKERS,
        attack_size: Sequence[int] = (64, 32),
        l1: Optional[Callable[..., ReversalAttacker]] = None,
        gan: Optional[Callable[..., ReversalAttacker]] = None,
        diffusion: Optional[Callable[..., ReversalAttacker]] = None,
        reference_ckpt: Optional[str] = None,
        train_flip: bool = True,
        num_pictures: int = 8,
        reconstruct_batch_size: int = 256,
        name: str = "attack",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["l1", "gan", "diffusion"], logger=False)
        if not extractor_ckpt:
            raise ConfigValueError(f"model=attack needs the checkpoint to audit: give model.extractor_ckpt=<path>, "
                                   f"{HOW_TO_GET_ONE}.")
        attackers = [str(a) for a in attackers]
        unknown = [a for a in attackers if a not in ATTACKERS]
        if unknown or not attackers:
            problem = f"unknown attacker {unknown[0]!r}" if unknown else "empty"
            raise ConfigValueError(f"model.attackers={attackers}: {problem}; choose from {', '.join(ATTACKERS)} "
                                   "(e.g. model.attackers=[l1,gan]).")
        factories = {"l1": l1, "gan": gan, "diffusion": diffusion}
        missing = [a for a in attackers if factories[a] is None]
        if missing:
            raise ConfigValueError(f"model.attackers names {missing[0]} but model.{missing[0]} has no settings; "
                                   "use the model=attack config (conf/model/attack.yaml) or give them.")
        self.attack_size = tuple(int(s) for s in attack_size)
        if len(self.attack_size) != 2 or min(self.attack_size) < SSIM_WINDOW:
            raise ConfigValueError(f"model.attack_size={list(attack_size)}: give [height, width], both >= "
                                   f"{SSIM_WINDOW} (the SSIM window), e.g. [64, 32].")
        self.extractor_ckpt = str(extractor_ckpt)
        self.extractor, self.extractor_spec = load_model_from_checkpoint(extractor_ckpt, key="model.extractor_ckpt")
        self.extractor.requires_grad_(False)
        self.eval_metric, self.max_rank = self.extractor.eval_metric, self.extractor.max_rank
        self.reference = None
        self.reference_spec = None
        if reference_ckpt:
            self.reference, self.reference_spec = load_model_from_checkpoint(reference_ckpt, key="model.reference_ckpt")
            self.reference.requires_grad_(False)
        self.reference_ckpt = str(reference_ckpt) if reference_ckpt else None
        self.attacker_names = attackers
        self.attacker_settings = {a: _describe(factories[a]) for a in attackers}
        self.attackers = nn.ModuleDict({a: factories[a]() for a in attackers})
        self.train_flip, self.num_pictures = bool(train_flip), int(num_pictures)
        self.reconstruct_batch_size = int(reconstruct_batch_size)
        inp = self.extractor_spec["input"]
        self.input_size = (int(inp["height"]), int(inp["width"]))
        for name, values in (("input_mean", inp["mean"]), ("input_std", inp["std"])):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.collected: Dict[int, Dict[str, List[torch.Tensor]]] = {}
        self.train_info: Dict[str, Any] = {}

    # ----------------------------------------------------------------- the extractor
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor.extract_features(images)

    def train(self, mode: bool = True):
        super().train(mode)
        self.extractor.eval()  # frozen: BN statistics never move
        if self.reference is not None:
            self.reference.eval()
        return self

    def _normalize(self, unit: torch.Tensor) -> torch.Tensor:
        """[0, 1] images at any size -> E's input (its size and normalization)."""
        return (_resize(unit, self.input_size) - self.input_mean) / self.input_std

    def _unit(self, images: torch.Tensor) -> torch.Tensor:
        """E's normalized input -> [0, 1]."""
        return (images * self.input_std + self.input_mean).clamp(0.0, 1.0)

    def _reference_features(self, unit: torch.Tensor) -> torch.Tensor:
        inp = self.reference_spec["input"]
        mean = torch.tensor(inp["mean"], device=unit.device).view(1, 3, 1, 1)
        std = torch.tensor(inp["std"], device=unit.device).view(1, 3, 1, 1)
        return self.reference.extract_features((_resize(unit, (inp["height"], inp["width"])) - mean) / std)

    # ----------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        if stage == "fit":
            raise ConfigValueError("model=attack trains its attackers inside the audit (the test stage) and never "
                                   "trains the extractor; run it with train=false (the default of model=attack).")
        if self.trainer.world_size > 1:
            raise ConfigValueError("model=attack runs in one process (its attackers train on one device); use "
                                   "trainer=cpu or trainer=gpu.")
        dm = self.trainer.datamodule
        if (dm.height, dm.width) != self.input_size:
            log.info("input size %dx%d from the extractor checkpoint (data config: %dx%d)", *self.input_size,
                     dm.height, dm.width)
        dm.height, dm.width = self.input_size
        for tf in (dm.train_transform_cfg, dm.test_transform_cfg):
            tf["mean"], tf["std"] = self.input_mean.flatten().tolist(), self.input_std.flatten().tolist()
        super().setup(stage)

    def training_step(self, batch, batch_idx):
        raise ConfigValueError("model=attack never trains the extractor; run it with train=false (its default).")

    def configure_optimizers(self):
        raise ConfigValueError("model=attack never trains the extractor; run it with train=false (its default).")

    def on_test_start(self) -> None:
        if self.train_info:
            return  # attackers already trained (a second trainer.test)
        with torch.inference_mode(False), torch.enable_grad():  # Lightning tests in inference mode
            self._train_attackers()

    def _train_attackers(self) -> None:
        feats, images = self._training_pairs()
        self.feat_mean, self.feat_std = feats.mean(0), feats.std(0).clamp_min(1e-6)
        z = (feats - self.feat_mean) / self.feat_std
        self.mean_image = images.float().mean(0, keepdim=True) / 255.0
        gen = torch.Generator().manual_seed(int(torch.initial_seed()) % (2**31))
        times, steps = {}, {}
        for name, attacker in self.attackers.items():
            attacker.build(feat_dim=z.shape[1], image_size=self.attack_size)
            attacker.to(self.device)
            if self.trainer.fast_dev_run:
                attacker.quick()
            steps[name] = self._limited_steps(attacker.steps)
            log.info("training attacker %s from scratch: %d steps on %d (feature, image) pairs", name,
                     steps[name], z.shape[0])
            times[name] = round(attacker.fit(z, images, name, gen, steps[name]), 2)
        self.train_info = {"pairs": int(z.shape[0]), "feat_dim": int(z.shape[1]), "steps": steps,
                           "train_time_s": times}

    def _limited_steps(self, steps: int) -> int:
        """Attacker steps are training batches: a fast dev run takes one, ``limit_train_batches`` caps them."""
        trainer = self.trainer
        if trainer.fast_dev_run:
            return 1
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            return max(1, min(steps, limit))
        return max(1, int(round(steps * float(limit)))) if limit is not None and float(limit) < 1.0 else steps

    @torch.no_grad()
    def _training_pairs(self):
        """(features (N,D) float32 on the CPU, images (N,3,h,w) uint8 at the attack size) of the training split."""
        dm = self.trainer.datamodule
        dm.setup_sources()
        loader = DataLoader(dm.train_dataset(augment=False), batch_size=dm.test_batch_size, shuffle=False,
                            num_workers=dm.num_workers)
        feats, images = [], []
        start = time.time()
        trainer = self.trainer
        max_batches = 1 if trainer.fast_dev_run else (
            trainer.limit_train_batches if isinstance(trainer.limit_train_batches, int) else None)
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = batch["image"].to(self.device)
            views = [x, torch.flip(x, dims=[3])] if self.train_flip else [x]
            for view in views:
                feats.append(self.eval_features(view).float().cpu())
                images.append(_to_uint8(_resize(self._unit(view), self.attack_size)))
        num_images = sum(map(len, feats)) // (2 if self.train_flip else 1)
        log.info("features of %d training images extracted (%s) in %.0f s", num_images,
                 "and their mirror images" if self.train_flip else "no mirror images", time.time() - start)
        return torch.cat(feats), torch.cat(images)

    # ----------------------------------------------------------------- test
    def test_step(self, batch, batch_idx, dataloader_idx: int = 0) -> None:
        feats = self.eval_features(batch["image"])
        self.evaluators[dataloader_idx].update(feats.float(), batch["pid"], batch["camid"], batch["index"])
        unit = self._unit(batch["image"])
        store = self.collected.setdefault(dataloader_idx, {})
        store.setdefault("feats", []).append(feats.float().cpu())
        store.setdefault("images", []).append(_to_uint8(_resize(unit, self.attack_size)))
        store.setdefault("index", []).append(batch["index"].cpu())
        if self.reference is not None:
            store.setdefault("ref_feats", []).append(self._reference_features(unit).float().cpu())

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        utility = self.eval_results.get("test", {})
        dm = self.trainer.datamodule
        privacy = {}
        for i, target in enumerate(dm.targets):
            if i not in self.collected:
                continue
            privacy[target.name] = self._audit_target(target, self.collected[i], utility.get(target.name))
        self.collected = {}
        self.extra_results = {"privacy": privacy, "audit": self._audit_block()}

    def _reconstruct(self, name: str, z: torch.Tensor) -> torch.Tensor:
        attacker = self.attackers[name]
        out = [attacker.reconstruct(z[i:i + self.reconstruct_batch_size].to(self.device)).float().cpu()
               for i in range(0, z.shape[0], self.reconstruct_batch_size)]
        return torch.cat(out).clamp(0.0, 1.0)

    @torch.no_grad()
    def _features_of(self, unit: torch.Tensor, reference: bool = False) -> torch.Tensor:
        out = []
        for i in range(0, unit.shape[0], self.reconstruct_batch_size):
            x = unit[i:i + self.reconstruct_batch_size].to(self.device)
            feats = self._reference_features(x) if reference else self.eval_features(self._normalize(x))
            out.append(feats.float().cpu())
        return torch.cat(out)

    def _leakage(self, qf: torch.Tensor, gf: torch.Tensor, q: Dict[str, torch.Tensor],
                 g: Dict[str, torch.Tensor]) -> float:
        """Rank-1 of query features ``qf`` against gallery features ``gf`` (Market protocol)."""
        res = evaluate_features(qf, gf, q["pid"], g["pid"], q["camid"], g["camid"], metric=self.eval_metric)
        return float(res["cmc"][0])

    @torch.no_grad()
    def _audit_target(self, target, store: Dict[str, List[torch.Tensor]],
                      utility: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """The ``privacy`` entry of one target from the features and images its test batches left in ``store``."""
        order = torch.cat(store["index"]).argsort()
        index = torch.cat(store["index"])[order]
        feats = torch.cat(store["feats"])[order]
        real = torch.cat(store["images"])[order].float() / 255.0
        num_query = target.num_query
        records = target.records
        pids = torch.tensor([records[i].pid for i in index.tolist()])
        camids = torch.tensor([records[i].camid for i in index.tolist()])
        is_query = index < num_query
        q = {"pid": pids[is_query], "camid": camids[is_query]}
        g = {"pid": pids[~is_query], "camid": camids[~is_query]}
        with_leakage = bool(is_query.any()) and bool((~is_query).any())
        mean_img = self.mean_image.expand_as(real)
        out: Dict[str, Any] = {
            "num_images": int(real.shape[0]), "num_queries": int(is_query.sum()),
            "mean_image_ssim": float(ssim(mean_img, real).mean()),
            "mean_image_psnr": float(psnr(mean_img, real).mean()),
            "chance_r1": 1.0 / max(1, len(set(g["pid"].tolist()))) if with_leakage else None,
            "attackers": {},
        }
        if self.reference is not None:
            ref = torch.cat(store["ref_feats"])[order]
            out["reference_r1"] = self._leakage(ref[is_query], ref[~is_query], q, g) if with_leakage else None
        z = (feats - self.feat_mean) / self.feat_std
        recons = {}
        for name in self.attacker_names:
            start = time.time()
            recon = self._reconstruct(name, z)
            recons[name] = recon
            row = {"ssim": float(ssim(recon, real).mean()), "psnr": float(psnr(recon, real).mean())}
            if with_leakage:
                row["leakage_r1"] = self._leakage(self._features_of(recon[is_query]), feats[~is_query], q, g)
                if self.reference is not None:
                    ref_q = self._features_of(recon[is_query], reference=True)
                    row["leakage_r1_ref"] = self._leakage(ref_q, ref[~is_query], q, g)
            row["train_time_s"] = self.train_info.get("train_time_s", {}).get(name)
            row["reconstruct_time_s"] = round(time.time() - start, 2)
            out["attackers"][name] = row
        strongest = max(out["attackers"], key=lambda a: out["attackers"][a]["ssim"])
        best = out["attackers"][strongest]["ssim"]
        out["strongest"] = strongest
        m_ap = None if utility is None else float(utility["mAP"])
        out["urr"] = m_ap / best if (m_ap is not None and best > 0) else None
        self._log_target(target.name, out)
        if self.trainer.is_global_zero and self.num_pictures > 0:
            self._save_picture(target.name, real, recons, pids, is_query, out)
        return out

    def _log_target(self, name: str, out: Dict[str, Any]) -> None:
        self.log(f"privacy/{name}/mean_image_ssim", out["mean_image_ssim"])
        for attacker, row in out["attackers"].items():
            for key in ("ssim", "psnr", "leakage_r1", "leakage_r1_ref"):
                if row.get(key) is not None:
                    self.log(f"privacy/{name}/{attacker}/{key}", row[key])
        if out["urr"] is not None:
            self.log(f"privacy/{name}/urr", out["urr"])
        parts = ", ".join(f"{a} SSIM {r['ssim']:.3f} PSNR {r['psnr']:.2f}"
                          + (f" leak R1 {100 * r['leakage_r1']:.1f}%" if r.get("leakage_r1") is not None else "")
                          for a, r in out["attackers"].items())
        log.info("privacy of %s: mean image SSIM %.3f; %s; strongest %s, URR %s", name, out["mean_image_ssim"], parts,
                 out["strongest"], "-" if out["urr"] is None else f"{out['urr']:.3f}")

    def _save_picture(self, name: str, real: torch.Tensor, recons: Dict[str, torch.Tensor], pids: torch.Tensor,
                      is_query: torch.Tensor, out: Dict[str, Any]) -> None:
        from src.callbacks.pictures import captioned_grid, to_pil

        rows = torch.nonzero(is_query).flatten()[: self.num_pictures]
        if rows.numel() == 0:
            rows = torch.arange(min(self.num_pictures, real.shape[0]))
        scale = max(1, 128 // self.attack_size[0])
        size = (self.attack_size[1] * scale, self.attack_size[0] * scale)
        images, captions = [], []
        for i in rows.tolist():
            images.append(to_pil(real[i]).resize(size))
            captions.append(f"real id {int(pids[i])}")
            for attacker, recon in recons.items():
                images.append(to_pil(recon[i]).resize(size))
                value = float(ssim(recon[i:i + 1], real[i:i + 1]))
                captions.append(f"{attacker[:4]} {value:.2f}")  # the caption fits under a 64-pixel-wide image
        sheet = captioned_grid(images, captions, columns=1 + len(recons))
        path = Path(self.trainer.default_root_dir) / f"reconstructions_{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(path)
        log.info("reconstructions of %s: %s", name, path)
        from pytorch_lightning.loggers import WandbLogger

        for lg in self.trainer.loggers:
            if isinstance(lg, WandbLogger):
                caption = "real | " + " | ".join(recons) + " (caption: SSIM to the real image); " + ", ".join(
                    f"{a} SSIM {r['ssim']:.3f}" for a, r in out["attackers"].items())
                lg.log_image(key=f"privacy/reconstructions_{name}", images=[sheet], caption=[caption])

    def _audit_block(self) -> Dict[str, Any]:
        """What was audited and with what, and ``group_hash``: runs with equal hashes audited models of one
        config (their seeds may differ) with one attack config, so tables may pool them."""
        spec = self.extractor_spec
        run = _run_identity(self.extractor_ckpt)
        ident = run.get("identity") or {}
        extractor = {"ckpt": self.extractor_ckpt, "model": spec["choices"].get("model"),
                     "backbone": spec["choices"].get("backbone"),
                     "input": f"{self.input_size[0]}x{self.input_size[1]}",
                     "num_classes": spec.get("num_classes"),
                     "experiment": ident.get("experiment"), "config_hash": ident.get("config_hash"),
                     "spec_hash": _spec_hash(spec), "seed": run.get("seed"), "overrides": run.get("overrides"),
                     "privacy": {k: spec["model"].get(k) for k in ("privacy_weight", "privacy_loss", "d_weight")
                                 if k in spec["model"]} or None,
                     "run_results": run.get("results")}
        reference = None
        if self.reference_spec is not None:
            ref_run = _run_identity(self.reference_ckpt)
            reference = {"ckpt": self.reference_ckpt, "model": self.reference_spec["choices"].get("model"),
                         "config_hash": (ref_run.get("identity") or {}).get("config_hash"),
                         "spec_hash": _spec_hash(self.reference_spec)}
        settings = {k: v for k, v in self.hparams.items()
                    if k not in ("extractor_ckpt", "reference_ckpt", "num_pictures", "reconstruct_batch_size")}
        settings["attacker_settings"] = self.attacker_settings
        dm = self.trainer.datamodule
        key = {"extractor": extractor["config_hash"] or extractor["spec_hash"],
               "reference": None if reference is None else (reference["config_hash"] or reference["spec_hash"]),
               "attack": settings, "data": dm.name, "targets": dm.target_names,
               "eval": {"flip": self.eval_options.flip, "rerank": self.eval_options.rerank}}
        group = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return {"extractor": extractor, "reference": reference, "attackers": list(self.attacker_names),
                "attack_size": list(self.attack_size), "train": self.train_info, "group_hash": group}
