"""Procedural toy clips with known motion: a seeded world for measuring motion transfer.

A clip is 1-3 textured objects over a textured background, all following one *motion
class*. Frames are ``(f h w c)`` float32 RGB in [0, 1]; 64x64 and 8 frames by default
(8-14 frames allowed). Everything is drawn at 2x and area-downsampled (anti-aliased).

Motion classes (``MOTION_CLASSES``, a stable order; ``class_index`` gives the label):

- ``translate_<D>_<s>``: every object moves in compass direction ``D`` (E, NE, N, NW, W,
  SW, S, SE; N is *up* on screen) at speed ``s``: 1 = slow (2 px/frame), 2 = fast
  (4 px/frame). The background stays still.
- ``circle_cw`` / ``circle_ccw``: objects travel on a circle (radius 10 px, 30 deg/frame),
  clockwise / counter-clockwise as seen on screen, always from the bottom of the circle
  (``CIRCLE_PHASE_DEG``): circle_cw sets off west, circle_ccw east, then both rise. The path
  is then fixed by the class and the first frame, so a motion token can carry all of it.
- ``zoom_in`` / ``zoom_out``: objects scale about their own centre by 1.1 / 1/1.1 per frame.
- ``rotate_cw`` / ``rotate_ccw``: objects spin about their own centre, 20 deg/frame; they
  are drawn larger (22-28 px) so the spin moves their edges and marker by whole latent pixels.
- ``pan_E`` / ``pan_W``: the *camera* pans east / west at 4 px/frame, so the background and
  the objects shift together the other way on screen (pan_E: content moves left).
- ``bounce``: objects drop from rest to a floor 16 px lower (accelerating, as under
  gravity), rebound and rise back to the start: down, then up.
- ``static``: nothing moves.

Speeds and distances are quoted for a 64-px frame and scale with ``size / 64``; per-frame
rates are for 8 frames, and a longer clip covers the same path in finer steps (rates times
``time_scale(frames)`` = 7 / (frames - 1)). Motions are fast on purpose: the toy model's
latent is 4x smaller, and at these speeds translations move whole latent pixels per frame
(1.0 and 0.5), which a tiny video model learns far more easily than sub-pixel drift. Start
positions are chosen so every object stays wholly inside the frame in every frame.

Palettes (``PALETTES``; "train" / "heldout" are disjoint in every row, so a model trained on
"train" meets new looks on "heldout"):

- shapes: square, circle, triangle, cross / ring, star, diamond, ell (an L)
- object textures: stripes, checker / noise, dots (rows split separately: noise is also a train background)
- colours: red, green, blue, yellow, cyan, magenta / orange, purple, pink, teal, lime, brown
- backgrounds: gradient, stripes, noise / checker, dots, grid

Backgrounds carry a fine grain and objects a texture plus an off-centre marker, so KLT finds
corners everywhere (``metrics`` needs them). ``plain`` (flat) renders from an explicit spec
but is never sampled: it has no trackable corners.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import cv2
import numpy as np
import torch

logger = logging.getLogger(__name__)

COMPASS = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")   # screen angle 0, 45, ... deg, N = up
SPEEDS = {1: 2.0, 2: 4.0}                                 # speed label -> px/frame at 64 px, 8 frames
MOTION_CLASSES: tuple[str, ...] = tuple(
    f"translate_{d}_{s}" for d in COMPASS for s in SPEEDS
) + ("circle_cw", "circle_ccw", "zoom_in", "zoom_out", "rotate_cw", "rotate_ccw",
     "pan_E", "pan_W", "bounce", "static")

CIRCLE_RADIUS, CIRCLE_STEP_DEG = 10.0, 30.0
CIRCLE_PHASE_DEG = 90.0     # start angle on the circle, deg clockwise from east (y down): the bottom
# zooms at 1.15 a frame (1.10 before 2026-12-03: the toy UNet drew those as blooms that dense
# flow reads as still; docs/research_log.md, "A zoom stage on the spin testbed")
ZOOM_RATE, ROTATE_STEP_DEG, PAN_SPEED, BOUNCE_HEIGHT = 1.15, 20.0, 4.0, 16.0
MIN_FRAMES, MAX_FRAMES, MIN_SIZE = 8, 14, 32
SUPERSAMPLE = 2

COLOURS = {
    "red": (0.90, 0.15, 0.15), "green": (0.15, 0.75, 0.20), "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.10), "cyan": (0.10, 0.80, 0.85), "magenta": (0.85, 0.20, 0.80),
    "orange": (1.00, 0.55, 0.05), "purple": (0.50, 0.20, 0.75), "pink": (1.00, 0.60, 0.75),
    "teal": (0.00, 0.50, 0.50), "lime": (0.60, 0.95, 0.30), "brown": (0.55, 0.35, 0.15),
}
PALETTES = {
    "train": dict(shapes=("square", "circle", "triangle", "cross"), textures=("stripes", "checker"),
                  colours=("red", "green", "blue", "yellow", "cyan", "magenta"),
                  backgrounds=("gradient", "stripes", "noise")),
    "heldout": dict(shapes=("ring", "star", "diamond", "ell"), textures=("noise", "dots"),
                    colours=("orange", "purple", "pink", "teal", "lime", "brown"),
                    backgrounds=("checker", "dots", "grid")),
}
SHAPES = PALETTES["train"]["shapes"] + PALETTES["heldout"]["shapes"]
TEXTURES = PALETTES["train"]["textures"] + PALETTES["heldout"]["textures"] + ("plain",)
BACKGROUNDS = PALETTES["train"]["backgrounds"] + PALETTES["heldout"]["backgrounds"] + ("plain",)


@dataclass(frozen=True)
class MotionSpec:
    """What a motion class does (distances in px at a 64-px frame, screen y pointing down).

    kind: translate | circle | zoom | rotate | pan | bounce | static.
    direction / angle_deg: on-screen direction of content motion (translate, pan), the angle
    counter-clockwise from east with north up. speed: px/frame (translate, pan).
    turn_deg: per-frame turn, positive = clockwise on screen (circle, rotate).
    scale_rate: per-frame scale factor (zoom). radius: circle radius. height: bounce drop.
    """

    name: str
    kind: str
    direction: Optional[str] = None
    angle_deg: float = 0.0
    speed: float = 0.0
    turn_deg: float = 0.0
    scale_rate: float = 1.0
    radius: float = 0.0
    height: float = 0.0

    @property
    def velocity(self) -> tuple[float, float]:
        """(dx, dy) px/frame on screen (y down) for translate / pan, else (0, 0)."""
        return self.speed * math.cos(math.radians(self.angle_deg)), -self.speed * math.sin(math.radians(self.angle_deg))


def class_index(name: str) -> int:
    """Label of a motion class: its position in ``MOTION_CLASSES``."""
    if name not in MOTION_CLASSES:
        raise ValueError(f"unknown motion class {name!r}; expected one of {MOTION_CLASSES}")
    return MOTION_CLASSES.index(name)


def motion_spec(name: str) -> MotionSpec:
    """The ``MotionSpec`` of a motion class (raises ValueError for an unknown name)."""
    class_index(name)
    if name.startswith("translate_"):
        _, d, s = name.split("_")
        return MotionSpec(name, "translate", d, 45.0 * COMPASS.index(d), SPEEDS[int(s)])
    if name.startswith("pan_"):            # camera east -> content west (180 deg), and back
        return MotionSpec(name, "pan", "W" if name == "pan_E" else "E", 180.0 if name == "pan_E" else 0.0, PAN_SPEED)
    sign = 1.0 if name.endswith("_cw") else -1.0
    if name.startswith("circle_"):
        return MotionSpec(name, "circle", turn_deg=sign * CIRCLE_STEP_DEG, radius=CIRCLE_RADIUS)
    if name.startswith("rotate_"):
        return MotionSpec(name, "rotate", turn_deg=sign * ROTATE_STEP_DEG)
    if name.startswith("zoom_"):
        return MotionSpec(name, "zoom", scale_rate=ZOOM_RATE if name == "zoom_in" else 1.0 / ZOOM_RATE)
    if name == "bounce":
        return MotionSpec(name, "bounce", height=BOUNCE_HEIGHT)
    return MotionSpec(name, "static")


@dataclass(frozen=True)
class ObjectSpec:
    """One object: shape, colour name, texture, diameter and start centre (x, y) in frame px,
    initial angle (deg) and texture parameters (angle deg, period in object radii)."""

    shape: str
    colour: str
    texture: str
    size: float
    start: tuple[float, float]
    angle: float = 0.0
    tex_angle: float = 0.0
    tex_period: float = 0.6


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render a clip; ``render_clip(spec)`` is deterministic.

    seed drives the noise textures and grain; phase is the circle motion's start angle (deg;
    sampled specs use ``CIRCLE_PHASE_DEG``, explicit specs may set any); bg_colours
    are two colour names; bg_angle (deg) and bg_period (px at 64) shape the background.
    """

    motion: str
    seed: int
    frames: int = 8
    size: int = 64
    palette: str = "train"
    background: str = "gradient"
    bg_colours: tuple[str, str] = ("red", "blue")
    bg_angle: float = 0.0
    bg_period: float = 8.0
    phase: float = 0.0
    objects: tuple[ObjectSpec, ...] = ()

    n_objects = property(lambda self: len(self.objects), doc="number of objects")
    shapes = property(lambda self: tuple(o.shape for o in self.objects), doc="shape per object")
    colours = property(lambda self: tuple(o.colour for o in self.objects), doc="colour name per object")
    textures = property(lambda self: tuple(o.texture for o in self.objects), doc="texture per object")


