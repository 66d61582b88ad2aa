"""Parsing a run's datasets: the *sources* (merged into one training set, with the held-out validation
identities) and the *targets* (query + gallery of each), each naming every missing folder in one error, and
the ways forward when a required target is missing. A mixin of :class:`ppreid.data.datamodule.ReIDDataModule`,
which holds the specs (``source_specs`` / ``target_specs``), ``val_identities`` / ``val_seed`` and ``root``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ppreid.data.datasets.base import ReIDRecord, ReIDSplits, build_dataset, merge_train_sets
from ppreid.data.val_split import hold_out_identities
from ppreid.utils.errors import ConfigValueError, DatasetLayoutError

log = logging.getLogger("ppreid.data.datamodule")


@dataclass
class TargetSet:
    """One evaluation set: records = query followed by gallery."""

    name: str
    splits: ReIDSplits

    @property
    def num_query(self) -> int:
        return len(self.splits.query)

    @property
    def records(self) -> list[ReIDRecord]:
        return list(self.splits.query) + list(self.splits.gallery)


def dataset_spec(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``data.sources`` / ``data.targets`` entry -> ``{dataset, root, name, options, optional}``."""
    entry = dict(entry)
    dataset = entry.pop("dataset")
    root = entry.pop("root")
    name = entry.pop("name", dataset)
    optional = bool(entry.pop("optional", False))
    options = dict(entry.pop("options", None) or {})
    options.update(entry)
    return {"dataset": dataset, "root": str(root), "name": name, "options": options, "optional": optional}


def one_layout_error(problems: list[str], what: str, ways_forward: str = "") -> DatasetLayoutError:
    """One error naming every problem (the message itself when there is one), then ``ways_forward`` (how to
    go on) on a line of its own; ``.problems`` lists the problems."""
    message = (
        problems[0] if len(problems) == 1 else f"{len(problems)} {what}:\n" + "\n".join(f"  - {p}" for p in problems)
    )
    err = DatasetLayoutError(f"{message}\n{ways_forward}" if ways_forward else message)
    err.problems = list(problems)
    return err


class DatasetParsing:
    """``setup_sources`` / ``setup_targets`` and the missing-target message; fills the datamodule's
    ``train_records``, ``val_set``, ``num_classes`` / ``num_cameras`` / ``num_domains`` and ``targets``."""

    def setup_sources(self) -> None:
        if self._sources_ready:
            return
        if not self.source_specs:
            raise ConfigValueError("data.sources is empty: training needs at least one source dataset.")
        source_splits, problems = [], []
        for spec in self.source_specs:
            try:
                source_splits.append(build_dataset(spec["dataset"], spec["root"], **spec["options"]))
            except DatasetLayoutError as err:
                problems.append(str(err))
                self._failed_roots.add(spec["root"])
        if problems:
            raise one_layout_error(problems, "source dataset problems")
        for splits in source_splits:
            log.info("source dataset:\n%s", splits.summary())
        records, _, self.num_cameras = merge_train_sets(source_splits)
        self.num_domains = len(source_splits)
        split = hold_out_identities(records, self.val_identities, self.val_seed)
        self.train_records = split.train
        self.num_classes = len({r.pid for r in split.train})
        if split.query:
            self.val_set = TargetSet("val", ReIDSplits("val", "source", query=split.query, gallery=split.gallery))
            log.info(
                "validation split: %d held-out source identities (%d query, %d gallery images); "
                "training on the other %d identities",
                split.num_val_identities,
                len(split.query),
                len(split.gallery),
                self.num_classes,
            )
        else:
            log.info(
                "no validation split (data.val_split.identities=0): training on all %d source identities "
                "(no val/ metrics, so no checkpoints/best.ckpt)",
                self.num_classes,
            )
        self._sources_ready = True

    def setup_targets(self, skip_roots: Sequence[str] = ()) -> None:
        """Parse each target's query and gallery (``eval_only``: a folder without a training split is fine).
        Raises one error naming every missing target, except those at ``skip_roots`` (already reported)."""
        if self._targets_ready:
            return
        targets, problems = [], []
        for spec in self.target_specs:
            try:
                splits = build_dataset(spec["dataset"], spec["root"], eval_only=True, **spec["options"])
            except DatasetLayoutError as err:
                if spec["optional"]:
                    log.warning("optional target '%s' left out: %s", spec["name"], err)
                elif spec["root"] in skip_roots:
                    problems.append("")
                else:
                    problems.append(str(err))
                continue
            if not splits.query or not splits.gallery:
                problems.append(
                    f"target '{spec['name']}' at {spec['root']} has no query or no gallery images; "
                    "a target needs query/ and bounding_box_test/ (or the dataset's own test lists)."
                )
                continue
            targets.append(TargetSet(spec["name"], splits))
        if problems:
            named = [p for p in problems if p]
            raise one_layout_error(named, "target dataset problems") if named else DatasetLayoutError("")
        if not targets:
            raise DatasetLayoutError(
                "none of the targets in data.targets is present: "
                + ", ".join(f"{s['name']} ({s['root']})" for s in self.target_specs)
            )
        for target in targets:
            log.info("target dataset '%s':\n%s", target.name, target.splits.summary())
        self.targets = targets
        self._targets_ready = True

    def missing_target_ways_forward(self, training: bool) -> str:
        """One line saying how to go on when required targets are missing: their root overrides
        (``data.targets.<i>.root``), the embedded GenePerson-mini targets for a GenePerson source, and
        ``test=false`` when training."""
        present = {t.name for t in self.targets}
        missing = [(i, s) for i, s in enumerate(self.target_specs) if not s["optional"] and s["name"] not in present]
        ways = []
        if missing:
            roots = " ".join(f"data.targets.{i}.root=<{s['name']} folder>" for i, s in missing)
            ways.append(f"{roots} (or paths.data_dir=<folder holding them>)")
        genepers_source = any(s["dataset"] == "genepers" for s in self.source_specs)
        if genepers_source and any(s["dataset"] != "genepers" for _, s in missing):
            root = f" data.root={self.root}" if self.root else ""
            ways.append(f"data=genepers_to_mini{root} (test on the embedded GenePerson-mini targets instead)")
        if training:
            ways.append("test=false (train only, test no target)")
        return "to go on: " + "; or ".join(ways) if ways else ""
