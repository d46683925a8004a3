"""``.safetensors`` files for :class:`MotionEmbedding` (never pickle).

Layout: the tensors of :meth:`MotionEmbedding.tensors` (float32) and one metadata entry,
``"motion_inversion"``, holding the JSON metadata. Writes are atomic (a temporary file in
the same folder, fsync, then a hard link that refuses to replace an existing file), so a
crash never leaves half a file and nothing is overwritten.
"""
from __future__ import annotations

import json
import os
import re
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .embedding import FORMAT_VERSION, MotionEmbedding

METADATA_KEY = "motion_inversion"
EXTENSION = ".safetensors"


class EmbeddingFileError(ValueError):
    """A file that is not a valid Motion Inversion embedding; the message names file and field."""


def _serialise(embedding: MotionEmbedding) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in embedding.tensors().items()}
    meta = dict(embedding.metadata)
    meta.setdefault("format_version", FORMAT_VERSION)
    return tensors, {METADATA_KEY: json.dumps(meta)}


def save_embedding(embedding: MotionEmbedding, path: str, overwrite: bool = False) -> str:
    """Write ``embedding`` to ``path`` atomically; refuse to replace a file unless ``overwrite``."""
    if not embedding.tensors():
        raise EmbeddingFileError(f"refusing to save an empty motion embedding to {path}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tensors, meta = _serialise(embedding)
    handle, tmp = tempfile.mkstemp(prefix=".partial-", suffix=EXTENSION, dir=folder)
    os.close(handle)
    try:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)   # atomic, fails if the name exists
            except FileExistsError:
                raise EmbeddingFileError(f"{path} already exists; choose another name (nothing was overwritten)") from None
            except OSError:          # filesystems without hard links
                if os.path.exists(path):
                    raise EmbeddingFileError(f"{path} already exists; choose another name (nothing was overwritten)") from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def next_free_path(folder: str, prefix: str) -> str:
    """``folder/prefix_00001.safetensors``, the first number not taken (ComfyUI's style)."""
    prefix = re.sub(r"[^\w\-. ]", "_", prefix).strip() or "motion"
    taken = set()
    if os.path.isdir(folder):
        pattern = re.compile(re.escape(prefix) + r"_(\d+)" + re.escape(EXTENSION) + "$")
        for name in os.listdir(folder):
            match = pattern.match(name)
            if match:
                taken.add(int(match.group(1)))
    number = 1
    while number in taken:
        number += 1
    return os.path.join(folder, f"{prefix}_{number:05d}{EXTENSION}")


def save_numbered(embedding: MotionEmbedding, folder: str, prefix: str) -> str:
    """Save under the first free numbered name; retries if another writer took it first."""
    for _ in range(100):
        path = next_free_path(folder, prefix)
        try:
            return save_embedding(embedding, path)
        except EmbeddingFileError:
            if not os.path.exists(path):
                raise
    raise EmbeddingFileError(f"could not find a free file name for {prefix!r} in {folder}")


def _expect(path: str, field: str, tensor: torch.Tensor, shape: tuple) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise EmbeddingFileError(f"{path}: field {field!r} has shape {tuple(tensor.shape)}, the metadata says "
                                 f"{tuple(shape)}; the file is damaged or was edited: re-learn or re-save it")


def load_embedding(path: str) -> MotionEmbedding:
    """Read and validate a file written by :func:`save_embedding`."""
    if not os.path.isfile(path):
        raise EmbeddingFileError(f"motion embedding file not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as fh:
            raw_meta = (fh.metadata() or {}).get(METADATA_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except EmbeddingFileError:
        raise
    except Exception as exc:
        raise EmbeddingFileError(f"{path} is not a readable .safetensors file ({exc}); "
                                 "load a file saved by Save Motion Embedding") from exc
    if raw_meta is None:
        raise EmbeddingFileError(f"{path} has no {METADATA_KEY!r} metadata: it is a .safetensors file but not a "
                                 "Motion Inversion embedding (a LoRA or checkpoint?); load a file saved by Save Motion Embedding")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError as exc:
        raise EmbeddingFileError(f"{path}: metadata field {METADATA_KEY!r} is not valid JSON ({exc})") from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise EmbeddingFileError(f"{path}: field 'format_version' is {version!r}, this pack reads version "
                                 f"{FORMAT_VERSION}; update the node pack (newer file) or re-learn the motion (older file)")
    embedding = MotionEmbedding(metadata=meta)
    frames = meta.get("frames")
    if not isinstance(frames, int) or frames < 1:
        raise EmbeddingFileError(f"{path}: field 'frames' is {frames!r}, expected a positive integer")
    layers = meta.get("layers", {})
    for key, tensor in tensors.items():
        if key == "spatial_tokens":
            _expect(path, key, tensor, (frames, meta.get("tokens_per_frame"), tensor.shape[-1]))
            embedding.spatial_tokens = tensor
        elif key == "temporal_tokens":
            embedding.temporal_tokens = tensor
        elif key.startswith(("temporal_qk.", "value_embedding.")):
            kind, name = key.split(".", 1)
            if name not in layers:
                raise EmbeddingFileError(f"{path}: field {key!r} has no entry in metadata 'layers'")
            layer = layers[name]
            if kind == "temporal_qk":
                _expect(path, key, tensor, (1, frames, layer["channels"]))
                embedding.temporal_qk[name] = tensor
            else:
                _expect(path, key, tensor, (layer["height"] * layer["width"], frames, layer["channels"]))
                embedding.value_embedding[name] = tensor
        else:
            raise EmbeddingFileError(f"{path}: unexpected field {key!r}; the file was not written by this pack")
    if embedding.temporal_tokens is not None and embedding.spatial_tokens is not None:
        if embedding.temporal_tokens.shape[-1] != embedding.spatial_tokens.shape[-1]:
            raise EmbeddingFileError(f"{path}: field 'temporal_tokens' width {embedding.temporal_tokens.shape[-1]} "
                                     f"differs from 'spatial_tokens' width {embedding.spatial_tokens.shape[-1]}")
    if not embedding.tensors():
        raise EmbeddingFileError(f"{path} holds no embedding tensors")
    return embedding
