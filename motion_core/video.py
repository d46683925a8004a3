"""Reading the reference video: the clip whose motion is inverted.

Sources: a video file (mp4, webm, avi, mov, mkv and animated GIF through OpenCV; animated
WebP, and GIF as a fallback, through Pillow) or a folder of images. Frames are decoded in
order, only the selected ones are kept, and each is resized (scale to cover, centre crop)
as soon as it is decoded, so memory holds ``f h w c`` of the *output* only.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".gif", ".webp")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FPS = 8.0

_SUPPORTED = (
    f"a video file ({', '.join(VIDEO_EXTENSIONS)}) or a folder of images "
    f"({', '.join(IMAGE_EXTENSIONS)})"
)


class VideoReadError(ValueError):
    """The reference video cannot be used; the message says what, what was expected and the fix."""


@dataclass
class ReferenceVideo:
    """Frames taken from a reference video.

    frames: (f h w c) float32 in [0, 1], c = 3 (RGB).
    fps: the source's frame rate (``DEFAULT_FPS`` when the source has none; see ``notes``).
    source_frame_count: frames in the source.
    indices: the source frame index of each of the ``f`` returned frames.
    """

    frames: torch.Tensor
    fps: float
    source_frame_count: int
    indices: list[int]
    path: str
    notes: list[str] = field(default_factory=list)


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name.lower())]


MAX_SIZE = 16384      # output width / height: far beyond any video model's
SIZE_STEP = 16        # output sides: Wan 2.1's token stride (VAE 8 x patch 2), so its 832 x 480; SVD needs 8
MAX_INDEX = 1 << 31   # frame numbers, counts and strides
MAX_FRAMES = 4096     # frames read at once (the node offers up to 128)


def _whole(name: str, value, low: int, high: int = MAX_INDEX) -> int:
    """``value`` as an int in [low, high]; bools, floats (NaN, inf) and strings are refused by name."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise VideoReadError(f"{name}={value!r:.60} is not usable: it must be a whole number from {low} to {high}. "
                             f"Set {name} to such a number.")
    return int(value)


def _check_size(name: str, value: int) -> None:
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0
            or value % SIZE_STEP or value > MAX_SIZE):
        try:
            nearest = min(MAX_SIZE, max(SIZE_STEP, int(round(float(value) / SIZE_STEP)) * SIZE_STEP))
        except (TypeError, ValueError, OverflowError):
            nearest = SIZE_STEP
        raise VideoReadError(
            f"{name}={value!r:.60} is not usable: the output {name} must be a positive multiple of {SIZE_STEP} "
            f"up to {MAX_SIZE}. "
            f"Use {name}={nearest} (the nearest multiple of {SIZE_STEP})."
        )


def _clean_path(path) -> str:
    """Accept str / PathLike; strip whitespace and the quotes a pasted path often carries."""
    return os.path.expanduser(os.fspath(path).strip().strip("\"'"))


