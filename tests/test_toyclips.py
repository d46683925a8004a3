"""Tests for motion_core.toy.toyclips: the seeded toy world of clips with known motion.

Checks determinism, frame format, every class rendering in both palettes, labels, the
train / heldout appearance split, the pan / static background behaviour, objects staying in
frame, the balanced dataset and the unseen-target helpers.
"""
import dataclasses

import numpy as np
import pytest
import torch

from motion_core.toy import toyclips as tc


pytestmark = pytest.mark.usefixtures("one_thread")


def test_class_list_and_labels():
    classes = tc.MOTION_CLASSES
    assert len(classes) == 26 and len(set(classes)) == 26
    for name in ("translate_E_1", "translate_E_2", "translate_NE_1", "translate_SW_2", "circle_cw", "circle_ccw",
                 "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw", "pan_E", "pan_W", "bounce", "static"):
        assert name in classes
    assert sum(c.startswith("translate_") for c in classes) == 16
    for i, name in enumerate(classes):
        assert tc.class_index(name) == i and classes[tc.class_index(name)] == name
        assert tc.motion_spec(name).name == name
    with pytest.raises(ValueError, match="unknown motion class"):
        tc.class_index("wiggle")


def test_motion_specs():
    east, north = tc.motion_spec("translate_E_2"), tc.motion_spec("translate_N_1")
    assert east.kind == "translate" and east.speed == 4.0 and north.speed == 2.0
    assert np.allclose(east.velocity, (4.0, 0.0)) and np.allclose(north.velocity, (0.0, -2.0))   # y down
    assert np.allclose(tc.motion_spec("translate_SW_1").velocity, (-(2 ** 0.5), 2 ** 0.5))
    assert tc.motion_spec("pan_E").velocity[0] < 0 < tc.motion_spec("pan_W").velocity[0]   # camera east: content west
    assert tc.motion_spec("circle_cw").turn_deg > 0 > tc.motion_spec("circle_ccw").turn_deg
    assert tc.motion_spec("rotate_cw").turn_deg > 0 > tc.motion_spec("rotate_ccw").turn_deg
    assert tc.motion_spec("zoom_in").scale_rate > 1 > tc.motion_spec("zoom_out").scale_rate
    assert tc.motion_spec("static").kind == "static"


def test_object_tracks():
    off, ang, sc = tc.object_track("bounce", 8)
    assert off[0, 1] == 0 and off[-1, 1] < 1e-9 and off[:, 1].max() == pytest.approx(16.0 * (1 - 0.5 / 3.5) ** 2)
    assert np.all(np.diff(off[:4, 1]) > 0) and np.all(np.diff(off[4:, 1]) < 0) and np.all(off[:, 0] == 0)
    steps = np.diff(tc.object_track("circle_cw", 8, phase=30.0)[0], axis=0)
    cross = steps[:-1, 0] * steps[1:, 1] - steps[:-1, 1] * steps[1:, 0]
    assert np.all(cross > 0)                                           # turns clockwise on screen
    assert np.allclose(tc.object_track("translate_E_2", 8, size=128)[0][-1], (56.0, 0.0))       # scales with size
    assert np.allclose(tc.object_track("translate_E_2", 14)[0][-1], (28.0, 0.0))   # longer clips: same path, finer
    assert tc.object_track("bounce", 14)[0][-1, 1] < 1e-9
    _, ang, sc = tc.object_track("rotate_ccw", 8)
    assert ang[-1] == pytest.approx(-140.0) and np.all(sc == 1)
    assert tc.object_track("zoom_out", 8)[2][-1] == pytest.approx(1.15 ** -7)


def test_sampled_circles_start_at_the_bottom_and_spinners_are_large():
    """The class alone fixes a sampled circle's path (cw sets off west, ccw east), so a motion
    token can carry it; rotating objects are drawn 22-28 px so their spin is visible."""
    for seed in range(6):
        cw, ccw = (tc.sample_clip_spec(seed, motion=m) for m in ("circle_cw", "circle_ccw"))
        assert cw.phase == ccw.phase == tc.CIRCLE_PHASE_DEG
        first_cw = np.diff(tc.object_track("circle_cw", 8, phase=cw.phase)[0][:2], axis=0)[0]
        first_ccw = np.diff(tc.object_track("circle_ccw", 8, phase=ccw.phase)[0][:2], axis=0)[0]
        assert first_cw[0] < 0 < first_ccw[0]                       # x right: cw goes west, ccw east
        spinner = tc.sample_clip_spec(seed, motion="rotate_cw")
        assert all(22.0 <= o.size <= 28.0 for o in spinner.objects), spinner.objects


