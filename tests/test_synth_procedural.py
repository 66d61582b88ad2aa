"""The procedural renderer: deterministic, the requested size, and it draws what the record says."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from ppreid.synth.attributes import AttributeSchema
from ppreid.synth.generators.base import ImageRequest
from ppreid.synth.generators.procedural import ProceduralGenerator
from ppreid.synth.plan import SynthPlan
from ppreid.synth.prompts import PromptBuilder
from ppreid.utils.errors import ConfigValueError


@pytest.fixture(scope="module")
def gen():
    return ProceduralGenerator()


@pytest.fixture(scope="module")
def plan():
    return SynthPlan(
        AttributeSchema.from_config(),
        PromptBuilder.from_config(),
        num_identities=6,
        num_cameras=3,
        seed=4,
        images_per_identity=(4, 4),
    )


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _plain_request(**attrs) -> ImageRequest:
    record = {
        "gender": "female",
        "age_group": "young_adult",
        "build": "average",
        "skin_tone": "medium",
        "hair_style": "short",
        "hair_colour": "black",
        "upper_type": "t_shirt",
        "upper_colour": "red",
        "upper_pattern": "plain",
        "lower_type": "trousers",
        "lower_colour": "blue",
        "shoes": "white_sneakers",
        "bag": "none",
        "hat": "none",
        "glasses": "none",
        "background": "park",
        "illumination": "overcast",
        "time_of_day": "noon",
        "camera": "clean",
        "weather": "clear",
        "viewpoint": "front",
    }
    record.update(attrs)
    return ImageRequest(
        pid=1,
        camid=0,
        attributes=record,
        prompt="",
        negative_prompt="",
        seed=3,
        identity_seed=5,
        height=128,
        width=64,
        camera_seed=9,
    )


def test_output_size_mode_and_determinism_across_instances_and_batches(gen, plan):
    reqs = [img.request(128, 64) for ident in plan.identities() for img in ident.images]
    first = gen.generate(reqs)
    fresh = ProceduralGenerator()
    again = fresh.generate(reqs[::-1])[::-1]
    assert all(im.size == (64, 128) and im.mode == "RGB" for im in first)
    assert [_png(a) for a in first] == [_png(b) for b in again]
    tall = gen.generate([reqs[0].__class__(**{**reqs[0].__dict__, "height": 256, "width": 128})])[0]
    assert tall.size == (128, 256)


def test_seed_changes_the_image_and_identities_differ(gen, plan):
    req = plan.identity(1).images[0].request(128, 64)
    a = np.asarray(gen.render(req), np.float32)
    b = np.asarray(gen.render(dataclasses.replace(req, seed=req.seed + 1)), np.float32)
    assert np.abs(a - b).mean() > 2.0
    other = plan.identity(2).images[0].request(128, 64)
    c = np.asarray(
        gen.render(
            dataclasses.replace(
                other,
                seed=req.seed,
                camera_seed=req.camera_seed,
                attributes={
                    **other.attributes,
                    **{
                        k: req.attributes[k]
                        for k in ("background", "illumination", "time_of_day", "camera", "weather", "viewpoint")
                    },
                },
            )
        ),
        np.float32,
    )
    assert np.abs(a - c).mean() > 2.0


def test_garment_colour_words_reach_the_pixels(gen):
    """Torso centre of a plain red t-shirt is red, of a plain blue one blue (clean camera, neutral light)."""

    def torso(colour):
        im = np.asarray(gen.render(_plain_request(upper_colour=colour)), np.float32)
        return im[40:60, 26:38].reshape(-1, 3).mean(0)

    red, blue = torso("red"), torso("blue")
    assert red[0] > red[2] + 40 and blue[2] > blue[0] + 40


def test_viewpoint_and_pose_change_the_drawing(gen):
    front = np.asarray(gen.render(_plain_request(viewpoint="front")), np.float32)
    back = np.asarray(gen.render(_plain_request(viewpoint="back")), np.float32)
    left = np.asarray(gen.render(_plain_request(viewpoint="left")), np.float32)
    right = np.asarray(gen.render(_plain_request(viewpoint="right")), np.float32)
    for other in (back, left, right):
        assert np.abs(front - other).mean() > 1.0
    assert np.abs(left - right).mean() > 1.0


def test_unknown_words_and_bad_options_are_clear_errors(gen):
    with pytest.raises(ConfigValueError, match="upper_type.*'cape' has no drawing"):
        gen.render(_plain_request(upper_type="cape"))
    with pytest.raises(ConfigValueError, match="render table 'colours'.*render.yaml"):
        gen.render(_plain_request(upper_colour="chartreuse"))
    with pytest.raises(ConfigValueError, match="person_height"):
        ProceduralGenerator(person_height=[0.9, 0.5])
    with pytest.raises(ConfigValueError, match="too small"):
        gen.render(dataclasses.replace(_plain_request(), height=8, width=4))


def test_worker_processes_give_the_same_images(plan):
    reqs = [img.request(64, 32) for ident in plan.identities() for img in ident.images][:12]
    local = ProceduralGenerator().generate(reqs)
    pooled = ProceduralGenerator(num_workers=2)
    try:
        assert [_png(a) for a in pooled.generate(reqs)] == [_png(b) for b in local]
    finally:
        pooled.close()


def test_strength_knobs_move_the_look_towards_neutral():
    ideal = ProceduralGenerator(look_strength=0)
    green = np.asarray(ideal.render(_plain_request(camera="green_cast")))
    clean = np.asarray(ideal.render(_plain_request(camera="clean")))
    assert np.array_equal(green, clean)  # every camera-look parameter is neutral at strength 0

    def greenness(camera):
        m = np.asarray(ProceduralGenerator().render(_plain_request(camera=camera)), np.float32).mean((0, 1))
        return 2 * m[1] / (m[0] + m[2])

    assert greenness("green_cast") > 1.15 * greenness("clean")
    night = _plain_request(time_of_day="night")
    dark = np.asarray(ProceduralGenerator().render(night), np.float32).mean()
    flat = np.asarray(ProceduralGenerator(light_strength=0).render(night), np.float32).mean()
    assert flat > dark * 1.5


# ---- what the image shows: visible attributes, the record of what it hides, the person mask -----------
IDEAL = {"look_strength": 0.0}  # no camera noise or blur: pixel differences come from the drawing


def _changed(a: Image.Image, b: Image.Image, level: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels whose colour differs by more than ``level`` in some channel."""
    d = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max(2)
    return np.nonzero(d > level)


