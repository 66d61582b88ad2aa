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
