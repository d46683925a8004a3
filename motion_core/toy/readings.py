"""The toy world's motion-class reading from KLT tracklets: global motion statistics and
the ``toyclips.MOTION_CLASSES`` class they show (``classify_motion``).

Lengths and distances are in "px at 64" (``metrics.REF``): coordinates are normalised by
the frame's width and height and multiplied by 64, so the numbers match the toy world's
definitions at any resolution. Frames as in ``metrics``.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np

from ..metrics import REF, _frames, _normalise, track_points
from . import toyclips

logger = logging.getLogger(__name__)

def _signed_turn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed angle (deg) from vectors a to b, (n 2) each; positive = clockwise on screen (y down)."""
    return np.degrees(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], (a * b).sum(1)))


def dominant_motion(frames, step_px: float = 0.2, pair_px: float = 10.0, mode_px: float = 0.5) -> dict:
    """Global motion statistics from KLT tracklets (``track_points``), in px at 64, y down.

    frames: (f h w c), f >= 3. A tracklet *moves in step k* when its displacement from frame
    k to k+1 exceeds ``step_px``; per-step statistics use only the m points moving in that
    step, so background points that an object covers and drags part of the way count only
    while they move. Keys:
      n_tracks; moving_fraction: share of (tracklet, step) pairs that move (a pan moves all,
        background included; objects alone cover far less of the frame); persistent_fraction:
        share of tracklets moving in at least half the steps (jitter moves points sporadically).
      jitter: per-step tracking noise, from the lower quartile of |change of displacement
        between steps| (constant motion and still points have none; a quartile so accelerating
        objects do not count); ``step_px`` and ``mode_px`` are raised to 3 x jitter, so noise
        alone does not count as motion.
      global_translation (dx, dy): median per-frame displacement of *all* tracklets.
      velocity (k 2): per step, the median displacement of the densest cluster of moving
        points (those within ``mode_px`` of the point with most such neighbours: an object's
        points share one velocity, dragged or lost points scatter; 0 when fewer than 4
        move); path (f 2): its running sum; translation: mean velocity; speed: |translation|.
      coherence: median over steps of the share of moving points heading within 30 deg of
        their median displacement (~1 for rigid motion, low for spin and zoom).
      rotation (deg/frame, + clockwise) and divergence (1/frame, + growing): medians over
        pairs of moving points 1.5..``pair_px`` apart of cross(r, dv) / |r|^2 and
        dot(r, dv) / |r|^2 (r joins the pair, dv is their velocity difference): local curl
        and divergence, ~0 for rigid motion; deformation = max(|rotation| rad, |divergence|).
      turning: mean signed turn between consecutive path steps (deg/frame, + clockwise).
      descent, ascent: how far the path goes down from the start and back up to the end;
        x_range, y_range: extents of the path (bounce: down then up, x still).
    """
    x = _frames(frames)
    f, h, w = x.shape[:3]
    if f < 3:
        raise ValueError(f"dominant_motion needs at least 3 frames, got {f}")
    tr = _normalise(track_points(x), h, w) * REF                                 # (p f 2)
    out = dict(n_tracks=len(tr), moving_fraction=0.0, persistent_fraction=0.0, jitter=0.0,
               global_translation=(0.0, 0.0), translation=(0.0, 0.0), speed=0.0, velocity=np.zeros((f - 1, 2)),
               path=np.zeros((f, 2)), rotation=0.0, divergence=0.0, deformation=0.0, coherence=1.0, turning=0.0,
               descent=0.0, ascent=0.0, x_range=0.0, y_range=0.0)
    if len(tr) == 0:
        return out
    steps = np.diff(tr, axis=1)                                                  # (p k 2)
    accel = np.linalg.norm(np.diff(steps, axis=1), axis=-1)                      # (p k-1): 0 for constant motion
    jitter = float(np.percentile(accel, 25)) / (0.76 * math.sqrt(2))             # Rayleigh: p25 = 0.76 sigma
    step_px, mode_px = max(step_px, 3 * jitter), max(mode_px, 3 * jitter)
    moving = np.linalg.norm(steps, axis=-1) > step_px                            # (p k)
    vel, coh, curls, divs = np.zeros((f - 1, 2)), [], [], []
    for k in range(f - 1):
        idx = np.flatnonzero(moving[:, k])
        if len(idx) < 4:
            continue
        v, p = steps[idx, k], tr[idx, k]                                         # (m 2) each
        r, dv = p[None] - p[:, None], v[None] - v[:, None]                       # (m m 2) each
        near_v = np.linalg.norm(dv, axis=-1) < mode_px                            # (m m)
        vel[k] = np.median(v[near_v[np.argmax(near_v.sum(1))]], 0)               # densest velocity cluster
        n, med = np.linalg.norm(v, axis=1), np.median(v, 0)
        coh.append(float(np.mean(v @ med > np.cos(np.radians(30.0)) * n * max(np.linalg.norm(med), 1e-9))))
        d2 = (r ** 2).sum(-1)
        near = np.triu(np.ones(d2.shape, bool), 1) & (d2 > 1.5 ** 2) & (d2 < pair_px ** 2)
        curls.append((r[..., 0] * dv[..., 1] - r[..., 1] * dv[..., 0])[near] / d2[near])
        divs.append((r * dv).sum(-1)[near] / d2[near])
    path = np.concatenate([np.zeros((1, 2)), np.cumsum(vel, 0)])
    big = np.linalg.norm(vel, axis=1) > 0.3
    both = big[:-1] & big[1:]
    turning = float(_signed_turn(vel[:-1][both], vel[1:][both]).mean()) if both.any() else 0.0
    curls, divs = np.concatenate(curls or [np.zeros(0)]), np.concatenate(divs or [np.zeros(0)])
    rot = math.degrees(float(np.median(curls))) if len(curls) else 0.0
    div = float(np.median(divs)) if len(divs) else 0.0
    y, mean_v = path[:, 1], vel.mean(0)
    out.update(moving_fraction=float(moving.mean()), persistent_fraction=float(np.mean(moving.mean(1) >= 0.5)),
               jitter=jitter, global_translation=tuple(float(v) for v in np.median(tr[:, -1] - tr[:, 0], 0) / (f - 1)),
               translation=(float(mean_v[0]), float(mean_v[1])), speed=float(np.linalg.norm(mean_v)), velocity=vel,
               path=path, rotation=rot, divergence=div, deformation=max(abs(math.radians(rot)), abs(div)),
               coherence=float(np.median(coh)) if coh else 1.0, turning=turning, descent=float(y.max() - y[0]),
               ascent=float(y.max() - y[-1]), x_range=float(np.ptp(path[:, 0])), y_range=float(np.ptp(y)))
    return out


