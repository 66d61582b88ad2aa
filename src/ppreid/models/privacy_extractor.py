"""E, the extractor of the feature-privacy models: BoT (src/ppreid/models/bot.py) with an optional positive-
control leak branch (``model.leak``, src/ppreid/privacy/leak.py) and an optional stochastic bottleneck after
its BNNeck (``model.bottleneck``, src/ppreid/nn/bottleneck.py), and the views of a batch a defence needs: the
stored feature as the audit computes it, the clean images and their person masks.

:class:`PrivacyGANModel` (src/ppreid/models/privacy_gan.py) trains this extractor against a defence; the
split keeps what E *is* (here) apart from how it is trained (there).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ppreid.data.datamodule import IMAGENET_MEAN, IMAGENET_STD
from ppreid.models.bot import BoTModel
from ppreid.nn.bottleneck import VariationalBottleneck
from ppreid.privacy.clean_targets import clean_inputs, person_masks
from ppreid.privacy.history import LossHistory
from ppreid.privacy.leak import build_leak
from ppreid.privacy.reversal import non_negative
from ppreid.utils.errors import ConfigValueError


class PrivacyExtractor(BoTModel):
    """BoT + leak branch + bottleneck; the subclass calls :meth:`build_extractor_parts` in its ``__init__``
    (after its defence is built, so the parameters draw the same random numbers as they always did)."""

    def build_extractor_parts(
        self,
        feat_dim: int,
        image_size: tuple[int, int],
        leak: str,
        leak_branch: dict[str, Any] | None,
        bottleneck: dict[str, Any] | None,
        neck_feat: str,
    ) -> None:
        """The leak branch, the bottleneck (``beta`` x its KL joins E's loss), the input normalization, the
        running mean clean image (the feature-blind predictor of ``ssim_gain``), the loss history and the
        clean-image lookups (filled in :meth:`setup`)."""
        self.image_size = tuple(int(s) for s in image_size)
        self.leak = build_leak(leak, feat_dim, leak_branch)
        options = dict(bottleneck or {})
        self.beta = non_negative("model.bottleneck.beta", options.pop("beta", 0.0))
        self.bottleneck = VariationalBottleneck(feat_dim, **options) if bottleneck is not None else None
        if self.bottleneck is not None and neck_feat != "after":
            raise ConfigValueError("model.bottleneck sits after the BNNeck; use model.neck_feat=after with it.")
        self.history = LossHistory()
        self.loss_history = self.history.history
        self.register_buffer("input_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("mean_image", torch.full((1, 3, *self.image_size), 0.5))
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))
        self._clean_set = None  # the training images with the test transforms (setup)
        self._mask_cache: dict[int, torch.Tensor] = {}  # training index -> person mask (1,h,w)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        mean, std = self.trainer.datamodule.normalization(train=True)
        self.input_mean.copy_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_std.copy_(torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        make_clean = getattr(self.trainer.datamodule, "train_dataset", None)  # a bare datamodule: the batch itself
        self._clean_set = make_clean(augment=False) if make_clean is not None else None

    def extractor_modules(self) -> list[nn.Module]:
        return [m for m in (self.backbone, self.pool, self.neck, self.bottleneck, self.leak) if m is not None]

    def extractor_param_groups(self) -> list:
        """E's trainable parameters for its optimizer: the leak branch's in a group without weight decay."""
        leak = {id(p) for p in self.leak.parameters()} if self.leak is not None else set()
        params = [p for m in self.extractor_modules() for p in m.parameters() if p.requires_grad and id(p) not in leak]
        if leak:
            params = [{"params": params}, {"params": list(self.leak.parameters()), "weight_decay": 0.0}]
        return params

    # ----------------------------------------------------------------- features
    def pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,D) pooled backbone feature, before the BNNeck (with the leak branch's thumbnail)."""
        feat = self.pool(self.backbone(images))
        return feat if self.leak is None else feat + self.leak(images)

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        feat = self.pooled_features(images)
        if self.bottleneck is None:
            return feat if self.neck_feat == "before" else self.neck.bn(feat)
        return self.bottleneck.stored_feature(self.neck.bn(feat), images)

    def _forward_extractor(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """E's training forward: pre-BN feature, stored feature (a random sample with a bottleneck), logits,
        the feature the metric losses see, and the bottleneck's KL per image. With the leak branch the
        ReID outputs (logits, metric feature) hold the same values but take no gradient to the branch."""
        base = self.pool(self.backbone(images))
        if self.leak is None:
            feat = reid_feat = base
        else:
            leak = self.leak(images)
            feat, reid_feat = base + leak, base + leak.detach()
        h = self.neck.bn(feat)
        h_reid = h if reid_feat is feat else _same_batch_norm(self.neck.bn, reid_feat)
        if self.bottleneck is None:
            stored = feat if self.neck_feat == "before" else h
            return {"feat": feat, "stored": stored, "logits": self.neck.classifier(h_reid), "metric": reid_feat}
        z, stored, kl = self.bottleneck.training_outputs(h_reid)  # every output here feeds the ReID losses
        return {"feat": feat, "stored": stored, "logits": self.neck.classifier(z), "metric": stored, "kl": kl.mean()}

    def _audited_features(self, inputs: torch.Tensor, grad: bool) -> torch.Tensor:
        """E's stored feature (B,D) of ``inputs`` as the audit computes it: E in eval mode (its BN running
        statistics, which this forward does not update); with ``grad`` the privacy loss trains E through it."""
        modules = self.extractor_modules()
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            with torch.set_grad_enabled(grad):
                return self.extract_features(inputs)
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)

    def _clean_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's training images with the test transforms (B,3,H,W) (src/ppreid/privacy/clean_targets.py)."""
        return clean_inputs(batch, self._clean_set)

    def _person_masks(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The batch's person masks (B,1,h,w) at the reconstruction size, or None (a real dataset: the border
        proxy); src/ppreid/privacy/clean_targets.py."""
        return person_masks(batch, self._clean_set, self._mask_cache, self.image_size)

    @torch.no_grad()
    def _update_mean_image(self, real: torch.Tensor) -> None:
        n, seen = real.shape[0], int(self.images_seen)
        self.mean_image.add_((real.mean(0, keepdim=True) - self.mean_image) * (n / (seen + n)))
        self.images_seen += n

    # ----------------------------------------------------------------- E's loss
    def _record(self, name: str, value: torch.Tensor, prog_bar: bool = False) -> None:
        self.log(f"train/{name}", value, prog_bar=prog_bar)
        self.history.add(name, float(value.detach()))

    def _reid_loss(self, out: dict[str, torch.Tensor], pids: torch.Tensor) -> torch.Tensor:
        inputs = {"logits": out["logits"], "features": out["metric"]}
        total = out["feat"].new_zeros(())
        for name, fn in self.loss_fns.items():
            value = fn(inputs[fn.input_kind], pids)
            self._record(f"loss_{name}", value)
            total = total + self.loss_weights[name] * value
        self.log("train/acc", (out["logits"].argmax(1) == pids).float().mean(), prog_bar=True)
        if "kl" in out:
            self._record("kl", out["kl"])
            total = total + self.beta * out["kl"]
        return total


def _same_batch_norm(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` without touching its running statistics (a second pass over the same batch)."""
    if not bn.training:
        return bn(x)
    return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
