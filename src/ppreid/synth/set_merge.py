"""Merging a finished GenePerson set: the shards' manifest parts into manifest.jsonl (ordered by file, so it
does not depend on sharding, batching or crashes), identities.jsonl, the dataset card dataset.json,
timing.json and the samples.jpg contact sheet. A mixin of :class:`ppreid.synth.writer.GenePersonWriter`,
which holds ``out`` / ``parts``, ``plan``, ``config``, the image size, ``num_shards`` and ``samples_grid``."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any

from ppreid.synth.grid import contact_sheet, identity_caption, sample_columns
from ppreid.synth.set_layout import (
    CONFIG_FILE,
    DATASET,
    FORMAT_VERSION,
    IDENTITIES,
    MANIFEST,
    SAMPLES,
    TIMING,
    ordered_json,
    read_jsonl_lines,
)
from ppreid.utils.errors import ConfigValueError, DatasetLayoutError
from ppreid.utils.fileops import atomic_write_bytes, atomic_write_json, atomic_write_text, file_lock

log = logging.getLogger("ppreid.synth.writer")


class SetMerge:
    """``merge``; uses the writer's ``check_config`` and ``_done_marker``."""

    def merge(self) -> dict[str, Any]:
        """Write manifest.jsonl, identities.jsonl, dataset.json, timing.json and samples.jpg of a finished set;
        returns the card with the timing keys added.

        Raises ConfigValueError naming what is missing (and which shards lack a done marker) otherwise.
        """
        if not (self.out / CONFIG_FILE).is_file():
            raise ConfigValueError(f"nothing to merge in out_dir={self.out}: no {CONFIG_FILE} (run synth.py first).")
        self.check_config(create=False)
        with file_lock(self.parts / "merge.lock"):
            lines: dict[str, str] = {}
            sources = sorted(self.parts.glob("manifest.shard-*.jsonl")) + [self.out / MANIFEST]
            for src in sources:
                for file, line in read_jsonl_lines(src).items():
                    if file in lines and json.loads(lines[file]) != json.loads(line):
                        raise DatasetLayoutError(
                            f"{file} has two different manifest lines in {self.out} (a generator that is not "
                            "deterministic?); delete the image and its lines, then run again."
                        )
                    lines[file] = line
            identities, files, columns, captions = [], [], [], []
            missing: list[str] = []
            splits: dict[str, int] = {}
            per_camera = [0] * self.plan.num_cameras
            for ident in self.plan.identities():
                identities.append(ordered_json(ident.identity_entry()))
                columns.append([self.out / i.file for i in ident.images])
                captions.append(identity_caption(ident.identity_entry()))
                for img in ident.images:
                    files.append(img.file)
                    splits[img.split] = splits.get(img.split, 0) + 1
                    per_camera[img.camid] += 1
                    if img.file not in lines or not (self.out / img.file).is_file():
                        missing.append(img.file)
            if missing:
                pending = [i for i in range(self.num_shards) if not self._done_marker(i).is_file()]
                raise ConfigValueError(
                    f"the set in {self.out} is not finished: {len(missing)} of {len(files)} images are missing "
                    f"(e.g. {missing[0]}). Shards without a done marker (of num_shards={self.num_shards}): "
                    f"{pending or 'none'}. Run the missing shards with the same arguments, then merge."
                )
            manifest = "".join(lines[f].rstrip("\n") + "\n" for f in sorted(files)).encode("utf-8")
            atomic_write_bytes(self.out / MANIFEST, manifest)
            atomic_write_text(self.out / IDENTITIES, "".join(i + "\n" for i in identities))
            n_ids, n_imgs = self.samples_grid
            buf = io.BytesIO()
            contact_sheet(sample_columns(columns, n_ids, n_imgs), captions=captions[:n_ids]).save(
                buf, format="JPEG", quality=90
            )
            atomic_write_bytes(self.out / SAMPLES, buf.getvalue())
            seconds, generated = 0.0, 0
            for t in sorted(self.parts.glob("timing.shard-*.jsonl")):
                for line in t.read_text().splitlines():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn last line of a killed run
                    seconds += float(rec["seconds"])
                    generated += int(rec["images"])
            gen_file = self.parts / "generator.json"
            gen = json.loads(gen_file.read_text()) if gen_file.is_file() else {"name": "", "model_id": ""}
            info = {
                "format": "GenePerson",
                "version": FORMAT_VERSION,
                "num_identities": len(identities),
                "num_images": len(files),
                "num_cameras": self.plan.num_cameras,
                "splits": dict(sorted(splits.items())),
                "images_per_camera": per_camera,
                "height": self.height,
                "width": self.width,
                "seed": self.plan.seed,
                "generator": gen,
                "camera_profiles": self.plan.camera_profiles,
                "config": self.config,
                "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            }
            timing = {
                "generation_seconds": round(seconds, 3),
                "images_generated": generated,
                "images_per_second": round(generated / seconds, 3) if seconds > 0 else None,
            }
            atomic_write_json(self.out / DATASET, info)
            atomic_write_json(self.out / TIMING, timing)
            for part in self.parts.glob("manifest.shard-*.jsonl"):
                part.unlink()
        log.info("merged %d images of %d identities into %s", len(files), len(identities), self.out)
        return {**info, **timing}
