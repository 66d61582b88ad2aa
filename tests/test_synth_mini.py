"""GenePerson-mini: source + held-out target domains, idempotent, atomic and safe under concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppreid.data.datasets.base import build_dataset
from ppreid.synth.mini import DEFAULT_DOMAINS, ensure_genepers_mini
from ppreid.utils.errors import ConfigValueError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    num_identities=6,
    images_per_identity=3,
    target_identities=4,
    queries_per_identity=1,
    gallery_per_identity=3,
    seed=0,
    height=64,
    width=32,
)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return ensure_genepers_mini(tmp_path_factory.mktemp("m") / "GenePerson-mini", **TINY)


def test_source_and_two_held_out_targets_with_disjoint_identities(mini):
    targets = [d for d in DEFAULT_DOMAINS if d != "source"]
    assert len(targets) >= 2
    src = build_dataset("genepers", mini / "source")
    assert len(src.train) == 18 and not src.query and not src.gallery
    src_pids = {json.loads(line)["pid"] for line in (mini / "source" / "manifest.jsonl").read_text().splitlines()}
    seen = set(src_pids)
    for name in targets:
        ds = build_dataset("genepers", mini / name)
        assert not ds.train and len(ds.query) == 4 and len(ds.gallery) == 12
        pids = {r.pid for r in ds.query}
        assert pids == {r.pid for r in ds.gallery} and not pids & seen
        seen |= pids
        for q in ds.query:  # every match of a query is in another camera
            assert all(g.camid != q.camid for g in ds.gallery if g.pid == q.pid)
        splits = {json.loads(line)["split"] for line in (mini / name / "manifest.jsonl").read_text().splitlines()}
        assert splits == {"query", "gallery"}


def test_target_styles_differ_from_the_source(mini):
    def words(domain, key):
        lines = (mini / domain / "manifest.jsonl").read_text().splitlines()
        return {json.loads(line)["attributes"][key] for line in lines}

    for name in (d for d in DEFAULT_DOMAINS if d != "source"):
        assert not words(name, "background") & words("source", "background")
        assert not words(name, "camera") & set(DEFAULT_DOMAINS["source"]["style"]["camera"])
        assert words(name, "background") <= set(DEFAULT_DOMAINS[name]["style"]["background"])


def test_idempotent_and_rewritten_when_parameters_change(mini, tmp_path):
    marker = mini / ".complete.json"
    stamp = marker.stat().st_mtime_ns
    assert ensure_genepers_mini(mini, **TINY) == mini
    assert marker.stat().st_mtime_ns == stamp
    root = tmp_path / "m2"
    ensure_genepers_mini(root, **TINY)
    ensure_genepers_mini(root, **{**TINY, "target_identities": 5})
    assert len(build_dataset("genepers", root / "night_cctv").query) == 5
    assert not list(tmp_path.glob("m2.tmp-*")) and not list(tmp_path.glob("m2.old-*"))


@pytest.mark.slow
def test_two_processes_at_once_write_it_once(tmp_path):
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from ppreid.synth.mini import ensure_genepers_mini\n"
        f"ensure_genepers_mini({str(tmp_path / 'shared')!r}, **{TINY!r})\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=300)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert sum("writing GenePerson-mini" in log for log in logs) == 1
    assert len(build_dataset("genepers", tmp_path / "shared" / "source").train) == 18


def test_bad_domains_and_foreign_root_are_clear_errors(tmp_path):
    with pytest.raises(ConfigValueError, match="'source' entry and at least one target"):
        ensure_genepers_mini(tmp_path / "x", domains={"source": DEFAULT_DOMAINS["source"]}, **TINY)
    with pytest.raises(ConfigValueError, match="not in its vocabulary"):
        ensure_genepers_mini(
            tmp_path / "x", domains={**DEFAULT_DOMAINS, "moon": {"style": {"background": ["moon"]}}}, **TINY
        )
    (tmp_path / "mine" / "stuff").mkdir(parents=True)
    with pytest.raises(ConfigValueError, match="not a GenePerson-mini folder"):
        ensure_genepers_mini(tmp_path / "mine", **TINY)


def test_default_sizes_and_targets_are_the_data_configs(tmp_path):
    import inspect

    from conftest import compose_train

    prep = compose_train([], tmp_path / "a").data.prepare
    assert (prep.target_identities, prep.queries_per_identity, prep.gallery_per_identity) == (300, 2, 4)
    defaults = inspect.signature(ensure_genepers_mini).parameters
    for key in ("num_identities", "images_per_identity", "target_identities", "queries_per_identity"):
        assert defaults[key].default == prep[key], key
    corpus = compose_train(["data=sandbox_corpus"], tmp_path / "b").data
    shared = {k: v for k, v in prep.items() if k not in ("_target_", "_partial_", "progress")}
    assert {k: corpus.prepare.mini[k] for k in shared} == shared  # one GenePerson-mini folder for both
    default_targets = [t.name for t in compose_train([], tmp_path / "c").data.targets]
    assert (
        default_targets == [d for d in DEFAULT_DOMAINS if d != "source"] == ["night_cctv", "station_indoor", "far_high"]
    )
    assert [t.name for t in corpus.targets][1:] == default_targets


def test_camera_view_hand_worked_geometry_and_resolution():
    from PIL import Image

    from ppreid.synth.camera_view import CameraView

    W, H = 64, 128
    ramp = np.tile(np.arange(W, dtype=np.uint8)[None, :, None] * 4, (H, 1, 3))  # value = 4 x column
    img = Image.fromarray(ramp)
    # tilt k = 0.125: the top row samples the source between x = kW = 8 and (1 - k) W = 56 (magnified 1 / (1 - 2k)
    # = 4/3); the bottom row is the source's
    tilted = np.asarray(CameraView.apply(img, {"tilt": 0.125})).astype(float)[..., 0]
    assert abs(tilted[0, 0] - 4 * 8) <= 4 and abs(tilted[0, -1] - 4 * 56) <= 4
    assert np.abs(np.diff(tilted[0])).mean() == pytest.approx(4 * 0.75, abs=0.2)  # 3/4 of a column per column
    assert np.abs(tilted[-1] - ramp[-1, :, 0]).max() <= 4
    # squash s = 0.8: stretched to 80 columns, the centre 64 kept -> column x reads source (x + 8) * 0.8
    squashed = np.asarray(CameraView.apply(img, {"squash": 0.8})).astype(float)[..., 0]
    assert abs(squashed[5, 0] - 4 * 6.4) <= 4 and abs(squashed[5, 32] - 4 * 32) <= 4
    # downscale 2: a one-pixel checkerboard averages to flat grey
    checker = ((np.indices((H, W)).sum(0) % 2) * 255).astype(np.uint8)
    flat = np.asarray(CameraView.apply(Image.fromarray(checker).convert("RGB"), {"downscale": 2.0})).astype(float)
    assert np.abs(flat[2:-2, 2:-2] - 127.5).max() < 20
    assert CameraView.apply(img, {}).tobytes() == img.tobytes()


def test_far_high_is_a_far_high_camera(mini):
    from PIL import Image

    from ppreid.synth.camera_view import CameraView

    view = DEFAULT_DOMAINS["far_high"]["view"]
    cv = CameraView(None, **view)
    for seed in (1, 2, 3):
        p = cv.params(seed)
        assert p == cv.params(seed)  # fixed per camera
        assert all(view[k][0] <= v <= view[k][1] for k, v in p.items())

    def sharpness(domain):  # mean absolute horizontal difference of the gallery images
        paths = sorted((mini / domain / "bounding_box_test").glob("*.jpg"))
        return np.mean([np.abs(np.diff(np.asarray(Image.open(p), float), axis=1)).mean() for p in paths])

    assert sharpness("far_high") < 0.7 * min(sharpness("night_cctv"), sharpness("station_indoor"))
    cfg = json.loads((mini / "far_high" / "dataset.json").read_text())["config"]
    assert cfg["view"] == view and cfg["generator"]["person_height"] == [0.6, 0.75]


def test_version_bump_rewrites_an_older_set(mini, tmp_path):
    from ppreid.synth.mini import COMPLETE, MINI_VERSION

    root = tmp_path / "old"
    ensure_genepers_mini(root, **TINY)
    marker = json.loads((root / COMPLETE).read_text())
    assert marker["params"]["version"] == MINI_VERSION >= 2
    marker["params"]["version"] = 1
    (root / COMPLETE).write_text(json.dumps(marker))
    stamp = (root / COMPLETE).stat().st_mtime_ns
    ensure_genepers_mini(root, **TINY)
    assert (root / COMPLETE).stat().st_mtime_ns != stamp
    assert json.loads((root / COMPLETE).read_text())["params"]["version"] == MINI_VERSION


def test_bad_view_is_a_clear_error(tmp_path):
    bad = {**DEFAULT_DOMAINS, "far_high": {**DEFAULT_DOMAINS["far_high"], "view": {"tilt": [0.2, 0.5]}}}
    with pytest.raises(ConfigValueError, match=r"view.tilt = \[0.2, 0.5\]: \[lo, hi\] with 0.0 <= lo <= hi <= 0.3"):
        ensure_genepers_mini(tmp_path / "x", domains=bad, **TINY)
    bad["far_high"]["view"] = {"zoom": [1, 2]}
    with pytest.raises(ConfigValueError, match="keys among"):
        ensure_genepers_mini(tmp_path / "x", domains=bad, **TINY)
