"""A second flow-based motion classifier for toy clips: dense flow, robust to sampling shimmer.

``classify_motion_dense(frames)`` names the ``toyclips.MOTION_CLASSES`` class a clip shows,
like ``readings.classify_motion`` but from dense Farneback flow on blurred frames instead of
KLT corners, so texture that shimmers or re-arranges inside objects (video-diffusion output)
does not turn into a "non-rigid flow" reading.

Pipeline (all lengths in "px at 64", rates per frame of an 8-frame clip):
1. grey frames, resized to 128 x 128 (2 work px per px at 64; any input size), Gaussian blur
   sigma 1.5 px at 64 (removes object texture and 1-px flicker, keeps 16-28 px objects),
   each frame standardised (mean 0, std 1) so per-frame tint / brightness drift cancels.
2. Farneback flow between consecutive frames (pyramid of 3 levels reaches ~13 px at 64,
   above the largest step, a bounce's 6.5 px).
3. per step: global median flow and the share of pixels moving with it (pan); a moving mask
   (|flow| over a noise-scaled threshold, closed / opened) split into connected components,
   each fitted with a similarity motion (translation, scale rate, rotation rate) about its
   own centroid by least squares; the step's object velocity is the area-weighted mean of
   the component translations.
4. rotation / zoom from one similarity fit per component of the time-averaged flow over
   the region active in the clip: spin and zoom of objects that stay put give the same flow
   at a pixel every step, while shimmer noise is fresh every step (averaging 7 steps cuts it
   by ~sqrt 7; per-step fits were too noisy under shimmer).
5. decision list: pan; moving objects (smooth path) -> bounce / circle / translate;
   otherwise rotate / zoom / static by the larger of |rotation| and |scale rate|.
"""
from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from ..metrics import _frames
from . import toyclips

WORK = 128                      # working resolution: small objects need >= 2 work px per px at 64
K = 64.0 / WORK                 # work px -> px at 64
BLUR = 1.5                      # px at 64: kills texture (period ~6 px) and flicker, keeps silhouettes
FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=7, poly_sigma=1.5,
                 flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)
MIN_AREA = 20.0                 # px^2 at 64: smaller mask components are noise specks (objects >= 200)
_KER = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_YY, _XX = (np.mgrid[0:WORK, 0:WORK].astype(np.float32) + 0.5) * K


def _grey(frames) -> np.ndarray:
    """(f h w c) or (f h w), torch / numpy, float [0, 1] or uint8 -> (f h w) float32 luma."""
    x = _frames(frames)                                                   # shared input checks and scaling
    if x.shape[0] < 3:
        raise ValueError(f"frames must be (f h w c) with f >= 3, got shape {tuple(x.shape)}")
    return x @ np.float32([0.299, 0.587, 0.114]) if x.shape[-1] == 3 else x[..., 0]


def dense_flows(frames) -> np.ndarray:
    """Farneback flow between consecutive prepared frames: (f-1 WORK WORK 2), px at 64."""
    prep = []
    for fr in _grey(frames):
        up = fr.shape[0] < WORK or fr.shape[1] < WORK
        fr = cv2.resize(fr, (WORK, WORK), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
        fr = cv2.GaussianBlur(fr, (0, 0), BLUR / K)
        fr = (fr - fr.mean()) / max(float(fr.std()), 1e-3)       # per-frame tint / gain drift cancels
        prep.append(np.clip(fr * 40.0 + 128.0, 0, 255).astype(np.uint8))
    return np.stack([cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK) * K for a, b in zip(prep[:-1], prep[1:])])


def _similarity(mask: np.ndarray, flow: np.ndarray):
    """Per connected component of ``mask`` (>= MIN_AREA): least-squares fit of
    v = t + s q + w J q (q about the component centroid, J q = (-q_y, q_x): w > 0 clockwise
    on screen). Returns area-weighted means (t (2,), s, w) and the total area (px^2 at 64)."""
    nl, lab, st, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    t, s, w, tot = np.zeros(2), 0.0, 0.0, 0.0
    for i in range(1, nl):
        area = st[i, cv2.CC_STAT_AREA] * K * K
        if area < MIN_AREA:
            continue
        sel = lab == i
        qx, qy, v = _XX[sel], _YY[sel], flow[sel]
        qx, qy = qx - qx.mean(), qy - qy.mean()
        q2 = max(float((qx * qx + qy * qy).sum()), 1e-6)
        mv = np.linalg.norm(v, axis=1)
        t += area * (mv[:, None] * v).sum(0) / max(float(mv.sum()), 1e-6)   # |v|-weighted: the halo counts less
        s += area * float((qx * v[:, 0] + qy * v[:, 1]).sum()) / q2
        w += area * float((-qy * v[:, 0] + qx * v[:, 1]).sum()) / q2
        tot += area
    return (t / tot, s / tot, w / tot, tot) if tot else (t, 0.0, 0.0, 0.0)


def _moving(mag: np.ndarray, floor: float) -> np.ndarray:
    """Mask of |flow| above max(floor, 1.5 x the frame's median |flow|) (the median is the
    still background's noise: objects cover < 40% of a frame), closed then opened (5x5)."""
    m = (mag > max(floor, 1.5 * float(np.median(mag)))).astype(np.uint8)
    return cv2.morphologyEx(cv2.morphologyEx(m, cv2.MORPH_CLOSE, _KER), cv2.MORPH_OPEN, _KER)


