"""Attribute schema, seeds, prompt builder and plan of stage 1 (src/ppreid/synth)."""

from __future__ import annotations

import numpy as np
import pytest

from ppreid.synth.attributes import (
    AttributeSchema,
    Vocabulary,
    camera_seed,
    derive_seed,
    hidden_attributes,
    identity_seed,
    image_seed,
    load_conf_yaml,
)
from ppreid.synth.plan import SynthPlan, image_name, parse_count_range
from ppreid.synth.prompts import PromptBuilder, words
from ppreid.utils.errors import ConfigValueError

IDENTITY_KEYS = [
    "gender",
    "age_group",
    "build",
    "skin_tone",
    "hair_style",
    "hair_colour",
    "upper_type",
    "upper_colour",
    "upper_pattern",
    "lower_type",
    "lower_colour",
    "shoes",
    "bag",
    "hat",
    "glasses",
]
ENV_KEYS = ["background", "illumination", "time_of_day", "camera", "weather", "viewpoint"]


def test_seed_formulas_match_the_documented_seedsequence_hash():
    def expected(*keys):
        return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0]) >> 11

    assert identity_seed(7, 3) == expected(7, 0, 3)
    assert camera_seed(7, 2) == expected(7, 1, 2)
    assert image_seed(12345, 4) == expected(12345, 2, 4)
    seeds = {derive_seed(7, 0, p) for p in range(2000)}
    assert len(seeds) == 2000 and max(seeds) < 2**53


def test_default_schema_has_the_issue_attributes_and_none_values():
    schema = AttributeSchema.from_config()
    assert schema.identity_keys == IDENTITY_KEYS
    assert sorted(schema.environment_keys) == sorted(ENV_KEYS)
    assert set(schema.vocabulary("viewpoint").values) == {"front", "back", "left", "right"}
    for key in ("bag", "hat", "glasses"):
        assert "none" in schema.vocabulary(key).values


def test_sampling_is_seeded_and_follows_weights():
    schema = AttributeSchema.from_config()
    a = schema.sample_identity(np.random.default_rng(5))
    b = schema.sample_identity(np.random.default_rng(5))
    assert a == b and list(a) == IDENTITY_KEYS
    voc = Vocabulary.parse("x", {"p": 3.0, "q": 1.0, "r": 0.0})
    draws = [voc.draw(np.random.default_rng(i)) for i in range(4000)]
    assert draws.count("r") == 0
    assert abs(draws.count("p") / 4000 - 0.75) < 0.03


def test_rules_restrict_later_keys_and_weight_zero_values_only_when_forced():
    schema = AttributeSchema(
        identity={"a": ["x"]},
        camera_profile={"place": ["indoor", "outdoor"]},
        image={"weather": {"rain": 1, "sun": 1, "none": 0}},
        rules=[{"if": {"place": ["indoor"]}, "then": {"weather": ["none"]}}],
    )
    seen = set()
    for s in range(200):
        rng = np.random.default_rng(s)
        profile = schema.sample_camera_profile(rng)
        w = schema.sample_image(rng, {"a": "x"}, profile)["weather"]
        seen.add((profile["place"], w))
    assert seen == {("indoor", "none"), ("outdoor", "rain"), ("outdoor", "sun")}


def test_schema_errors_name_the_problem():
    with pytest.raises(ConfigValueError, match="single words"):
        Vocabulary.parse("hat", ["red cap"])
    with pytest.raises(ConfigValueError, match="unknown attribute 'colour'"):
        AttributeSchema({"a": ["x"]}, {"b": ["y"]}, {"c": ["z"]}, [{"if": {"colour": ["x"]}, "then": {"c": ["z"]}}])
    with pytest.raises(ConfigValueError, match="not in its vocabulary"):
        AttributeSchema.from_config().restricted({"background": ["moon"]})
    schema = AttributeSchema.from_config().restricted({"background": ["subway_station"], "weather": ["rainy"]})
    with pytest.raises(ConfigValueError, match="leave no value for 'weather'"):
        schema.sample_image(np.random.default_rng(0), {}, {"background": "subway_station"})


def test_prompt_builder_formats_fragments_drops_none_and_fixes_articles():
    pb = PromptBuilder(
        [
            "a photo of a {age_group} {gender}",
            "wearing a {upper_colour} {upper_type}",
            "carrying a {bag}",
            "{weather} weather",
        ],
        negative="blurry",
        separator="; ",
        negative_if_none={"bag": "bag"},
    )
    pos, neg = pb.build(
        {
            "age_group": "elderly",
            "gender": "male",
            "upper_colour": "orange",
            "upper_type": "t_shirt",
            "bag": "none",
            "weather": "rainy",
        }
    )
    assert pos == "a photo of an elderly male; wearing an orange t shirt; rainy weather"
    assert neg == "blurry; bag"
    with pytest.raises(ConfigValueError, match="lacks"):
        pb.build({"age_group": "child"})