def test_deterministic():
    a, spec_a = tc.make_clip("circle_cw", 3)
    b, spec_b = tc.make_clip("circle_cw", 3)
    assert spec_a == spec_b and torch.equal(a, b)
    assert torch.equal(tc.render_clip(spec_a), a)
    c, spec_c = tc.make_clip("circle_cw", 4)
    assert spec_c != spec_a and not torch.equal(a, c)
    assert tc.sample_clip_spec(5, "zoom_in") == tc.sample_clip_spec(np.random.default_rng(5), "zoom_in")


@pytest.mark.parametrize("frames,size", [(8, 64), (14, 64), (11, 96)])
def test_shape_dtype_range(frames, size):
    x, spec = tc.make_clip("translate_NE_2", 1, frames=frames, size=size)
    assert x.shape == (frames, size, size, 3) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0.05
    assert spec.frames == frames and spec.size == size


def test_bad_arguments():
    for kwargs in (dict(frames=7), dict(frames=15), dict(size=16), dict(palette="test")):
        with pytest.raises(ValueError):
            tc.make_clip("static", 0, **kwargs)
    with pytest.raises(ValueError):
        tc.sample_clip_spec(0, "static", objects=4)
    with pytest.raises(ValueError):
        tc.make_clip("spin", 0)


@pytest.mark.parametrize("palette", ["train", "heldout"])
def test_every_class_renders(palette):
    for i, motion in enumerate(tc.MOTION_CLASSES):
        x, spec = tc.make_clip(motion, 100 + i, palette=palette)
        assert x.shape == (8, 64, 64, 3) and torch.isfinite(x).all(), motion
        assert spec.motion == motion and 1 <= spec.n_objects <= 3
        change = float((x[1:] - x[:-1]).abs().mean(dim=(1, 2, 3)).max())
        if motion == "static":
            assert change == 0.0
        else:
            assert change > 1e-3, f"{motion}: frames do not change"


def test_palettes_disjoint():
    train, held = tc.PALETTES["train"], tc.PALETTES["heldout"]
    for key in ("shapes", "colours", "backgrounds", "textures"):
        assert not set(train[key]) & set(held[key]), key
    rng = np.random.default_rng(0)
    for palette, pal in tc.PALETTES.items():
        for _ in range(40):
            spec = tc.sample_clip_spec(rng, palette=palette)
            assert spec.palette == palette and spec.background in pal["backgrounds"]
            assert set(spec.shapes) <= set(pal["shapes"]) and set(spec.textures) <= set(pal["textures"])
            assert set(spec.colours) <= set(pal["colours"]) and set(spec.bg_colours) <= set(pal["colours"])
            assert all(type(c) is str for c in spec.colours + spec.bg_colours)


def test_pan_moves_background_static_does_not():
    def background_change(motion, seed):
        spec = tc.make_clip(motion, seed)[1]
        bg = tc.render_clip(dataclasses.replace(spec, objects=()))          # the same scene without objects
        return float((bg[1:] - bg[:-1]).abs().mean())

    for seed in range(3):
        assert background_change("pan_E", seed) > 0.01 and background_change("pan_W", seed) > 0.01
        for still in ("static", "translate_E_2", "zoom_in", "bounce"):
            assert background_change(still, seed) == 0.0, still
    # a pan shifts everything: frame t+1 is frame t moved by 4 px (left for pan_E) away from the edges
    x = tc.make_clip("pan_E", 7)[0]
    err_shift = float((x[1, 8:-8, 4:-12] - x[0, 8:-8, 8:-8]).abs().mean())
    err_still = float((x[1, 8:-8, 8:-8] - x[0, 8:-8, 8:-8]).abs().mean())
    assert err_shift < 0.3 * err_still


