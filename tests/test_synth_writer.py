"""synth.py end to end: GenePerson layout, determinism, crash-resume, shards, merge, bad values."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import run_synth as synth

from ppreid.synth.set_layout import TIMING_KEYS
from ppreid.synth.writer import KILL_ENV

NAME = re.compile(r"^(\d{5})_c(\d+)_(\d{6})\.jpg$")
SMALL = ["num_identities=6", "images_per_identity=3", "height=64", "width=32", "progress=false"]


def files_of(out: Path) -> dict:
    """Every visible file of a set -> its bytes' md5 (all but timing.json, which holds only TIMING_KEYS)."""
    result = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_dir() or any(part.startswith(".") for part in Path(rel).parts):
            continue
        if rel == "timing.json":
            assert sorted(json.loads(p.read_text())) == sorted(TIMING_KEYS)
            continue
        result[rel] = hashlib.md5(p.read_bytes()).hexdigest()
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One clean run of the small set (module-wide, several tests compare against it)."""
    tmp = tmp_path_factory.mktemp("ref")
    out = tmp / "ref"
    synth(tmp, out, *SMALL, "seed=3")
    return out


@pytest.mark.slow
def test_layout_manifest_identities_dataset_json_and_samples(reference):
    out = reference
    names = sorted(p.name for p in (out / "bounding_box_train").iterdir())
    assert len(names) == 18 and all(NAME.match(n) for n in names)
    pids = sorted({int(NAME.match(n).group(1)) for n in names})
    assert pids == [1, 2, 3, 4, 5, 6]
    lines = (out / "manifest.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["file"] for e in entries] == sorted(f"bounding_box_train/{n}" for n in names)
    for e in entries:
        m = NAME.match(Path(e["file"]).name)
        assert int(m.group(1)) == e["pid"] and int(m.group(2)) == e["camid"] + 1
        assert {"seed", "attributes", "prompt", "negative_prompt", "generator"} <= set(e)
        assert e["generator"] == "procedural" and e["attributes"]["viewpoint"] in ("front", "back", "left", "right")
    idents = [json.loads(line) for line in (out / "identities.jsonl").read_text().splitlines()]
    assert [i["pid"] for i in idents] == pids and all("upper_colour" in i["attributes"] for i in idents)
    for e in entries:  # identity attributes are fixed per identity
        ident = idents[e["pid"] - 1]["attributes"]
        assert {k: e["attributes"][k] for k in ident} == ident
    info = json.loads((out / "dataset.json").read_text())
    assert info["num_images"] == 18 and info["num_identities"] == 6 and info["seed"] == 3
    assert sum(info["images_per_camera"]) == 18 and info["generator"]["name"] == "procedural"
    assert info["manifest_sha256"] == hashlib.sha256((out / "manifest.jsonl").read_bytes()).hexdigest()
    assert not set(TIMING_KEYS) & set(info)  # the card holds no timing: resumed runs write the same bytes
    timing = json.loads((out / "timing.json").read_text())
    assert timing["generation_seconds"] > 0 and timing["images_per_second"] > 0
    assert info["config"]["plan"]["num_identities"] == 6 and info["height"] == 64
    from PIL import Image

    with Image.open(out / "samples.jpg") as im:
        assert im.size[0] > 6 * 32 and im.size[1] > 3 * 64
    from ppreid.data.datasets.base import build_dataset

    ds = build_dataset("genepers", out)
    assert len(ds.train) == 18 and ds.num_train_pids == 6 and ds.train[0].attributes


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_images(tmp_path, reference):
    same = tmp_path / "same"
    synth(tmp_path, same, *SMALL, "seed=3", "batch_size=5")
    assert files_of(same) == files_of(reference)
    other = tmp_path / "other"
    synth(tmp_path, other, *SMALL, "seed=4")
    a, b = files_of(reference), files_of(other)
    common = [f for f in a if f in b and f.endswith(".jpg") and f != "samples.jpg"]
    assert a["manifest.jsonl"] != b["manifest.jsonl"]
    assert all(a[f] != b[f] for f in common)


@pytest.mark.slow
def test_sigkill_midway_then_rerun_is_byte_identical(tmp_path, reference):
    out = tmp_path / "killed"
    proc = synth(tmp_path, out, *SMALL, "seed=3", "batch_size=4", env={KILL_ENV: "7"}, check=False)
    assert proc.returncode == -9
    assert len(list((out / "bounding_box_train").glob("*.jpg"))) == 7
    assert not (out / "manifest.jsonl").exists()
    proc = synth(tmp_path, out, *SMALL, "seed=3", "batch_size=4", env={KILL_ENV: "5"}, check=False)
    assert proc.returncode == -9
    synth(tmp_path, out, *SMALL, "seed=3")
    assert files_of(out) == files_of(reference)
    assert not [p for p in (out / "bounding_box_train").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_resume_repairs_temps_torn_lines_and_missing_images(tmp_path, reference):
    out = tmp_path / "torn"
    synth(tmp_path, out, *SMALL, "seed=3", "num_shards=2", "shard=0")
    train = out / "bounding_box_train"
    part = out / ".parts" / "manifest.shard-0-of-2.jsonl"
    lines = part.read_text().splitlines(keepends=True)
    victim = json.loads(lines[-1])["file"]
    part.write_text("".join(lines[:-1]) + lines[-1][:25])  # torn last line, image present
    (out / victim).write_bytes(b"\xff\xd8 half")  # ... and the image half-written
    first = sorted(train.glob("*.jpg"))[0]
    first.unlink()  # a listed image deleted
    (train / f".{first.name}.tmp").write_bytes(b"junk")  # an orphan temp
    timing = out / ".parts" / "timing.shard-0-of-2.jsonl"
    records = timing.read_text().splitlines(keepends=True)
    timing.write_text("".join(records[:-1]) + records[-1][:10])  # a torn timing record
    synth(tmp_path, out, *SMALL, "seed=3", "num_shards=2", "shard=0")
    synth(tmp_path, out, *SMALL, "seed=3", "num_shards=2", "shard=1")
    assert files_of(out) == files_of(reference)
    assert not [p for p in train.iterdir() if p.name.startswith(".")]
    # the rerun's timing starts on a fresh line: every record parses, none was swallowed
    resumed = [json.loads(line) for line in timing.read_text().splitlines()]
    assert len(resumed) == len(records) and all(r["images"] > 0 for r in resumed)


@pytest.mark.slow
def test_multirun_shards_merge_to_the_single_run(tmp_path, reference):
    out = tmp_path / "sharded"
    synth(tmp_path, out, "-m", "shard=0,1", "num_shards=2", *SMALL, "seed=3")
    assert files_of(out) == files_of(reference)


@pytest.mark.slow
def test_explicit_merge_and_incomplete_merge_message(tmp_path, reference):
    out = tmp_path / "partial"
    synth(tmp_path, out, *SMALL, "seed=3", "num_shards=2", "shard=0")
    assert not (out / "manifest.jsonl").exists()
    proc = synth(tmp_path, out, *SMALL, "seed=3", "num_shards=2", "shard=1", env={KILL_ENV: "9"}, check=False)
    assert proc.returncode == -9 and len(list((out / "bounding_box_train").glob("*.jpg"))) == 18
    proc = synth(tmp_path, out, "merge_only=true", "num_shards=2", check=False)
    assert (
        proc.returncode == 1 and "not finished" in proc.stderr and "done marker (of num_shards=2): [1]" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
    synth(tmp_path, out, *SMALL, "seed=3", "num_shards=2", "shard=1")
    assert files_of(out) == files_of(reference)
    (out / "dataset.json").unlink()
    (out / "samples.jpg").unlink()
    synth(tmp_path, out, "merge_only=true")  # the stored config is used; no other argument needed
    assert files_of(out) == files_of(reference)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["num_shards=0"], "num_shards=0 must be an integer >= 1"),
        (["shard=2", "num_shards=2"], "shard=2 must be < num_shards=2"),
        (["num_identities=0"], "num_identities=0 must be an integer >= 1"),
        (["images_per_identity=[5,3]"], "images_per_identity=[5, 3]"),
        (["batch_size=0"], "batch_size=0 must be an integer >= 1"),
    ],
)
def test_bad_values_exit_1_with_one_clear_message(tmp_path, args, message):
    proc = synth(tmp_path, tmp_path / "bad", *SMALL, *args, check=False)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad" / "bounding_box_train").exists()


@pytest.mark.slow
def test_out_dir_of_another_configuration_is_refused(tmp_path, reference):
    proc = synth(tmp_path, reference, *SMALL, "seed=5", check=False)
    assert proc.returncode == 1 and "different configuration" in proc.stderr and "plan.seed: 3 -> 5" in proc.stderr
    foreign = tmp_path / "foreign"
    (foreign / "bounding_box_train").mkdir(parents=True)
    proc = synth(tmp_path, foreign, *SMALL, check=False)
    assert proc.returncode == 1 and "not written by synth.py" in proc.stderr


class _RejectFirst:
    """Quality filter stand-in: rejects every image made with its planned seed (attempt 0)."""

    def __init__(self, planned):
        self.planned = planned

    def accept(self, images, requests):
        return [r.seed not in self.planned for r in requests]


def test_quality_filter_regenerates_rejected_images_with_the_documented_seed(tmp_path):
    from ppreid.synth.attributes import AttributeSchema
    from ppreid.synth.generators.procedural import ProceduralGenerator
    from ppreid.synth.plan import SynthPlan
    from ppreid.synth.prompts import PromptBuilder
    from ppreid.synth.writer import GenePersonWriter

    plan = SynthPlan(AttributeSchema.from_config(), PromptBuilder.from_config(), 2, 2, 1, (2, 2))
    planned = {i.seed for ident in plan.identities() for i in ident.images}
    writer = GenePersonWriter(
        tmp_path / "qf",
        plan,
        ProceduralGenerator(),
        {"t": 1},
        64,
        32,
        progress=False,
        quality_filter=_RejectFirst(planned),
        max_attempts=3,
    )
    assert writer.run()
    entries = [json.loads(line) for line in (tmp_path / "qf" / "manifest.jsonl").read_text().splitlines()]
    by_file = {i.file: i.seed for ident in plan.identities() for i in ident.images}
    assert [e["seed"] for e in entries] == [by_file[e["file"]] + 1_000_003 for e in entries]
    info = json.loads((tmp_path / "qf" / "dataset.json").read_text())
    timing = json.loads((tmp_path / "qf" / "timing.json").read_text())
    assert timing["images_generated"] == 8 and info["num_images"] == 4


def test_masks_are_written_beside_the_images_and_listed_in_the_manifest(tmp_path):
    """masks=True: each image X.jpg gets X.mask.png (same size, 255 = person) that covers the figure, and
    its manifest line gets ``mask`` and ``hidden``; a resumed run with masks rewrites a lost mask; a
    generator that knows no silhouette is refused; without masks nothing changes."""
    import numpy as np
    from PIL import Image

    from ppreid.synth.attributes import AttributeSchema
    from ppreid.synth.generators.procedural import ProceduralGenerator
    from ppreid.synth.plan import SynthPlan
    from ppreid.synth.prompts import PromptBuilder
    from ppreid.synth.writer import GenePersonWriter
    from ppreid.utils.errors import ConfigValueError

    plan = SynthPlan(AttributeSchema.from_config(), PromptBuilder.from_config(), 3, 2, 5, (4, 4))

    def write(out, masks, generator=None):
        return GenePersonWriter(
            out, plan, generator or ProceduralGenerator(), {"t": 1}, 128, 64, progress=False, masks=masks
        ).run()

    assert write(tmp_path / "m", True)
    entries = [json.loads(line) for line in (tmp_path / "m" / "manifest.jsonl").read_text().splitlines()]
    assert len(entries) == 12
    for e in entries:
        assert e["mask"] == e["file"][: -len(".jpg")] + ".mask.png"
        mask = np.asarray(Image.open(tmp_path / "m" / e["mask"]))
        image = Image.open(tmp_path / "m" / e["file"])
        assert mask.shape == (image.height, image.width) and set(np.unique(mask)) <= {0, 255}
        rows = np.nonzero(mask.any(1))[0]
        assert rows.max() - rows.min() > 0.7 * 128 and 0.05 < (mask > 0).mean() < 0.5  # one upright figure
        assert ("glasses" in e["hidden"]) == (e["attributes"]["viewpoint"] == "back")
        assert set(e["hidden"]) <= {"glasses", "shoes"}
    lost = tmp_path / "m" / entries[0]["mask"]
    before = lost.read_bytes()
    lost.unlink()
    write(tmp_path / "m", True)
    assert lost.read_bytes() == before
    assert write(tmp_path / "plain", False)
    plain = [json.loads(line) for line in (tmp_path / "plain" / "manifest.jsonl").read_text().splitlines()]
    assert all("mask" not in e and "hidden" not in e for e in plain)
    assert not list((tmp_path / "plain").rglob("*.mask.png"))

    class NoSilhouette:
        name = "stub"

        def generate(self, requests):
            return []

    with pytest.raises(ConfigValueError, match="person masks need a generator"):
        write(tmp_path / "stub", True, NoSilhouette())
