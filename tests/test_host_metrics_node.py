"""The Motion Fidelity Score node inside a real ComfyUI: moving points by default, all points on request."""
import pytest

from motion_core.toy import toyclips

pytestmark = pytest.mark.usefixtures("one_thread")


def test_moving_points_do_not_reward_a_still_clip(comfy_nodes):
    node = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_MotionFidelityScore"]
    info = node.GET_NODE_INFO_V1()
    assert info["input"]["optional"]["points"][1]["default"] == "moving"
    reference = toyclips.make_clip("translate_E_2", 1)[0]
    still = toyclips.make_clip("static", 2)[0]
    moving = node.execute(reference, still).result[0]
    every = node.execute(reference, still, points="all").result[0]
    same = node.execute(reference, reference).result[0]
    assert every > moving + 0.2                 # still background agrees with still background
    assert same > 0.9 and moving < 0.3
    assert "moving points" in node.execute(reference, reference).ui.as_dict()["text"][0]
    with pytest.raises(ValueError, match="points must be one of"):
        node.execute(reference, still, points="some")
