"""Tests for motion_core.metrics on toy clips (motion_core.toy.toyclips) with known motion.

The classifier must name every class of every clip (3 seeds x 26 classes x 2 palettes);
the Motion Fidelity Score must be ~1 for the same motion on new appearances and clearly
lower for opposite motion; PSNR and appearance leakage must have the documented signs.
"""
import logging

import cv2
import numpy as np
import pytest
import torch

from motion_core import metrics as mt
from motion_core.toy import readings
from motion_core.toy import toyclips as tc


pytestmark = pytest.mark.usefixtures("one_thread")


def clip(motion, seed, palette="train", **kw):
    return tc.make_clip(motion, seed, palette=palette, **kw)[0]


def test_track_points():
    x = clip("translate_E_2", 0)
    tr = mt.track_points(x)
    assert tr.ndim == 3 and tr.shape[1:] == (8, 2) and len(tr) > 50 and tr.dtype == np.float32
    assert tr.min() >= -0.5 and tr.max() <= 63.5                               # pixel centres at 0..63
    disp = tr[:, -1] - tr[:, 0]
    moving = np.linalg.norm(disp, axis=1) > 5
    assert moving.any() and (~moving).any()                                   # object points and background
    assert np.allclose(np.median(disp[moving], 0), (28.0, 0.0), atol=1.0)     # 4 px/frame for 7 frames
    still = mt.track_points(clip("static", 0))
    assert np.abs(still - still[:, :1]).max() < 1e-3
    assert mt.track_points(x.numpy()).shape == tr.shape                       # numpy in, same result
    assert mt.track_points((x.numpy() * 255).round().astype(np.uint8)).shape[1:] == (8, 2)
    assert mt.track_points(torch.full((4, 32, 32, 3), 0.5)).shape == (0, 4, 2)   # nothing to track


def test_tracklet_correlation_rules():
    t = np.arange(4, dtype=np.float32)[:, None]
    right = np.concatenate([0.1 * t, 0 * t], 1)[None]                         # (1 f 2) normalised units
    left, still = -right, np.zeros_like(right)
    up = np.concatenate([0 * t, -0.1 * t], 1)[None]
    c = mt.tracklet_correlation(np.concatenate([right, still]), np.concatenate([right, left, still, up]))
    assert np.allclose(c, [[1, -1, 0, 0], [0, 0, 1, 0]])


def test_classifier_every_class_both_palettes():
    misses, counts = [], {}
    for palette in ("train", "heldout"):
        for motion in tc.MOTION_CLASSES:
            for seed in range(3):
                got = readings.classify_motion(clip(motion, 1000 + seed, palette))
                counts[motion] = counts.get(motion, 0) + (got == motion)
                if got != motion:
                    misses.append(f"{motion} ({palette}, seed {1000 + seed}) -> {got}")
    total = 6 * len(tc.MOTION_CLASSES)
    accuracy = 1 - len(misses) / total
    per_class = ", ".join(f"{m}: {n}/6" for m, n in counts.items() if n < 6)
    assert not misses, f"accuracy {accuracy:.3f} ({total - len(misses)}/{total}); {per_class}; misses: {misses}"


@pytest.mark.parametrize("frames,size,palette", [(14, 64, "train"), (11, 96, "heldout")])
def test_classifier_other_lengths_and_sizes(frames, size, palette):
    misses = [(m, got) for m in tc.MOTION_CLASSES
              if (got := readings.classify_motion(clip(m, 2000, palette, frames=frames, size=size))) != m]
    assert not misses, misses


