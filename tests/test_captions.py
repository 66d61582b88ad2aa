"""Captions of attribute records: hand cases (exact text), kinds, seeding, the context cut."""

from __future__ import annotations

import numpy as np
import pytest

from ppreid.synth.captions import Captioner
from ppreid.utils.errors import ConfigValueError

RECORD = {
    "gender": "female",
    "age_group": "young_adult",
    "build": "slim",
    "skin_tone": "olive",
    "hair_style": "ponytail",
    "hair_colour": "red",
    "upper_type": "jacket",
    "upper_colour": "orange",
    "upper_pattern": "striped",
    "lower_type": "jeans",
    "lower_colour": "blue",
    "shoes": "white_sneakers",
    "bag": "none",
    "hat": "cap",
    "glasses": "none",
    "background": "parking_lot",
    "illumination": "streetlight",
    "time_of_day": "night",
    "camera": "grainy",
    "weather": "rainy",
    "viewpoint": "left",
}

CONTENT = (
    "a photo of a young adult female, of slim build, with olive skin, with red ponytail hair, wearing an "
    "orange striped jacket, blue jeans, white sneakers, no bag, wearing a cap, no glasses, seen from the left"
)
STYLE = "a photo, in a parking lot, streetlight lighting, at night, rainy weather, grainy camera"


@pytest.fixture(scope="module")
def captioner():
    return Captioner.from_config()


def test_canonical_captions_are_exact(captioner):
    assert captioner.caption(RECORD, "content") == CONTENT
    assert captioner.caption(RECORD, "style") == STYLE
    assert captioner.caption(RECORD, "full") == CONTENT + ", " + STYLE[len("a photo, ") :]
    assert captioner.caption(RECORD, "content", exclude=("viewpoint",)) == CONTENT[: -len(", seen from the left")]


def test_content_and_style_keep_to_their_words(captioner):
    rng = np.random.default_rng(0)
    for _ in range(20):
        content, style = captioner.caption(RECORD, "content", rng), captioner.caption(RECORD, "style", rng)
        assert not any(w in content for w in ("parking", "streetlight", "night", "grainy", "rainy"))
        assert not any(w in style for w in ("female", "jacket", "jeans", "ponytail", "sneakers"))


def test_random_captions_are_seeded_and_varied(captioner):
    a = [captioner.caption(RECORD, "full", np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    many = {captioner.caption(RECORD, "full", np.random.default_rng(s)) for s in range(30)}
    assert len(many) == 30  # phrasings, orders and kept fragments differ
    firsts = {c.split(", ")[1] for c in many}
    assert len(firsts) > 5  # attribute order varies
    for c in many:  # the subject always opens the caption
        assert "young adult female" in c.split(", ")[0] or "young adult female" in c.split(", ")[1]


def test_cut_at_fragment_boundaries_within_the_context():
    short = Captioner.from_config(context_length=20)
    full = Captioner.from_config().caption(RECORD, "full")
    cut = short.caption(RECORD, "full")
    assert short.num_tokens(cut) <= 20 and full.startswith(cut) and full[len(cut) :].startswith(", ")
    assert cut == "a photo of a young adult female, of slim build, with olive skin"
    rng = np.random.default_rng(3)
    for _ in range(20):  # every kept piece is a whole fragment
        text = short.caption(RECORD, "full", rng)
        assert short.num_tokens(text) <= 20
        assert short.tokenize([text]).shape == (1, 20)


def test_zero_shot_prompts(captioner):
    assert captioner.zero_shot_prompts("bag", ["none", "backpack"]) == [
        "a photo of a person without a bag",
        "a photo of a person carrying a backpack",
    ]
    assert captioner.zero_shot_prompts("upper_colour", ["orange"]) == ["a photo of a person wearing an orange top"]
    with pytest.raises(ConfigValueError, match="no prompt for attribute 'tattoo'"):
        captioner.zero_shot_prompts("tattoo", ["yes"])


def test_describe_states_exactly_the_attributes_its_words_name(captioner):
    """describe() = caption() plus the keys it states: the subject's and every fragment that fits."""
    text, keys = captioner.describe(RECORD, "content")
    assert text == captioner.caption(RECORD, "content")
    assert keys[:2] == ("age_group", "gender") and "background" not in keys and "viewpoint" in keys
    for seed in range(5):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        text, keys = captioner.describe(RECORD, "full", a)
        assert text == captioner.caption(RECORD, "full", b)  # the same draws as caption()
        from ppreid.synth.prompts import words

        for key in keys:
            if RECORD[key] != "none":
                assert words(RECORD[key]) in text, (key, text)
    short = Captioner.from_config(context_length=20)
    text, keys = short.describe(RECORD, "full")
    assert short.num_tokens(text) <= 20 and len(keys) < len(captioner.describe(RECORD, "full")[1])


# ---- a caption names only what the image shows; person and style text apart ---------------------------
STYLE_KEYS = ("background", "illumination", "time_of_day", "weather", "camera")
SCENE_WORDS = ("camera", "surveillance", "footage", "lighting", "light", "weather", "indoors", "background")


def test_person_caption_has_no_scene_light_or_camera_word_and_style_caption_no_person_word(captioner):
    """Over every style value and many random phrasings: the person caption names none of them (nor generic
    camera/scene words), the style caption no person attribute."""
    from ppreid.synth.attributes import AttributeSchema
    from ppreid.synth.prompts import words

    schema = AttributeSchema.from_config()
    style_words = {words(v) for k in STYLE_KEYS for v in schema.vocabulary(k).values if v != "none"}
    person_words = {words(RECORD[k]) for k in ("upper_colour", "upper_type", "lower_type", "shoes", "hair_style")}
    rng = np.random.default_rng(0)
    for i in range(200):
        record = {
            **RECORD,
            **{k: schema.vocabulary(k).values[i % len(schema.vocabulary(k).values)] for k in STYLE_KEYS},
        }
        text = captioner.person_caption(record, rng)
        assert not [w for w in style_words | set(SCENE_WORDS) if f" {w}" in f" {text}"], text
        style = captioner.style_caption(record, rng)
        assert not [w for w in person_words if w in style], style
    assert captioner.person_caption(RECORD) == CONTENT
    assert captioner.style_caption(RECORD) == STYLE


def test_back_views_never_caption_glasses_and_hidden_keys_are_left_out(captioner):
    """A back view hides glasses whatever the value ("no glasses" cannot be seen either); ``hidden`` (what the
    renderer reports, e.g. occluded shoes) drops its fragments; the stated keys agree with the text."""
    for glasses in ("glasses", "sunglasses", "none"):
        back = {**RECORD, "glasses": glasses, "viewpoint": "back"}
        for kind in ("content", "full"):
            for s in range(20):
                text, keys = captioner.describe(back, kind, np.random.default_rng(s))
                assert "glasses" not in text and "glasses" not in keys
        front = {**back, "viewpoint": "front"}
        text, keys = captioner.describe(front, "content")
        assert "glasses" in text and "glasses" in keys
    text, keys = captioner.describe(RECORD, "content", hidden=("shoes",))
    assert text == CONTENT.replace(", white sneakers", "") and "shoes" not in keys
    identity = {k: v for k, v in RECORD.items() if k != "viewpoint"}  # no view: the identity, nothing hidden
    assert "glasses" in captioner.caption({**identity, "glasses": "glasses"}, "content", exclude=("viewpoint",))
