"""``python -m motion_core learn-library`` against two real ComfyUI servers started here on 127.0.0.1, one of
them killed while the library is being learned: every clip ends up learned exactly once, nothing is lost, and a
second run resumes from the manifest."""
import json
import os
import threading

import pytest

from host_support import comfy_path, comfy_servers
from motion_core import fileio, learn_library as library
from motion_core.toy import toyclips

STEPS = 6
CLIPS = ("bounce", "circle_cw", "pan_W", "zoom_in")


def _write_clips(folder):
    """Four toy clips of known motions as mp4 files, a damaged "clip" and a file that is no clip."""
    import cv2

    folder.mkdir()
    for seed, motion in enumerate(CLIPS):
        frames = toyclips.make_clip(motion, seed, frames=8, palette="heldout")[0]     # (f h w c) in 0..1
        writer = cv2.VideoWriter(str(folder / f"{motion}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 8,
                                 (frames.shape[2], frames.shape[1]))
        for frame in (frames.numpy() * 255).round().astype("uint8"):
            writer.write(frame[..., ::-1].copy())
        writer.release()
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    (folder / "notes.txt").write_text("not a clip")


@pytest.fixture
def servers(tmp_path):
    """Two ComfyUI servers with this pack, one CPU thread each: ``(url_a, url_b, process_b)``."""
    from conftest import need_host

    if comfy_path() is None:
        need_host("needs a real ComfyUI: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Development')")
    with comfy_servers([tmp_path / "a", tmp_path / "b"], threads="1") as [(url_a, _a), (url_b, process_b)]:
        yield url_a, url_b, process_b


def test_learn_library_spreads_clips_over_servers_and_survives_one_dying(tmp_path, servers):
    url_a, url_b, process_b = servers
    clips, out = tmp_path / "clips", tmp_path / "library"
    _write_clips(clips)
    events, killed = [], []

    def on_event(event, job, server):
        events.append((event, job, server))
        if event == "started" and server == url_b and job != "broken" and not killed:
            killed.append(job)          # B dies while it learns its first clip
            threading.Timer(2.0, process_b.kill).start()

    summary = library.learn_library(str(clips), [url_a, url_b], str(out), steps=STEPS, on_event=on_event)
    assert summary["lost_servers"] == [url_b]
    lost = [job for event, job, server in events if event == "lost"]
    assert len(lost) == 1 and ("done", lost[0], url_a) in events           # its job went to A
    assert sorted(summary["done"]) == sorted(CLIPS)
    assert list(summary["failed"]) == ["broken"] and "broken" in summary["failed"]["broken"]
    index = json.loads((out / "index.json").read_text())
    assert sorted(entry["name"] for entry in index) == sorted(CLIPS)          # each clip once
    files = sorted(name for name in os.listdir(out) if name.endswith(".safetensors"))
    assert files == sorted(f"{name}.safetensors" for name in CLIPS)        # and nothing half-written
    for entry in index:
        embedding = fileio.load_embedding(str(out / entry["file"]))
        assert embedding.metadata["loss_history"][-1] == entry["final_loss"]
        assert entry["settings"]["steps"] == STEPS and entry["model"]["family"] == "svd"
        assert entry["clip"] == f"{entry['name']}.mp4" and entry["server"] in (url_a, url_b)
    manifest = json.loads((out / "manifest.json").read_text())["clips"]
    assert manifest["broken"]["status"] == "failed"
    assert "Load Reference Video" in manifest["broken"]["error"] or "video" in manifest["broken"]["error"]

    # a second run resumes: the learned clips are skipped, only the failed one is tried again
    events.clear()
    again = library.learn_library(str(clips), [url_a], str(out), steps=STEPS, on_event=on_event)
    assert again["skipped"] == len(CLIPS) and [job for event, job, _s in events if event == "started"] == ["broken"]

    # and with every server gone, the clips left are named and what is done stays
    with pytest.raises(RuntimeError, match="broken"):
        library.learn_library(str(clips), [url_b], str(out), steps=STEPS)
    assert json.loads((out / "index.json").read_text()) == index


@pytest.mark.parametrize("name", sorted(os.listdir(library.WORKFLOW_DIR)))
def test_shipped_api_workflows_name_real_nodes_inputs_and_links(comfy_nodes, name):
    workflow = library.load_workflow(os.path.join(library.WORKFLOW_DIR, name))
    for key, node in workflow.items():
        node_class = comfy_nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
        declared = node_class.INPUT_TYPES()
        known = {**declared.get("required", {}), **declared.get("optional", {})}
        assert set(node["inputs"]) <= set(known), (name, key, set(node["inputs"]) - set(known))
        assert set(declared.get("required", {})) <= set(node["inputs"]), (name, key)
        for input_name, value in node["inputs"].items():
            if isinstance(value, list):                      # a link: [node id, output index]
                source = comfy_nodes.NODE_CLASS_MAPPINGS[workflow[value[0]]["class_type"]]
                assert source.RETURN_TYPES[value[1]] == known[input_name][0], (name, key, input_name)
            elif isinstance(known[input_name][0], list) and input_name not in ("video", "ckpt_name"):
                assert value in known[input_name][0], (name, key, input_name, value)