def _check(frames: int, size: int, palette: str) -> None:
    if not MIN_FRAMES <= int(frames) <= MAX_FRAMES:
        raise ValueError(f"frames={frames}: toy clips have {MIN_FRAMES}..{MAX_FRAMES} frames")
    if int(size) < MIN_SIZE:
        raise ValueError(f"size={size}: toy clips are at least {MIN_SIZE} px")
    if palette not in PALETTES:
        raise ValueError(f"palette={palette!r}: expected one of {tuple(PALETTES)}")


def time_scale(frames: int) -> float:
    """Factor on the per-frame rates of a ``frames``-long clip: 1 up to 8 frames, then
    7 / (frames - 1), so every length covers the 8-frame clip's path (and stays in frame)."""
    return min(1.0, (MIN_FRAMES - 1) / (int(frames) - 1))


def object_track(motion: str, frames: int, size: int = 64, phase: float = 0.0):
    """Per-frame object transform relative to frame 0.

    Returns ``offsets`` (f 2) centre shift in frame px (x right, y down), ``angles`` (f) deg
    clockwise on screen, ``scales`` (f).
    """
    ms, k = motion_spec(motion), size / 64.0
    t = np.arange(frames, dtype=np.float64) * time_scale(frames)
    offsets, angles, scales = np.zeros((frames, 2)), np.zeros(frames), np.ones(frames)
    if ms.kind in ("translate", "pan"):
        offsets = np.outer(t, ms.velocity) * k
    elif ms.kind == "circle":
        a, a0 = np.radians(phase + ms.turn_deg * t), math.radians(phase)
        offsets = ms.radius * k * np.stack([np.cos(a) - math.cos(a0), np.sin(a) - math.sin(a0)], 1)
    elif ms.kind == "rotate":
        angles = ms.turn_deg * t
    elif ms.kind == "zoom":
        scales = ms.scale_rate ** t
    elif ms.kind == "bounce":
        tc = t[-1] / 2.0
        offsets[:, 1] = ms.height * k * (1.0 - np.abs(t - tc) / tc) ** 2
    return offsets, angles, scales


