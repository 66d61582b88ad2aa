"""Writes a GenePerson set: resumable, atomic, sharded (docs/architecture.md, "GenePerson format"; its files:
:mod:`ppreid.synth.set_layout`; the merge of a finished set: :mod:`ppreid.synth.set_merge`).

Crash safety (``kill -9`` at any moment, then the same command again gives the same bytes):
an image is written to ``.<name>.tmp`` in its folder, fsynced and renamed; only then is its
manifest line appended (fsynced) to the shard's part. On restart, the shard drops its orphan temp
files and a torn last line, skips images that have both file and line, and regenerates the rest
(generation is deterministic, so a file without its line is rewritten byte for byte). The merge
orders lines by file, so the merged manifest does not depend on sharding, batching or crashes.
Every file but ``timing.json`` (its ``TIMING_KEYS``) is byte-identical between runs, killed ones included.

Person masks (``masks=True``, a generator with ``generate_with_info``: the procedural one): beside each
image ``X.jpg`` a PNG ``X.mask.png`` of the same size (255 = the person, 0 = the rest), written before
the image; the image's manifest line gets ``mask`` (its path relative to the set) and ``hidden`` (the
attribute keys the image does not show, e.g. ``["glasses"]`` on a back view).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from ppreid.synth.generators.base import ImageGenerator, ImageRequest
from ppreid.synth.plan import SPLIT_DIRS, PlannedImage, SynthPlan
from ppreid.synth.set_layout import (
    CONFIG_FILE,
    FORMAT_VERSION,
    MANIFEST,
    PARTS,
    fingerprint,
    ordered_json,
    read_jsonl_lines,
)
from ppreid.synth.set_merge import SetMerge
from ppreid.utils.errors import ConfigValueError
from ppreid.utils.fileops import atomic_write_bytes, atomic_write_json, cut_torn_tail, file_lock

log = logging.getLogger(__name__)

RESEED_STRIDE = 1_000_003
MASK_SUFFIX = ".mask.png"


def mask_file(file: str) -> str:
    """The mask's path beside image ``file`` (``bounding_box_train/X.jpg`` -> ``bounding_box_train/X.mask.png``)."""
    stem, dot, _ = file.rpartition(".")
    return (stem if dot else file) + MASK_SUFFIX


KILL_ENV = "PPREID_SYNTH_KILL_AFTER"  # test hook: SIGKILL self after this many image renames


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


