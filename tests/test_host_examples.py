"""The example inputs (``example_inputs/``) inside a real ComfyUI: copied into the input folder when
the pack loads, offered by Load Reference Video and Load Image, readable, and named by the
shipped workflows (SVD and Wan); the copy never replaces a user's file."""
import filecmp
import logging
import os

import pytest

from host_support import pack_module
from workflow_support import load_workflow, workflow_names

PACK = "MotionInversion_"
EXAMPLE_WORKFLOWS = [name for name in workflow_names()
                     if name not in ("toy_reenact.json", "toy_wan_motion.json")]   # the toys make their own clips


@pytest.fixture(scope="module")
def examples(comfy_nodes):
    return pack_module("nodes.examples")


def test_pack_ships_a_reference_clip_and_target_images(examples):
    names = examples.example_names()
    assert [n for n in names if n.endswith(".webm")] == ["motion_inversion_example_reference.webm"]
    assert len([n for n in names if n.endswith(".png")]) == 3
    total = sum(os.path.getsize(os.path.join(examples.EXAMPLES_DIR, n)) for n in names)
    assert total < 600_000, f"example inputs are {total} bytes; keep them a few hundred KB"


def test_examples_are_in_the_input_folder_after_loading(comfy_nodes, examples):
    import folder_paths

    inputs = folder_paths.get_input_directory()
    for name in examples.example_names():
        copy = os.path.join(inputs, name)
        assert os.path.isfile(copy), f"{name} was not copied into {inputs}"
        assert filecmp.cmp(copy, os.path.join(examples.EXAMPLES_DIR, name), shallow=False)


def test_load_nodes_offer_the_examples(comfy_nodes, examples):
    video_choices = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "LoadReferenceVideo"].INPUT_TYPES()["required"]["video"]
    image_choices = comfy_nodes.NODE_CLASS_MAPPINGS["LoadImage"].INPUT_TYPES()["required"]["image"][0]
    assert "motion_inversion_example_reference.webm" in video_choices[1]["options"]
    for name in examples.example_names():
        if name.endswith(".png"):
            assert name in image_choices


def test_load_reference_video_reads_the_example_clip(comfy_nodes):
    node = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "LoadReferenceVideo"]
    name = "motion_inversion_example_reference.webm"
    assert node.validate_inputs(name, 14, 0, -1, 0) is True
    frames, fps, count = node.execute(name, 14, 0, -1, 0, 1024, 576).result
    assert frames.shape == (14, 576, 1024, 3) and count == 14 and fps == pytest.approx(6.0)
    # the camera trucks right: the nearest ridge and tree trunks (rows 450..500) shift left ~22 px a frame
    band = frames[:, 450:500].mean(-1)
    shifts = range(0, 41)
    errors = [float((band[1, :, :1024 - 60] - band[0, :, s:s + 1024 - 60]).abs().mean()) for s in shifts]
    assert 15 <= min(range(len(errors)), key=errors.__getitem__) <= 30
    assert float((frames[13] - frames[0]).abs().mean()) > 0.02


@pytest.mark.parametrize("name", EXAMPLE_WORKFLOWS)
def test_workflows_name_example_files(comfy_nodes, examples, name):
    import folder_paths

    named = [node["widgets_values"][0] for node in load_workflow(name)["nodes"]
             if node["type"] in (PACK + "LoadReferenceVideo", "LoadImage")]
    assert named, f"{name} loads no reference video or image"
    for value in named:
        assert value in examples.example_names(), f"{name} names {value!r}, which the pack does not ship"
        assert os.path.isfile(os.path.join(folder_paths.get_input_directory(), value))


def test_copy_never_replaces_existing_files(tmp_path, examples):
    inputs = tmp_path / "new" / "input"                     # missing: created
    names = examples.example_names()
    os.makedirs(inputs)
    (inputs / names[0]).write_bytes(b"the user's own file")
    os.makedirs(inputs / names[1])                          # a folder of that name: left alone too
    copied = examples.copy_examples(str(inputs))
    assert copied == names[2:]
    assert (inputs / names[0]).read_bytes() == b"the user's own file" and (inputs / names[1]).is_dir()
    assert examples.copy_examples(str(inputs)) == []        # the next start copies nothing
    assert examples.copy_examples(str(tmp_path / "fresh" / "input")) == names


def test_copy_into_an_unusable_input_folder_only_warns(tmp_path, examples, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        assert examples.copy_examples(str(blocker / "input")) == []
    assert "cannot create the input folder" in caplog.text


def test_a_failed_copy_leaves_no_partial_file(tmp_path, examples, monkeypatch, caplog):
    def broken(source, target, *args):
        target.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(examples.shutil, "copyfileobj", broken)
    with caplog.at_level(logging.WARNING):
        assert examples.copy_examples(str(tmp_path)) == []
    assert os.listdir(tmp_path) == [] and "disk full" in caplog.text


def test_a_link_out_of_the_input_folder_is_offered_only_where_comfyui_opens_it(comfy_nodes, tmp_path):
    """0.33 refuses inputs that resolve outside the input folder; 0.3.64 opens them. The pack follows its host."""
    import folder_paths

    source = os.path.join(pack_module("nodes.examples").EXAMPLES_DIR, "motion_inversion_example_reference.webm")
    outside = tmp_path / "clip_kept_elsewhere.webm"
    outside.write_bytes(open(source, "rb").read())
    link = os.path.join(folder_paths.get_input_directory(), "linked_reference.webm")
    os.symlink(outside, link)
    node = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "LoadReferenceVideo"]
    try:
        offered = "linked_reference.webm" in node.INPUT_TYPES()["required"]["video"][1]["options"]
        verdict = node.validate_inputs("linked_reference.webm", 14, 0, -1, 0)
        host_refuses = hasattr(folder_paths, "is_within_directory")
        if host_refuses:
            assert not offered
            assert "outside ComfyUI's input folder" in verdict and "Copy the clip" in verdict, verdict
            assert node.fingerprint_inputs("linked_reference.webm") == ""
        else:
            assert offered and verdict is True
        traversal = node.validate_inputs("../" + outside.name, 14, 0, -1, 0)
        assert traversal is not True
    finally:
        os.remove(link)
