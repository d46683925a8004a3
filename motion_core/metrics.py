"""Motion measurements for any clip: KLT tracklets, the Motion Fidelity Score, first-frame
PSNR and appearance leakage. (The toy world's motion-class readings built on the tracklets
are in ``toy/readings.py``.)

Frames are ``(f h w c)`` RGB (c = 3, or 1 for grey), float in [0, 1] (uint8 also taken),
torch tensors or numpy arrays. Tracklet coordinates are normalised by the frame's width and
height; ``REF`` scales them to "px at 64", the toy world's unit, at any resolution.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import cv2
import numpy as np
import torch


logger = logging.getLogger(__name__)

REF = 64.0            # reporting unit: px of a 64-px frame
STILL_EPS = 0.25 / REF  # per-frame displacement (normalised) below which a point counts as still


def _frames(frames, name: str = "frames") -> np.ndarray:
    """(f h w c), or (f h w) grey -> (f h w c) float32 in [0, 1]."""
    x = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if x.ndim == 3 and x.shape[-1] > 4:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name} must be (f h w c) with c in 1/3/4, got shape {tuple(x.shape)}")
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return np.clip(x[..., :3], 0.0, 1.0)


def _image(image, name: str) -> np.ndarray:
    """(h w c) or (1 h w c) -> (h w c) float32 in [0, 1]."""
    x = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim not in (2, 3):
        raise ValueError(f"{name} must be one image (h w c), got shape {tuple(x.shape)}")
    return _frames(x[None], name)[0]


def _gray_u8(frames: np.ndarray) -> np.ndarray:
    """(f h w c) float -> (f h w) uint8 luminance."""
    u8 = np.round(frames * 255.0).astype(np.uint8)
    if u8.shape[-1] == 1:
        return np.ascontiguousarray(u8[..., 0])
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in u8])


def _corners(gray: np.ndarray, max_corners: int, quality: float, min_distance: float, block_size: int,
             grid: int) -> np.ndarray:
    """Shi-Tomasi corners (n 2), ``max_corners / grid**2`` per cell of a grid x grid split, each
    at least ``quality`` x the strongest corner of the whole image."""
    if grid <= 1:
        pts = cv2.goodFeaturesToTrack(gray, max_corners, quality, min_distance, blockSize=block_size)
        return np.zeros((0, 2), np.float32) if pts is None else pts.reshape(-1, 2).astype(np.float32)
    eig = cv2.cornerMinEigenVal(gray, block_size, ksize=3)
    floor, (h, w), out = quality * float(eig.max()), gray.shape, []
    for i in range(grid):
        for j in range(grid):
            mask = np.zeros_like(gray)
            mask[i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid] = 255
            pts = cv2.goodFeaturesToTrack(gray, math.ceil(max_corners / grid ** 2), quality, min_distance,
                                          mask=mask, blockSize=block_size)
            if pts is not None:
                pts = pts.reshape(-1, 2)
                out.append(pts[eig[pts[:, 1].round().astype(int), pts[:, 0].round().astype(int)] >= floor])
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2), np.float32)


def track_points(frames, max_corners: int = 200, quality: float = 0.01, min_distance: float = 3,
                 block_size: int = 3, win_size: tuple[int, int] = (9, 9), max_level: Optional[int] = None,
                 fb_max_err: Optional[float] = None, upscale: Optional[int] = None, grid: int = 4) -> np.ndarray:
    """KLT tracklets: Shi-Tomasi corners of frame 0 (``cv2.goodFeaturesToTrack``, on grey uint8)
    followed frame to frame with pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``).

    frames: (f h w c) in [0, 1]. Returns (p f 2) float32 positions (x, y) in input pixels
    (pixel centres at integers) of the p points tracked through *all* frames; a point is
    dropped when LK fails (status 0), when it leaves the frame, or (``fb_max_err`` not None)
    when tracking the step back lands more than ``fb_max_err`` input px from where it started
    (forward-backward check, removes points lost to occlusion). Additions to plain KLT, for
    small frames and even cover:
    ``upscale`` None tracks frames whose short side is under 128 px on a cubic upscale to
    >= 128 px (a 9x9 window on a 64-px toy clip spans half an object and mixes in the
    background, which drags points and halves measured speeds); corners are picked per cell
    of a ``grid`` x ``grid`` split (``max_corners / grid**2`` each, still >= ``quality`` x the
    strongest corner of the image), so points cover the frame as a tracker grid would instead
    of crowding onto the most contrasted object; ``max_level`` None is 2 for a 64-px short side
    of the tracked frames, one more per doubling (same relative reach at any resolution).
    """
    x = _frames(frames)
    f, h, w = x.shape[:3]
    up = int(upscale) if upscale is not None else max(1, math.ceil(128 / min(h, w)))
    if up > 1:
        x = np.stack([cv2.resize(fr, (w * up, h * up), interpolation=cv2.INTER_CUBIC) for fr in x])
        x = np.clip(x.reshape(f, h * up, w * up, -1), 0.0, 1.0)
    gray = _gray_u8(x)
    h, w = gray.shape[1:]
    if max_level is None:
        max_level = 2 + max(0, int(round(math.log2(max(1.0, min(h, w) / REF)))))
    pts = _corners(gray[0], max_corners, quality, min_distance, block_size, grid)
    if len(pts) == 0:
        return np.zeros((0, f, 2), np.float32)
    track = [pts]
    alive = np.ones(len(track[0]), bool)
    lk = dict(winSize=tuple(win_size), maxLevel=int(max_level),
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    for t in range(1, f):
        prev = track[-1].reshape(-1, 1, 2)
        nxt, st, _ = cv2.calcOpticalFlowPyrLK(gray[t - 1], gray[t], prev, None, **lk)
        ok = st.reshape(-1) == 1
        if fb_max_err is not None:
            back, st_b, _ = cv2.calcOpticalFlowPyrLK(gray[t], gray[t - 1], nxt, None, **lk)
            fb = np.linalg.norm((back - prev).reshape(-1, 2), axis=1)
            ok &= (st_b.reshape(-1) == 1) & (fb <= fb_max_err * up)
        nxt = nxt.reshape(-1, 2)
        ok &= (nxt[:, 0] >= -0.5) & (nxt[:, 0] <= w - 0.5) & (nxt[:, 1] >= -0.5) & (nxt[:, 1] <= h - 0.5)
        alive &= ok
        track.append(np.where(ok[:, None], nxt, track[-1]))
    return ((np.stack(track, 1)[alive] + 0.5) / up - 0.5).astype(np.float32)      # pixel centres at integers


def _normalise(tracklets: np.ndarray, height: int, width: int) -> np.ndarray:
    """(p f 2) pixels -> (p f 2) in [0, 1] (x / width, y / height)."""
    return tracklets / np.array([width, height], np.float32)


def tracklet_correlation(ref: np.ndarray, gen: np.ndarray, still_eps: float = STILL_EPS) -> np.ndarray:
    """corr(tau, tau~) for every pair: ``(p f 2)`` x ``(q f 2)`` normalised tracklets -> ``(p q)``.

    corr = 1/(f-1) sum_k c_k with c_k = cosine of the two displacements of step k; when one
    displacement is shorter than ``still_eps`` (normalised units) it has no direction: c_k = 1
    if both are still, 0 if only one is (a still point neither agrees nor disagrees).
    """
    va, vb = np.diff(ref, axis=1), np.diff(gen, axis=1)                       # (p k 2), (q k 2)
    na, nb = np.linalg.norm(va, axis=-1), np.linalg.norm(vb, axis=-1)          # (p k), (q k)
    ua, ub = va / np.maximum(na, 1e-12)[..., None], vb / np.maximum(nb, 1e-12)[..., None]
    cos = np.einsum("pkc,qkc->pqk", ua, ub)
    sa, sb = (na < still_eps)[:, None, :], (nb < still_eps)[None, :, :]
    c = np.where(sa & sb, 1.0, np.where(sa | sb, 0.0, cos))
    return c.mean(-1)


def motion_fidelity_score(reference, generated, still_eps: float = STILL_EPS, moving_only: bool = False,
                          fb_max_err: Optional[float] = 0.5, **track_kwargs) -> float:
    """Motion Fidelity Score (Motion Inversion eq. 6, from DMT, Yatim et al. 2023).

    reference, generated: (f h w c) clips of equal length f (sizes may differ). Tracklets T
    (reference, m of them) and T~ (generated, n) come from ``track_points``; positions are
    normalised to [0, 1] by width / height so displacements compare across sizes. Then

        MFS = 1/2 [ 1/m sum_{tau in T} max_{tau~} corr(tau, tau~) + 1/n sum_{tau~ in T~} max_tau corr(tau, tau~) ]

    with corr from ``tracklet_correlation`` (mean over steps of the cosine of the per-frame
    displacements; DMT's normalised cross-correlation of displacements). Range [-1, 1].
    Deviations, all documented choices: eq. 6 as printed has no 1/2, which would put the
    score in [-2, 2] while the paper's Table 1 reports values <= 1, so the two directions are
    averaged; still steps are defined (see ``tracklet_correlation``) where DMT's code divides
    by zero; tracks are KLT corners spread over a grid (``track_points``, forward-backward
    checked to ``fb_max_err`` px; other ``track_kwargs`` pass through), not CoTracker's.
    ``moving_only`` keeps only tracklets that ever move more than 4 ``still_eps`` (like DMT's
    optional foreground mask); with it, a clip with no moving points against another with
    none scores 1, against one with some scores 0. Without it, still background tracklets
    agree with each other, so on mostly-still scenes wrong object motion lowers the score
    only by the moving share (see the report in tests/test_metrics.py). The score ignores
    *where* a tracklet is, so radially symmetric opposites (zoom in / out; small rotations
    cw / ccw) score nearly as high as the same motion. Returns 0.0 (with a warning) when
    either clip has no tracklets.
    """
    ref, gen = _frames(reference, "reference"), _frames(generated, "generated")
    if len(ref) != len(gen):
        raise ValueError(f"reference has {len(ref)} frames but generated has {len(gen)}; they must be equal")
    ta = _normalise(track_points(ref, fb_max_err=fb_max_err, **track_kwargs), *ref.shape[1:3])
    tb = _normalise(track_points(gen, fb_max_err=fb_max_err, **track_kwargs), *gen.shape[1:3])
    if moving_only:
        move = lambda t: np.linalg.norm(t - t[:, :1], axis=-1).max(1) > 4 * still_eps  # noqa: E731
        ta, tb = ta[move(ta)], tb[move(tb)]
        if len(ta) == 0 or len(tb) == 0:
            return float(len(ta) == len(tb))
    if len(ta) == 0 or len(tb) == 0:
        logger.warning("motion_fidelity_score: no tracklets (reference %d, generated %d); returning 0.0",
                       len(ta), len(tb))
        return 0.0
    corr = tracklet_correlation(ta, tb, still_eps)
    return float(0.5 * corr.max(1).mean() + 0.5 * corr.max(0).mean())


# ----------------------------------------------------------------------------- appearance
def first_frame_psnr(target, generated) -> float:
    """PSNR (dB, data range 1) of generated frame 0 against the target image.

    target: (h w c); generated: (f h' w' c), frame 0 resized (area) to h x w when sizes
    differ. Identical images give ``inf``.
    """
    tgt = _image(target, "target")
    gen = _frames(generated, "generated")[0]
    if gen.shape[:2] != tgt.shape[:2]:
        gen = cv2.resize(gen, (tgt.shape[1], tgt.shape[0]), interpolation=cv2.INTER_AREA).reshape(tgt.shape)
    mse = float(np.mean((gen.astype(np.float64) - tgt.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def _hist(img: np.ndarray, bins: int) -> np.ndarray:
    u8 = np.round(img * 255.0).astype(np.uint8)
    if u8.shape[-1] == 1:
        u8 = np.repeat(u8, 3, -1)
    hist = cv2.calcHist([np.ascontiguousarray(u8)], [0, 1, 2], None, [bins] * 3, [0, 256] * 3)
    return cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)


def appearance_leakage(reference, target, generated, bins: int = 8) -> float:
    """How much the generated clip's later frames look like the reference rather than the target.

    reference: (F h w c) the clip whose motion was learned; target: (h w c) the image that was
    animated; generated: (f h w c), f >= 2. For each later frame g_t (t >= 1) with d the
    Bhattacharyya distance (0 same .. 1 disjoint) of 3D RGB histograms (``bins`` per channel):

        leakage = mean_t [ d(g_t, target) - d(g_t, reference_t') ]

    where t' = t when the lengths match, else the proportional frame round(t (F-1)/(f-1)).
    Range [-1, 1]; positive = the output looks more like the reference (appearance leaked),
    negative = it keeps the target's appearance; ~0 when the two are equally close.
    """
    ref, gen = _frames(reference, "reference"), _frames(generated, "generated")
    tgt = _image(target, "target")
    if len(gen) < 2:
        raise ValueError(f"generated needs at least 2 frames, got {len(gen)}")
    h_tgt, vals = _hist(tgt, bins), []
    for t in range(1, len(gen)):
        tr = t if len(ref) == len(gen) else int(round(t * (len(ref) - 1) / (len(gen) - 1)))
        hg = _hist(gen[t], bins)
        vals.append(cv2.compareHist(hg, h_tgt, cv2.HISTCMP_BHATTACHARYYA)
                    - cv2.compareHist(hg, _hist(ref[tr], bins), cv2.HISTCMP_BHATTACHARYYA))
    return float(np.mean(vals))