class GenePersonWriter(SetMerge):
    """Generates the images of one shard of ``plan`` into ``out_dir`` and merges a finished set.

    Args:
        out_dir: the set's folder (created).
        plan: what to make (identities, images, seeds, words, names).
        generator: anything with ``generate(list[ImageRequest]) -> list[PIL.Image]``.
        config: the generation-relevant configuration (JSON-able). Its fingerprint guards ``out_dir``
            against mixing sets; it is also stored in dataset.json.
        height / width: image size requested from the generator (and checked on its output).
        batch_size: requests per ``generate`` call.
        shard / num_shards: this process makes the identities of :meth:`SynthPlan.shard_pids`.
        quality_filter: optional object with ``accept(images, requests) -> list[bool]``; a rejected image
            is regenerated with seed ``seed + attempt * 1_000_003`` up to ``max_attempts`` generations
            in all (the last attempt is kept); the manifest records the seed used.
        jpeg_quality: quality of the saved JPEG files.
        fsync: fsync each image before its rename (durability against power loss, not only crashes).
        progress: show a tqdm bar with images/s.
        masks: also write each image's person mask beside it and ``mask`` / ``hidden`` in its manifest line
            (the generator must have ``generate_with_info``).
    """

    def __init__(
        self,
        out_dir: Path,
        plan: SynthPlan,
        generator: ImageGenerator,
        config: Mapping[str, Any],
        height: int,
        width: int,
        batch_size: int = 8,
        shard: int = 0,
        num_shards: int = 1,
        quality_filter: Any = None,
        max_attempts: int = 1,
        jpeg_quality: int = 95,
        fsync: bool = True,
        progress: bool = True,
        samples_grid: tuple[int, int] = (8, 4),
        masks: bool = False,
    ) -> None:
        check_shard_values(shard, num_shards, batch_size)
        if masks and not hasattr(generator, "generate_with_info"):
            raise ConfigValueError(
                f"person masks need a generator that knows the person's silhouette (generator=procedural); "
                f"{getattr(generator, 'name', type(generator).__name__)} has none."
            )
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigValueError(f"quality_filter.max_attempts={max_attempts!r} must be an integer >= 1.")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ConfigValueError(f"jpeg_quality={jpeg_quality} must be in 1..100.")
        self.out = Path(out_dir)
        self.plan, self.generator = plan, generator
        self.config = json.loads(ordered_json({**config, "masks": True} if masks else config))
        self.height, self.width = int(height), int(width)
        self.batch_size, self.shard, self.num_shards = batch_size, shard, num_shards
        self.quality_filter, self.max_attempts = quality_filter, max_attempts
        self.jpeg_quality, self.fsync, self.progress = int(jpeg_quality), fsync, progress
        self.samples_grid = samples_grid
        self.masks = bool(masks)
        self.parts = self.out / PARTS
        self.tag = f"shard-{shard}-of-{num_shards}"
        self.part = self.parts / f"manifest.{self.tag}.jsonl"
        self.timing = self.parts / f"timing.{self.tag}.jsonl"
        self.done_marker = self._done_marker(shard)
        self._renamed = 0
        self._kill_after = int(os.environ.get(KILL_ENV, "0") or 0)

    # ---- guards ---------------------------------------------------------------------------------
    def check_config(self, create: bool = True) -> None:
        """``out_dir`` must be empty, or hold a set of this exact configuration."""
        path = self.out / CONFIG_FILE
        fp = fingerprint(self.config)
        with file_lock(self.parts / "config.lock"):
            if path.is_file():
                stored = json.loads(path.read_text())
                if stored.get("fingerprint") != fp:
                    old, new = _flatten(stored.get("config", {})), _flatten(self.config)
                    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:5])
                    raise ConfigValueError(
                        f"out_dir={self.out} holds a GenePerson set of a different configuration ({shown}"
                        f"{' ...' if len(diff) > 5 else ''}). Use another out_dir, or delete {self.out} to "
                        "start over; to finish that set, run with its original arguments (stored in "
                        f"{path})."
                    )
                return
            foreign = [p for p in [MANIFEST, *SPLIT_DIRS.values()] if (self.out / p).exists()]
            if foreign:
                raise ConfigValueError(
                    f"out_dir={self.out} already holds {', '.join(foreign)} but no {CONFIG_FILE}: it was not "
                    "written by synth.py (or by an older version). Use an empty or new out_dir."
                )
            if create:
                atomic_write_json(path, {"fingerprint": fp, "config": self.config, "version": FORMAT_VERSION})

    def _done_marker(self, shard: int) -> Path:
        return self.parts / f"done.shard-{shard}-of-{self.num_shards}.json"

    # ---- generation -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any] | None:
        """Make this shard's missing images; merge if every shard is done.

        Returns dataset.json's content when the set is merged, None while other shards are pending."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.parts.mkdir(exist_ok=True)
        self.check_config()
        with file_lock(
            self.parts / f"{self.tag}.lock",
            blocking=False,
            what=f"shard {self.shard} of {self.num_shards} in {self.out}",
        ):
            self._generate_shard()
            atomic_write_json(self.done_marker, {"shard": self.shard, "num_shards": self.num_shards})
        done = all(self._done_marker(i).is_file() for i in range(self.num_shards))
        if not done:
            log.info(
                "shard %d of %d finished; the set is merged when all %d shards are done (or run merge_only=true)",
                self.shard,
                self.num_shards,
                self.num_shards,
            )
            return None
        return self.merge()

    def _remove_orphans(self, pids: set) -> None:
        for split_dir in set(SPLIT_DIRS.values()):
            folder = self.out / split_dir
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                name = p.name
                if name.startswith(".") and ".tmp" in name:
                    try:
                        pid = int(name[1:].split("_", 1)[0])
                    except ValueError:
                        continue
                    if pid in pids:
                        p.unlink(missing_ok=True)

    def _done_lines(self) -> dict[str, str]:
        lines: dict[str, str] = {}
        for part in sorted(self.parts.glob("manifest.shard-*.jsonl")):
            lines.update(read_jsonl_lines(part, repair=(part == self.part)))
        lines.update(read_jsonl_lines(self.out / MANIFEST))
        return lines

    def _generate_shard(self) -> None:
        pids = self.plan.shard_pids(self.shard, self.num_shards)
        self._remove_orphans(set(pids))
        done = self._done_lines()
        todo: list[tuple[PlannedImage, bool]] = []
        total = 0
        for ident in self.plan.identities(pids):
            for img in ident.images:
                total += 1
                has_line = img.file in done
                made = has_line and (self.out / img.file).is_file()
                if made and (not self.masks or (self.out / mask_file(img.file)).is_file()):
                    continue
                todo.append((img, has_line))
        for d in {SPLIT_DIRS[i.split] for i, _ in todo}:
            (self.out / d).mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.parts / "generator.json",
            {"name": self._generator_name(), "model_id": getattr(self.generator, "model_id", "")},
        )
        if not todo:
            return
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            initial=total - len(todo),
            unit="img",
            dynamic_ncols=True,
            desc=f"synth {self.out.name} [{self.shard + 1}/{self.num_shards}]",
            disable=not self.progress,
        )
        gen_seconds, gen_images = 0.0, 0
        cut_torn_tail(self.timing)  # a killed run's torn record would swallow the next one
        with open(self.part, "ab") as part, open(self.timing, "ab") as timing:
            for start in range(0, len(todo), self.batch_size):
                batch = todo[start : start + self.batch_size]
                images, seeds, seconds, count, infos = self._make_batch([img for img, _ in batch])
                for (img, _), im, info in zip(batch, images, infos):
                    if info is not None:
                        self._save_mask(img, info.mask)
                    self._save_image(img, im)
                lines = [
                    ordered_json(self._entry(img, seed, info)) + "\n"
                    for (img, has_line), seed, info in zip(batch, seeds, infos)
                    if not has_line
                ]
                if lines:
                    part.write("".join(lines).encode("utf-8"))
                    part.flush()
                    os.fsync(part.fileno())
                timing.write((ordered_json({"images": count, "seconds": round(seconds, 6)}) + "\n").encode())
                timing.flush()
                gen_seconds, gen_images = gen_seconds + seconds, gen_images + count
                bar.update(len(batch))
                bar.set_postfix_str(f"{gen_images / max(gen_seconds, 1e-9):.1f} gen img/s")
        bar.close()

    def _generator_name(self) -> str:
        return getattr(self.generator, "name", type(self.generator).__name__)

    def _entry(self, img: PlannedImage, seed: int, info: Any) -> dict[str, Any]:
        entry = img.manifest_entry(self._generator_name(), seed)
        if info is not None:
            entry.update(mask=mask_file(img.file), hidden=list(info.hidden))
        return entry

    def _generate(self, requests: list[ImageRequest]) -> tuple[list[Image.Image], float, list[Any]]:
        """(images, seconds, per image its ``Rendered`` info with masks on, else None)."""
        t0 = time.perf_counter()
        if self.masks:
            infos = list(self.generator.generate_with_info(requests))
            images = [r.image for r in infos]
        else:
            images = list(self.generator.generate(requests))
            infos = [None] * len(images)
        seconds = time.perf_counter() - t0
        if len(images) != len(requests):
            raise RuntimeError(
                f"generator {self._generator_name()} returned {len(images)} images for {len(requests)} requests"
            )
        return images, seconds, infos

    def _make_batch(self, planned: list[PlannedImage]) -> tuple[list[Image.Image], list[int], float, int, list[Any]]:
        requests = [p.request(self.height, self.width) for p in planned]
        images, seconds, infos = self._generate(requests)
        count = len(images)
        seeds = [p.seed for p in planned]
        if self.quality_filter is not None:
            for attempt in range(1, self.max_attempts):
                ok = list(self.quality_filter.accept(images, requests))
                bad = [i for i, good in enumerate(ok) if not good]
                if not bad:
                    break
                retry = [dataclasses.replace(requests[i], seed=planned[i].seed + attempt * RESEED_STRIDE) for i in bad]
                new, sec, new_infos = self._generate(retry)
                seconds, count = seconds + sec, count + len(new)
                for i, req, im, info in zip(bad, retry, new, new_infos):
                    images[i], requests[i], seeds[i], infos[i] = im, req, req.seed, info
        return images, seeds, seconds, count, infos

    def _save_mask(self, planned: PlannedImage, mask: Any) -> None:
        """The person mask (H, W) bool as a 1-channel PNG (255 = person) beside the image."""
        import numpy as np

        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.height, self.width):
            raise RuntimeError(
                f"generator {self._generator_name()} returned a {mask.shape} mask for a "
                f"{self.height}x{self.width} image ({planned.file})"
            )
        buf = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG")
        atomic_write_bytes(self.out / mask_file(planned.file), buf.getvalue(), fsync=self.fsync)

    def _save_image(self, planned: PlannedImage, image: Image.Image) -> None:
        if image.size != (self.width, self.height):
            raise RuntimeError(
                f"generator {self._generator_name()} returned a {image.size[0]}x{image.size[1]} "
                f"image for a {self.width}x{self.height} request ({planned.file})"
            )
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=self.jpeg_quality)
        atomic_write_bytes(self.out / planned.file, buf.getvalue(), fsync=self.fsync)
        self._renamed += 1
        if self._kill_after and self._renamed >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def check_shard_values(shard: Any, num_shards: Any, batch_size: Any = 1) -> None:
    """Bad sharding values -> ConfigValueError with the fix."""
    for name, v, lo in (("num_shards", num_shards, 1), ("batch_size", batch_size, 1), ("shard", shard, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ConfigValueError(f"{name}={v!r} must be an integer >= {lo}.")
    if shard >= num_shards:
        raise ConfigValueError(
            f"shard={shard} must be < num_shards={num_shards} (shards are numbered 0..{num_shards - 1})."
        )