def select_frame_indices(
    total: int, frames: int, start: int = 0, end: int = -1, stride: int = 0, *, source: str = "The source"
) -> list[int]:
    """Pick ``frames`` source frame indices out of ``total``.

    ``end`` is inclusive; negative counts from the end (-1 = last frame). ``start`` is clamped
    to >= 0 and ``end`` to <= total - 1. ``stride == 0`` spreads the frames evenly over
    [start, end], both ends included; ``stride > 0`` takes every stride-th frame from
    ``start``. Raises VideoReadError (saying both counts) when too few frames are available.
    """
    if isinstance(frames, (int, np.integer)) and not isinstance(frames, bool) and frames < 1:
        raise VideoReadError(f"frames={frames} is not usable: at least 1 frame must be asked for. Set frames >= 1.")
    if isinstance(stride, (int, np.integer)) and not isinstance(stride, bool) and stride < 0:
        raise VideoReadError(f"stride={stride} is not usable: it must be 0 (spread evenly) or a positive step.")
    frames, stride = _whole("frames", frames, 1, MAX_FRAMES), _whole("stride", stride, 0)
    start, end = _whole("start", start, -MAX_INDEX), _whole("end", end, -MAX_INDEX)
    total = _whole("the frame count", total, -MAX_INDEX)
    if total <= 0:
        raise VideoReadError(f"{source} has no frames, {frames} were asked for: check the file is a valid video.")
    start = max(0, int(start))
    end = total + int(end) if end < 0 else int(end)
    end = min(max(end, 0), total - 1)
    if start > end:
        raise VideoReadError(
            f"{source} has 0 frames in the chosen range {start}..{end} ({total} frames in all, "
            f"start is after end), {frames} were asked for: lower `start` below {total} and keep it <= `end`."
        )
    span = end - start + 1
    if stride == 0:
        if span < frames:
            raise VideoReadError(
                f"{source} has {span} frames in the chosen range {start}..{end}, {frames} were asked for: "
                f"lower `frames`, widen the range or lower the stride."
            )
        if frames == 1:
            return [start]
        # integer rounding of linspace(start, end, frames): exact, distinct, both ends included
        return [start + (i * (end - start) + (frames - 1) // 2) // (frames - 1) for i in range(frames)]
    available = (end - start) // stride + 1
    if available < frames:
        raise VideoReadError(
            f"{source} has {available} frames at stride {stride} in the chosen range {start}..{end} "
            f"({span} frames), {frames} were asked for: lower `frames`, widen the range or lower the stride."
        )
    return [start + i * stride for i in range(frames)]


def resize_center_crop(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale ``frame`` (h w c) to cover (height, width), then centre-crop to exactly that.

    INTER_AREA when shrinking, INTER_CUBIC when growing. Returns (height width c), same dtype.
    """
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    scale = max(width / w, height / h)
    new_w, new_h = max(width, int(round(w * scale))), max(height, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    resized = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    if resized.ndim == 2 and frame.ndim == 3:  # cv2 drops a single channel axis
        resized = resized[..., None]
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(resized[top : top + height, left : left + width])


def _bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """OpenCV frame (h w), (h w 1), (h w 3) BGR or (h w 4) BGRA -> (h w 3) RGB uint8."""
    if frame.dtype == np.uint16:
        frame = (frame // 257).astype(np.uint8)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _unreadable(path: str, why: str) -> VideoReadError:
    return VideoReadError(
        f"Could not read the reference video '{path}': {why}. Expected {_SUPPORTED}. "
        f"Check the file is not corrupt or truncated, or re-encode it (e.g. to H.264 .mp4)."
    )


def _sane_fps(fps: float, path: str, notes: list[str]) -> float:
    if fps and math.isfinite(fps) and 0.0 < fps <= 1000.0:
        return float(fps)
    notes.append(f"'{os.path.basename(path)}' reports no frame rate; assumed {DEFAULT_FPS} fps.")
    return DEFAULT_FPS


def _list_images(path: str) -> list[str]:
    names = [n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
    return [os.path.join(path, n) for n in sorted(names, key=_natural_key)]


def _kind(path: str) -> str:
    """'folder' | 'pil' (webp) | 'cv2' (other videos, gif first); raise for missing/unsupported."""
    if not os.path.exists(path):
        raise VideoReadError(
            f"The reference video '{path}' does not exist. Expected {_SUPPORTED}. "
            f"Check the path (absolute, or relative to where ComfyUI was started)."
        )
    if os.path.isdir(path):
        return "folder"
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_EXTENSIONS:
        hint = " For single images, put the frames in a folder and give the folder." if ext in IMAGE_EXTENSIONS else ""
        raise VideoReadError(
            f"The reference video '{path}' has an unsupported extension '{ext}'. Expected {_SUPPORTED}.{hint}"
        )
    return "pil" if ext == ".webp" else "cv2"


def _probe_cv2(path: str) -> tuple[int, float]:
    """(frame_count, fps): the container's count when it has one, else counted by reading."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return 0, 0.0
        fps = cap.get(cv2.CAP_PROP_FPS)
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        if math.isfinite(count) and count > 0:
            return int(count), fps
        n = 0
        while cap.grab():
            n += 1
        return n, fps
    finally:
        cap.release()


def _probe_pil(path: str) -> tuple[int, float]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            n = int(getattr(im, "n_frames", 1))
            im.load()
            duration = float(im.info.get("duration") or 0.0)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise _unreadable(path, f"Pillow could not decode it ({e})") from None
    return n, (1000.0 / duration if duration > 0 else 0.0)


def _probe(path: str) -> tuple[int, float, str, list[str]]:
    """(frame_count, fps, backend, notes) for a checked path."""
    kind, notes = _kind(path), []
    if kind == "folder":
        n = len(_list_images(path))
        if n == 0:
            raise VideoReadError(
                f"The folder '{path}' holds no images. Expected image files ({', '.join(IMAGE_EXTENSIONS)}), "
                f"named so they sort in frame order (e.g. frame_001.png). Put the frames there or give a video file."
            )
        notes.append(f"A folder of images has no frame rate; assumed {DEFAULT_FPS} fps.")
        return n, DEFAULT_FPS, kind, notes
    if kind == "cv2":
        n, fps = _probe_cv2(path)
        if n > 0:
            return n, _sane_fps(fps, path, notes), kind, notes
        if not path.lower().endswith(".gif"):
            raise _unreadable(path, "OpenCV found no decodable frames in it")
        kind = "pil"  # GIF that OpenCV cannot read: try Pillow
    n, fps = _probe_pil(path)
    return n, _sane_fps(fps, path, notes), kind, notes


def probe_video(path) -> tuple[int, float]:
    """(frame_count, fps) of a video file or image folder; raises VideoReadError if unusable."""
    n, fps, _, _ = _probe(_clean_path(path))
    return n, fps


def _decode_cv2(path: str, indices: list[int], width: int, height: int) -> tuple[dict[int, np.ndarray], int, bool]:
    """Read in order up to max(indices); keep only those. -> (frames by index, frames seen, stream ended)."""
    wanted, out, last, n = set(indices), {}, max(indices), 0
    cap = cv2.VideoCapture(path)
    try:
        while n <= last and cap.grab():
            if n in wanted:
                ok, frame = cap.retrieve()
                if ok and frame is not None:
                    out[n] = resize_center_crop(_bgr_to_rgb(frame), width, height)
            n += 1
        return out, n, n <= last
    finally:
        cap.release()


def _decode_pil(path: str, indices: list[int], width: int, height: int) -> dict[int, np.ndarray]:
    from PIL import Image

    out = {}
    try:
        with Image.open(path) as im:
            for i in indices:
                im.seek(i)
                out[i] = resize_center_crop(np.asarray(im.convert("RGB")), width, height)
    except (OSError, ValueError, EOFError) as e:
        raise _unreadable(path, f"Pillow failed on a frame ({e})") from None
    return out


def _decode_folder(path: str, indices: list[int], width: int, height: int) -> dict[int, np.ndarray]:
    files, out = _list_images(path), {}
    for i in indices:
        data = np.fromfile(files[i], dtype=np.uint8)  # imdecode: works with non-ASCII paths
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if img is None:
            raise VideoReadError(
                f"Could not decode the image '{files[i]}' (frame {i} of the folder '{path}'). Expected a "
                f"readable image ({', '.join(IMAGE_EXTENSIONS)}). Replace or remove the broken file."
            )
        out[i] = resize_center_crop(_bgr_to_rgb(img), width, height)
    return out


def read_reference_video(
    path, frames: int = 14, start: int = 0, end: int = -1, stride: int = 0, width: int = 1024, height: int = 576
) -> ReferenceVideo:
    """Read ``frames`` frames of a reference video, resized and centre-cropped to (height, width).

    ``end`` is inclusive (-1 = last frame); ``stride == 0`` spreads the frames evenly over
    [start, end], ``stride > 0`` takes every stride-th frame from ``start``. Only the chosen
    frames are kept. Returns frames as (f h w c) float32 in [0, 1], c = 3 RGB.
    """
    _check_size("width", width)
    _check_size("height", height)
    path = _clean_path(path)
    total, fps, kind, notes = _probe(path)
    source = f"The reference video '{path}'"
    indices = select_frame_indices(total, frames, start, end, stride, source=source)
    if kind == "cv2":
        got, seen, ended = _decode_cv2(path, indices, width, height)
        if ended:  # the container's frame count was wrong: select again on the real one
            notes.append(f"The container reports {total} frames but {seen} could be decoded; used {seen}.")
            logger.warning("%s: container says %d frames, decoded %d", path, total, seen)
            total = seen
            indices = select_frame_indices(total, frames, start, end, stride, source=source)
            got, _, _ = _decode_cv2(path, indices, width, height)
        missing = [i for i in indices if i not in got]
        if missing:
            raise _unreadable(path, f"OpenCV could not decode frame(s) {missing}")
    elif kind == "pil":
        got = _decode_pil(path, indices, width, height)
    else:
        got = _decode_folder(path, indices, width, height)
    stack = np.stack([got[i] for i in indices])  # (f h w c) uint8
    tensor = torch.from_numpy(stack).to(torch.float32).div_(255.0)
    logger.info("Read frames %s of %d from %s (%s, %.3g fps)", indices, total, path, kind, fps)
    return ReferenceVideo(frames=tensor, fps=fps, source_frame_count=total, indices=indices, path=path, notes=notes)
