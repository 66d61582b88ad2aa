"""Privacy audit of any checkpoint of this repository: fresh attackers against its frozen features.

``python train.py model=attack model.extractor_ckpt=<checkpoints/last.ckpt> [model.reference_ckpt=<other>]``

1. The extractor E is rebuilt from its checkpoint (``load_model_from_checkpoint``) and frozen; every image
   reaches it at its own input size and normalization (``ImageSpace``, the one image path).
2. Every attacker kind of ``attackers`` (``src/ppreid/audit/attackers``: ``l1``, ``gan``, ``diffusion`` learned from
   (feature, image) pairs; ``optim``, white-box inversion through E) is paired with its **null**: the same
   attacker trained on shuffled features (``optim``: inverting another image's feature). A gain
   is always over the better feature-blind guess: ``ssim_gain`` = SSIM - max(null SSIM, mean training
   image SSIM) (a null that memorizes scores below the mean image). Learned attackers train at the
   training resolution (``attack_size`` null: the extractor's input size) until their loss on held-out
   training images plateaus (``early_stopping``); the curves go to ``attacker_curves.png`` and results.json.
3. ``audit_split``: ``cross`` trains the attackers on the source's training split and scores them on every
   target; ``in_domain`` trains fresh ones on half of each target's identities and scores them on the
   other half (no style gap to hide behind); ``both``.
   What ReID does not need, per split (``cross_domain`` / ``in_domain``): the swap test
   ``image_specific_gain`` (what A(f_i) says about photo i beyond A(f_j), j another photo of the person),
   ``person_gain`` / ``background_gain`` (the gain inside each region of the records' person masks; null
   without masks) and the probes.
4. Leakage: every scored reconstruction is a query against all real images of its set (leave-one-out,
   cross-camera: the Market protocol drops same identity and camera), judged by the reference extractor
   (``reference_ckpt``; E itself without one): ``leakage_norm`` = (R1 - chance) / (judge's R1 on the real
   images - chance), reported for the most-leaking attacker.
5. Attribute probes (``probes``): linear probes on E's stored features, in points of balanced accuracy above
   chance, nuisance (background, light, camera, view) and soft-biometric (gender, build, hair) attributes
   apart: in-domain trained on a seeded half of a target's images (``probes.split``: ``images`` or
   ``identities``) and scored on the other half, cross-domain trained on the source's training images.

Outputs: the ``privacy`` and ``audit`` sections of results.json, ``reconstructions_<target>.png`` and
``attacker_curves.png``;
the privacy audit page in docs/ explains every field. Scoring lives in ``scoring.py``, the
pictures, log lines and the ``audit`` block in ``report.py``, the training of the attacker suites (and
of their cross-domain pairs) in ``suite_training.py``, the attackers in ``src/ppreid/audit/attackers``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ppreid.audit import report as report
from ppreid.audit import scoring as scoring
from ppreid.audit import suite_training as suite_training
from ppreid.audit.attackers.base import Plateau
from ppreid.audit.attackers.images import ImageSpace, resize, to_uint8
from ppreid.audit.attackers.kinds import ATTACKERS, checked_attackers
from ppreid.audit.attackers.own import with_own_decoder
from ppreid.audit.target_audit import audit_target
from ppreid.models.reid_module import ReIDModule
from ppreid.training.checkpoint import load_model_from_checkpoint
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)

AUDIT_SPLITS = ("cross", "in_domain", "both")
SSIM_WINDOW = 11
HOW_TO_GET_ONE = (
    "a checkpoints/last.ckpt written by `python train.py` (model=bot, clipreid, pdm or privacy_gan), "
    "e.g. model.extractor_ckpt=logs/train/runs/<run>/checkpoints/last.ckpt"
)
DEFAULT_PROBES = {
    "nuisance": ["background", "illumination", "camera", "viewpoint"],
    "soft_biometric": ["gender", "build", "hair_style"],
}
PROBE_SPLITS = ("images", "identities")
DEFAULT_STOPPING = {"enabled": True, "val_fraction": 0.1, "eval_every": 50, "patience": 5, "min_improvement": 0.0}
# the keys of what ReID does not need, in each split's block of results.json


class AttackModel(ReIDModule):
    """Frozen extractor (from ``extractor_ckpt``) + reversal attackers and their nulls trained at test time."""

    loads_own_weights = True  # train=false without ckpt_path: the extractor comes from model.extractor_ckpt

    def __init__(
        self,
        extractor_ckpt: str | None = None,
        attackers: Sequence[str] = ATTACKERS,
        attack_size: Sequence[int] | None = None,
        l1: Callable | None = None,
        gan: Callable | None = None,
        diffusion: Callable | None = None,
        optim: Callable | None = None,
        own: Callable | None = None,
        reference_ckpt: str | None = None,
        audit_split: str = "both",
        split_seed: int = 0,
        in_domain_steps: float = 1.0,
        max_scored_images: int | None = None,
        train_flip: bool = True,
        probes: dict[str, Any] | None = None,
        early_stopping: dict[str, Any] | None = None,
        num_pictures: int = 8,
        reconstruct_batch_size: int = 256,
        name: str = "attack",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["l1", "gan", "diffusion", "optim", "own"], logger=False)
        if not extractor_ckpt:
            raise ConfigValueError(
                f"model=attack needs the checkpoint to audit: give model.extractor_ckpt=<path>, {HOW_TO_GET_ONE}."
            )
        self.factories = {"l1": l1, "gan": gan, "diffusion": diffusion, "optim": optim, "own": own}
        attackers = checked_attackers(attackers, self.factories)
        if audit_split not in AUDIT_SPLITS:
            raise ConfigValueError(f"model.audit_split={audit_split!r}; use one of {', '.join(AUDIT_SPLITS)}.")
        if max_scored_images is not None and int(max_scored_images) < 2:
            raise ConfigValueError(f"model.max_scored_images={max_scored_images}; give null (all) or an int >= 2.")
        if attack_size is not None:
            self.attack_size = tuple(int(s) for s in attack_size)
            if len(self.attack_size) != 2 or min(self.attack_size) < SSIM_WINDOW:
                raise ConfigValueError(
                    f"model.attack_size={list(attack_size)}: give [height, width], both >= "
                    f"{SSIM_WINDOW} (the SSIM window), e.g. [64, 32], or null (the training resolution)."
                )
        self.early_stopping = {**DEFAULT_STOPPING, **dict(early_stopping or {})}
        fraction = self.early_stopping["val_fraction"]
        if not 0.0 <= float(fraction) < 0.5 or int(self.early_stopping["eval_every"]) < 1:
            raise ConfigValueError(
                f"model.early_stopping: val_fraction={fraction} must be in [0, 0.5) and eval_every="
                f"{self.early_stopping['eval_every']} >= 1."
            )
        Plateau(self.early_stopping["patience"], self.early_stopping["min_improvement"])  # bad values stop here
        self.extractor_ckpt = str(extractor_ckpt)
        self.extractor, self.extractor_spec = load_model_from_checkpoint(extractor_ckpt, key="model.extractor_ckpt")
        self.extractor.requires_grad_(False)
        self.eval_metric, self.max_rank = self.extractor.eval_metric, self.extractor.max_rank
        self.space = ImageSpace.from_spec(self.extractor_spec)
        self.input_size = self.space.size
        if attack_size is None:  # the training resolution
            self.attack_size = self.input_size
        self.reference, self.reference_spec, self.reference_space = None, None, None
        if reference_ckpt:
            self.reference, self.reference_spec = load_model_from_checkpoint(reference_ckpt, key="model.reference_ckpt")
            self.reference.requires_grad_(False)
            self.reference_space = ImageSpace.from_spec(self.reference_spec)
        self.reference_ckpt = str(reference_ckpt) if reference_ckpt else None
        attackers = with_own_decoder(attackers, self.extractor, self.extractor_ckpt)
        self.attacker_names = attackers
        self.attacker_settings = {a: report.describe(self.factories[a]) for a in attackers}
        self.splits = ("cross", "in_domain") if audit_split == "both" else (audit_split,)
        if not 0.0 < float(in_domain_steps) <= 1.0:
            raise ConfigValueError(
                f"model.in_domain_steps={in_domain_steps}: the fraction of each attacker's steps "
                "that the in-domain attackers take, in (0, 1]."
            )
        self.split_seed, self.train_flip = int(split_seed), bool(train_flip)
        self.in_domain_steps = float(in_domain_steps)
        self.max_scored = None if max_scored_images is None else int(max_scored_images)
        self.probes = {
            **{"enabled": True, "steps": 300, "lr": 0.05, "weight_decay": 1e-3, "split": "images"},
            **DEFAULT_PROBES,
            **dict(probes or {}),
        }
        if self.probes["split"] not in PROBE_SPLITS:
            raise ConfigValueError(
                f"model.probes.split={self.probes['split']!r}; use one of {', '.join(PROBE_SPLITS)}."
            )
        self.source_probe_data: tuple[torch.Tensor, list[Any]] | None = None
        self.source_val: dict[str, Any] | None = None
        self.curves: dict[str, dict[str, Any]] = {}
        self.num_pictures, self.reconstruct_batch_size = int(num_pictures), int(reconstruct_batch_size)
        self.suites: dict[str, dict[str, Any]] = {}
        self.collected: dict[int, dict[str, list[Any]]] = {}
        self.cost: dict[str, float] = {}  # part -> wall seconds
        self.cost_cpu: dict[str, float] = {}  # part -> CPU seconds of this process (less sensitive to load)

    @property
    def backbone_name(self) -> str | None:
        """The audited extractor's backbone (model=attack has none of its own)."""
        return self.extractor_spec["choices"].get("backbone")

    # ----------------------------------------------------------------- the extractors
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor.extract_features(images)

    def train(self, mode: bool = True):
        super().train(mode)
        self.extractor.eval()  # frozen: BN statistics never move
        if self.reference is not None:
            self.reference.eval()
        return self

    def _features(self, unit: torch.Tensor, reference: bool = False) -> torch.Tensor:
        """[0, 1] images (N,3,h,w) -> E's stored features (or the reference's), in batches, on the CPU."""
        out = []
        for i in range(0, unit.shape[0], self.reconstruct_batch_size):
            x = unit[i : i + self.reconstruct_batch_size].to(self.device)
            with torch.no_grad():
                f = (
                    self.reference.extract_features(self.reference_space.from_unit(x))
                    if reference
                    else self.eval_features(self.space.from_unit(x))
                )
            out.append(f.float().cpu())
        return torch.cat(out)

    # ----------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        if stage == "fit":
            raise ConfigValueError(
                "model=attack trains its attackers inside the audit (the test stage) and never "
                "trains the extractor; run it with train=false (the default of model=attack)."
            )
        if self.trainer.world_size > 1:
            raise ConfigValueError(
                "model=attack runs in one process (its attackers train on one device); use trainer=cpu or trainer=gpu."
            )
        dm = self.trainer.datamodule
        dm.height, dm.width = self.input_size
        for tf in (dm.train_transform_cfg, dm.test_transform_cfg):
            tf["mean"], tf["std"] = self.space.mean.flatten().tolist(), self.space.std.flatten().tolist()
        log.info(
            "auditing %s (%s, backbone %s, input %dx%d); attackers %s with their nulls, splits %s",
            self.extractor_ckpt,
            self.extractor_spec["choices"].get("model"),
            self.backbone_name,
            *self.input_size,
            ", ".join(self.attacker_names),
            " + ".join(self.splits),
        )
        super().setup(stage)

    def training_step(self, batch, batch_idx):
        raise ConfigValueError("model=attack never trains the extractor; run it with train=false (its default).")

    def configure_optimizers(self):
        raise ConfigValueError("model=attack never trains the extractor; run it with train=false (its default).")

    @staticmethod
    def _clock():
        return time.time(), time.process_time()

    def _timed(self, part: str, start) -> None:
        """Add the wall and CPU seconds since ``start`` (a ``_clock()``) to ``part`` of the cost."""
        self.cost[part] = round(self.cost.get(part, 0.0) + time.time() - start[0], 2)
        self.cost_cpu[part] = round(self.cost_cpu.get(part, 0.0) + time.process_time() - start[1], 2)

    # ----------------------------------------------------------------- attackers and their nulls
    def _reconstruct(self, attacker: nn.Module, z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = [
            attacker.reconstruct(
                z[i : i + self.reconstruct_batch_size].to(self.device), index[i : i + self.reconstruct_batch_size]
            )
            .float()
            .cpu()
            for i in range(0, z.shape[0], self.reconstruct_batch_size)
        ]
        return torch.cat(out).clamp(0.0, 1.0)

    # ----------------------------------------------------------------- cross-domain training pairs
    def on_test_start(self) -> None:
        if self.suites or "cross" not in self.splits:
            return
        with torch.inference_mode(False), torch.enable_grad():  # Lightning tests in inference mode
            start = self._clock()
            feats, images, ids = suite_training.training_pairs(self)
            self._timed("cross/pairs", start)
            first = torch.from_numpy(np.unique(ids.numpy(), return_index=True)[1])  # one pair per image (no mirrors)
            records = self.trainer.datamodule.train_records
            self.source_probe_data = (feats[first], [records[i].attributes for i in ids[first].tolist()])
            self.suites["cross"] = suite_training.train_suite(self, "cross", feats, images, image_ids=ids)
            self.curves["cross"] = self.suites["cross"]["curves"]
            self.source_val = suite_training.score_source_val(self)

    # ----------------------------------------------------------------- test
    def test_step(self, batch, batch_idx, dataloader_idx: int = 0) -> None:
        feats = self.collect(self.collected.setdefault(dataloader_idx, {}), batch)
        self.evaluators[dataloader_idx].update(feats, batch["pid"], batch["camid"], batch["index"])

    def collect(self, store: dict[str, list[torch.Tensor]], batch) -> torch.Tensor:
        """Keep one batch's features, images at the attack size, indices (and the reference's features) in
        ``store`` for scoring; returns E's features (B,D) float32."""
        feats = self.eval_features(batch["image"]).float()
        unit = self.space.to_unit(batch["image"])
        store.setdefault("feats", []).append(feats.cpu())
        store.setdefault("images", []).append(to_uint8(resize(unit, self.attack_size)))
        store.setdefault("index", []).append(batch["index"].cpu())
        if self.reference is not None:
            ref = self.reference.extract_features(self.reference_space.from_unit(unit))
            store.setdefault("ref", []).append(ref.float().cpu())
        return feats

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        utility = self.eval_results.get("test", {})
        privacy = {}
        with torch.inference_mode(False), torch.enable_grad():
            for i, target in enumerate(self.trainer.datamodule.targets):
                if i in self.collected:
                    m_ap = (utility.get(target.name) or {}).get("mAP")
                    privacy[target.name] = audit_target(
                        self,
                        target,
                        scoring.target_data(target, self.collected[i]),
                        None if m_ap is None else float(m_ap),
                    )
        self.collected = {}
        if self.curves and self.trainer.is_global_zero:
            report.save_curves(Path(self.trainer.default_root_dir) / "attacker_curves.png", self.curves)
        report.log_cost(self.cost, self.cost_cpu)
        self.extra_results = {"privacy": privacy, "audit": self._audit_block()}
        if self.source_val is not None:
            self.extra_results["privacy_source_val"] = self.source_val

    def _audit_block(self) -> dict[str, Any]:
        dm = self.trainer.datamodule
        return report.audit_block(self, dm.name, dm.target_names)
