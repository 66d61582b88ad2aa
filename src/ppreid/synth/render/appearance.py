"""Who a pedestrian is and how they stand: the words the procedural renderer can draw (``SHAPES``),
:class:`PersonLook` (identity-level: attribute words resolved to exact colours, plus continuous traits
drawn from the identity seed: hue offsets, body proportions, pattern scale, logo shape, so identities
that share every word still differ) and :class:`Pose` (per image: viewpoint, stride, arm swing).
Proportions are fractions of the person's height ``P``; :mod:`ppreid.synth.render.person` paints them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppreid.synth.render.tables import RGB, RenderTables, jitter_colour, luminance
from ppreid.utils.errors import ConfigValueError

SHAPES: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"),
    "age_group": ("child", "teenager", "young_adult", "middle_aged", "elderly"),
    "build": ("slim", "average", "athletic", "heavy"),
    "hair_style": ("short", "long", "ponytail", "bun", "curly", "buzz_cut"),
    "upper_type": ("t_shirt", "shirt", "jacket", "hoodie", "coat", "sweater", "tank_top"),
    "upper_pattern": ("plain", "striped", "checked", "logo", "dotted"),
    "lower_type": ("trousers", "jeans", "shorts", "skirt", "long_skirt"),
    "bag": ("none", "backpack", "handbag", "shoulder_bag"),
    "hat": ("none", "cap", "beanie", "sun_hat"),
    "glasses": ("none", "glasses", "sunglasses"),
    "viewpoint": ("front", "back", "left", "right"),
}
HEAD = {"child": 0.158, "teenager": 0.134, "young_adult": 0.126, "middle_aged": 0.126, "elderly": 0.128}
# Body widths (fractions of the height P), far enough apart that they show at 128x64 beyond the box
# jitter (+-10% scale): shoulder half-width 0.125 P (male) vs 0.094 P (female) is ~7 px of torso width
# at P = 110 px, and build scales it from 0.8x (slim) to 1.34x (heavy); the figure's shape differs too
# (male: hips narrower than shoulders, female: hips wider; heavy: a wide waist, athletic: a narrow one).
SHOULDER = {"male": 0.125, "female": 0.094}
BUILD_WIDTH = {"slim": 0.8, "average": 1.0, "athletic": 1.12, "heavy": 1.34}
BUILD_LIMB = {"slim": 0.75, "average": 1.0, "athletic": 1.15, "heavy": 1.45}
BUILD_WAIST = {"slim": 1.0, "average": 1.0, "athletic": 0.86, "heavy": 1.3}
BUILD_HIP = {"slim": 1.0, "average": 1.0, "athletic": 0.95, "heavy": 1.15}
NEUTRALS = ("black", "white", "grey", "navy", "beige", "brown")


def check_word(key: str, value: str) -> str:
    if key in SHAPES and value not in SHAPES[key]:
        raise ConfigValueError(
            f"the procedural renderer draws {key} in {list(SHAPES[key])}; '{value}' has no drawing. Remove it "
            "from conf/synth/attributes.yaml or use generator=diffusion."
        )
    return value


@dataclass
class PersonLook:
    """Identity-level appearance: words -> colours and proportions (fractions of the height P)."""

    words: dict[str, str]
    skin: RGB
    hair: RGB
    upper: RGB
    pattern: RGB
    inner: RGB
    lower: RGB
    shoe: RGB
    shoe_style: str
    bag: RGB
    hat: RGB
    head_h: float
    head_w: float
    shoulder: float
    waist: float
    hip: float
    hip_y: float
    limb: float
    period: float
    duty: float
    logo_shape: int
    logo_scale: float
    bag_side: int
    hair_volume: float


def _contrast_colour(base: RGB, tables: RenderTables, rng: np.random.Generator) -> RGB:
    names = sorted(tables.tables["colours"])
    lum = luminance(base)
    good = [n for n in names if abs(luminance(tables.colour(n)) - lum) > 70] or names
    return jitter_colour(tables.colour(good[int(rng.integers(len(good)))]), rng)


def look_words(words: dict[str, str]) -> dict[str, str]:
    """The words a look is drawn from (identity appearance only; no per-image environment words)."""
    w = {k: check_word(k, str(words[k])) for k in SHAPES if k in words and k != "viewpoint"}
    w.update({k: str(words[k]) for k in ("skin_tone", "hair_colour", "upper_colour", "lower_colour", "shoes")})
    return w


def make_look(words: dict[str, str], tables: RenderTables, rng: np.random.Generator) -> PersonLook:
    """Resolve identity words with the identity's own rng (the continuous traits come from it)."""
    w = look_words(words)
    shoe = tables.entry("shoes", w["shoes"])
    male = w["gender"] == "male"
    age, build = w["age_group"], w["build"]
    shoulder = SHOULDER["male" if male else "female"] * BUILD_WIDTH[build] * (0.86 if age == "child" else 1.0)
    shoulder *= rng.uniform(0.97, 1.03)
    upper = jitter_colour(tables.colour(w["upper_colour"]), rng)
    return PersonLook(
        words=w,
        skin=jitter_colour(tuple(tables.entry("skin_tones", w["skin_tone"])), rng, 0.01, 0.06, 0.05),
        hair=jitter_colour(tuple(tables.entry("hair_colours", w["hair_colour"])), rng, 0.015, 0.1, 0.12),
        upper=upper,
        pattern=_contrast_colour(upper, tables, rng),
        inner=jitter_colour(tables.colour(NEUTRALS[int(rng.integers(len(NEUTRALS)))]), rng),
        lower=jitter_colour(tables.colour(w["lower_colour"]), rng),
        shoe=jitter_colour(tables.colour(shoe["colour"]), rng, 0.02, 0.1, 0.08),
        shoe_style=shoe["style"],
        bag=jitter_colour(tables.colour(NEUTRALS[int(rng.integers(len(NEUTRALS)))]), rng, 0.04, 0.2, 0.15),
        hat=jitter_colour(
            tables.colour(sorted(tables.tables["colours"])[int(rng.integers(len(tables.tables["colours"])))]), rng
        ),
        head_h=HEAD[age] * rng.uniform(0.95, 1.05),
        head_w=0.78 * rng.uniform(0.93, 1.07),
        shoulder=shoulder,
        waist=shoulder * (0.8 if male else 0.72) * BUILD_WAIST[build],
        hip=shoulder * (0.8 if male else 1.08) * BUILD_HIP[build],
        hip_y=(0.5 if age == "child" else 0.53) * rng.uniform(0.98, 1.02),
        limb=BUILD_LIMB[build] * rng.uniform(0.97, 1.03),
        period=rng.uniform(0.035, 0.07),
        duty=rng.uniform(0.3, 0.55),
        logo_shape=int(rng.integers(4)),
        logo_scale=rng.uniform(0.6, 1.0),
        bag_side=1 if rng.random() < 0.5 else -1,
        hair_volume=rng.uniform(0.9, 1.15),
    )


