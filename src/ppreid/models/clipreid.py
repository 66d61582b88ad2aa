"""CLIP-ReID (Li et al., AAAI 2023): identity prompts learned on a frozen CLIP, then the image encoder
fine-tuned against them.

- Stage 1: every training identity owns learnable context words (``prompt_learner``) in
  ``A photo of a X X X X person.``; with the image encoder frozen (cached projected features), they are
  learned with supervised contrastive losses image->text and text->image (CLIP-ReID: raw dot products,
  temperature 1) on chunks of a random permutation of all training images.
- Stage 2: the text feature of every identity's prompt is computed once (``text_bank``, frozen); the
  image encoder is trained with CLIP-ReID's three features and two BNNecks (see
  :mod:`ppreid.models.two_stage_clip`): the ``loss`` group (label-smoothed ID summed over both classifiers,
  batch-hard triplet over the three features) and the image->text cross-entropy of the projected feature
  against all identities' text features (label-smoothed as the ID loss, as the reference code does).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ppreid.losses.contrastive import SupConLoss, i2t_cross_entropy
from ppreid.models.two_stage_clip import TwoStageCLIPModule
from ppreid.nn.prompt_learner import IdentityPromptLearner
from ppreid.nn.prompts import PromptComposer
from ppreid.utils.errors import check_known_keys

STAGE1_LOSS = {"i2t_weight": 1.0, "t2i_weight": 1.0, "temperature": 1.0, "normalize": False}
STAGE2_LOSS = {"i2t_weight": 1.0, "label_smoothing": 0.1, "temperature": 1.0, "normalize": False}


class CLIPReIDModel(TwoStageCLIPModule):
    lazy_state_prefixes = ("neck.classifier.", "neck_proj.classifier.", "prompt_learner.", "text_bank")

    def __init__(
        self,
        backbone: nn.Module,
        losses: dict[str, dict[str, Any]],
        stage1: dict[str, Any],
        stage2: dict[str, Any],
        template: str = "A photo of a X X X X person.",
        stage1_loss: dict[str, Any] | None = None,
        stage2_loss: dict[str, Any] | None = None,
        prompt_init_std: float = 0.02,
        neck_feat: str = "before",
        test_feature: str = "concat",
        eval_metric: str = "cosine",
        max_rank: int = 50,
        num_classes: int | None = None,
        text_batch_size: int = 256,
        name: str = "clipreid",
    ) -> None:
        super().__init__(
            backbone,
            losses,
            stage1,
            stage2,
            neck_feat=neck_feat,
            test_feature=test_feature,
            eval_metric=eval_metric,
            max_rank=max_rank,
            num_classes=num_classes,
            text_batch_size=text_batch_size,
            name=name,
        )
        for key, given, known in (("stage1_loss", stage1_loss, STAGE1_LOSS), ("stage2_loss", stage2_loss, STAGE2_LOSS)):
            check_known_keys(dict(given or {}), tuple(known), f"model.{key}")
        s1 = {**STAGE1_LOSS, **(stage1_loss or {})}
        s2 = {**STAGE2_LOSS, **(stage2_loss or {})}
        self.s1, self.s2 = s1, s2
        self.supcon = SupConLoss(temperature=float(s1["temperature"]), normalize=bool(s1["normalize"]))
        self.composer = PromptComposer(template, placeholders=("X",), context_length=self.text_encoder.context_length)
        self.num_words = self.composer.counts["X"]
        self.prompt_init_std = float(prompt_init_std)
        # Sized by the training identities: built here when known (a checkpoint's spec), else at fit.
        self.prompt_learner: IdentityPromptLearner | None = None
        if num_classes:
            self._build_identity_modules(int(num_classes))

    def _build_identity_modules(self, num_classes: int) -> None:
        device = self.neck.bn.weight.device
        self.prompt_learner = IdentityPromptLearner(
            num_classes, self.num_words, self.text_encoder.width, self.prompt_init_std
        ).to(device)
        self.register_buffer("text_bank", torch.zeros(num_classes, self.embed_dim, device=device))

    def setup_identities(self, dm) -> None:
        if self.prompt_learner is None or self.prompt_learner.num_classes != dm.num_classes:
            self._build_identity_modules(dm.num_classes)

    def stage1_modules(self) -> dict[str, nn.Module]:
        return {"prompt_learner": self.prompt_learner}

    def identity_text_features(self, labels: torch.Tensor) -> torch.Tensor:
        """(B,) identity labels -> (B, E) text features of their prompts.

        The text encoder runs once per distinct identity of the batch and the features are repeated (the
        same values and gradients as one pass per image)."""
        unique, inverse = torch.unique(labels, return_inverse=True)
        return self.composer(self.text_encoder, X=self.prompt_learner(unique))[inverse]

    def stage1_losses(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["pid"]
        text = self.identity_text_features(labels)
        terms = {}
        if self.s1["i2t_weight"]:
            terms["i2t"] = float(self.s1["i2t_weight"]) * self.supcon(feats, text, labels, labels)
        if self.s1["t2i_weight"]:
            terms["t2i"] = float(self.s1["t2i_weight"]) * self.supcon(text, feats, labels, labels)
        return terms

    def build_stage2_targets(self) -> None:
        labels = torch.arange(self.prompt_learner.num_classes, device=self.device)
        self.text_bank = torch.cat(
            [self.identity_text_features(chunk) for chunk in labels.split(self.text_batch_size)]
        ).float()

    def stage2_text_losses(self, feats: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.s2["i2t_weight"]:
            return {}
        loss = i2t_cross_entropy(
            feats,
            self.text_bank,
            batch["pid"],
            label_smoothing=float(self.s2["label_smoothing"]),
            temperature=float(self.s2["temperature"]),
            normalize=bool(self.s2["normalize"]),
        )
        return {"i2t_ce": float(self.s2["i2t_weight"]) * loss}
