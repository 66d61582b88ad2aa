"""ReID datamodule: one or more *source* datasets for training, one or more *target* test sets.

Sources are merged into one training set with pid/camid offsets; each target keeps its own
query + gallery, evaluated separately (cross-domain protocol). Works under DDP: the P x K sampler
splits identity batches across ranks, evaluation uses contiguous unpadded shards and the metric
puts samples back in index order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import pytorch_lightning as pl
from torch.utils.data import ConcatDataset, DataLoader

from src.data.datasets.base import ReIDRecord, ReIDSplits, build_dataset
from src.data.datasets.base import merge_train_sets
from src.data.image_dataset import ImageDataset
from src.data.samplers import InferenceSampler, RandomIdentitySampler
from src.data.transforms import build_transforms

log = logging.getLogger(__name__)


@dataclass
class TargetSet:
    """One evaluation set: records = query followed by gallery."""

    name: str
    splits: ReIDSplits

    @property
    def num_query(self) -> int:
        return len(self.splits.query)

    @property
    def records(self) -> List[ReIDRecord]:
        return list(self.splits.query) + list(self.splits.gallery)


def _spec(entry: Dict[str, Any]) -> Dict[str, Any]:
    entry = dict(entry)
    dataset = entry.pop("dataset")
    root = entry.pop("root")
    name = entry.pop("name", dataset)
    options = dict(entry.pop("options", None) or {})
    options.update(entry)
    return {"dataset": dataset, "root": str(root), "name": name, "options": options}


class ReIDDataModule(pl.LightningDataModule):
    """Train on ``sources`` (merged), evaluate on every entry of ``targets``.

    sources / targets: lists of ``{dataset: <parser name>, root: <folder>, name: <label>, options: {...}}``.
    prepare: optional callable run once (rank 0) before parsing, e.g. writing the embedded procedural data.
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[Dict[str, Any]],
        targets: Sequence[Dict[str, Any]],
        height: int = 256,
        width: int = 128,
        train_transforms: Optional[Dict[str, Any]] = None,
        test_transforms: Optional[Dict[str, Any]] = None,
        batch_size: int = 64,
        num_instances: int = 4,
        test_batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        sampler_seed: int = 0,
        prepare: Optional[Callable[[], Any]] = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.source_specs = [_spec(s) for s in sources]
        self.target_specs = [_spec(t) for t in targets]
        if not self.target_specs:
            from src.utils.errors import ConfigValueError
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
        self.prepare = prepare
        self.train_records: List[ReIDRecord] = []
        self.num_classes: int = 0
        self.num_cameras: int = 0
        self.targets: List[TargetSet] = []
        self._is_setup = False

    # ------------------------------------------------------------------ set-up
    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: Optional[str] = None) -> None:
        if self._is_setup:
            return
        source_splits = [build_dataset(s["dataset"], s["root"], **s["options"]) for s in self.source_specs]
        for splits in source_splits:
            log.info("source dataset:\n%s", splits.summary())
        if source_splits:
            self.train_records, self.num_classes, self.num_cameras = merge_train_sets(source_splits)
        self.targets = []
        for spec in self.target_specs:
            splits = build_dataset(spec["dataset"], spec["root"], **spec["options"])
            if not splits.query or not splits.gallery:
                from src.utils.errors import DatasetLayoutError
                raise DatasetLayoutError(
                    f"target '{spec['name']}' at {spec['root']} has no query or no gallery images; "
                    "a target needs query/ and bounding_box_test/ (or the dataset's own test lists).")
            log.info("target dataset '%s':\n%s", spec["name"], splits.summary())
            self.targets.append(TargetSet(spec["name"], splits))
        self._is_setup = True

    # ------------------------------------------------------------------ info
    @property
    def target_names(self) -> List[str]:
        return [t.name for t in self.targets]

    @property
    def target_num_query(self) -> List[int]:
        return [t.num_query for t in self.targets]

    @property
    def target_num_gallery(self) -> List[int]:
        return [len(t.splits.gallery) for t in self.targets]

    def _dist(self):
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    # ------------------------------------------------------------------ loaders
    def train_dataset(self) -> ImageDataset:
        tf = build_transforms(self.height, self.width, is_train=True, **self.train_transform_cfg)
        return ImageDataset(self.train_records, tf)

    def train_dataloader(self) -> DataLoader:
        if not self.train_records:
            from src.utils.errors import ConfigValueError
            raise ConfigValueError("data.sources is empty: training needs at least one source dataset.")
        world, rank = self._dist()
        sampler = RandomIdentitySampler(
            [r.pid for r in self.train_records], self.batch_size, self.num_instances,
            seed=self.sampler_seed, num_replicas=world, rank=rank)
        return DataLoader(
            self.train_dataset(), batch_size=self.batch_size, sampler=sampler, drop_last=True,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0)

    def eval_dataloaders(self) -> List[DataLoader]:
        """One loader per target over [query..., gallery...]; each sample carries its index."""
        world, rank = self._dist()
        tf = build_transforms(self.height, self.width, is_train=False, **self.test_transform_cfg)
        loaders = []
        for target in self.targets:
            dataset = ImageDataset(target.records, tf)
            loaders.append(DataLoader(
                dataset, batch_size=self.test_batch_size,
                sampler=InferenceSampler(len(dataset), num_replicas=world, rank=rank),
                num_workers=self.num_workers, pin_memory=self.pin_memory))
        return loaders

    def val_dataloader(self) -> List[DataLoader]:
        return self.eval_dataloaders()

    def test_dataloader(self) -> List[DataLoader]:
        return self.eval_dataloaders()