def random_words(tables: RenderTables, rng: np.random.Generator) -> dict[str, str]:
    """A random passer-by's words (for distractor people in the background)."""
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    words = {k: pick(v) for k, v in SHAPES.items() if k != "viewpoint"}
    words.update(
        skin_tone=pick(sorted(tables.tables["skin_tones"])),
        hair_colour=pick(sorted(tables.tables["hair_colours"])),
        upper_colour=pick(sorted(tables.tables["colours"])),
        lower_colour=pick(sorted(tables.tables["colours"])),
        shoes=pick(sorted(tables.tables["shoes"])),
    )
    return words


@dataclass
class Pose:
    """Per-image body pose: ``facing`` is -1 (faces image-left), +1 (right) or 0 (front/back)."""

    view: str
    facing: int
    stride: float
    arm_swing: float
    arm_spread: float
    elbow: float
    foot_lift: float
    lean: float


def sample_pose(view: str, rng: np.random.Generator) -> Pose:
    check_word("viewpoint", view)
    facing = {"left": -1, "right": 1}.get(view, 0)
    side = facing != 0
    stride = rng.uniform(0.08, 0.42) * (1 if rng.random() < 0.5 else -1) if side else rng.uniform(-0.06, 0.06)
    return Pose(
        view=view,
        facing=facing,
        stride=stride,
        arm_swing=stride * rng.uniform(0.6, 1.1),
        arm_spread=rng.uniform(0.04, 0.16),
        elbow=rng.uniform(0.05, 0.5),
        foot_lift=rng.uniform(-0.025, 0.025),
        lean=rng.uniform(-0.012, 0.012),
    )
