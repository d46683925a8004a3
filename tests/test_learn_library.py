"""learn-library's pieces that need no server: clips, workflows, the output folder, the websocket frames, progress."""
import io
import json
import os

import pytest
import torch

from motion_core import learn_library as library
from motion_core.comfy_client import ComfyServer, _WebSocket, prompt_node
from motion_core.embedding import MotionEmbedding, base_metadata
from motion_core.fileio import EmbeddingFileError, save_embedding


def test_clips_are_the_folders_videos_by_name_with_their_hashes(tmp_path):
    for name in ("walk.mp4", "jump.webm", "notes.txt"):
        (tmp_path / name).write_bytes(name.encode())
    jobs = library.find_clips(str(tmp_path))
    assert [job.name for job in jobs] == ["jump", "walk"]
    assert len({job.sha256 for job in jobs}) == 2
    (tmp_path / "walk.gif").write_bytes(b"x")
    with pytest.raises(ValueError, match="share a name .*walk"):
        library.find_clips(str(tmp_path))


@pytest.mark.parametrize("make, problem", [(lambda p: None, "is not a folder"),
                                           (lambda p: p.mkdir(), "no clips in")])
def test_a_folder_without_clips_is_refused_clearly(tmp_path, make, problem):
    make(tmp_path / "clips")
    with pytest.raises(ValueError, match=problem):
        library.find_clips(str(tmp_path / "clips"))


def test_each_job_gets_its_clip_and_its_own_file_name_and_steps_are_set():
    workflow = library.load_workflow(library.DEFAULT_WORKFLOW, steps=7)
    prompt = library.job_prompt(workflow, "motion_library_walk.mp4", "walk")
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    assert by_type[library.LOAD_VIDEO]["video"] == "motion_library_walk.mp4"
    assert by_type[library.SAVE]["filename_prefix"] == "library/walk" and by_type[library.SAVE]["folder"] == "output"
    assert by_type[library.LEARN]["steps"] == 7
    assert prompt_node(workflow, library.LOAD_VIDEO)["inputs"]["video"] != "motion_library_walk.mp4"   # a copy


def test_a_workflow_that_is_not_a_learning_one_is_refused(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(ValueError, match="not an API-format workflow"):
        library.load_workflow(str(path))
    path.write_text(json.dumps({"1": {"class_type": library.LEARN, "inputs": {}}}))
    with pytest.raises(ValueError, match="exactly one MotionInversion_LoadReferenceVideo"):
        library.load_workflow(str(path))


def _embedding_bytes(tmp_path) -> bytes:
    embedding = MotionEmbedding(temporal_qk={"temporal_attn.00": torch.ones(1, 4, 8)},
                                metadata=base_metadata(4, 64, 64))
    embedding.metadata["layers"] = {"temporal_attn.00": {"channels": 8, "height": 2, "width": 2}}
    with open(save_embedding(embedding, str(tmp_path / "source.safetensors")), "rb") as handle:
        return handle.read()


def test_the_library_stores_checked_files_atomically_and_indexes_what_is_done(tmp_path):
    out = library.Library(str(tmp_path / "out"))
    job = library.Job("walk", "/clips/walk.mp4", "ab" * 32)
    with pytest.raises(EmbeddingFileError):
        out.store("walk", b"\x00" * 64)
    assert os.listdir(out.folder) == []                  # no partial file left
    out.record(job, status="running", server="http://a")
    assert not out.done(job) and out.index() == []
    file_name, stored = out.store("walk", _embedding_bytes(tmp_path))
    assert stored.temporal_qk["temporal_attn.00"].shape == (1, 4, 8)
    out.record(job, status="done", file=file_name, final_loss=0.5, server="http://a")
    again = library.Library(out.folder)                 # read back from manifest.json
    assert again.done(job) and not again.done(library.Job("walk", "/clips/walk.mp4", "cd" * 32))
    with open(os.path.join(out.folder, "index.json")) as handle:
        index = json.load(handle)
    assert index == [
        {"name": "walk", "file": "walk.safetensors", "clip": "walk.mp4", "sha256": "ab" * 32, "final_loss": 0.5,
         "server": "http://a"}]


def test_websocket_frames_survive_being_read_in_pieces():
    socket_ = _WebSocket("127.0.0.1", 1, "/ws", 1.0)
    message = json.dumps({"type": "progress", "data": {"value": 3, "max": 9}}).encode() * 10   # > 125 bytes
    frame = bytes([0x81, 126]) + len(message).to_bytes(2, "big") + message
    socket_.buffer = frame[:50]
    assert socket_._frame() is None and socket_.buffer == frame[:50]
    socket_.buffer = frame + bytes([0x81, 2]) + b"{}"
    assert socket_._frame() == (0x1, message) and socket_._frame() == (0x1, b"{}") and socket_.buffer == b""


def test_progress_draws_a_bar_per_job_and_overall():
    stream = io.StringIO()
    progress = library.Progress(2, stream)
    progress.update("walk", "http://a", 3, 12)
    progress.end("walk", True)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "library [------------] 0/2 | walk on http://a [###---------] 3/12"
    assert lines[1] == "library [######------] 1/2"


def test_servers_are_named_by_url_and_a_dead_one_says_so():
    assert ComfyServer("127.0.0.1:8188").url == "http://127.0.0.1:8188"
    with pytest.raises(ValueError, match="http://host:port"):
        ComfyServer("https://example.com")
    assert not ComfyServer("http://127.0.0.1:9", timeout=1.0).alive()
