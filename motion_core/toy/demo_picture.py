"""The demo's pictures: a labelled PNG grid and an animated WEBP of the same rows.

Every row has a label column saying what it is (the reference and its motion, a target
with the learned motion, the same target without) and the row clip's reading: the motion
class by dense flow (``denseflow.classify_motion_dense``) and the Motion Fidelity Score
against the reference on moving points only (``metrics.motion_fidelity_score(...,
moving_only=True)``). A header band states the expected motion and the settings.

Clips are ``(f h w c)`` float tensors or arrays in 0..1; pictures are drawn with OpenCV
(``cv2.putText``) on uint8 RGB arrays; the animated file is written with Pillow (which the
demo already uses for its WEBP clips, and diffusers requires).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.5
LINE_HEIGHT = 20
MARGIN = 8
BACKGROUND = (245, 245, 245)
INK = (20, 20, 20)
GOOD = (0, 120, 40)
BAD = (190, 30, 30)


@dataclasses.dataclass
class Line:
    """One line of label text; ``bold`` for titles, ``colour`` RGB."""
    text: str
    colour: tuple = INK
    bold: bool = False


@dataclasses.dataclass
class Row:
    """A labelled row: the label lines and one or more clips ``(f h w c)`` in 0..1 shown in it."""
    lines: list
    clips: list


def _uint8(clip) -> np.ndarray:
    array = clip.numpy() if hasattr(clip, "numpy") else np.asarray(clip)
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


def _scaled(image: np.ndarray, scale: int) -> np.ndarray:
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale != 1 else image


def text_lines(canvas: np.ndarray, lines: Sequence[Line], x: int, y: int) -> None:
    """Draws ``lines`` onto ``canvas`` (uint8 RGB, in place) from the top-left corner ``(x, y)``."""
    for i, line in enumerate(lines):
        baseline = y + (i + 1) * LINE_HEIGHT - 6
        cv2.putText(canvas, line.text, (x, baseline), FONT, FONT_SCALE, line.colour, 2 if line.bold else 1, cv2.LINE_AA)


def _text_width(lines: Sequence[Line]) -> int:
    return max([cv2.getTextSize(line.text, FONT, FONT_SCALE, 2 if line.bold else 1)[0][0] for line in lines] or [0])


def compose(header: Sequence[Line], rows: Sequence[tuple[Sequence[Line], Sequence[np.ndarray]]]) -> np.ndarray:
    """One picture: a header band, then per row a label column and its cell images side by side.

    ``rows``: (label lines, cells), each cell uint8 ``(h w 3)``; cells of a column share a width,
    cells of a row a height (a row may have fewer cells: the rest stays blank). The label
    column and the header are as wide as their longest line.
    """
    label_width = max(_text_width(lines) for lines, _c in rows) + 2 * MARGIN
    widths = [max(cells[c].shape[1] for _l, cells in rows if len(cells) > c)
              for c in range(max(len(cells) for _l, cells in rows))]
    heights = [max([cells[0].shape[0] if cells else 0, len(lines) * LINE_HEIGHT + MARGIN]) for lines, cells in rows]
    header_height = len(header) * LINE_HEIGHT + 2 * MARGIN
    width = max(label_width + sum(widths) + len(widths), _text_width(header) + 2 * MARGIN)
    canvas = np.empty((header_height + sum(heights) + len(rows), width, 3), np.uint8)
    canvas[:] = BACKGROUND
    text_lines(canvas, header, MARGIN, MARGIN)
    y = header_height
    for (lines, cells), height in zip(rows, heights):
        canvas[y] = 190                                           # a thin rule above each row
        text_lines(canvas, lines, MARGIN, y + MARGIN // 2)
        x = label_width
        for cell, cell_width in zip(cells, widths):
            canvas[y + 1:y + 1 + cell.shape[0], x:x + cell.shape[1]] = cell
            x += cell_width + 1
        y += height + 1
    return canvas


def grid_picture(header: Sequence[Line], rows: Sequence[Row], scale: int = 2) -> np.ndarray:
    """The still grid: each row's first clip with its frames left to right."""
    strips = [(row.lines, [_scaled(np.concatenate(list(_uint8(row.clips[0])), axis=1), scale)]) for row in rows]
    return compose(header, strips)