@pytest.mark.parametrize("kind", ["glasses", "sunglasses"])
def test_glasses_are_a_dark_band_across_the_eyes_and_back_views_hide_them(kind):
    """Front: > 25 pixels of the head change by > 40 levels (the old 3x2 px frames changed < 10), all in
    a band a few rows tall, and darker; back: nothing changes and the render reports glasses hidden."""
    gen = ProceduralGenerator(**IDEAL)
    plain, worn = gen.render_info(_plain_request()), gen.render_info(_plain_request(glasses=kind))
    rows, cols = _changed(plain.image, worn.image)
    assert len(rows) > 25 and 3 <= rows.max() - rows.min() + 1 <= 6 and rows.max() < 128 * 0.3
    lum = lambda im: np.asarray(im, np.float32)[rows, cols].mean()  # noqa: E731
    assert lum(worn.image) < lum(plain.image) - 40
    assert worn.hidden == () and plain.hidden == ()
    side_rows, _ = _changed(
        gen.render(_plain_request(viewpoint="left")), gen.render(_plain_request(glasses=kind, viewpoint="left"))
    )
    assert len(side_rows) > 15
    back = gen.render_info(_plain_request(glasses=kind, viewpoint="back"))
    assert len(_changed(gen.render(_plain_request(viewpoint="back")), back.image)[0]) == 0
    assert back.hidden == ("glasses",)


@pytest.mark.parametrize("view", ["front", "back", "left"])
def test_shoes_are_several_pixels_tall_in_their_colour(view):
    gen = ProceduralGenerator(**IDEAL)
    white = gen.render(_plain_request(viewpoint=view))
    red = gen.render(_plain_request(viewpoint=view, shoes="red_sneakers"))
    rows, cols = _changed(white, red)
    assert len(np.unique(rows)) >= 6 and len(rows) >= 80 and rows.min() > 128 * 0.8
    px = np.asarray(red, np.float32)[rows, cols].mean(0)
    assert px[0] > px[1] + 60 and px[0] > px[2] + 60