def _sample_appearance(rng: np.random.Generator, palette: str, n: int):
    pal = PALETTES[palette]
    colours = [str(c) for c in rng.permutation(pal["colours"])]
    obj_colours, bg_colours = colours[:n], tuple(colours[n:n + 2])
    looks = [(str(rng.choice(pal["shapes"])), str(c), str(rng.choice(pal["textures"])),
              float(rng.uniform(0, 360)), float(rng.uniform(0, 180)), float(rng.uniform(0.55, 0.8)))
             for c in obj_colours]
    bg = dict(background=str(rng.choice(pal["backgrounds"])), bg_colours=bg_colours,
              bg_angle=float(rng.uniform(0, 180)), bg_period=float(rng.uniform(8, 16)))
    return looks, bg


def _place(rng: np.random.Generator, motion: str, frames: int, size: int, diameters, phase: float):
    """Start centres keeping each object wholly in frame (1 px margin) in every frame, spread
    apart (the least overlapping of a few draws)."""
    offsets, _, scales = object_track(motion, frames, size, phase)
    boxes = []
    for d in diameters:
        r = d / 2.0 * scales[:, None]
        lo, hi = 1.0 + np.max(r - offsets, axis=0), size - 1.0 - np.max(r + offsets, axis=0)
        boxes.append([(a, b) if a <= b else ((a + b) / 2.0,) * 2 for a, b in zip(lo, hi)])
        if np.any(lo > hi):
            logger.warning("a %.1f px object cannot stay inside a %d px frame under %s; centring it", d, size, motion)
    best, best_gap = None, -math.inf
    for _ in range(12):
        pts = [(rng.uniform(*bx), rng.uniform(*by)) for bx, by in boxes]
        gaps = [math.dist(p, q) - (diameters[i] + diameters[j]) / 2.0
                for i, p in enumerate(pts) for j, q in enumerate(pts) if i < j]
        gap = min(gaps) if gaps else 0.0
        if gap > best_gap:
            best, best_gap = pts, gap
        if gap >= 0.0:
            break
    return [(float(x), float(y)) for x, y in best]