def animated_frames(header: Sequence[Line], rows: Sequence[Row], scale: int = 3) -> list[np.ndarray]:
    """The animated grid's frames: every row's clips playing side by side."""
    clips = [[_uint8(clip) for clip in row.clips] for row in rows]
    count = max(len(clip) for row in clips for clip in row)
    return [compose(header, [(row.lines, [_scaled(clip[min(t, len(clip) - 1)], scale) for clip in row_clips])
                             for row, row_clips in zip(rows, clips)])
            for t in range(count)]


def save_png(image: np.ndarray, path: str) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"OpenCV could not write {path!r}")


def save_animated_webp(frames: Sequence[np.ndarray], path: str, fps: int = 4, quality: int = 90) -> bool:
    """Writes an animated WEBP with Pillow; returns False (and logs why) when Pillow cannot."""
    try:
        from PIL import Image, features
    except ImportError:
        log.info("Pillow is not installed: skipping the animated grid %s", path)
        return False
    if not features.check("webp"):
        log.info("this Pillow cannot write animated WEBP: skipping the animated grid %s", path)
        return False
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                   quality=quality, method=4)
    return True


# ----------------------------------------------------------------------------- the demo's labels
def _fmt(value) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"


def reading_lines(reading: dict, expected: Optional[str], judge: bool = True) -> list[Line]:
    """A generated clip's reading (``toyeval.score`` output): the class by dense flow, compared
    with the expected motion (in green / red when ``judge``, else in plain ink: a clip made
    without the motion is not meant to show it), and the moving-points Motion Fidelity Score."""
    dense = reading["dense_class"]
    verdict, colour = "", INK
    if expected is not None:
        verdict = " = expected" if dense == expected else " != expected"
        if judge:
            colour = GOOD if dense == expected else BAD
    return [Line(f"dense flow: {dense}{verdict}", colour),
            Line(f"MFS on moving points: {_fmt(reading['motion_fidelity_moving'])}")]


def demo_header(expected: Optional[str], variant: str, steps: int, sample_steps: int, guidance: tuple) -> list[Line]:
    motion = expected if expected is not None else "unknown (your clip)"
    return [Line(f"Motion Inversion toy demo - expected motion: {motion}", bold=True),
            Line(f"learned from the reference ({variant}, {steps} steps); applied to new targets with "
                 f"CFG {guidance[0]:g}->{guidance[1]:g}, {sample_steps} sampling steps"),
            Line("reading: class by dense flow, Motion Fidelity Score vs reference on moving points")]


def demo_rows(reference, reference_lines: list[Line], targets: Sequence[tuple], expected: Optional[str]) -> tuple:
    """(still rows, animated rows) for the reference and each ``(moved, baseline, report_entry)``."""
    still = [Row([Line("reference", bold=True), *reference_lines], [reference])]
    animated = [Row([Line("reference", bold=True), *reference_lines], [reference])]
    for index, (moved, baseline, entry) in enumerate(targets, start=1):
        still.append(Row([Line(f"target {index}, learned motion", bold=True),
                          *reading_lines(entry["with_motion"], expected)], [moved]))
        still.append(Row([Line(f"target {index}, no motion", bold=True),
                          *reading_lines(entry["no_motion"], expected, judge=False)], [baseline]))
        with_lines, without_lines = reading_lines(entry["with_motion"], expected), reading_lines(entry["no_motion"], expected, judge=False)
        animated.append(Row([Line(f"target {index}", bold=True),
                             Line("left: learned motion", bold=True), *with_lines,
                             Line("right: no motion", bold=True), *without_lines], [moved, baseline]))
    return still, animated


def write_demo_pictures(out_png: str, out_webp: str, header: list[Line], still: list[Row],
                        animated: list[Row]) -> Optional[str]:
    """Writes the labelled PNG and the animated WEBP; returns the WEBP's path, or None if skipped."""
    save_png(grid_picture(header, still), out_png)
    frames = animated_frames(header, animated)
    return out_webp if save_animated_webp(frames, out_webp) else None
