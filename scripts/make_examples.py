"""Draws the pack's example inputs and its icon, procedurally (made by the project, MIT like the rest).

    python scripts/make_examples.py            # rewrites example_inputs/* and icon.png

- ``example_inputs/motion_inversion_example_reference.webm``: 14 frames, 1024 x 576, 6 fps, VP9:
  a camera trucking right past a landscape (sky, sun, three ranges of hills and a row of
  trees; nearer layers slide faster, so the motion is a clear pan with parallax).
- ``example_inputs/motion_inversion_example_target_{1,2,3}.png``: 1024 x 576 still scenes unlike
  the reference (a harbour with a lighthouse, a city at dusk, a snowy forest): the images
  the SVD workflows animate.
- ``icon.png``: 256 x 256, the Comfy Registry icon (a ball leaving a trail along a curve).

The pack copies the examples into ComfyUI's input folder on load (``nodes/examples.py``),
so the shipped workflows name them. Everything is drawn with OpenCV and numpy (runtime
dependencies already) from fixed numbers: no randomness, no downloads.
"""
from __future__ import annotations

import logging
import os
import sys

import cv2
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES_DIR = os.path.join(REPO_ROOT, "example_inputs")
ICON_PATH = os.path.join(REPO_ROOT, "icon.png")
REFERENCE_NAME = "motion_inversion_example_reference.webm"
TARGET_NAMES = [f"motion_inversion_example_target_{k}.png" for k in (1, 2, 3)]
WIDTH, HEIGHT, FRAMES, FPS = 1024, 576, 14, 6.0
PAN_PX = 22                      # nearest layer's shift per frame; farther layers move less

log = logging.getLogger(__name__)


def _gradient(height: int, width: int, top, bottom) -> np.ndarray:
    """A vertical gradient, RGB uint8 ``(height width 3)``."""
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    column = (1 - t) * np.asarray(top, float) + t * np.asarray(bottom, float)
    return np.repeat(column, width, axis=1).round().astype(np.uint8)


def _ridge(width: int, base: float, waves) -> np.ndarray:
    """Heights (in pixels from the top) of a hill outline: ``base`` plus sines ``(amplitude, period, phase)``."""
    x = np.arange(width, dtype=float)
    return base + sum(a * np.sin(2 * np.pi * x / period + phase) for a, period, phase in waves)


def _fill_below(image: np.ndarray, ridge: np.ndarray, colour) -> None:
    rows = np.arange(image.shape[0])[:, None]
    image[rows >= ridge[None, :]] = colour


