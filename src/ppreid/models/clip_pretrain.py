"""Language-image pre-training of a CLIP model on captioned GenePerson (``model=clip_pretrain``).

PDM rests on CLIP's alignment of images and words. The sandbox's ``clip_tiny`` has none from
random weights, and every GenePerson image comes from an attribute record, so image-text pairs are
free: as PLIP (Zuo et al., NeurIPS 2023) did with SYNTH-PEDES, both towers of any
``backbone=clip_*`` are trained with CLIP's symmetric contrastive loss (learnable logit scale) on
captions of the records (``src/ppreid/synth/captions.py``), optionally with PLIP-style identity-level
positives (images and captions of one identity match). At paper scale the text is the stage-1
prompt that ``synth.py`` wrote into the manifest (``text_source: prompts``), continuing a real CLIP.

Outputs (run folder): ``clip_weights.pt``, a full open_clip CLIP state dict (``visual.*`` + the text
tower's keys + ``logit_scale``) that ``backbone.pretrained=<file>`` loads for every model, at the
training input size (positional embeddings of that grid); ``results.json`` sections ``zero_shot``,
``text_to_image``, ``image_probe`` (the linear-probe ceiling), ``zero_shot_vs_probe`` and
``scene_probe`` per evaluated set (the held-out source identities ``val`` and every target);
``text_to_image_<set>.png``: caption queries with their top-ranked images.

The evaluation lives in ``src/ppreid/metrics/clip_alignment.py`` (shared with the sandbox build):

- ``zero_shot``: per attribute, the accuracy of choosing the image's value among *all* the
  attribute's vocabulary values by the similarity to one prompt per value, chance (1 / number of
  values) beside it, the normalized accuracy ``(acc - chance) / (1 - chance)`` and its mean;
- ``text_to_image``: each identity's canonical content caption (without the per-image viewpoint)
  ranks every image of the set; its images are the matches: R1 / R5 / mAP.

Pre-training v2 (the sandbox build's defaults, each a config value):

- ``identity_level``: PLIP's identity-level positives: every image and person caption of one identity in
  the batch match (multi-positive InfoNCE, uniform soft targets), across cameras and scenes;
- ``identity_text``: a person caption is built from the record's person fields only
  (:func:`ppreid.synth.pretrain_corpus.identity_caption`: no scene, light, camera or viewpoint word), so
  it is true of every image of the identity; scene words only ever appear in ``style`` captions;
- ``augment``: a random resized crop of small scale range and a horizontal flip, applied to the batch
  tensor here so that a flipped image's caption says the mirrored viewpoint (left <-> right); no colour
  jitter (the captions name colours; src/ppreid/data/caption_augment.py);
- ``attribute_weight``: our reading of an attribute-prediction term: a linear head per person attribute
  on the image embedding, cross-entropy, added with this weight (0: off);
- ``text: false``: the no-text control: identity-level image-image contrast (supervised contrastive over
  the batch's images, same positives) on the same corpus and budget; the text tower is not trained.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ppreid.data.caption_augment import augment_batch, check_augment, mirror_record
from ppreid.losses.contrastive import batch_positives, clip_contrastive_loss
from ppreid.losses.identity_contrast import image_identity_contrast
from ppreid.metrics.clip_alignment import ALIGNMENT_SECTIONS, alignment_picture, alignment_report, encode_text
from ppreid.models.reid_module import ReIDModule
from ppreid.nn.backbones.clip_visual import clip_state_dict
from ppreid.synth.attributes import AttributeSchema, derive_seed
from ppreid.synth.captions import Captioner, check_caption_kinds, draw_kinds
from ppreid.synth.pretrain_corpus import identity_caption
from ppreid.training.schedulers import warmup_cosine_factor
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)

TEXT_SOURCES = ("captions", "prompts")
# epochs: the recipe's epoch scheduler with a linear warm-up on top; steps: CLIP's own per optimizer step,
# a linear warm-up over warmup_steps, then a cosine to 0 at trainer.max_steps (model.scheduler unused)
SCHEDULES = ("epochs", "steps")


class _Record:
    """A training record's path and (possibly mirrored) attributes, as :meth:`ClipPretrainModel.batch_texts` reads them."""

    __slots__ = ("path", "attributes")

    def __init__(self, path: str, attributes: Mapping[str, str] | None) -> None:
        self.path, self.attributes = path, attributes


