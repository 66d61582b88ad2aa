"""synth.py for a person: --help shows its own keys first, samples.jpg captions say what the record says,
dataset.json is a card without timings (timing.json holds them)."""

from __future__ import annotations

import json

from conftest import run_script


def test_help_shows_the_main_keys_before_the_vocabularies():
    proc = run_script("synth.py", "--help", env={"OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    lines = lines[lines.index("== Config ==") :]
    first = {line.split(":")[0]: i for i, line in reversed(list(enumerate(lines))) if line and not line[0].isspace()}
    for key in ("out_dir", "num_identities", "images_per_identity", "num_cameras", "seed", "shard", "num_shards"):
        assert first[key] < 30, (key, first[key])
    assert first["num_identities"] < first["generator"] < first["attributes"]


def test_sample_captions_say_the_records_garment_with_its_pattern():
    """A grey checked tank top was captioned "grey tank top": the caption dropped the pattern word, and the
    renderer draws checks in a second colour of its own (from the identity seed; yellow for some grey
    identities), so the picture read "yellow-checked". The caption now carries the record's words."""
    from ppreid.synth.grid import identity_caption
    from ppreid.synth.plan import SynthPlan

    plan = SynthPlan.from_config(
        {"num_identities": 200, "num_cameras": 4, "seed": 0, "images_per_identity": 2, "split": "train"}
    )
    seen = set()
    for ident in plan.identities():
        entry = ident.identity_entry()
        attrs = entry["attributes"]
        caption = identity_caption(entry).split("\n")
        pattern = "" if attrs["upper_pattern"] == "plain" else f" {attrs['upper_pattern']}"
        colour_line = attrs["upper_colour"] + pattern
        assert caption == [f"id {entry['pid']}", colour_line.replace("_", " "), attrs["upper_type"].replace("_", " ")]
        prompt = ident.images[0].prompt
        assert f"{attrs['upper_colour']} {attrs['upper_pattern']} {attrs['upper_type']}".replace("_", " ") in prompt
        seen.add(attrs["upper_pattern"])
    assert {"plain", "checked", "striped", "dotted", "logo"} <= seen
    grey_checked = {
        "pid": 107,
        "attributes": {"upper_colour": "grey", "upper_pattern": "checked", "upper_type": "tank_top"},
    }
    assert identity_caption(grey_checked) == "id 107\ngrey checked\ntank top"


def test_dataset_card_holds_no_timing(tmp_path):
    from ppreid.synth.generators.procedural import ProceduralGenerator
    from ppreid.synth.plan import SynthPlan
    from ppreid.synth.set_layout import TIMING_KEYS
    from ppreid.synth.writer import GenePersonWriter

    plan = SynthPlan.from_config(
        {"num_identities": 2, "num_cameras": 2, "seed": 1, "images_per_identity": 2, "split": "train"}
    )
    info = GenePersonWriter(tmp_path / "gp", plan, ProceduralGenerator(), {"t": 1}, 64, 32, progress=False).run()
    card = json.loads((tmp_path / "gp" / "dataset.json").read_text())
    timing = json.loads((tmp_path / "gp" / "timing.json").read_text())
    assert not set(TIMING_KEYS) & set(card) and sorted(timing) == sorted(TIMING_KEYS)
    assert timing["images_generated"] == 4 and timing["generation_seconds"] > 0
    assert info == {**card, **timing}  # what synth.py reports