def test_default_prompts_carry_every_non_none_value_and_environment_word():
    schema, prompts = AttributeSchema.from_config(), PromptBuilder.from_config()
    plan = SynthPlan(schema, prompts, num_identities=30, num_cameras=6, seed=3, images_per_identity=(2, 2))
    checked = 0
    for ident in plan.identities():
        for img in ident.images:
            for key, value in img.attributes.items():
                if value != "none":
                    assert words(value) in img.prompt, (key, value, img.prompt)
                    checked += 1
            for key in ("bag", "hat", "glasses"):
                if img.attributes[key] == "none":
                    assert key in img.negative_prompt
    assert checked > 30 * 2 * 15


def test_plan_is_deterministic_per_identity_and_shards_partition_it():
    schema, prompts = AttributeSchema.from_config(), PromptBuilder.from_config()
    plan = SynthPlan(schema, prompts, num_identities=10, num_cameras=4, seed=11, images_per_identity=(2, 5))
    again = SynthPlan(schema, prompts, num_identities=10, num_cameras=4, seed=11, images_per_identity=(2, 5))
    assert plan.identity(7).images == again.identity(7).images
    counts = [len(i.images) for i in plan.identities()]
    assert min(counts) >= 2 and max(counts) <= 5 and len(set(counts)) > 1
    ident = plan.identity(3)
    cams = [i.camid for i in ident.images]
    assert len(set(cams[:4])) == min(4, len(cams))  # an identity is spread over the cameras first
    assert ident.images[0].file == f"bounding_box_train/{image_name(3, ident.images[0].camid, 0)}"
    shards = [plan.shard_pids(i, 3) for i in range(3)]
    assert sorted(p for s in shards for p in s) == plan.pids and shards[0] == [1, 4, 7, 10]
    assert image_name(12, 0, 5) == "00012_c1_000005.jpg"


def test_heldout_plan_puts_query_and_gallery_in_different_cameras():
    plan = SynthPlan(
        AttributeSchema.from_config(),
        PromptBuilder.from_config(),
        num_identities=20,
        num_cameras=4,
        seed=1,
        split="heldout",
        queries_per_identity=1,
        gallery_per_identity=4,
        pid_start=50,
    )
    for ident in plan.identities():
        q = [i for i in ident.images if i.split == "query"]
        g = [i for i in ident.images if i.split == "gallery"]
        assert len(q) == 1 and len(g) == 4 and ident.pid >= 50
        assert q[0].camid not in {i.camid for i in g}
        assert q[0].file.startswith("query/") and all(i.file.startswith("bounding_box_test/") for i in g)


@pytest.mark.parametrize("value", [0, [3, 2], [1], "many", True])
def test_bad_images_per_identity(value):
    with pytest.raises(ConfigValueError, match="images_per_identity"):
        parse_count_range(value)


def test_vocabularies_are_config_files():
    cfg = load_conf_yaml("synth/attributes.yaml")
    assert set(cfg) == {"identity", "camera_profile", "image", "rules"}
    assert "positive" in load_conf_yaml("synth/prompts.yaml")


def test_camera_profiles_are_balanced_over_the_vocabulary():
    plan = SynthPlan.from_config(
        {"num_identities": 1, "num_cameras": 6, "seed": 2, "split": "train"},
        style={"background": ["street", "park", "campus"]},
    )
    looks = [p["camera"] for p in plan.camera_profiles]
    backgrounds = [p["background"] for p in plan.camera_profiles]
    assert len(set(looks)) == 6  # 6 cameras, 10 looks: all different
    assert sorted(backgrounds) == ["campus", "campus", "park", "park", "street", "street"]


def test_hidden_attributes_follow_the_view_and_the_image():
    record = {"gender": "male", "glasses": "sunglasses", "shoes": "sandals", "viewpoint": "back"}
    assert hidden_attributes(record) == ("glasses",)
    assert hidden_attributes({**record, "viewpoint": "front"}) == ()
    assert hidden_attributes({**record, "viewpoint": "left"}, also=["shoes"]) == ("shoes",)
    assert hidden_attributes(record, also=("shoes",)) == ("glasses", "shoes")  # record key order
    assert hidden_attributes({k: v for k, v in record.items() if k != "viewpoint"}) == ()
