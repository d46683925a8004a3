"""``python -m motion_core demo --model wan_toy``, host-free: the shipped workflow as an API prompt, the demo's
settings in it, and the errors that say what to do (the run itself: tests/test_host_wan_demo.py)."""
import json
import socket

import pytest

from motion_core.comfy_client import PACK, prompt_node
from motion_core.toy import wan_demo
from motion_core.toy.demo import main as demo_main


def _shipped():
    with open(wan_demo.WORKFLOW, encoding="utf-8") as fh:
        return wan_demo.api_prompt(json.load(fh))


def test_the_shipped_workflow_becomes_an_api_prompt_with_its_links_and_values():
    prompt = _shipped()
    kinds = {node["class_type"] for node in prompt.values()}
    assert "MarkdownNote" not in kinds and {PACK + "LoadToyWanModel", PACK + "LearnMotionEmbedding",
                                            PACK + "MotionFidelityScore", "SaveAnimatedWEBP"} <= kinds
    clip = prompt_node(prompt, PACK + "ToyMotionClip")["inputs"]
    assert clip == {"motion": "translate_E_2", "seed": 0, "palette": "heldout", "frames": 13}   # "fixed" skipped
    learn = prompt_node(prompt, PACK + "LearnMotionEmbedding")["inputs"]
    assert learn["representation"] == "temporal" and learn["seed"] == 0 and learn["tokens_per_frame"] == 3
    source = prompt[learn["reference_frames"][0]]
    assert source["class_type"] == PACK + "ToyMotionClip" and learn["reference_frames"][1] == 0
    text = prompt[learn["positive"][0]]["inputs"]["text"]              # the clip's caption, through a link
    assert prompt[text[0]]["class_type"] == PACK + "ToyMotionClip" and text[1] == 1


def test_the_demo_sets_motion_scenes_and_steps_and_its_baseline_turns_the_motion_off():
    workflow = _shipped()
    moved = wan_demo.demo_prompt(workflow, "pan_W", 4, 9, 7, 3)
    assert prompt_node(moved, PACK + "ToyMotionClip")["inputs"]["motion"] == "pan_W"
    assert prompt_node(moved, PACK + "ToyMotionClip")["inputs"]["seed"] == 4
    assert prompt_node(moved, PACK + "ToyTargetImage")["inputs"]["seed"] == 9
    assert prompt_node(moved, PACK + "LearnMotionEmbedding")["inputs"]["steps"] == 7
    assert prompt_node(moved, "BasicScheduler")["inputs"]["steps"] == 3
    assert prompt_node(moved, PACK + "ApplyMotion")["inputs"]["strength"] == 1.0
    still = wan_demo.demo_prompt(workflow, "pan_W", 4, 9, None, None, with_motion=False)
    assert prompt_node(still, PACK + "ApplyMotion")["inputs"]["strength"] == 0.0
    assert prompt_node(still, PACK + "ReferenceNoise")["inputs"]["prior"] == 0.0
    assert prompt_node(still, PACK + "LearnMotionEmbedding")["inputs"] == \
        prompt_node(workflow, PACK + "LearnMotionEmbedding")["inputs"]        # the same Learn: ComfyUI caches it
    assert prompt_node(workflow, PACK + "ApplyMotion")["inputs"]["strength"] == 1.0    # the workflow untouched


def test_a_history_entry_gives_the_score_and_the_saved_video():
    entry = {"outputs": {"22": {"images": [{"filename": "toy_wan_00001_.webp", "subfolder": "motion_inversion",
                                            "type": "output"}]},
                         "23": {"text": ["Motion Fidelity Score (moving points): 0.412"]},
                         "4": {"images": [{"filename": "ComfyUI_temp_1.png", "subfolder": "", "type": "temp"}]}}}
    score, videos = wan_demo.read_result(entry)
    assert score == pytest.approx(0.412) and [v["filename"] for v in videos] == ["toy_wan_00001_.webp"]
    assert wan_demo.read_result({"outputs": {}}) == (None, [])


def test_without_a_server_the_demo_says_how_to_start_one(capsys, tmp_path):
    assert demo_main(["--model", "wan_toy", "--out", str(tmp_path)]) == 2
    assert "--server http://127.0.0.1:8188" in capsys.readouterr().err
    with socket.socket() as probe:           # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert demo_main(["--model", "wan_toy", "--server", f"http://127.0.0.1:{port}", "--out", str(tmp_path)]) == 1
    assert "is ComfyUI running there?" in capsys.readouterr().err