def test_gender_and_build_widths_exceed_the_box_jitter():
    """Torso-band width of the mask (arms included) over identities and boxes (the box height varies by
    +-10%): every male wider than every female of the same build, each build wider than the one below it
    (slim < average < heavy), every heavy male wider than 1.5x every slim female."""
    gen = ProceduralGenerator(**IDEAL)

    def widths(**kw):
        out = []
        for s in range(4):
            req = dataclasses.replace(_plain_request(**kw), seed=s, identity_seed=20 + s)
            m = gen.render_info(req).mask
            rows = np.nonzero(m.any(1))[0]
            top, height = rows.min(), rows.max() - rows.min()
            out.append(m[int(top + 0.2 * height) : int(top + 0.45 * height)].sum(1).mean())
        return np.asarray(out)

    male, female = widths(gender="male"), widths(gender="female")
    assert male.min() > female.max()
    slim, heavy = widths(gender="male", build="slim"), widths(gender="male", build="heavy")
    assert slim.max() < male.min() and male.max() < heavy.min()
    assert heavy.min() > 1.5 * widths(gender="female", build="slim").max()


def test_mask_covers_the_person_and_nothing_else(gen):
    """The pixels a garment colour changes lie inside the mask (1 px margin: anti-aliasing, JPEG), the mask
    is one upright figure, and it excludes the occluder in front of the person."""
    red = gen.render_info(_plain_request())
    blue = gen.render_info(_plain_request(upper_colour="blue", lower_colour="white", shoes="black_boots"))
    rows, cols = _changed(red.image, blue.image, 60)
    grown = red.mask | blue.mask
    grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
    assert len(rows) > 500 and grown[rows, cols].all()
    ys = np.nonzero(red.mask.any(1))[0]
    assert red.mask.dtype == bool and red.mask.shape == (128, 64)
    assert ys.max() - ys.min() > 0.75 * 128 and 0.08 < red.mask.mean() < 0.45
    blocked = ProceduralGenerator(occluder_prob=1.0).render_info(_plain_request())
    assert blocked.mask.sum() < gen.render_info(_plain_request()).mask.sum()


def test_occluded_shoes_are_reported_hidden_and_never_captioned():
    from ppreid.synth.captions import Captioner

    gen = ProceduralGenerator(occluder_prob=1.0)
    infos = [gen.render_info(dataclasses.replace(_plain_request(), seed=s)) for s in range(24)]
    hidden = [i for i in infos if "shoes" in i.hidden]
    assert 0 < len(hidden) < len(infos)  # some occluders cover the feet, some do not
    cap = Captioner.from_config()
    record = _plain_request().attributes
    assert "sneakers" in cap.person_caption(record)
    for i in hidden:
        for s in range(10):
            assert "sneakers" not in cap.person_caption(record, np.random.default_rng(s), hidden=i.hidden)


def test_render_info_is_render_and_workers_give_the_same_masks(plan):
    reqs = [img.request(64, 32) for ident in plan.identities() for img in ident.images][:8]
    local = ProceduralGenerator()
    infos = local.generate_with_info(reqs)
    assert [_png(i.image) for i in infos] == [_png(im) for im in local.generate(reqs)]
    pooled = ProceduralGenerator(num_workers=2)
    try:
        other = pooled.generate_with_info(reqs)
    finally:
        pooled.close()
    assert all(np.array_equal(a.mask, b.mask) and a.hidden == b.hidden for a, b in zip(infos, other))
    assert [_png(i.image) for i in other] == [_png(i.image) for i in infos]


def test_camera_view_warps_the_mask_with_its_image():
    """far_high's CameraView: the written mask is the warped image's person, not the upright render's."""
    from ppreid.synth.camera_view import CameraView
    from ppreid.synth.mini import DEFAULT_DOMAINS

    gen = ProceduralGenerator()
    view = CameraView(gen, **DEFAULT_DOMAINS["far_high"]["view"])
    req = _plain_request()
    plain = gen.render_info(req)
    (seen,) = view.generate_with_info([req])
    p = view.params(req.camera_seed)
    assert seen.image.tobytes() == CameraView.apply(plain.image, p).tobytes()
    assert seen.mask.shape == plain.mask.shape and seen.mask.dtype == bool
    assert (seen.mask != plain.mask).sum() > 20  # squash and tilt moved the silhouette
    # the warped mask still marks the person: it covers much the same area (+-35%)
    assert 0.65 < seen.mask.sum() / plain.mask.sum() < 1.35
    assert seen.hidden == plain.hidden