def test_classifier_tolerates_mild_noise():
    gen = torch.Generator().manual_seed(0)
    for motion in ("static", "translate_E_2", "translate_SW_1", "zoom_in", "rotate_ccw", "pan_E", "bounce", "circle_cw"):
        x = clip(motion, 70, "heldout")
        noisy = (x + 0.02 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        assert readings.classify_motion(noisy) == motion
        assert readings.dominant_motion(noisy)["jitter"] > readings.dominant_motion(x)["jitter"]


def test_dominant_motion_statistics():
    s = readings.dominant_motion(clip("translate_E_2", 4))
    assert s["translation"][0] == pytest.approx(4.0, abs=0.4) and abs(s["translation"][1]) < 0.3
    assert s["coherence"] > 0.8 and s["deformation"] < 0.02 and s["moving_fraction"] < 0.7
    assert readings.dominant_motion(clip("pan_W", 4))["moving_fraction"] > 0.9
    assert readings.dominant_motion(clip("pan_W", 4))["global_translation"][0] == pytest.approx(4.0, abs=0.3)
    assert readings.dominant_motion(clip("zoom_in", 4))["divergence"] > 0.03
    assert readings.dominant_motion(clip("zoom_out", 4))["divergence"] < -0.03
    assert readings.dominant_motion(clip("rotate_cw", 4))["rotation"] > 3
    assert readings.dominant_motion(clip("rotate_ccw", 4))["rotation"] < -3
    assert readings.dominant_motion(clip("circle_cw", 4))["turning"] > 15
    b = readings.dominant_motion(clip("bounce", 4))
    assert b["descent"] > 5 and b["ascent"] > 5 and b["x_range"] < 2
    still = readings.dominant_motion(clip("static", 4))
    assert still["moving_fraction"] == still["persistent_fraction"] == still["jitter"] == 0.0
    with pytest.raises(ValueError):
        readings.dominant_motion(clip("static", 4)[:2])


def test_mfs_identity_and_same_motion_new_appearance():
    for motion in ("translate_SE_2", "zoom_in", "rotate_cw", "circle_ccw", "bounce", "pan_W", "static"):
        ref, spec = tc.make_clip(motion, 11)
        assert mt.motion_fidelity_score(ref, ref) == pytest.approx(1.0, abs=1e-6), motion
        for variant in tc.first_frame_variants(spec, 2, seed=1):            # heldout shapes, colours, backgrounds
            score = mt.motion_fidelity_score(ref, tc.render_clip(variant))
            assert score > 0.9, f"{motion}: same motion on a new appearance scores {score:.3f}"
    for motion in ("translate_W_1", "translate_N_2", "bounce", "pan_E"):  # entirely different scenes
        score = mt.motion_fidelity_score(clip(motion, 1), clip(motion, 2, "heldout"))
        assert score > 0.8, f"{motion}: {score:.3f}"


def test_mfs_opposite_motion_scores_low():
    report = {}
    for a, b in (("translate_E_2", "translate_W_2"), ("translate_N_1", "translate_S_1"), ("pan_E", "pan_W")):
        for seed in range(2):
            ra, rb, same = clip(a, seed), clip(b, 50 + seed, "heldout"), clip(a, 50 + seed, "heldout")
            s_same, s_opp = mt.motion_fidelity_score(ra, same), mt.motion_fidelity_score(ra, rb)
            m_same = mt.motion_fidelity_score(ra, same, moving_only=True)
            m_opp = mt.motion_fidelity_score(ra, rb, moving_only=True)
            report[f"{a}/{b}/{seed}"] = (round(s_same, 3), round(s_opp, 3), round(m_same, 3), round(m_opp, 3))
            assert s_same > 0.8 and s_opp < s_same - 0.2, report            # still background agrees either way
            assert m_same > 0.8 and m_opp < 0.3, report                       # moving tracklets only
    assert all(v[1] < -0.5 for k, v in report.items() if k.startswith("pan")), report   # everything moves


def test_mfs_sizes_lengths_and_empty(caplog):
    x = clip("translate_NE_2", 5)
    big = torch.from_numpy(np.stack([cv2.resize(f, (128, 96), interpolation=cv2.INTER_CUBIC) for f in x.numpy()]))
    assert mt.motion_fidelity_score(x, big.clamp(0, 1)) > 0.9                   # other size (and aspect)
    with pytest.raises(ValueError, match="8 frames.*7"):
        mt.motion_fidelity_score(x, x[:7])
    flat = torch.full((8, 64, 64, 3), 0.5)
    with caplog.at_level(logging.WARNING, logger="motion_core.metrics"):
        assert mt.motion_fidelity_score(x, flat) == 0.0
    assert "no tracklets" in caplog.text
    still = clip("static", 5)
    assert mt.motion_fidelity_score(still, clip("static", 6), moving_only=True) == 1.0
    assert mt.motion_fidelity_score(still, x, moving_only=True) == 0.0


def test_first_frame_psnr():
    x = clip("zoom_in", 3)
    assert mt.first_frame_psnr(x[0], x) == float("inf")
    assert mt.first_frame_psnr(x[0].numpy(), x[None, 0]) == float("inf")
    assert mt.first_frame_psnr(x[0] * 0.5, x * 0.5 + 0.1) == pytest.approx(20.0, abs=1e-3)   # mse 0.01
    gen = torch.Generator().manual_seed(0)
    scores = [mt.first_frame_psnr(x[0], (x + s * torch.randn(x.shape, generator=gen)).clamp(0, 1))
              for s in (0.01, 0.05, 0.2)]
    assert scores[0] > 35 and scores[0] > scores[1] > scores[2], scores
    big = torch.from_numpy(np.stack([cv2.resize(f, (128, 128), interpolation=cv2.INTER_LINEAR) for f in x.numpy()]))
    assert mt.first_frame_psnr(x[0], big) > 25                                 # resized to the target's size


def test_appearance_leakage():
    ref = clip("translate_E_2", 8)
    target = tc.make_target_images(1, seed=8)[0]                               # a heldout scene
    leak_ref = mt.appearance_leakage(ref, target, ref)
    leak_tgt = mt.appearance_leakage(ref, target, target[None].repeat(8, 1, 1, 1))
    assert 0 < leak_ref <= 1 and -1 <= leak_tgt < 0, (leak_ref, leak_tgt)
    assert leak_ref == pytest.approx(-leak_tgt, abs=0.05)
    # a proper transfer (the target's scene moving) keeps the target's look
    spec = tc.make_target_specs(1, seed=8, motion="translate_E_2")[0]
    assert mt.appearance_leakage(ref, tc.render_clip(spec)[0], tc.render_clip(spec)) < -0.2
    assert mt.appearance_leakage(ref[:4], target, ref) > 0                     # other lengths: proportional frames
    with pytest.raises(ValueError):
        mt.appearance_leakage(ref, target, ref[:1])
