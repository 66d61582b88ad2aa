"""``features_<target>.npz``: a target's query and gallery features, for re-use outside this repository.

Arrays: ``query_features`` (Q, D) float32, ``gallery_features`` (G, D), ``query_pids`` / ``gallery_pids``,
``query_camids`` / ``gallery_camids`` (int64, camids 0-based) and ``query_paths`` / ``gallery_paths``
(str), in the dataset's order (query and gallery as the parser lists them). Load with ``np.load(path)``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppreid.utils.fileops import atomic_write_bytes


def write_feature_export(
    path: Path, features: Mapping[str, Any], query_paths: Sequence[str], gallery_paths: Sequence[str]
) -> Path:
    """Write the evaluator's ordered ``features`` (qf, gf, q_pids, ...) and the image paths, atomically."""
    arrays = {
        "query_features": np.asarray(features["qf"], dtype=np.float32),
        "gallery_features": np.asarray(features["gf"], dtype=np.float32),
        "query_pids": np.asarray(features["q_pids"], dtype=np.int64),
        "gallery_pids": np.asarray(features["g_pids"], dtype=np.int64),
        "query_camids": np.asarray(features["q_camids"], dtype=np.int64),
        "gallery_camids": np.asarray(features["g_camids"], dtype=np.int64),
        "query_paths": np.asarray([str(p) for p in query_paths]),
        "gallery_paths": np.asarray([str(p) for p in gallery_paths]),
    }
    if len(arrays["query_paths"]) != len(arrays["query_features"]) or len(arrays["gallery_paths"]) != len(
        arrays["gallery_features"]
    ):
        raise ValueError("feature export: the number of paths and of features differ")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
