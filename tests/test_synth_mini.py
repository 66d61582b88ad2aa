"""GenePerson-mini: source + held-out target domains, idempotent, atomic and safe under concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
