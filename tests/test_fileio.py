"""The .safetensors format: bytes that round-trip, atomic numbered saves, errors naming file and field."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from motion_core.embedding import MotionEmbedding, base_metadata
from motion_core.fileio import (METADATA_KEY, EmbeddingFileError, load_embedding, save_embedding, save_numbered,
                                write_atomically)


def _embedding():
    generator = torch.Generator().manual_seed(0)
    meta = base_metadata(6, 128, 64, 3)
    meta["layers"] = {"temporal_attn.00": {"channels": 8, "height": 2, "width": 3, "downsample": 4}}
    meta["loss_history"] = [0.5, 0.25]
    return MotionEmbedding(spatial_tokens=torch.randn(6, 3, 16, generator=generator),
                           temporal_tokens=torch.randn(3, 16, generator=generator),
                           temporal_qk={"temporal_attn.00": torch.randn(1, 6, 8, generator=generator)},
                           value_embedding={"temporal_attn.00": torch.randn(6, 6, 8, generator=generator)},
                           metadata=meta)


def test_round_trip_is_exact(tmp_path):
    original = _embedding()
    path = save_embedding(original, str(tmp_path / "walk.safetensors"))
    loaded = load_embedding(path)
    for name, tensor in original.tensors().items():
        assert torch.equal(loaded.tensors()[name], tensor), name
    assert loaded.metadata == json.loads(json.dumps(original.metadata))
    assert [f for f in os.listdir(tmp_path)] == ["walk.safetensors"]     # no temporary left behind


def test_numbered_saves_never_overwrite(tmp_path):
    first = save_numbered(_embedding(), str(tmp_path), "walk")
    second = save_numbered(_embedding(), str(tmp_path), "walk")
    assert os.path.basename(first) == "walk_00001.safetensors"
    assert os.path.basename(second) == "walk_00002.safetensors"
    with pytest.raises(EmbeddingFileError, match="already exists"):
        save_embedding(_embedding(), first)


def test_foreign_safetensors_is_refused_with_the_file_named(tmp_path):
    path = str(tmp_path / "lora.safetensors")
    save_file({"lora_up.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(EmbeddingFileError, match="lora.safetensors.*not a Motion Inversion embedding"):
        load_embedding(path)


def test_garbage_and_missing_files(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00not a safetensors file")
    with pytest.raises(EmbeddingFileError, match="broken.safetensors is not a readable"):
        load_embedding(str(path))
    with pytest.raises(EmbeddingFileError, match="not found"):
        load_embedding(str(tmp_path / "nothing.safetensors"))


def _rewrite(tmp_path, name, tensors=None, meta=None):
    original = _embedding()
    tensors = tensors or {k: v.contiguous() for k, v in original.tensors().items()}
    meta = meta or original.metadata
    path = str(tmp_path / name)
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps(meta)})
    return path


def test_wrong_version_names_the_field(tmp_path):
    meta = dict(_embedding().metadata, format_version=99)
    with pytest.raises(EmbeddingFileError, match="'format_version' is 99"):
        load_embedding(_rewrite(tmp_path, "v99.safetensors", meta=meta))


def test_wrong_shape_names_the_field(tmp_path):
    tensors = {k: v.contiguous() for k, v in _embedding().tensors().items()}
    tensors["value_embedding.temporal_attn.00"] = torch.zeros(5, 6, 8)
    with pytest.raises(EmbeddingFileError, match=r"value_embedding.temporal_attn.00.*\(5, 6, 8\).*\(6, 6, 8\)"):
        load_embedding(_rewrite(tmp_path, "shape.safetensors", tensors=tensors))
    tensors = {k: v.contiguous() for k, v in _embedding().tensors().items()}
    tensors["spatial_tokens"] = torch.zeros(7, 3, 16)
    with pytest.raises(EmbeddingFileError, match="'spatial_tokens'"):
        load_embedding(_rewrite(tmp_path, "frames.safetensors", tensors=tensors))


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_saved_files_get_the_process_umask_like_comfyuis_outputs(tmp_path, umask):
    """Not mkstemp's 0600: a shared or containerised ComfyUI must be able to read what was saved."""
    old = os.umask(umask)
    try:
        path = save_numbered(_embedding(), str(tmp_path), "shared")
        reference = tmp_path / "reference"
        reference.write_bytes(b"")        # what open() gives any other output under this umask
    finally:
        os.umask(old)
    assert oct(os.stat(path).st_mode & 0o777) == oct(os.stat(reference).st_mode & 0o777) == oct(0o666 & ~umask)


def test_write_atomically_replaces_whole_files_and_a_failed_write_keeps_the_old_one(tmp_path):
    path = tmp_path / "report.json"
    write_atomically(str(path), b"first")
    write_atomically(str(path), b"second")
    assert path.read_bytes() == b"second"
    with pytest.raises(TypeError):
        write_atomically(str(path), "not bytes")          # fails inside the write
    assert path.read_bytes() == b"second" and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