def dense_motion(frames) -> dict:
    """Clip statistics from dense flow (px at 64, y down, per frame at the clip's own rate).

    Keys: pan_x, pan_y (median over steps of the global median flow), cover (median share of
    pixels moving within 1 + 0.25|g| px of the global median g), velocity (k 2) per-step
    object velocity, smooth_speed (sqrt of the mean dot product of consecutive velocities:
    ~speed for smooth paths, ~0 for independent per-step noise), noise (median |flow| of the
    frame, i.e. of the still background), rotation (rad/frame, + clockwise) and scale
    (relative scale rate / frame) of the time-averaged flow on the active region.
    """
    flows = dense_flows(frames)                                                   # (k WORK WORK 2)
    n, mag = len(flows), np.linalg.norm(flows, axis=-1)
    g = np.median(flows.reshape(n, -1, 2), 1)
    near = np.linalg.norm(flows - g[:, None, None], axis=-1) < 1.0 + 0.25 * np.linalg.norm(g, axis=-1)[:, None, None]
    vel = np.stack([_similarity(_moving(mag[k], 0.4), flows[k])[0] for k in range(n)])   # 0.4: clean-flow floor
    dots = (vel[:-1] * vel[1:]).sum(1)
    _, s, w, _ = _similarity(_moving(mag.mean(0), 0.3), flows.mean(0))
    return dict(pan_x=float(np.median(g[:, 0])), pan_y=float(np.median(g[:, 1])), cover=float(np.median(near.mean((1, 2)))),
                velocity=vel, smooth_speed=math.sqrt(max(0.0, float(dots.mean()))),
                noise=float(np.median(mag)), rotation=w, scale=s)


def classify_motion_dense(frames, stats: Optional[dict] = None) -> str:
    """Name of the ``toyclips.MOTION_CLASSES`` class a clip shows, from ``dense_motion``.

    Rates are divided by ``toyclips.time_scale(f)`` (longer clips move in finer steps), then:
    - pan: the frame's median flow moves sideways > 2 px/frame (objects alone cannot move the
      median; pans move 4) with |x| > 2|y| and most pixels (> 50%) moving with it.
    - moving objects: smooth_speed > 0.9 + 0.5 noise (slow translation measures ~1.6; shimmer
      noise alone gives ~0.3, raised with the measured noise). Then
      bounce: path goes down and back up (each > 40% of a > 3 px vertical range) with little
      sideways drift (x range < 50% of y range);
      circle: turn > 12 deg/frame (circle 30, straight 0), half the angle between the summed
      cross and dot products of velocities 2 steps apart (magnitude-weighted: noisy steps count less);
      else translate: compass sector of the mean velocity, fast when its length > 2.4
      (clean 2 / 4 px measure ~1.7 / ~3.3: Farneback smears flow past object edges, so low).
    - else rotate / zoom / static: the larger of |rotation| (rad/frame) and |scale| must pass
      0.008 + 0.02 noise (clean spin / zoom measure 0.02-0.1, clean static exactly 0; shimmer
      noise of ~0.8 px lifts the static readings to ~0.02, so the bar rises with it).
    """
    s = dense_motion(frames) if stats is None else stats
    ts = toyclips.time_scale(len(s["velocity"]) + 1)
    if abs(s["pan_x"]) > 2.0 * ts and abs(s["pan_x"]) > 2.0 * abs(s["pan_y"]) and s["cover"] > 0.5:
        return "pan_E" if s["pan_x"] < 0 else "pan_W"
    vel = s["velocity"] / ts
    if s["smooth_speed"] / ts > 0.9 + 0.5 * s["noise"] / ts:
        path = np.concatenate([np.zeros((1, 2)), np.cumsum(vel, 0)])
        y = path[:, 1]
        y_range, x_range = float(np.ptp(y)), float(np.ptp(path[:, 0]))
        if min(y.max() - y[0], y.max() - y[-1]) > 0.4 * y_range > 1.2 and x_range < 0.5 * y_range:
            return "bounce"
        a, b = vel[:-2], vel[2:]                                   # lag 2: a circle turns 60 deg
        turn = 0.5 * math.degrees(math.atan2(float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()), float((a * b).sum())))
        straight = float(np.linalg.norm(vel.mean(0))) / max(s["smooth_speed"] / ts, 1e-6)
        if len(a) and abs(turn) > 12.0 and straight < 0.8:     # circle ~0.55, translate ~1
            return "circle_cw" if turn > 0 else "circle_ccw"
        dx, dy = vel.mean(0)
        sector = int(round(math.degrees(math.atan2(-dy, dx)) / 45.0)) % 8
        return f"translate_{toyclips.COMPASS[sector]}_{2 if math.hypot(dx, dy) > 2.4 else 1}"
    rot, scale = s["rotation"] / ts, s["scale"] / ts
    if max(abs(rot), abs(scale)) < 0.008 + 0.02 * s["noise"] / ts:
        return "static"
    if abs(rot) > abs(scale):
        return "rotate_cw" if rot > 0 else "rotate_ccw"
    return "zoom_in" if scale > 0 else "zoom_out"