# ----------------------------------------------------------------------------- the LightningModule
class ClipPretrainModel(ReIDModule):
    """Both towers of a CLIP backbone, trained on image-text pairs of the source's attribute records.

    A training batch is the datamodule's P x K batch of source images; each image gets one text:
    a caption of kind drawn from ``caption_kinds`` (random phrasing, seeded by ``seed`` and the step),
    or its stage-1 prompt from the manifest (``text_source: prompts``). ReID evaluation (val and
    targets) ranks by the L2-normalised image embedding.

    ``caption_tokens``, ``schedule``, ``no_decay_1d`` and ``loss_in_fp32`` (off by default) are how the
    sandbox CLIP (``ppreid.run.sandbox_clip``) trains: short training captions, CLIP's per-step warm-up +
    cosine, no weight decay on 1-d parameters, the loss in fp32 under bf16 autocast.
    """

    def __init__(
        self,
        backbone: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        identity_level: bool = False,
        caption_truth: bool = False,
        text_source: str = "captions",
        caption_kinds: Mapping[str, float] | None = None,
        captions: Mapping[str, Any] | None = None,
        logit_scale_init: float = 1 / 0.07,
        max_logit_scale: float = 100.0,
        weights_file: str = "clip_weights.pt",
        picture: Mapping[str, int] | None = None,
        warmup_steps: int = 50,
        seed: int = 0,
        caption_tokens: int | None = None,
        schedule: str = "epochs",
        no_decay_1d: bool = False,
        loss_in_fp32: bool = False,
        identity_text: bool = False,
        text: bool = True,
        augment: Mapping[str, Any] | None = None,
        attribute_weight: float = 0.0,
        eval_metric: str = "cosine",
        max_rank: int = 50,
        num_classes: int | None = None,
        name: str = "clip_pretrain",
    ) -> None:
        super().__init__(eval_metric=eval_metric, max_rank=max_rank)
        self.save_hyperparameters(ignore=["backbone", "optimizer", "scheduler"], logger=False)
        if not hasattr(backbone, "text_tower"):
            raise ConfigValueError(
                f"model=clip_pretrain needs a CLIP backbone (backbone=clip_*), got {type(backbone).__name__}."
            )
        if text_source not in TEXT_SOURCES:
            raise ConfigValueError(f"model.text_source={text_source!r}: choose one of {', '.join(TEXT_SOURCES)}.")
        self.backbone = backbone
        self.text_tower = backbone.text_tower()
        self.text_tower.requires_grad_(True)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(float(logit_scale_init))))
        self.max_logit_scale = float(max_logit_scale)
        self.identity_level = bool(identity_level)
        self.caption_truth = bool(caption_truth)
        self.text_source = text_source
        self.caption_kinds = check_caption_kinds(caption_kinds or {"full": 1.0})
        context = int(self.text_tower.positional_embedding.shape[0])
        self.captioner = Captioner.from_config(captions, context_length=context)
        # training captions may be cut shorter than the evaluation's (the text tower's cost grows with them)
        self.train_captioner = (
            self.captioner
            if caption_tokens is None
            else Captioner.from_config(captions, context_length=min(context, int(caption_tokens)))
        )
        if schedule not in SCHEDULES:
            raise ConfigValueError(f"model.schedule={schedule!r}: choose one of {', '.join(SCHEDULES)}.")
        self.schedule = schedule
        self.no_decay_1d = bool(no_decay_1d)
        self.loss_in_fp32 = bool(loss_in_fp32)
        self.schema = AttributeSchema.from_config()
        self.identity_text = bool(identity_text)
        self.use_text = bool(text)
        if not self.use_text:  # the no-text control: image-image contrast, the text tower stays as it is
            self.text_tower.requires_grad_(False)
        self.augment = check_augment(augment)
        self.attribute_weight = float(attribute_weight)
        if self.attribute_weight < 0:
            raise ConfigValueError(f"model.attribute_weight={attribute_weight}: must be >= 0 (0: no attribute term).")
        self.attribute_keys = [k for k in self.captioner.zero_shot_keys if k in self.schema.identity_keys]
        self.attribute_values = {k: list(self.schema.vocabulary(k).values) for k in self.attribute_keys}
        embed = int(getattr(backbone, "out_dim", 0) or 0)
        self.attribute_heads = (
            nn.ModuleDict({k: nn.Linear(embed, len(v)) for k, v in self.attribute_values.items()})
            if self.attribute_weight > 0
            else None
        )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.weights_file = str(weights_file)
        self.picture = {"num_queries": 6, "topk": 6, **dict(picture or {})}
        self.seed = int(seed)
        self.warmup_steps = int(warmup_steps)
        self._prompts: dict[Path, dict[str, str]] = {}

    # ------------------------------------------------------------------ texts
    def _prompt_of(self, path: str) -> str:
        folder = Path(path).parents[1]
        if folder not in self._prompts:
            manifest = folder / "manifest.jsonl"
            if not manifest.is_file():
                raise ConfigValueError(
                    f"model.text_source=prompts: {manifest} is missing; the source must be a "
                    "GenePerson folder written by synth.py (or use text_source=captions)."
                )
            table = {}
            for line in manifest.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    table[Path(entry["file"]).name] = entry.get("prompt", "")
            self._prompts[folder] = table
        return self.train_captioner.fit_prompt(self._prompts[folder][Path(path).name])

    def batch_texts(
        self, records: Sequence[Any], rng: np.random.Generator
    ) -> tuple[list[str], list[str], list[tuple[str, ...]]]:
        """(texts, kinds, the attribute keys each text states) of the records of a batch (a stage-1 prompt
        states none that is known)."""
        if self.text_source == "prompts":
            return [self._prompt_of(r.path) for r in records], ["full"] * len(records), [()] * len(records)
        missing = [r.path for r in records if not getattr(r, "attributes", None)]
        if missing:
            raise ConfigValueError(
                f"model=clip_pretrain: {missing[0]} has no attribute record; captions need a "
                "GenePerson source with manifest.jsonl (data=genepers_mini, sandbox_corpus, "
                "genepers)."
            )
        kinds = draw_kinds(rng, self.caption_kinds, len(records))
        described = [self.describe(r.attributes, k, rng, getattr(r, "hidden", ())) for r, k in zip(records, kinds)]
        return [text for text, _ in described], kinds, [keys for _, keys in described]

    def describe(
        self, record: Mapping[str, str], kind: str, rng: np.random.Generator, hidden: Sequence[str] = ()
    ) -> tuple[str, tuple[str, ...]]:
        """One training caption of ``record``: with ``identity_text`` a person caption (``full`` / ``content``)
        is the identity caption (person fields only), a ``style`` caption stays the scene's. Neither names
        what the image does not show (its view's hidden keys and ``hidden``, the manifest's)."""
        if self.identity_text and kind != "style":
            return identity_caption(self.train_captioner, record, rng, self.schema, hidden)
        return self.train_captioner.describe(record, kind, rng, hidden=hidden)

    # ------------------------------------------------------------------ training
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(images), dim=-1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        records = self.trainer.datamodule.train_records
        index = batch["index"].tolist()
        rng = np.random.default_rng(derive_seed(self.seed, self.global_step, self.global_rank))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.global_step, self.global_rank, 1))
        images, flipped = augment_batch(batch["image"], self.augment, generator)
        batch_records = [records[i] for i in index]
        attributes = [mirror_record(r.attributes or {}) if f else r.attributes for r, f in zip(batch_records, flipped)]
        image = self.backbone(images)
        if self.use_text:
            texts, kinds, stated = self.batch_texts(
                [_Record(r.path, a) for r, a in zip(batch_records, attributes)], rng
            )
            ids = self.train_captioner.tokenize(texts).to(self.device)
            text = encode_text(self.text_tower, ids)
            positives = batch_positives(
                batch["pid"],
                kinds,
                [a or {} for a in attributes],
                stated,
                self.identity_level,
                self.caption_truth and self.text_source == "captions",
            )
        # the towers under the trainer's autocast; with loss_in_fp32 the losses outside it, in fp32
        fp32 = torch.autocast(self.device.type, enabled=False) if self.loss_in_fp32 else contextlib.nullcontext()
        with fp32:
            cast = (lambda t: t.float()) if self.loss_in_fp32 else (lambda t: t)
            if self.use_text:
                loss = clip_contrastive_loss(cast(image), cast(text), self.logit_scale, positives, self.max_logit_scale)
            else:
                loss = image_identity_contrast(cast(image), batch["pid"], self.logit_scale, self.max_logit_scale)
            self.log("train/loss_clip" if self.use_text else "train/loss_image_image", loss.detach())
            if self.attribute_heads is not None:
                attr_loss = self.attribute_loss(cast(image), attributes)
                self.log("train/loss_attributes", attr_loss.detach())
                loss = loss + self.attribute_weight * attr_loss
        self.log("train/loss", loss.detach(), prog_bar=True)
        self.log("train/logit_scale", self.logit_scale.detach().exp())
        return loss

    def attribute_loss(self, image: torch.Tensor, attributes: Sequence[Mapping[str, str] | None]) -> torch.Tensor:
        """Mean over the person attributes of the cross-entropy of a linear head on the (B, E) image
        embedding against each image's value (images whose record lacks the value are left out)."""
        terms = []
        for key, head in self.attribute_heads.items():
            values = self.attribute_values[key]
            rows = [i for i, a in enumerate(attributes) if a and a.get(key) in values]
            if not rows:
                continue
            target = torch.tensor([values.index(attributes[i][key]) for i in rows], device=image.device)
            terms.append(F.cross_entropy(head(image[rows]).float(), target))
        return torch.stack(terms).mean() if terms else image.sum() * 0.0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Linear warm-up over the first ``warmup_steps`` optimizer steps, on top of the epoch schedule:
        a CLIP trained from random weights at full learning rate from step 0 collapses (constant
        features, loss stuck at ln(batch size))."""
        if self.schedule == "steps" or self.global_step > self.warmup_steps or self.warmup_steps <= 0:
            return
        factor = min(1.0, (self.global_step + 1) / self.warmup_steps)
        sched = self.lr_schedulers()
        optimizer = self.optimizers().optimizer
        if sched is not None:
            base = sched.get_last_lr()
        else:
            base = self.__dict__.setdefault("_base_lrs", [g["lr"] for g in optimizer.param_groups])
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr * factor

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.no_decay_1d:  # CLIP's groups: biases, norms and the logit scale without weight decay
            params = [
                {"params": [p for p in params if p.ndim >= 2]},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
            ]
        if self.schedule == "epochs":
            return self.build_optimization(params, self.optimizer_factory, self.scheduler_factory)
        if int(self.trainer.max_steps) <= 0:
            raise ConfigValueError(
                "model.schedule=steps needs trainer.max_steps (the step the cosine reaches 0); set it, "
                "or use model.schedule=epochs."
            )
        optimizer = self.optimizer_factory(params=params)
        total, warm = int(self.trainer.max_steps), self.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, total, warm))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero and not self.trainer.fast_dev_run:
            path = self.save_weights(Path(self.trainer.default_root_dir) / self.weights_file)
            self.extra_results.setdefault("clip_weights", str(path))

    def save_weights(self, path: Path) -> Path:
        """Write the full CLIP weights file (``backbone.pretrained=<path>`` loads it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(clip_state_dict(self.backbone.visual, self.text_tower, self.logit_scale), path)
        log.info("CLIP weights (both towers) written to %s; use them with backbone.pretrained=%s", path, path)
        return path

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _set_features(self, target) -> tuple[torch.Tensor, list[Any]]:
        dm = self.trainer.datamodule
        records = list(target.records)
        loader = dm.eval_loader(target)
        feats: list[torch.Tensor] = []
        idx: list[int] = []
        limit = 1 if self.trainer.fast_dev_run else None
        for b, batch in enumerate(loader):
            if limit is not None and b >= limit:
                break
            feats.append(self.extract_features(batch["image"].to(self.device)).float())
            idx += batch["index"].tolist()
        return torch.cat(feats), [records[i] for i in idx]

    def alignment(self, sets: Sequence[Any], out_dir: Path | None) -> dict[str, dict[str, Any]]:
        """``{section: {set: ...}}`` for each evaluation set, the sections of
        :data:`ppreid.metrics.clip_alignment.ALIGNMENT_SECTIONS` (zero-shot, caption-to-image, the linear-probe
        ceiling, zero-shot against it, the scene probe)."""
        report: dict[str, dict[str, Any]] = {section: {} for section in ALIGNMENT_SECTIONS}
        was_training = self.training
        self.eval()
        for target in sets:
            feats, records = self._set_features(target)
            attrs = [getattr(r, "attributes", None) or {} for r in records]
            if not any(attrs):
                log.warning("%s: no attribute records (no manifest); zero-shot and text-to-image skipped", target.name)
                continue
            sections, ranking = alignment_report(
                feats, [r.pid for r in records], attrs, self.text_tower, self.captioner, self.schema
            )
            for section, value in sections.items():
                report[section][target.name] = value
            if out_dir is not None and ranking:
                alignment_picture(
                    out_dir / f"text_to_image_{target.name}.png",
                    ranking,
                    [r.path for r in records],
                    int(self.picture["num_queries"]),
                    int(self.picture["topk"]),
                )
            zs, t2i = sections["zero_shot"], sections["text_to_image"]
            log.info(
                "%s: zero-shot mean normalized accuracy %s (mean accuracy %s, chance %s; %s of the linear-probe "
                "ceiling); caption-to-image R1 %s, mAP %s; background probe %s",
                target.name,
                zs["mean_normalized"],
                zs["mean_accuracy"],
                zs["mean_chance"],
                sections["zero_shot_vs_probe"]["ratio"],
                t2i["R1"],
                t2i["mAP"],
                sections["scene_probe"]["attributes"].get("background", {}).get("balanced_accuracy"),
            )
        self.train(was_training)
        return report

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if not self.trainer.is_global_zero:
            return
        dm = self.trainer.datamodule
        sets = ([dm.val_set] if getattr(dm, "val_set", None) is not None else []) + list(dm.targets)
        self.extra_results.update(self.alignment(sets, Path(self.trainer.default_root_dir)))
