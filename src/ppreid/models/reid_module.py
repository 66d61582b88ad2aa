"""Base LightningModule of every ReID model: the shared evaluation path and checkpoint contents.

Subclasses implement :meth:`extract_features` (images (B,3,H,W) -> features (B,D)) and their own
``training_step``. Evaluation is shared, so every model gets the same protocol and extras:

- **validation** runs on identities held out of the *source* (``val/R1``, ``val/mAP``, ...); the
  target domains are never looked at during training;
- **test** runs on every target (``test/<target>/{R1,R5,R10,mAP,mINP}``, and ``test/mAP`` /
  ``test/R1``, the means over targets);
- the evaluation options (:class:`EvalOptions`, config ``eval.*``): flip-test features,
  k-reciprocal re-ranking, the ranked-list picture and the feature export.

One :class:`ReIDEvaluator` per evaluation set, fed by the datamodule's index-carrying loaders, so
results are identical on 1 process or under DDP.

What a run (train.py) asks of a model is declared here, with its default, and nowhere else (a new model
overrides what it needs): :meth:`extract_features`, ``training_step``, :attr:`lazy_state_prefixes`,
:attr:`loads_own_weights`, :attr:`ddp_find_unused_parameters`, :attr:`backbone_name`,
:meth:`input_normalization`, :attr:`extra_results` and :attr:`build_spec`; what the datamodule asks
(:class:`ppreid.data.datamodule.TrainInputsProvider`): :attr:`train_inputs`, :attr:`index_batch_size`
and :attr:`validation_due`.

A fast dev run (``debug=fdr``: one batch of train, val and test) runs the real step of the real
stage / phase of its epoch 0: no ``trainer.fast_dev_run`` branch may change what a training step
computes or which stage / phase it belongs to. Such a branch may only skip one-off side work
(pictures, stage checkpoints, log lines). A later stage or phase gets its own fast dev run of a
config that starts there (e.g. ``model.stage1.epochs=0``, ``model.phases.reversal_from=0``).

A checkpoint carries the model's **build spec** (its resolved model + backbone config, the number of
training identities and the input size / normalization), under the key ``ppreid``, so that it can be
rebuilt and evaluated without its config or its training data (see ``src/ppreid/training/checkpoint.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ppreid.metrics.reid_metric import ReIDEvaluator
from ppreid.training.checkpoint import SPEC_KEY
from ppreid.utils.errors import ConfigValueError

log = logging.getLogger(__name__)

RANKS_LOGGED = (1, 5, 10)
NECK_FEATS = ("after", "before")


def check_neck_feat(value: str) -> str:
    """``model.neck_feat``: the test feature after (BNNeck output) or before the BNNeck."""
    if value not in NECK_FEATS:
        raise ConfigValueError(f"model.neck_feat={value!r}: use 'after' or 'before'.")
    return value


@dataclass
class EvalOptions:
    """How features are extracted and ranked at evaluation (config group ``eval``).

    flip: flip-test, the mean of an image's and its mirror's features.
    rerank: k-reciprocal re-ranking (Zhong et al. 2017) with ``k1``, ``k2``, ``lambda_value``.
    ranked_queries / ranked_topk: the ranked-list picture (``ranked_<target>.png``): that many queries
        with their top-k gallery images (0 queries: no picture).
    export_features: write ``features_<target>.npz`` (query/gallery features, pids, camids, paths).
    embedding_plot: ``embedding_test.png``, a 2-D PCA of the targets' features coloured by domain and
        by identity (do the domains mix?).
    """

    flip: bool = False
    rerank: bool = False
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    ranked_queries: int = 8
    ranked_topk: int = 10
    export_features: bool = False
    embedding_plot: bool = True

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> EvalOptions:
        cfg = dict(cfg or {})
        rerank = dict(cfg.pop("rerank", None) or {})
        ranked = dict(cfg.pop("ranked_list", None) or {})
        known = {"flip", "export_features", "embedding_plot"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigValueError(
                f"eval: unknown key(s) {', '.join(unknown)}; known: flip, rerank, "
                "ranked_list, export_features, embedding_plot."
            )
        opts = cls(
            flip=bool(cfg.get("flip", False)),
            export_features=bool(cfg.get("export_features", False)),
            embedding_plot=bool(cfg.get("embedding_plot", True)),
            rerank=bool(rerank.get("enabled", False)),
            k1=int(rerank.get("k1", 20)),
            k2=int(rerank.get("k2", 6)),
            lambda_value=float(rerank.get("lambda_value", 0.3)),
            ranked_queries=int(ranked.get("num_queries", 8)),
            ranked_topk=int(ranked.get("topk", 10)),
        )
        if opts.ranked_queries < 0 or opts.ranked_topk < 1:
            raise ConfigValueError(
                f"eval.ranked_list: num_queries={opts.ranked_queries} must be >= 0 and topk={opts.ranked_topk} >= 1."
            )
        return opts

    @property
    def rerank_args(self) -> dict[str, Any] | None:
        return {"k1": self.k1, "k2": self.k2, "lambda_value": self.lambda_value} if self.rerank else None


class ReIDModule(pl.LightningModule):
    """Base of every model train.py runs; the class attributes and hooks below are the run's questions."""

    #: Parameter-name prefixes a model builds or sizes at fit (a classifier sized by the training identities,
    #: a text cache): a checkpoint's keys and shapes under them are no architecture mismatch.
    lazy_state_prefixes: tuple[str, ...] = ()
    #: True: ``train=false`` without ``ckpt_path`` still evaluates trained weights (the model loads its own).
    loads_own_weights: bool = False
    #: True: some steps leave trainable parameters without gradient (DDP then finds unused parameters).
    ddp_find_unused_parameters: bool = False
    #: Messages (regexes) of library warnings this model's training raises by design; train.py ignores them
    #: during fit and test only (ppreid.utils.console.library_warnings_ignored).
    expected_warnings: tuple[str, ...] = ()
    #: What the training batches hold now: ``images`` (P x K image batches) or ``indices`` (training-set
    #: indices only, no image read: a stage that trains on cached features; the run then reloads loaders
    #: every epoch). Read by the datamodule at each train loader request.
    train_inputs: str = "images"
    #: With ``train_inputs == "indices"``: chunks of a fresh permutation of all training images of this
    #: size (None: P x K batches of indices).
    index_batch_size: int | None = None

    @property
    def validation_due(self) -> bool:
        """Whether a validation pass of the fit now has work to do. False: the datamodule gives no validation
        batches, so the pass reads nothing and logs nothing (a stage that cannot change the evaluated weights).
        The run's final validation after fit always runs. Default True."""
        return True

    def __init__(self, eval_metric: str = "cosine", max_rank: int = 50) -> None:
        super().__init__()
        self.eval_metric = eval_metric
        self.max_rank = int(max_rank)
        self.eval_options = EvalOptions()
        self.val_evaluators = nn.ModuleList()
        self.evaluators = nn.ModuleList()
        self.target_names: list[str] = []
        # stage -> set name -> full result dict (incl. the CMC curve), read by callbacks.
        self.eval_results: dict[str, dict[str, dict[str, Any]]] = {}
        # Set by train.py (or ppreid.training.checkpoint): how to rebuild this model; saved in checkpoints.
        self.build_spec: dict[str, Any] | None = None
        # Sections a model adds to results.json (e.g. the privacy audit's "privacy"), set on the
        # process that runs the test (rank 0 of a single-node run; not under ddp_spawn).
        self.extra_results: dict[str, Any] = {}

    # ----------------------------------------------------------------- hooks for subclasses
    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) normalized images -> (B,D) retrieval features."""
        raise NotImplementedError

    @property
    def backbone_name(self) -> str | None:
        """A name for the log line when no ``backbone`` config group chose one (None: nothing to add)."""
        return None

    def input_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) per RGB channel the model's inputs must be normalized with, or None (the data
        config's own). Default: what the model's ``backbone`` declares (``input_mean`` / ``input_std``)."""
        backbone = self._modules.get("backbone")
        mean, std = getattr(backbone, "input_mean", None), getattr(backbone, "input_std", None)
        return None if mean is None or std is None else (tuple(mean), tuple(std))

    @property
    def num_classes(self) -> int | None:
        """Number of training identities the model's classifier was built for (None before fit)."""
        value = self.hparams.get("num_classes") if hasattr(self, "hparams") else None
        return int(value) if value else None

    # ----------------------------------------------------------------- configuration
    def configure_evaluation(self, options: EvalOptions | dict[str, Any] | None) -> None:
        """Set the evaluation options (flip, re-ranking, pictures, export) of this run."""
        self.eval_options = options if isinstance(options, EvalOptions) else EvalOptions.from_config(options)

    def schedule_length(self) -> int:
        """trainer.max_epochs for epoch-fraction schedules (a fast dev run takes one step: any length fits)."""
        trainer = self.trainer
        if trainer.fast_dev_run:
            return 10**6
        return int(trainer.max_epochs)

    def build_schedule(
        self,
        factory: Callable | None,
        optimizer: torch.optim.Optimizer,
        length: int,
        key: str = "model.scheduler",
        length_key: str = "trainer.max_epochs",
    ):
        """The epoch scheduler of ``optimizer`` over ``length`` epochs (a fast dev run: any length fits);
        ``factory`` None = a constant learning rate."""
        if factory is None:
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
        length = 10**6 if self.trainer.fast_dev_run else length
        return factory(optimizer=optimizer, max_epochs=length, key=key, length_key=length_key)

    def build_optimization(
        self, params, optimizer_factory: Callable, scheduler_factory: Callable | None, key: str = "model.scheduler"
    ):
        """Optimizer (+ epoch scheduler, given the run length) in Lightning's return format."""
        optimizer = optimizer_factory(params=params)
        if scheduler_factory is None:
            return optimizer
        scheduler = self.build_schedule(scheduler_factory, optimizer, self.schedule_length(), key=key)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ----------------------------------------------------------------- shared training machinery
    def ensure_classifier(self, neck: nn.Module, num_classes: int | None) -> None:
        """Size ``neck``'s ID classifier for the training identities (rebuilt only when the count changes)."""
        if num_classes and neck.num_classes != num_classes:
            neck.reset_classifier(num_classes)
            self.hparams.num_classes = num_classes

    def reid_loss_terms(self, inputs: dict[str, Any], pids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted terms of the ``loss`` group (``self.loss_fns`` / ``self.loss_weights``).

        ``inputs``: ``{"logits": ..., "features": ...}``, each a tensor or a list of tensors (a term's
        value is then the sum over the list: CLIP-ReID sums its ID loss over two classifiers and its
        triplet loss over three features)."""
        terms = {}
        for name, fn in self.loss_fns.items():
            given = inputs[fn.input_kind]
            values = [fn(x, pids) for x in (given if isinstance(given, (list, tuple)) else [given])]
            terms[name] = self.loss_weights[name] * sum(values)
        return terms

    def log_loss_terms(
        self,
        terms: dict[str, torch.Tensor],
        prefix: str = "train",
        logits: torch.Tensor | None = None,
        pids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log each weighted term (``<prefix>/loss_<name>``), their sum (``<prefix>/loss``, also
        ``train/loss``) and, given logits, the ID accuracy (``train/acc``); returns the sum."""
        if not terms:
            raise ConfigValueError("every loss term of this step is off; enable at least one.")
        total = sum(terms.values())
        for name, value in terms.items():
            self.log(f"{prefix}/loss_{name}", value.detach())
        self.log(f"{prefix}/loss", total.detach(), prog_bar=True)
        if prefix != "train":
            self.log("train/loss", total.detach())
        if logits is not None and pids is not None:
            self.log("train/acc", (logits.argmax(1) == pids).float().mean(), prog_bar=True)
        return total

    def _limited(self) -> bool:
        trainer = self.trainer
        return bool(trainer.fast_dev_run) or any(
            not (isinstance(v, float) and v == 1.0) for v in (trainer.limit_val_batches, trainer.limit_test_batches)
        )

    def _evaluator(self, num_query: int, num_gallery: int, strict: bool) -> ReIDEvaluator:
        opts = self.eval_options
        return ReIDEvaluator(
            num_query=num_query,
            num_gallery=num_gallery,
            metric=self.eval_metric,
            max_rank=self.max_rank,
            strict=strict,
            rerank=opts.rerank_args,
            keep_features=opts.export_features or opts.embedding_plot,
            ranked_queries=opts.ranked_queries,
            ranked_topk=opts.ranked_topk,
        )

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        limited = self._limited()
        if stage in ("fit", "validate") and len(self.val_evaluators) == 0 and dm.has_val:
            self.val_evaluators.append(
                self._evaluator(dm.val_set.num_query, len(dm.val_set.splits.gallery), strict=not limited)
            )
        if stage == "test" and not self.target_names:
            if limited:
                log.warning(
                    "evaluation batches are limited (fast_dev_run / limit_*_batches): "
                    "metrics cover only part of each target and are not comparable."
                )
            self.target_names = list(dm.target_names)
            for num_query, num_gallery in zip(dm.target_num_query, dm.target_num_gallery):
                self.evaluators.append(self._evaluator(num_query, num_gallery, strict=not limited))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.build_spec is not None:
            checkpoint[SPEC_KEY] = {**self.build_spec, "num_classes": self.num_classes}

    # ----------------------------------------------------------------- evaluation
    def eval_features(self, images: torch.Tensor) -> torch.Tensor:
        """Features used for retrieval: (B,D), the flip-test mean when ``eval.flip`` is on."""
        feats = self.extract_features(images)
        if self.eval_options.flip:
            feats = (feats + self.extract_features(torch.flip(images, dims=[3]))) / 2
        return feats

    def _eval_step(self, batch: dict[str, torch.Tensor], evaluator: ReIDEvaluator) -> None:
        feats = self.eval_features(batch["image"])
        evaluator.update(feats.float(), batch["pid"], batch["camid"], batch["index"])

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self.val_evaluators[dataloader_idx])

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, self.evaluators[dataloader_idx])

    def _log_result(self, prefix: str, res: dict[str, Any]) -> None:
        cmc = res["cmc"]
        for k in RANKS_LOGGED:
            self.log(f"{prefix}/R{k}", float(cmc[k - 1]), sync_dist=True)
        self.log(f"{prefix}/mAP", float(res["mAP"]), sync_dist=True)
        self.log(f"{prefix}/mINP", float(res["mINP"]), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if len(self.val_evaluators) == 0:
            return
        evaluator = self.val_evaluators[0]
        res = evaluator.compute()
        evaluator.reset()
        self._log_result("val", res)
        self.eval_results["val"] = {"val": res}

    def on_test_epoch_end(self) -> None:
        results = {}
        for name, evaluator in zip(self.target_names, self.evaluators):
            res = evaluator.compute()
            evaluator.reset()
            results[name] = res
            self._log_result(f"test/{name}", res)
        if results:
            self.log("test/mAP", sum(float(r["mAP"]) for r in results.values()) / len(results), sync_dist=True)
            self.log("test/R1", sum(float(r["cmc"][0]) for r in results.values()) / len(results), sync_dist=True)
        self.eval_results["test"] = results
        if self.eval_options.export_features and self.trainer.is_global_zero:
            self._export_features(results)

    def _export_features(self, results: dict[str, dict[str, Any]]) -> None:
        """``features_<target>.npz`` in the run folder for every fully evaluated target."""
        from pathlib import Path

        from ppreid.metrics.feature_export import write_feature_export

        targets = {t.name: t for t in self.trainer.datamodule.targets}
        for name, res in results.items():
            if "features" not in res:
                log.warning("eval.export_features: %s was evaluated partially; nothing exported", name)
                continue
            splits = targets[name].splits
            path = write_feature_export(
                Path(self.trainer.default_root_dir) / f"features_{name}.npz",
                res["features"],
                [r.path for r in splits.query],
                [r.path for r in splits.gallery],
            )
            log.info("features of %s written to %s", name, path)
