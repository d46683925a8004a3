"""The example inputs in ``example_inputs/`` and the icon are what ``scripts/make_examples.py`` draws."""
import os

import cv2
import numpy as np
import pytest

from motion_core.video import read_reference_video
from scripts import make_examples


def test_reference_clip_is_the_drawn_pan():
    path = os.path.join(make_examples.EXAMPLES_DIR, make_examples.REFERENCE_NAME)
    clip = read_reference_video(path, frames=14, width=1024, height=576)
    assert clip.source_frame_count == make_examples.FRAMES and clip.fps == pytest.approx(make_examples.FPS)
    drawn = make_examples.reference_frames()
    for index in (0, 7, 13):                              # equal up to the video codec
        error = np.abs(clip.frames[index].numpy() - drawn[index].astype(np.float32) / 255).mean()
        assert error < 0.03, (index, error)
    assert np.abs(drawn[13].astype(float) - drawn[0]).mean() > 5, "the clip does not move"


def _assert_drawn(image, drawn):
    """PNG is lossless; allow only anti-aliased edges to differ (another OpenCV may draw them a shade apart)."""
    differ = np.abs(image.astype(int) - drawn.astype(int)).max(-1) > 8
    assert image.shape == drawn.shape and differ.mean() < 0.01, differ.mean()


@pytest.mark.parametrize("index", range(3))
def test_target_images_are_the_drawn_scenes(index):
    path = os.path.join(make_examples.EXAMPLES_DIR, make_examples.TARGET_NAMES[index])
    image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert image.shape == (make_examples.HEIGHT, make_examples.WIDTH, 3)
    _assert_drawn(image, make_examples.target_images()[index])


def test_icon_is_the_drawn_icon():
    image = cv2.cvtColor(cv2.imread(make_examples.ICON_PATH, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    _assert_drawn(image, make_examples.icon())


def test_examples_stay_small():
    sizes = {name: os.path.getsize(os.path.join(make_examples.EXAMPLES_DIR, name))
             for name in [make_examples.REFERENCE_NAME, *make_examples.TARGET_NAMES]}
    assert sum(sizes.values()) < 600_000, sizes