@pytest.mark.parametrize("frames", [8, 14])
def test_objects_stay_in_frame(frames):
    for palette in ("train", "heldout"):
        for i, motion in enumerate(tc.MOTION_CLASSES):
            spec = tc.make_clip(motion, 300 + i, frames=frames, palette=palette)[1]
            offsets, _, scales = tc.object_track(motion, frames, spec.size, spec.phase)
            for obj in spec.objects:
                centre, radius = np.asarray(obj.start) + offsets, obj.size / 2 * scales[:, None]
                assert np.all(centre - radius >= 0.99) and np.all(centre + radius <= spec.size - 0.99), motion
            # rendered on a flat background, the outermost pixel ring never shows an object
            x = tc.render_clip(dataclasses.replace(spec, background="plain")).numpy()
            ring = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], 1)       # (f n c)
            assert np.abs(ring - ring[0, 0]).max() < 1e-4, f"{motion} ({palette}) touches the border"


def test_make_dataset_balanced_and_seeded():
    n = 2 * len(tc.MOTION_CLASSES)
    items = list(tc.make_dataset(n, seed=3))
    labels = [label for _, label in items]
    assert sorted(labels) == sorted(list(range(len(tc.MOTION_CLASSES))) * 2)
    assert all(x.shape == (8, 64, 64, 3) for x, _ in items)
    again = list(tc.make_dataset(4, seed=3))
    assert [lab for _, lab in again] == labels[:4] and all(torch.equal(a[0], b[0]) for a, b in zip(again, items))
    sub = list(tc.make_dataset(6, seed=1, classes=["pan_E", "static"], palette="heldout"))
    assert sorted(lab for _, lab in sub) == [tc.class_index("pan_E")] * 3 + [tc.class_index("static")] * 3


def test_target_images_and_variants():
    imgs = tc.make_target_images(4, seed=9)
    assert imgs.shape == (4, 64, 64, 3) and imgs.dtype == torch.float32
    specs = tc.make_target_specs(4, seed=9)
    assert all(s.palette == "heldout" for s in specs)
    assert torch.equal(imgs[2], tc.render_clip(specs[2])[0])
    moving = tc.make_target_specs(2, seed=9, motion="translate_W_2")
    assert torch.equal(tc.make_target_images(2, seed=9, motion="translate_W_2")[1], tc.render_clip(moving[1])[0])

    x, spec = tc.make_clip("circle_ccw", 2)
    variants = tc.first_frame_variants(spec, 3, seed=5)
    for v in variants:
        assert (v.motion, v.frames, v.size, v.phase, v.palette) == (spec.motion, 8, 64, spec.phase, "heldout")
        assert [o.start for o in v.objects] == [o.start for o in spec.objects]
        assert [o.size for o in v.objects] == [o.size for o in spec.objects]
        assert set(v.shapes) <= set(tc.PALETTES["heldout"]["shapes"])
    assert not torch.equal(tc.render_clip(variants[0]), x)
    assert tc.first_frame_variants(spec, 3, seed=5) == variants


def test_scene_weights_favour_kinds_by_object_count_but_keep_every_class():
    for objects, favoured in ((1, "rotate_cw"), (2, "bounce"), (3, "pan_W")):
        weights = tc.scene_motion_weights(objects)
        assert weights.shape == (len(tc.MOTION_CLASSES),) and abs(weights.sum() - 1) < 1e-9
        assert (weights > 0).all()                                          # a spread: every class possible
        assert weights[tc.class_index(favoured)] == weights.max()
        assert weights[tc.class_index("static")] < weights[tc.class_index("translate_E_1")]   # still: the rarest
    assert tc.scene_motion_weights(1)[tc.class_index("zoom_in")] > tc.scene_motion_weights(3)[tc.class_index("zoom_in")]
    with pytest.raises(ValueError, match="1..3 objects"):
        tc.scene_motion_weights(4)


def test_scene_draws_follow_the_object_count():
    rng = np.random.default_rng(0)
    draws = [tc.draw_scene_motion(rng) for _ in range(3000)]
    kinds = {objects: [tc.motion_spec(motion).kind for n, motion in draws if n == objects] for objects in (1, 2, 3)}
    share = lambda objects, kind: kinds[objects].count(kind) / len(kinds[objects])  # noqa: E731
    assert share(1, "rotate") > 2 * share(3, "rotate") and share(3, "pan") > 2 * share(1, "pan")
    assert share(2, "bounce") > 2 * share(1, "bounce")
    assert len({motion for _, motion in draws}) == len(tc.MOTION_CLASSES)   # every class is drawn
    clips = list(tc.make_scene_dataset(3, seed=4))
    again = list(tc.make_scene_dataset(3, seed=4))
    assert [label for _, label in clips] == [label for _, label in again]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(clips, again))
