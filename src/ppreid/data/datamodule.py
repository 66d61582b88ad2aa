"""ReID datamodule: one or more *source* datasets for training, one or more *target* test sets.

Sources are merged into one training set with pid/camid offsets; a fraction of the source
identities is held out as the **validation** split (validation never looks at the targets); each
target keeps its own query + gallery, evaluated separately at test (cross-domain protocol).
Training checks every source *and* target folder before any work (one message naming all that is
missing); evaluation parses only the targets, and of each target only its query and gallery, so a
checkpoint can be evaluated on any targets without its training data present.

Images are decoded once at start: every image is checked (``verify_images``, one message listing
every unreadable file) and, when they fit in memory (``cache_images``), kept as uint8 tensors at the
input size, so an epoch reads memory instead of decoding files. Works under DDP: the P x K sampler
splits identity batches across ranks, evaluation uses contiguous unpadded shards and the metric
puts samples back in index order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ppreid.data.dataset_parsing import DatasetParsing, TargetSet, dataset_spec, one_layout_error
from ppreid.data.datasets.base import ReIDRecord
from ppreid.data.image_dataset import ImageDataset, ImageStore, IndexDataset, TwoViewDataset
from ppreid.data.image_preparation import ImagePreparation, auto_switch
from ppreid.data.samplers import InferenceSampler, PermutationChunkSampler, RandomIdentitySampler
from ppreid.data.transforms import ReIDTransform, build_transforms
from ppreid.utils.errors import ConfigValueError, DatasetLayoutError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class TrainInputsProvider(Protocol):
    """What the datamodule asks of the model it feeds (declared with defaults on
    ``ppreid.models.reid_module.ReIDModule``; the data layer does not import models).

    train_inputs: ``images`` (P x K image batches) or ``indices`` (training-set indices, no image read).
    index_batch_size: with ``indices``, chunks of a fresh permutation of all training images of this size
        (None: P x K batches of indices).
    validation_due: False while a validation pass of the fit has no work to do (no validation batches).
    """

    train_inputs: str
    index_batch_size: int | None
    validation_due: bool


class ReIDDataModule(DatasetParsing, ImagePreparation, pl.LightningDataModule):
    """Train on ``sources`` (merged), validate on held-out source identities, test on ``targets``.

    sources / targets: lists of ``{dataset: <parser name>, root: <folder>, name: <label>, options: {...}}``;
    a target with ``optional: true`` is left out (with a warning) when its folder is missing.
    val_split: ``{identities: fraction in [0, 1) or count, seed: int}``; 0 identities = no validation.
    train_transforms / test_transforms: ``mean`` / ``std`` null = the backbone's own normalization
    (ImageNet for CNNs, CLIP's for CLIP towers), set through :meth:`use_backbone_normalization`.
    prepare: optional callable run once (rank 0) before parsing, e.g. writing the embedded procedural data.
    root: the source folder of configs with one user-given folder (``data=genepers data.root=...``); the
    sources refer to it as ``${data.root}``.
    check_targets: training also parses (and verifies) the targets before any work, so a missing target
    stops the run at start, not after training (train.py: its ``test`` value).
    verify_images: decode every image once at start and list every unreadable file in one message:
    true / false / auto (on when the run's datasets hold at most ``verify_max_images`` images).
    cache_images: keep the decoded images in memory (uint8 at height x width) instead of decoding files
    every epoch: true / false / auto (on when they take at most ``cache_max_gib``). Caching decodes every
    image, so it also finds every unreadable file.
    channels_last: image batches in channels-last memory format (faster convolutions on CPU).
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[dict[str, Any]],
        targets: Sequence[dict[str, Any]],
        height: int = 256,
        width: int = 128,
        train_transforms: dict[str, Any] | None = None,
        test_transforms: dict[str, Any] | None = None,
        batch_size: int = 64,
        num_instances: int = 4,
        test_batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        sampler_seed: int = 0,
        val_split: dict[str, Any] | None = None,
        prepare: Callable[[], Any] | None = None,
        root: str | None = None,
        check_targets: bool = True,
        verify_images: Any = "auto",
        verify_max_images: int = 50_000,
        cache_images: Any = "auto",
        cache_max_gib: float = 2.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.root = root
        self.source_specs = [dataset_spec(s) for s in sources]
        self.target_specs = [dataset_spec(t) for t in targets]
        if not self.target_specs:
            raise ConfigValueError("data.targets is empty: give at least one target test set.")
        self.height, self.width = int(height), int(width)
        self.train_transform_cfg = dict(train_transforms or {})
        self.test_transform_cfg = dict(test_transforms or {})
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.test_batch_size = int(test_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.sampler_seed = int(sampler_seed)
        val_split = dict(val_split or {})
        self.val_identities = val_split.get("identities", 0)
        self.val_seed = int(val_split.get("seed", 0))
        self.prepare = prepare
        self.check_targets = bool(check_targets)
        self.verify_images = auto_switch(verify_images, "verify_images")
        self.verify_max_images = int(verify_max_images)
        self.cache_images = auto_switch(cache_images, "cache_images")
        self.cache_max_gib = float(cache_max_gib)
        self.channels_last = bool(channels_last)
        self.stores: dict[tuple, ImageStore] = {}
        self._verified: set = set()
        self._logged: set = set()
        self._failed_roots: set = set()
        self.train_records: list[ReIDRecord] = []
        self.val_set: TargetSet | None = None
        self.num_classes: int = 0
        self.num_cameras: int = 0
        self.num_domains: int = 0
        self.targets: list[TargetSet] = []
        self._sources_ready = False
        self._targets_ready = False

    # ------------------------------------------------------------------ normalization
    def use_backbone_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Fill ``mean`` / ``std`` left null in the transform configs with the backbone's values."""
        for cfg in (self.train_transform_cfg, self.test_transform_cfg):
            if cfg.get("mean") is None:
                cfg["mean"] = [float(v) for v in mean]
            if cfg.get("std") is None:
                cfg["std"] = [float(v) for v in std]

    def normalization(self, train: bool = False) -> tuple[list[float], list[float]]:
        """(mean, std) the transforms use (ImageNet's where nothing set them)."""
        cfg = self.train_transform_cfg if train else self.test_transform_cfg
        return (list(cfg.get("mean") or IMAGENET_MEAN), list(cfg.get("std") or IMAGENET_STD))

    def _transform(self, is_train: bool) -> ReIDTransform:
        cfg = dict(self.train_transform_cfg if is_train else self.test_transform_cfg)
        cfg["mean"], cfg["std"] = self.normalization(is_train)
        return build_transforms(self.height, self.width, is_train=is_train, **cfg)

    # ------------------------------------------------------------------ set-up
    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Parse what ``stage`` needs, then decode its images once (verify / cache): sources, and targets
        too when ``check_targets``, for fit / validate; the targets (query + gallery only) for test /
        predict. Every missing folder of the stage is named in one message, before any work."""
        fit = stage in ("fit", "validate", None)
        test = stage in ("test", "predict", None)
        problems: list[str] = []
        if fit:
            try:
                self.setup_sources()
            except DatasetLayoutError as err:
                problems += getattr(err, "problems", [str(err)])
        ways_forward = ""
        if test or (fit and self.check_targets):
            try:
                self.setup_targets(skip_roots=self._failed_roots)  # a folder named as a source is not named again
            except DatasetLayoutError as err:
                problems += getattr(err, "problems", [str(err)])
                ways_forward = self.missing_target_ways_forward(training=fit)
        problems = [p for p in problems if p]
        if problems:
            raise one_layout_error(problems, "dataset problems (nothing was trained or evaluated)", ways_forward)
        self.prepare_images(fit=fit, test=test or (fit and self.check_targets))

    # ------------------------------------------------------------------ images decoded once
    def _image_sets(self, fit: bool, test: bool) -> list[tuple[ReIDTransform, list[ReIDRecord]]]:
        """(transform, records) of every set the stage reads: train, validation, targets."""
        sets = []
        if fit and self._sources_ready:
            sets.append((self._transform(is_train=True), self.train_records))
            if self.val_set is not None:
                sets.append((self._transform(is_train=False), self.val_set.records))
        if test and self._targets_ready:
            sets += [(self._transform(is_train=False), t.records) for t in self.targets]
        return sets

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Image batches (B, 3, H, W) in channels-last memory format when ``channels_last`` (same values)."""
        if self.channels_last and isinstance(batch, dict):
            for key, value in batch.items():
                if key.startswith("image") and isinstance(value, torch.Tensor) and value.dim() == 4:
                    batch[key] = value.contiguous(memory_format=torch.channels_last)
        return batch

    # ------------------------------------------------------------------ info
    @property
    def has_val(self) -> bool:
        return self.val_set is not None

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def target_num_query(self) -> list[int]:
        return [t.num_query for t in self.targets]

    @property
    def target_num_gallery(self) -> list[int]:
        return [len(t.splits.gallery) for t in self.targets]

    def _model(self) -> TrainInputsProvider | None:
        """The model this datamodule feeds, when attached to a trainer and declaring :class:`TrainInputsProvider`."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return module if isinstance(module, TrainInputsProvider) else None

    def _dist(self):
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    # ------------------------------------------------------------------ loaders
    def train_dataset(self, augment: bool = True) -> ImageDataset:
        """The training records with the training transforms (``augment=False``: test transforms)."""
        tf = self._transform(is_train=augment)
        return ImageDataset(self.train_records, tf, store=self._store_for(tf))

    def train_sampler(self) -> RandomIdentitySampler:
        world, rank = self._dist()
        return RandomIdentitySampler(
            [r.pid for r in self.train_records],
            self.batch_size,
            self.num_instances,
            seed=self.sampler_seed,
            num_replicas=world,
            rank=rank,
        )

    def train_dataloader(self) -> DataLoader:
        """P x K batches of training images, or of indices only (no image read) when the model's current
        stage trains on cached features (``model.train_inputs == "indices"``; the trainer then reloads
        loaders every epoch)."""
        if not self.train_records:
            self.setup_sources()
        module = self._model()
        if module is not None and module.train_inputs == "indices":
            chunk = module.index_batch_size
            if not chunk:  # P x K batches of indices
                return DataLoader(
                    IndexDataset(self.train_records),
                    batch_size=self.batch_size,
                    sampler=self.train_sampler(),
                    drop_last=True,
                    num_workers=0,
                )
            world, rank = self._dist()  # a fresh permutation of every image in chunks (remainder kept)
            return DataLoader(
                IndexDataset(self.train_records),
                batch_size=math.ceil(int(chunk) / world),
                sampler=PermutationChunkSampler(
                    len(self.train_records), seed=self.sampler_seed, num_replicas=world, rank=rank
                ),
                drop_last=False,
                num_workers=0,
            )
        return DataLoader(
            self.train_dataset(),
            batch_size=self.batch_size,
            sampler=self.train_sampler(),
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_feature_loader(
        self, restyled: bool = False, restyle_strength: float = 1.0, indices: Sequence[int] | None = None
    ) -> DataLoader:
        """This rank's contiguous shard of the training images with the *test* transforms (for caching a
        frozen encoder's features); ``restyled`` adds a photometrically re-styled view of each image;
        ``indices``: only these training images (each sample keeps its training-set index)."""
        if not self.train_records:
            self.setup_sources()
        world, rank = self._dist()
        tf = self._transform(is_train=False)
        dataset = (
            TwoViewDataset(self.train_records, tf, restyle_strength)
            if restyled
            else ImageDataset(self.train_records, tf, store=self._store_for(tf))
        )
        if indices is not None:
            dataset = torch.utils.data.Subset(dataset, [int(i) for i in indices])
        return DataLoader(
            dataset,
            batch_size=self.test_batch_size,
            sampler=InferenceSampler(len(dataset), num_replicas=world, rank=rank),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def first_train_batch(self) -> dict[str, Any]:
        """The first P x K batch of epoch 0 exactly as training draws it (this rank's part)."""
        sampler = self.train_sampler()
        sampler.set_epoch(0)
        indices = list(sampler)[: self.batch_size]
        dataset = self.train_dataset()
        items = [dataset[i] for i in indices]
        return {
            "image": torch.stack([it["image"] for it in items]),
            "pid": torch.tensor([it["pid"] for it in items]),
            "camid": torch.tensor([it["camid"] for it in items]),
            "index": torch.tensor(indices),
        }

    def eval_loader(self, target: TargetSet) -> DataLoader:
        """A loader over [query..., gallery...] of ``target``; each sample carries its index."""
        world, rank = self._dist()
        tf = self._transform(is_train=False)
        dataset = ImageDataset(target.records, tf, store=self._store_for(tf))
        return DataLoader(
            dataset,
            batch_size=self.test_batch_size,
            sampler=InferenceSampler(len(dataset), num_replicas=world, rank=rank),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

    def eval_dataloaders(self) -> list[DataLoader]:
        """One loader per target (see :meth:`eval_loader`)."""
        self.setup_targets()
        return [self.eval_loader(t) for t in self.targets]

    def val_dataloader(self) -> list[DataLoader]:
        """The held-out source identities (never the targets); empty without a validation split, or while the
        model's validation is not due (``validation_due``: no batches, so the pass reads and logs nothing)."""
        self.setup_sources()
        module = self._model()
        if module is not None and not module.validation_due:
            return []
        return [self.eval_loader(self.val_set)] if self.val_set is not None else []

    def test_dataloader(self) -> list[DataLoader]:
        return self.eval_dataloaders()