def classify_motion(frames, stats: Optional[dict] = None) -> str:
    """Name of the ``toyclips.MOTION_CLASSES`` class whose motion the clip shows.

    frames: (f h w c). A decision list on ``dominant_motion`` (pass ``stats`` to reuse one),
    thresholds in px at 64 set between the toy world's classes with wide margins: under 1% of
    tracklets moving in at least half the steps -> static; over 80% of (tracklet, step) pairs
    moving (background included) with the median point shifting sideways over 0.5 px/frame
    -> pan, content moving left = camera pans east;
    non-rigid flow (deformation x (1 - coherence) > 0.012) -> rotate (curl sign) or zoom
    (divergence sign), whichever of |curl| and |divergence| is larger; otherwise rigid
    motion: down then back up with little sideways -> bounce; a path turning over 12
    deg/frame -> circle (turn sign); else translate, direction to the nearest of the 8
    compass points, slow / fast split at 3 px/frame (between 2 and 4; times
    ``toyclips.time_scale`` for clips over 8 frames, whose rates are finer). All classes
    are kept apart (no coarser grouping was needed). Tuned on rendered toy clips; thresholds
    rise with the measured tracking jitter, so mild noise (sigma 0.02) is tolerated.
    """
    s = dominant_motion(frames) if stats is None else stats
    if s["n_tracks"] == 0:
        logger.warning("classify_motion: no trackable corners in frame 0; calling the clip static")
    if s["persistent_fraction"] < 0.01:
        return "static"
    if s["moving_fraction"] > 0.8 and abs(s["global_translation"][0]) > 0.5:
        return "pan_E" if s["global_translation"][0] < 0 else "pan_W"
    if s["deformation"] * (1.0 - s["coherence"]) > 0.012:
        if abs(math.radians(s["rotation"])) > abs(s["divergence"]):
            return "rotate_cw" if s["rotation"] > 0 else "rotate_ccw"
        return "zoom_in" if s["divergence"] > 0 else "zoom_out"
    if min(s["descent"], s["ascent"]) > 0.4 * s["y_range"] > 1.0 and s["x_range"] < 0.5 * s["y_range"]:
        return "bounce"
    if abs(s["turning"]) > 12.0:
        return "circle_cw" if s["turning"] > 0 else "circle_ccw"
    dx, dy = s["translation"]
    sector = int(round(math.degrees(math.atan2(-dy, dx)) / 45.0)) % 8
    split = 0.5 * (toyclips.SPEEDS[1] + toyclips.SPEEDS[2]) * toyclips.time_scale(len(s["path"]))
    speed = 1 if s["speed"] < split else 2
    return f"translate_{toyclips.COMPASS[sector]}_{speed}"