def _landscape_layers(width: int):
    """The reference scene as layers (image, mask) from far to near, each ``width`` wide."""
    sky = _gradient(HEIGHT, width, (90, 150, 230), (250, 215, 170))
    cv2.circle(sky, (width // 3, 150), 60, (255, 240, 190), -1, cv2.LINE_AA)
    layers = [(sky, np.ones((HEIGHT, width), bool))]
    hills = ((300, [(40, 700, 0.3), (15, 230, 1.0)], (120, 140, 175)),
             (380, [(30, 520, 2.0), (12, 170, 0.2)], (80, 140, 90)),
             (470, [(18, 410, 1.1), (6, 90, 0.7)], (50, 105, 55)))
    for index, (base, waves, colour) in enumerate(hills):
        image = np.zeros((HEIGHT, width, 3), np.uint8)          # black = empty (no drawn colour is black)
        ridge = _ridge(width, base, waves)
        _fill_below(image, ridge, colour)
        if index == len(hills) - 1:
            for x in range(40, width, 170):                      # trees on the nearest ridge
                ground = int(ridge[x])
                cv2.rectangle(image, (x - 6, ground - 60), (x + 6, ground + 5), (90, 60, 35), -1)
                crown = np.array([(x - 38, ground - 45), (x + 38, ground - 45), (x, ground - 150)])
                cv2.fillPoly(image, [crown], (30, 90, 45))
        layers.append((image, image.any(axis=-1)))
    return layers


def reference_frames(frames: int = FRAMES) -> list[np.ndarray]:
    """The reference clip's frames, RGB uint8 ``(576 1024 3)``: the camera trucks right (content moves left)."""
    speeds = [0.0, 0.25, 0.5, 1.0]                                # sky, far, middle, near hills
    width = WIDTH + PAN_PX * frames + 8
    layers = _landscape_layers(width)
    out = []
    for f in range(frames):
        frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        for (image, mask), speed in zip(layers, speeds):
            x0 = int(round(speed * PAN_PX * f))
            window = mask[:, x0:x0 + WIDTH]
            frame[window] = image[:, x0:x0 + WIDTH][window]
        out.append(frame)
    return out


def _harbour() -> np.ndarray:
    image = _gradient(HEIGHT, WIDTH, (120, 180, 235), (215, 235, 250))
    image[330:] = _gradient(HEIGHT - 330, WIDTH, (40, 110, 160), (20, 60, 110))
    for y in range(345, HEIGHT, 22):                             # wave lines
        cv2.line(image, (0, y), (WIDTH, y + 4), (70, 140, 185), 2, cv2.LINE_AA)
    cv2.fillPoly(image, [np.array([(620, 330), (1024, 250), (1024, 330)])], (150, 130, 100), cv2.LINE_AA)
    cv2.fillPoly(image, [np.array([(820, 300), (860, 300), (850, 120), (830, 120)])], (240, 240, 235), cv2.LINE_AA)
    for y in (160, 220):
        cv2.fillPoly(image, [np.array([(826 + (y - 120) // 10, y), (854 - (y - 120) // 10, y),
                                        (855 - (y - 120) // 10, y + 25), (825 + (y - 120) // 10, y + 25)])], (200, 40, 40))
    cv2.rectangle(image, (822, 95), (858, 120), (250, 220, 90), -1)
    cv2.fillPoly(image, [np.array([(815, 95), (865, 95), (840, 70)])], (200, 40, 40), cv2.LINE_AA)
    cv2.fillPoly(image, [np.array([(250, 400), (430, 400), (400, 430), (280, 430)])], (140, 70, 40), cv2.LINE_AA)
    cv2.fillPoly(image, [np.array([(335, 395), (335, 260), (420, 395)])], (250, 250, 245), cv2.LINE_AA)
    cv2.circle(image, (160, 110), 45, (255, 250, 220), -1, cv2.LINE_AA)
    return image


def _city() -> np.ndarray:
    image = _gradient(HEIGHT, WIDTH, (30, 30, 80), (230, 120, 90))
    cv2.circle(image, (760, 380), 90, (250, 170, 90), -1, cv2.LINE_AA)
    x = 0
    for k, (w, h) in enumerate([(90, 260), (70, 330), (120, 210), (80, 400), (100, 290), (60, 350),
                                (110, 240), (90, 310), (75, 220), (95, 380), (85, 270), (70, 300)]):
        top = HEIGHT - h
        shade = 25 + 12 * (k % 3)
        cv2.rectangle(image, (x, top), (x + w - 4, HEIGHT), (shade, shade, shade + 20), -1)
        for wy in range(top + 15, HEIGHT - 20, 28):
            for wx in range(x + 10, x + w - 18, 20):
                if (wx * 7 + wy * 3 + k) % 5 < 3:
                    cv2.rectangle(image, (wx, wy), (wx + 8, wy + 12), (250, 215, 120), -1)
        x += w
    return image


def _forest() -> np.ndarray:
    image = _gradient(HEIGHT, WIDTH, (170, 200, 230), (235, 240, 245))
    cv2.fillPoly(image, [np.array([(0, 330), (260, 120), (520, 330)])], (150, 160, 185), cv2.LINE_AA)
    cv2.fillPoly(image, [np.array([(380, 340), (700, 90), (1024, 340)])], (135, 145, 175), cv2.LINE_AA)
    cv2.fillPoly(image, [np.array([(630, 150), (700, 90), (770, 150), (730, 140), (700, 160), (670, 140)])],
                 (250, 250, 255), cv2.LINE_AA)
    image[400:] = _gradient(HEIGHT - 400, WIDTH, (240, 243, 250), (215, 222, 235))
    for k, x in enumerate(range(30, WIDTH, 95)):
        base = 430 + 40 * (k % 2)
        height = 200 + 30 * (k % 3)
        cv2.rectangle(image, (x - 7, base - 20), (x + 7, base + 25), (80, 55, 35), -1)
        for level in range(3):
            half = 60 - 14 * level
            y = base - level * height // 4
            cv2.fillPoly(image, [np.array([(x - half, y), (x + half, y), (x, y - height // 2)])],
                         (25 + 10 * level, 80 + 10 * level, 55), cv2.LINE_AA)
            cv2.fillPoly(image, [np.array([(x - half // 3, y - height // 3), (x + half // 3, y - height // 3),
                                            (x, y - height // 2)])], (245, 248, 252), cv2.LINE_AA)
    return image


def target_images() -> list[np.ndarray]:
    """The three target scenes, RGB uint8 ``(576 1024 3)``."""
    return [_harbour(), _city(), _forest()]


def icon(size: int = 256) -> np.ndarray:
    """The registry icon, RGB uint8 ``(size size 3)``: a ball leaving fading copies along an arc."""
    scale = size / 256.0
    image = _gradient(size, size, (40, 45, 90), (25, 110, 140))
    points = [(40, 200), (70, 150), (110, 112), (158, 92), (212, 96)]
    xs = np.linspace(18, 212, 40)
    ys = np.polyval(np.polyfit(*np.array(points, float).T, 2), xs)         # the smooth path the ball took
    trail = np.stack([xs * scale, ys * scale], -1).round().astype(np.int32)
    cv2.polylines(image, [trail], False, (230, 235, 245), max(1, int(3 * scale)), cv2.LINE_AA)
    for k, (x, y) in enumerate(points):
        share = (k + 1) / len(points)
        colour = tuple(int(round(c * share + b * (1 - share))) for c, b in zip((255, 190, 70), (60, 80, 120)))
        cv2.circle(image, (int(x * scale), int(y * scale)), int((10 + 6 * k) * scale), colour, -1, cv2.LINE_AA)
    return image


def _write_rgb_png(path: str, image: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"OpenCV could not write {path}")


def write_video(path: str, frames: list[np.ndarray], fps: float = FPS) -> None:
    """Writes RGB frames as WebM (VP9), which browsers preview and OpenCV/ffmpeg read everywhere."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"VP90"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"this OpenCV build cannot write VP9 WebM ({path})")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.makedirs(EXAMPLES_DIR, exist_ok=True)
    reference = os.path.join(EXAMPLES_DIR, REFERENCE_NAME)
    write_video(reference, reference_frames())
    written = [reference]
    for name, image in zip(TARGET_NAMES, target_images()):
        written.append(os.path.join(EXAMPLES_DIR, name))
        _write_rgb_png(written[-1], image)
    _write_rgb_png(ICON_PATH, icon())
    written.append(ICON_PATH)
    for path in written:
        log.info("wrote %s (%d KB)", os.path.relpath(path, REPO_ROOT), os.path.getsize(path) // 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
