"""The files of a GenePerson set on disk (docs/architecture.md, "GenePerson format"): their names, the format
version, and the compact JSON lines of the manifest and the config fingerprint.

Layout under ``out_dir``::

    bounding_box_train/PPPPP_cC_SSSSSS.jpg   (or query/ + bounding_box_test/ for a held-out set)
    manifest.jsonl      one line per image, sorted by file
    identities.jsonl    one line per identity, sorted by pid
    dataset.json        the dataset card: counts, generator, config, seed, sha256 of manifest.jsonl
    timing.json         generation time and speed of the runs that made the set (kept out of the card)
    samples.jpg         contact sheet
    .synth_config.json  fingerprint of the generation-relevant config (another config -> error)
    .parts/             per-shard manifest parts, timing, done markers, locks
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ppreid.utils.errors import DatasetLayoutError
from ppreid.utils.fileops import cut_torn_tail

FORMAT_VERSION = 1
PARTS = ".parts"
CONFIG_FILE = ".synth_config.json"
MANIFEST = "manifest.jsonl"
IDENTITIES = "identities.jsonl"
DATASET = "dataset.json"
TIMING = "timing.json"
SAMPLES = "samples.jpg"
TIMING_KEYS = ("generation_seconds", "images_per_second", "images_generated")


def ordered_json(obj: Any) -> str:
    """Compact JSON in insertion order (a config's key order is its sampling order)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def fingerprint(config: Mapping[str, Any]) -> str:
    """sha256 of the config, order-sensitive (reordering a vocabulary changes the draws)."""
    return hashlib.sha256(ordered_json(config).encode("utf-8")).hexdigest()


def read_jsonl_lines(path: Path, repair: bool = False) -> dict[str, str]:
    """``{file: line}`` of a manifest (part); a torn last line (no newline) is ignored, or cut when ``repair``."""
    if not path.is_file():
        return {}
    if repair:
        cut_torn_tail(path)
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    out: dict[str, str] = {}
    for n, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out[json.loads(line)["file"]] = line
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DatasetLayoutError(
                f"{path} line {n} is not a manifest entry ({line[:80]!r}); delete that line "
                "(its image will be regenerated) and run again."
            ) from None
    return out
