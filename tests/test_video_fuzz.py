"""Property-based (fuzz) tests of the video reader's numeric inputs: any frame count, range,
stride or size either gives exactly what was asked for or raises VideoReadError naming the
input; never another exception."""
import math
import os

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from motion_core.video import VideoReadError, read_reference_video, select_frame_indices

EXAMPLES = int(os.environ.get("MI_FUZZ_EXAMPLES", "1200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
NAMES = ("frames", "start", "end", "stride", "width", "height", "frame count")

number = st.one_of(st.integers(-40, 40), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.booleans(),
                   st.none(), st.text(max_size=3), st.integers(-9, 9).map(np.int64), st.just(2.0))


def _check_indices(indices, total, frames, start, end, stride):
    assert len(indices) == frames and indices == sorted(set(indices))
    low = max(0, start)
    high = min(max(total + end if end < 0 else end, 0), total - 1)
    assert low <= indices[0] and indices[-1] <= high
    if stride:
        assert all(b - a == stride for a, b in zip(indices, indices[1:]))
    elif frames > 1:
        assert indices[0] == low and indices[-1] == high


def test_fuzzed_frame_selection():
    seen = {"tried": 0, "ok": 0}

    valid = st.fixed_dictionaries({"total": st.integers(0, 60), "frames": st.integers(1, 30),
                                   "start": st.integers(-70, 70), "end": st.integers(-70, 70),
                                   "stride": st.integers(0, 9)})

    @FUZZ
    @given(args=valid, broken=st.lists(st.sampled_from(["total", "frames", "start", "end", "stride"]), max_size=3),
           values=st.lists(number, min_size=3, max_size=3))
    def fuzz(args, broken, values):
        for name, value in zip(broken, values):   # up to three inputs replaced by anything
            args[name] = value
        total, frames, start, end, stride = (args[k] for k in ("total", "frames", "start", "end", "stride"))
        seen["tried"] += 1
        try:
            indices = select_frame_indices(total, frames, start, end, stride)
        except VideoReadError as exc:
            assert any(name in str(exc) for name in NAMES), str(exc)
            return
        seen["ok"] += 1
        _check_indices(indices, total, frames, start, end, stride)

    fuzz()
    assert seen["tried"] >= min(EXAMPLES, 1000) and seen["ok"] >= seen["tried"] // 40, seen


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fuzz_video") / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (32, 24))
    for f in range(10):
        frame = np.full((24, 32, 3), 20 * f, np.uint8)
        writer.write(frame)
    writer.release()
    return path


def test_fuzzed_read_arguments(clip):
    seen = {"tried": 0, "ok": 0}
    valid = st.fixed_dictionaries({"frames": st.integers(1, 12), "start": st.integers(-12, 12),
                                   "end": st.integers(-12, 12), "stride": st.integers(0, 4),
                                   "width": st.sampled_from([64, 128]), "height": st.sampled_from([64, 128])})

    @settings(FUZZ, max_examples=max(EXAMPLES // 4, 100))
    @given(args=valid, broken=st.sampled_from([None, "frames", "start", "end", "stride", "width", "height"]),
           value=st.one_of(number, st.integers(-300, 300)))
    def fuzz(args, broken, value):
        if broken:
            args[broken] = value
        frames, start, end, stride, width, height = (args[k] for k in ("frames", "start", "end", "stride",
                                                                        "width", "height"))
        seen["tried"] += 1
        try:
            video = read_reference_video(clip, frames, start, end, stride, width, height)
        except VideoReadError as exc:
            assert any(name in str(exc) for name in NAMES), str(exc)
            return
        seen["ok"] += 1
        assert tuple(video.frames.shape) == (frames, height, width, 3)
        assert video.source_frame_count == 10 and math.isfinite(video.fps)
        _check_indices(video.indices, 10, frames, start, end, stride)

    fuzz()
    assert seen["ok"] >= seen["tried"] // 40, seen
