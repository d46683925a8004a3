"""``python -m motion_core demo --model wan_toy --server URL`` against a real ComfyUI server started here on
127.0.0.1 with this pack: the shipped toy_wan_motion.json runs there (steps lowered), the videos come back and the
report holds each clip's Motion Fidelity Score, with the motion and without it."""
import json

import pytest

from host_support import comfy_path, comfy_server
from motion_core.toy.demo import main as demo_main


@pytest.fixture
def server(tmp_path):
    """One ComfyUI server with this pack: its url."""
    from conftest import need_host

    if comfy_path() is None:
        need_host("needs a real ComfyUI: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Development')")
    with comfy_server(tmp_path / "base") as (url, _process):
        yield url


def test_the_wan_toy_demo_runs_the_shipped_workflow_on_a_server(server, tmp_path):
    out = tmp_path / "demo"
    assert demo_main(["--model", "wan_toy", "--server", server, "--out", str(out), "--motion", "pan_W",
                      "--num-targets", "2", "--steps", "3", "--sample-steps", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["reference"]["motion"] == "pan_W" and report["learning_steps"] == 3
    assert [t["target"] for t in report["targets"]] == [1, 2]
    for target in report["targets"]:
        for which in ("with_motion", "no_motion"):
            video = out / target[which]["video"]
            assert video.read_bytes()[8:12] == b"WEBP" and video.stat().st_size > 1000
            assert -1.0 <= target[which]["motion_fidelity_moving"] <= 1.0      # a similarity: below 0 is unlike
    from PIL import Image

    with Image.open(out / "frames.png") as sheet:     # 4 videos, 7 of their 13 frames, 64 x 64 shown at 128
        assert sheet.size == (7 * 128, 4 * 128)
    # the two targets are two scenes: their videos differ
    assert (out / "target_1.webp").read_bytes() != (out / "target_2.webp").read_bytes()