_DIAMETERS = {"zoom_in": (14, 18), "zoom_out": (22, 28), "rotate_cw": (22, 28), "rotate_ccw": (22, 28)}  # px at 64


def sample_clip_spec(rng: Union[np.random.Generator, int], motion: Optional[str] = None, frames: int = 8,
                     size: int = 64, objects: Optional[int] = None, palette: str = "train") -> ClipSpec:
    """A random ``ClipSpec`` drawn from ``palette`` (motion uniform over classes when None)."""
    _check(frames, size, palette)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    motion = str(rng.choice(MOTION_CLASSES)) if motion is None else MOTION_CLASSES[class_index(motion)]
    n = int(rng.integers(1, 4)) if objects is None else int(objects)
    if not 1 <= n <= 3:
        raise ValueError(f"objects={objects}: a toy clip has 1..3 objects")
    lo, hi = _DIAMETERS.get(motion, (16, 24))
    diameters = [float(rng.uniform(lo, hi)) * size / 64.0 for _ in range(n)]
    rng.uniform(0, 360)   # the former random circle phase: still drawn, so every seed keeps its other draws
    phase = CIRCLE_PHASE_DEG
    looks, bg = _sample_appearance(rng, palette, n)
    starts = _place(rng, motion, frames, size, diameters, phase)
    objs = tuple(ObjectSpec(s, c, tx, d, st, a, ta, tp)
                 for (s, c, tx, a, ta, tp), d, st in zip(looks, diameters, starts))
    return ClipSpec(motion, int(rng.integers(0, 2**31 - 1)), int(frames), int(size), palette,
                    phase=phase, objects=objs, **bg)


def first_frame_variants(spec: ClipSpec, n: int, seed: int, palette: str = "heldout") -> list[ClipSpec]:
    """``n`` specs with ``spec``'s motion, length, size and layout (object count, sizes, start
    positions, circle phase) but a new appearance drawn from ``palette``.

    ``render_clip`` of a variant is the ideal transfer of ``spec``'s motion onto the variant's
    first frame (a ground truth for motion-transfer checks).
    """
    _check(spec.frames, spec.size, palette)
    rng, out = np.random.default_rng(seed), []
    for _ in range(n):
        looks, bg = _sample_appearance(rng, palette, spec.n_objects)
        objs = tuple(dataclasses.replace(o, shape=s, colour=c, texture=tx, angle=a, tex_angle=ta, tex_period=tp)
                     for o, (s, c, tx, a, ta, tp) in zip(spec.objects, looks))
        out.append(dataclasses.replace(spec, seed=int(rng.integers(0, 2**31 - 1)), palette=palette, objects=objs, **bg))
    return out


