"""Tests for motion_core.video: frame selection, decoding per container, resizing, errors.

Every synthetic clip is 128x96 (w x h): a dark background whose blue channel encodes the
frame number (10 + 8 * i) and a pure red 16x16 square that moves right by 4 px per frame,
so each returned frame says which source frame it was.
"""

import re

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from motion_core import video
from motion_core.video import (
    ReferenceVideo,
    VideoReadError,
    probe_video,
    read_reference_video,
    resize_center_crop,
    select_frame_indices,
)

W, H = 128, 96
SQ, SQ_Y, STEP, X0 = 16, 40, 4, 4


def make_frame(i: int) -> np.ndarray:
    """Source frame i: (h w c) uint8 RGB."""
    f = np.zeros((H, W, 3), np.uint8)
    f[..., 2] = 10 + 8 * i
    x = X0 + STEP * i
    f[SQ_Y : SQ_Y + SQ, x : x + SQ] = (255, 0, 0)
    return f


def frame_index(frame: torch.Tensor) -> int:
    """Source index of a frame read at 128x64 (no resize, rows 16..80 of the source kept)."""
    blue = float(frame[2:12, :, 2].median()) * 255.0
    return int(round((blue - 10.0) / 8.0))


def square_x(frame: torch.Tensor) -> float:
    mask = (frame[..., 0] > 0.5) & (frame[..., 1] < 0.3)
    return float(mask.nonzero()[:, 1].float().mean())


def check_frames(ref: ReferenceVideo, n: int, h: int = 64, w: int = 128) -> None:
    assert isinstance(ref.frames, torch.Tensor)
    assert ref.frames.shape == (n, h, w, 3)
    assert ref.frames.dtype == torch.float32
    assert float(ref.frames.min()) >= 0.0 and float(ref.frames.max()) <= 1.0
    assert len(ref.indices) == n


def check_content(ref: ReferenceVideo) -> None:
    """Each returned frame is the source frame its index claims (blue level and square position)."""
    for frame, i in zip(ref.frames, ref.indices):
        assert frame_index(frame) == i
        assert abs(square_x(frame) - (X0 + STEP * i + (SQ - 1) / 2)) < 1.5