# ----------------------------------------------------------------------------- rendering
def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1], (h w), features about ``cell`` px."""
    small = rng.random((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2))).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip((big - big.min()) / max(1e-6, float(np.ptp(big))), 0.0, 1.0)


def _pattern(kind: str, rng: np.random.Generator, h: int, w: int, angle: float, period: float) -> np.ndarray:
    """Two-tone mix weight in [0, 1], (h w), for a pattern kind; ``period`` in px."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u, v = x * ca + y * sa, -x * sa + y * ca                                   # rotated pixel grid
    if kind == "stripes":
        return (np.sin(np.pi * u / period) > 0).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "dots":
        du, dv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
        return (du * du + dv * dv < 0.09).astype(np.float32)
    if kind == "grid":
        du, dv = np.abs((u / period) % 1.0 - 0.5), np.abs((v / period) % 1.0 - 0.5)
        return ((du > 0.36) | (dv > 0.36)).astype(np.float32)
    if kind == "noise":
        coarse, fine = _value_noise(rng, h, w, period), _value_noise(rng, h, w, period / 2)
        return (coarse > 0.5).astype(np.float32) * 0.7 + 0.3 * fine
    if kind == "gradient":
        return (u - u.min()) / max(1e-6, float(np.ptp(u)))
    return np.zeros((h, w), np.float32)                                      # plain


def _grain(rng: np.random.Generator, h: int, w: int, amplitude: float) -> np.ndarray:
    g = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.9 * SUPERSAMPLE)
    return g / max(1e-6, float(g.std())) * amplitude


def _mix(weight: np.ndarray, c1, c2) -> np.ndarray:
    return np.asarray(c1, np.float32) * (1.0 - weight[..., None]) + np.asarray(c2, np.float32) * weight[..., None]


def _background(spec: ClipSpec, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Background canvas (h w 3) at supersampled resolution, muted light/dark tones + grain."""
    k = spec.size / 64.0 * SUPERSAMPLE
    c1, c2 = (np.asarray(COLOURS[c], np.float32) for c in spec.bg_colours)
    light, dark = 0.25 * c1 + 0.55, 0.25 * c2 + 0.42
    img = _mix(_pattern(spec.background, rng, h, w, spec.bg_angle, spec.bg_period * k), light, dark)
    if spec.background != "plain":
        img = img + _grain(rng, h, w, 0.05)[..., None]
    return img


_A, _B = 0.32, 0.92
_POLYGONS = {   # unit-disk coordinates, v down; circle and ring are discs (outer, inner radius)
    "square": [(-0.68, -0.68), (0.68, -0.68), (0.68, 0.68), (-0.68, 0.68)],
    "triangle": [(0.0, -0.95), (0.82, 0.475), (-0.82, 0.475)],
    "cross": [(-_A, -_B), (_A, -_B), (_A, -_A), (_B, -_A), (_B, _A), (_A, _A), (_A, _B), (-_A, _B), (-_A, _A),
              (-_B, _A), (-_B, -_A), (-_A, -_A)],
    "star": [((0.95, 0.55)[i % 2] * math.cos(math.radians(-90 + 36 * i)),
              (0.95, 0.55)[i % 2] * math.sin(math.radians(-90 + 36 * i))) for i in range(10)],
    "diamond": [(0.0, -0.95), (0.6, 0.0), (0.0, 0.95), (-0.6, 0.0)],
    "ell": [(-0.7, -0.8), (0.05, -0.8), (0.05, 0.0), (0.7, 0.0), (0.7, 0.8), (-0.7, 0.8)],
}
_DISCS = {"circle": (0.93, 0.0), "ring": (0.93, 0.3)}
_MARKER = (0.28, 0.34)          # inside every shape, off centre: makes rotation visible


def _shape_mask(shape: str, n: int) -> np.ndarray:
    """Anti-aliased mask (n n) float in [0, 1] of a shape inscribed in the sprite's unit disk."""
    if shape not in _POLYGONS and shape not in _DISCS:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    mask, c, half, sh = np.zeros((n, n), np.uint8), (n - 1) / 2.0, n / 2.0 - 1, 4
    if shape in _POLYGONS:
        pts = np.round((np.asarray(_POLYGONS[shape]) * half + c) * (1 << sh)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA, sh)
    else:
        for r, val in zip(_DISCS[shape], (255, 0)):
            if r > 0:
                cv2.circle(mask, (round(c * 16), round(c * 16)), round(r * half * 16), val, -1, cv2.LINE_AA, 4)
    return mask.astype(np.float32) / 255.0


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _sprite(obj: ObjectSpec, rng: np.random.Generator, n: int, bg_lum: float) -> np.ndarray:
    """Premultiplied RGBA sprite (n n 4): textured shape + an off-centre marker (breaks symmetry).
    A colour as bright as the background (``bg_lum``) is darkened or lightened, keeping its
    hue, so the silhouette shows in grey (what KLT sees)."""
    col = np.asarray(COLOURS[obj.colour], np.float32)
    lum, target = float(col @ _LUMA), (bg_lum - 0.3 if bg_lum > 0.5 else bg_lum + 0.3)
    if abs(lum - bg_lum) < 0.3:
        col = col * (target / lum) if bg_lum > 0.5 else 1.0 - (1.0 - col) * (1.0 - target) / (1.0 - lum)
    lum = float(col @ _LUMA)
    other = col * 0.3 if lum > 0.45 else col * 0.35 + 0.6
    period = obj.tex_period * n / 2.0
    rgb = _mix(_pattern(obj.texture, rng, n, n, obj.tex_angle, period), col, other)
    mark = 0.05 if lum > 0.45 else 0.97
    centre = tuple(round(((n - 1) / 2.0 + m * (n / 2.0 - 1)) * 16) for m in _MARKER)
    cv2.circle(rgb, centre, max(16, round(0.08 * n * 16)), (mark, mark, mark), -1, cv2.LINE_AA, 4)
    rgb = np.clip(rgb + _grain(rng, n, n, 0.1)[..., None], 0.0, 1.0)
    a = _shape_mask(obj.shape, n)
    return np.concatenate([rgb * a[..., None], a[..., None]], -1)


def render_clip(spec: ClipSpec) -> torch.Tensor:
    """Render a clip: ``(f h w c)`` float32 RGB in [0, 1], h = w = ``spec.size``, c = 3."""
    _check(spec.frames, spec.size, spec.palette)
    ms, rng = motion_spec(spec.motion), np.random.default_rng(spec.seed)
    size, f, ss, big = spec.size, spec.frames, SUPERSAMPLE, spec.size * SUPERSAMPLE
    offsets, angles, scales = object_track(spec.motion, f, size, spec.phase)
    if ms.kind == "pan":                     # a wider background, cropped by a moving window
        pad = np.ceil(np.abs(offsets[-1]) * ss).astype(int) + 2
        bg = _background(spec, rng, big + pad[1], big + pad[0])
        origin = np.where(offsets[-1] < 0, 0.0, pad - 1.0)[None] - offsets * ss      # (f 2)
    else:
        bg, origin = _background(spec, rng, big, big), np.zeros((f, 2))
    smax, bg_lum = max(1.0, float(scales.max())), float((bg @ _LUMA).mean())   # sprites at the largest size
    sprites = [_sprite(obj, rng, int(math.ceil(obj.size * ss * smax)) | 1, bg_lum) for obj in spec.objects]
    out = np.empty((f, size, size, 3), np.float32)
    for t in range(f):
        m = np.float32([[1, 0, -origin[t, 0]], [0, 1, -origin[t, 1]]])
        canvas = cv2.warpAffine(bg, m, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for obj, sp in zip(spec.objects, sprites):
            n, a = sp.shape[0], math.radians(obj.angle + angles[t])      # + clockwise on screen (y down)
            rot = obj.size * ss * scales[t] / n * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            centre = (np.asarray(obj.start) + offsets[t]) * ss
            mat = np.concatenate([rot, (centre - rot @ np.full(2, (n - 1) / 2.0))[:, None]], 1).astype(np.float32)
            warped = cv2.warpAffine(sp, mat, (big, big), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
            canvas = canvas * (1.0 - warped[..., 3:]) + warped[..., :3]
        out[t] = cv2.resize(np.clip(canvas, 0, 1), (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.clip(out, 0.0, 1.0))


def make_clip(motion: str, seed: int, frames: int = 8, size: int = 64, palette: str = "train",
              objects: Optional[int] = None) -> tuple[torch.Tensor, ClipSpec]:
    """Sample and render one clip of ``motion``: ``((f h w c) frames, ClipSpec)``."""
    spec = sample_clip_spec(np.random.default_rng(seed), motion, frames, size, objects, palette)
    return render_clip(spec), spec


def make_dataset(n: int, seed: int, frames: int = 8, size: int = 64, palette: str = "train",
                 classes: Optional[Sequence[str]] = None) -> Iterator[tuple[torch.Tensor, int]]:
    """Yield ``n`` training pairs ``((f h w c) frames, class_index)``, balanced over ``classes``
    (default: all): each run of ``len(classes)`` samples holds every class once, shuffled."""
    classes = tuple(MOTION_CLASSES[class_index(c)] for c in (MOTION_CLASSES if classes is None else classes))
    rng, order = np.random.default_rng(seed), []
    for _ in range(n):
        if not order:
            order = [classes[j] for j in rng.permutation(len(classes))]
        motion = order.pop()
        yield render_clip(sample_clip_spec(rng, motion, frames, size, None, palette)), class_index(motion)


# The SVD-like toy model's training clips: the scene makes some motions likelier, never certain.
# Per object count, the kinds drawn more often than the others (weight 1): a lone object
# tends to spin, zoom or circle, a pair to bounce or circle, a crowd to travel or be panned
# past; ``static`` is drawn half as often. The count is visible in the first frame, so a
# model sees a scene-dependent distribution with a spread over every class.
SCENE_KIND_WEIGHTS = {1: {"rotate": 3.0, "zoom": 3.0, "circle": 2.0, "static": 0.5},
                      2: {"bounce": 3.0, "circle": 2.0, "static": 0.5},
                      3: {"translate": 2.0, "pan": 3.0, "static": 0.5}}


def scene_motion_weights(objects: int) -> np.ndarray:
    """Probabilities ``(classes)`` of each motion class for a scene of ``objects`` objects (1..3)."""
    if objects not in SCENE_KIND_WEIGHTS:
        raise ValueError(f"objects={objects}: a toy clip has 1..3 objects")
    kinds = SCENE_KIND_WEIGHTS[objects]
    weights = np.array([kinds.get(motion_spec(name).kind, 1.0) for name in MOTION_CLASSES])
    return weights / weights.sum()


def make_scene_dataset(n: int, seed: int, frames: int = 8, size: int = 64,
                       palette: str = "train") -> Iterator[tuple[torch.Tensor, int]]:
    """Yield ``n`` training pairs ``((f h w c) frames, class_index)`` whose motion the scene makes
    likelier but does not fix: the object count is drawn first (1..3, uniform), then the motion
    from ``scene_motion_weights`` of that count, then the rest of the scene (``sample_clip_spec``,
    which also places and sizes objects for the motion, as real scenes hint at theirs)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        objects, motion = draw_scene_motion(rng)
        yield render_clip(sample_clip_spec(rng, motion, frames, size, objects, palette)), class_index(motion)


def draw_scene_motion(rng: np.random.Generator) -> tuple[int, str]:
    """An object count (1..3, uniform) and a motion class drawn by ``scene_motion_weights`` of it."""
    objects = int(rng.integers(1, 4))
    return objects, MOTION_CLASSES[int(rng.choice(len(MOTION_CLASSES), p=scene_motion_weights(objects)))]


def make_target_specs(n: int, seed: int, size: int = 64, palette: str = "heldout", motion: str = "static",
                      frames: int = 8) -> list[ClipSpec]:
    """Specs of ``n`` new scenes; objects are placed so that ``motion`` keeps them in frame, so
    ``render_clip(spec)`` is the ideal animation of the scene's first frame with ``motion``."""
    rng = np.random.default_rng(seed)
    return [sample_clip_spec(rng, motion, frames, size, None, palette) for _ in range(n)]


def make_target_images(n: int, seed: int, size: int = 64, palette: str = "heldout", motion: str = "static",
                       frames: int = 8) -> torch.Tensor:
    """First frames of ``n`` new scenes to animate, ``(n h w c)`` float32 in [0, 1]: frame 0 of
    each of ``make_target_specs(...)`` with the same arguments."""
    return first_frames(make_target_specs(n, seed, size, palette, motion, frames))


def first_frames(specs: Sequence[ClipSpec]) -> torch.Tensor:
    """Frame 0 of each scene, ``(n h w c)`` float32 in [0, 1]."""
    return torch.stack([render_clip(s)[0] for s in specs])