def write_cv2(path, fourcc: str, n: int, fps: float = 12.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    if not writer.isOpened():
        writer.release()
        pytest.skip(f"this OpenCV build cannot write {fourcc} into {path.suffix}")
    for i in range(n):
        writer.write(cv2.cvtColor(make_frame(i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_pil(path, n: int, duration_ms: int, **kw):
    frames = [Image.fromarray(make_frame(i)) for i in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0, **kw)
    return path


@pytest.fixture
def avi(tmp_path):
    return write_cv2(tmp_path / "clip.avi", "MJPG", 20)


# ---------------------------------------------------------------- select_frame_indices


def test_select_evenly_spread_includes_both_ends():
    assert select_frame_indices(30, 5, 0, -1, 0) == [0, 7, 15, 22, 29]
    assert select_frame_indices(20, 5, 0, 19, 0) == [0, 5, 10, 14, 19]
    idx = select_frame_indices(100, 14, 10, 60, 0)
    assert idx[0] == 10 and idx[-1] == 60 and len(set(idx)) == 14 and idx == sorted(idx)


def test_select_exact_fit_and_single_frame():
    assert select_frame_indices(9, 9, 0, -1, 0) == list(range(9))
    assert select_frame_indices(9, 1, 3, -1, 0) == [3]


def test_select_stride():
    assert select_frame_indices(30, 5, 2, -1, 3) == [2, 5, 8, 11, 14]
    assert select_frame_indices(10, 4, 0, -1, 3) == [0, 3, 6, 9]


def test_select_end_negative_and_clamp():
    assert select_frame_indices(10, 10, -5, 100, 0) == list(range(10))
    assert select_frame_indices(10, 2, 0, -1, 0) == [0, 9]
    assert select_frame_indices(10, 2, 0, -2, 0) == [0, 8]
    assert select_frame_indices(10, 2, 0, 9, 0) == select_frame_indices(10, 2, 0, -1, 0)


def test_select_too_short_names_both_counts():
    with pytest.raises(VideoReadError, match=r"has 9 frames in the chosen range 0\.\.8, 14 were asked for"):
        select_frame_indices(9, 14, 0, -1, 0)
    with pytest.raises(VideoReadError, match=r"has 4 frames at stride 3 .*5 were asked for.*lower the stride"):
        select_frame_indices(10, 5, 0, -1, 3)


def test_select_bad_arguments():
    with pytest.raises(VideoReadError, match="start is after end"):
        select_frame_indices(10, 1, 8, 5, 0)
    with pytest.raises(VideoReadError, match="start is after end"):
        select_frame_indices(10, 1, 20, -1, 0)
    with pytest.raises(VideoReadError, match="frames=0"):
        select_frame_indices(10, 0, 0, -1, 0)
    with pytest.raises(VideoReadError, match="stride=-1"):
        select_frame_indices(10, 2, 0, -1, -1)
    with pytest.raises(VideoReadError, match="no frames"):
        select_frame_indices(0, 2, 0, -1, 0)


# ---------------------------------------------------------------- resize_center_crop


def test_resize_center_crop_shapes():
    frame = make_frame(3)
    for w, h in [(64, 64), (128, 64), (256, 192), (1024, 576), (64, 128)]:
        out = resize_center_crop(frame, w, h)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_resize_center_crop_keeps_the_centre():
    ramp = np.tile(np.arange(W, dtype=np.uint8)[None, :, None], (H, 1, 3))
    out = resize_center_crop(ramp, 64, H)  # no scaling: only columns 32..95 survive
    assert np.array_equal(out[0, :, 0], np.arange(32, 96, dtype=np.uint8))
    tall = resize_center_crop(np.ascontiguousarray(ramp.transpose(1, 0, 2)), H, 64)  # (128 96) -> rows 32..95
    assert np.array_equal(tall[:, 0, 0], np.arange(32, 96, dtype=np.uint8))


# ---------------------------------------------------------------- containers


@pytest.mark.parametrize(
    "name,fourcc",
    [("clip.avi", "MJPG"), ("clip.mp4", "mp4v"), ("clip.webm", "VP80"), ("clip.mkv", "MJPG"), ("clip.mov", "mp4v")],
)
def test_read_opencv_containers(tmp_path, name, fourcc):
    path = write_cv2(tmp_path / name, fourcc, 20)
    ref = read_reference_video(path, frames=5, width=128, height=64)
    check_frames(ref, 5)
    assert ref.indices == [0, 5, 10, 14, 19]
    check_content(ref)
    assert ref.source_frame_count == 20
    assert ref.fps == pytest.approx(12.0, rel=1e-3)
    assert ref.path == str(path)
    assert probe_video(path) == (20, pytest.approx(12.0, rel=1e-3))


def test_rgb_order(avi):
    ref = read_reference_video(avi, frames=2, width=128, height=64)
    sq = ref.frames[0, SQ_Y - 16 + 4 : SQ_Y - 16 + 12, X0 + 4 : X0 + 12]  # inside the red square
    assert float(sq[..., 0].mean()) > 0.85
    assert float(sq[..., 1].mean()) < 0.15 and float(sq[..., 2].mean()) < 0.15


def test_stride_and_range(avi):
    ref = read_reference_video(avi, frames=4, start=2, stride=3, width=128, height=64)
    assert ref.indices == [2, 5, 8, 11]
    check_content(ref)
    ref = read_reference_video(avi, frames=3, start=4, end=8, width=128, height=64)
    assert ref.indices == [4, 6, 8]
    check_content(ref)


def test_resize_from_other_aspect(avi):
    ref = read_reference_video(avi, frames=3, width=64, height=64)
    check_frames(ref, 3, 64, 64)
    ref = read_reference_video(avi, frames=2, width=256, height=128)  # upscale 2x, crop rows
    check_frames(ref, 2, 128, 256)


def test_animated_gif(tmp_path):
    path = write_pil(tmp_path / "clip.gif", 12, 100)
    ref = read_reference_video(path, frames=4, width=128, height=64)
    check_frames(ref, 4)
    assert ref.indices == [0, 4, 7, 11]
    check_content(ref)
    assert ref.source_frame_count == 12 and ref.fps == pytest.approx(10.0)


def test_gif_falls_back_to_pillow(tmp_path, monkeypatch):
    path = write_pil(tmp_path / "clip.gif", 12, 100)

    class Closed:
        def __init__(self, *a):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(video.cv2, "VideoCapture", Closed)
    ref = read_reference_video(path, frames=3, stride=2, width=128, height=64)
    assert ref.indices == [0, 2, 4]
    check_content(ref)
    assert ref.fps == pytest.approx(10.0)


def test_animated_webp(tmp_path):
    path = write_pil(tmp_path / "clip.webp", 15, 50, lossless=True)
    ref = read_reference_video(path, frames=3, width=128, height=64)
    check_frames(ref, 3)
    assert ref.indices == [0, 7, 14]
    check_content(ref)
    assert ref.source_frame_count == 15 and ref.fps == pytest.approx(20.0)
    assert ref.notes == []
    assert ref.frames[0, SQ_Y - 16 + 8, X0 + 8].tolist() == [1.0, 0.0, 0.0]  # lossless: exact red


def test_image_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        cv2.imwrite(str(folder / f"frame{i + 1}.png"), cv2.cvtColor(make_frame(i), cv2.COLOR_RGB2BGR))
    (folder / "readme.txt").write_text("not a frame")
    ref = read_reference_video(folder, frames=12, width=128, height=64)
    check_frames(ref, 12)
    assert ref.indices == list(range(12))
    check_content(ref)  # frame10.png would come before frame2.png in plain string order
    assert ref.fps == 8.0 and ref.source_frame_count == 12
    assert any("8.0 fps" in n for n in ref.notes)
    assert probe_video(folder) == (12, 8.0)


def test_wrong_container_frame_count_is_corrected(avi, monkeypatch):
    monkeypatch.setattr(video, "_probe_cv2", lambda path: (26, 12.0))  # container claims 26, holds 20
    ref = read_reference_video(avi, frames=5, width=128, height=64)
    assert ref.source_frame_count == 20 and ref.indices == [0, 5, 10, 14, 19]
    check_content(ref)
    assert any("26" in n and "20" in n for n in ref.notes)


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoReadError, match=re.escape(str(path))):
        read_reference_video(path, width=128, height=64)
    with pytest.raises(VideoReadError, match="does not exist"):
        probe_video(path)


def test_unreadable_file(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(b"this is not a video at all\n" * 50)
    with pytest.raises(VideoReadError) as err:
        read_reference_video(path, width=128, height=64)
    msg = str(err.value)
    assert str(path) in msg
    for ext in (".mp4", ".webm", ".gif", ".webp", ".png"):
        assert ext in msg


def test_unreadable_webp(tmp_path):
    path = tmp_path / "x.webp"
    path.write_bytes(b"garbage" * 30)
    with pytest.raises(VideoReadError, match=re.escape(str(path))):
        read_reference_video(path, width=128, height=64)


def test_too_short(tmp_path):
    path = write_cv2(tmp_path / "short.avi", "MJPG", 9)
    with pytest.raises(VideoReadError) as err:
        read_reference_video(path, frames=14, width=128, height=64)
    msg = str(err.value)
    assert str(path) in msg and re.search(r"\b9 frames\b", msg) and re.search(r"\b14 were asked\b", msg)


def test_size_not_multiple_of_16(avi):
    with pytest.raises(VideoReadError, match=r"width=100.*multiple of 16.*width=96"):
        read_reference_video(avi, width=100, height=64)
    with pytest.raises(VideoReadError, match=r"height=590.*height=592"):
        read_reference_video(avi, width=128, height=590)
    with pytest.raises(VideoReadError, match=r"height=0"):
        read_reference_video(avi, width=128, height=0)
    # Wan 2.1's sides (832 x 480) are multiples of 16, not of 64
    assert read_reference_video(avi, frames=2, width=112, height=48).frames.shape == (2, 48, 112, 3)


def test_unsupported_and_empty_sources(tmp_path):
    txt = tmp_path / "clip.txt"
    txt.write_text("x")
    with pytest.raises(VideoReadError, match="unsupported extension '.txt'"):
        read_reference_video(txt, width=128, height=64)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="holds no images"):
        read_reference_video(empty, width=128, height=64)
