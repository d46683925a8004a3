"""``.safetensors`` files for :class:`MotionEmbedding` (never pickle).

Layout: the tensors of :meth:`MotionEmbedding.tensors` (float32) and one metadata entry,
``"motion_inversion"``, holding the JSON metadata. Writes are atomic (a temporary file in
the same folder, fsync, then a hard link that refuses to replace an existing file), so a
crash never leaves half a file and nothing is overwritten. Saved files get the permissions
any other output gets (0666 less the process umask). Reading checks every field the pack
uses and refuses non-finite values, always with :class:`EmbeddingFileError`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets

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
    tmp = os.path.join(folder, f".partial-{secrets.token_hex(8)}{EXTENSION}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = os.stat(tmp).st_mode & 0o777      # 0666 less the process umask, as ComfyUI's other outputs get
        save_file(tensors, tmp, metadata=meta)
        os.chmod(tmp, mode)                       # safetensors writes 0600 whatever the umask
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


def write_atomically(path: str, content: bytes) -> None:
    """``content`` in ``path`` through a temporary file in the same folder: an interrupted write leaves the old
    file (or none), never half of one."""
    folder, name = os.path.split(os.path.abspath(path))
    partial = os.path.join(folder, f".partial-{secrets.token_hex(8)}-{name}")
    try:
        with open(partial, "xb") as stream:       # 0666 less the umask, as any other output
            stream.write(content)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def sha256(path: str) -> str:
    """The sha256 of the file at ``path`` (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


# ------------------------------------------------------------------ reading and validating
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_DIMENSION = 1 << 20          # no real frame count, token count, channel count or latent side comes near
_SHAPE_KEYS = ("channels", "height", "width")


def _bad(path: str, field: str, why: str, fix: str = "the file is damaged or was edited: re-learn or re-save it"):
    return EmbeddingFileError(f"{path}: field {field!r} {why}; {fix}")


def _count(path: str, field: str, value, minimum: int = 1) -> int:
    """A whole number >= ``minimum`` (JSON ``true`` and ``1.0`` are not counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_DIMENSION:
        raise _bad(path, field, f"is {value!r:.80}, expected a whole number from {minimum} to {MAX_DIMENSION}")
    return value


def _check_metadata(path: str, meta) -> dict:
    """Every field that the pack reads back, checked for type and range; returns ``meta``."""
    if not isinstance(meta, dict):
        raise _bad(path, METADATA_KEY, f"holds a JSON {type(meta).__name__}, expected a JSON object")
    version = meta.get("format_version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise EmbeddingFileError(f"{path}: field 'format_version' is {version!r:.80}, this pack reads version "
                                 f"{FORMAT_VERSION}; update the node pack (newer file) or re-learn the motion (older file)")
    _count(path, "frames", meta.get("frames"))
    _count(path, "tokens_per_frame", meta.get("tokens_per_frame", 0), minimum=0)
    for key in ("width", "height"):
        if key in meta:
            _count(path, key, meta[key])
    for key in ("model_family", "debias", "representation"):
        if key in meta and not isinstance(meta[key], str):
            raise _bad(path, key, f"is {meta[key]!r:.80}, expected a string")
    if not isinstance(meta.get("training", {}), dict):
        raise _bad(path, "training", f"is {meta['training']!r:.80}, expected a JSON object")
    history = meta.get("loss_history", [])
    if not isinstance(history, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in history):
        raise _bad(path, "loss_history", f"is {history!r:.80}, expected a list of finite numbers")
    layers = meta.get("layers", {})
    if not isinstance(layers, dict):
        raise _bad(path, "layers", f"is a JSON {type(layers).__name__}, expected an object of layer name -> "
                                   "{channels, height, width}")
    for name, layer in layers.items():
        if not isinstance(layer, dict):
            raise _bad(path, f"layers.{name}", f"is {layer!r:.80}, expected an object with {', '.join(_SHAPE_KEYS)}")
        for key in _SHAPE_KEYS:
            if key not in layer:
                raise _bad(path, f"layers.{name}.{key}", "is missing")
            _count(path, f"layers.{name}.{key}", layer[key])
        if "downsample" in layer:
            _count(path, f"layers.{name}.downsample", layer["downsample"])
    return meta


def _tensor(path: str, field: str, tensor: torch.Tensor, shape: tuple) -> torch.Tensor:
    """``tensor`` as float32 once its dtype, shape and values are right."""
    if tensor.dtype not in FLOAT_DTYPES:
        raise _bad(path, field, f"has dtype {tensor.dtype}, expected floating point (float32)")
    if tuple(tensor.shape) != tuple(shape):
        raise _bad(path, field, f"has shape {tuple(tensor.shape)}, the metadata says {tuple(shape)}")
    tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise _bad(path, field, f"holds {int((~torch.isfinite(tensor)).sum())} non-finite value(s) (NaN or inf), "
                                "which would sample a NaN video", "re-learn the motion (the file is unusable)")
    return tensor


def _read(path: str) -> tuple[object, dict[str, torch.Tensor]]:
    if not os.path.isfile(path):
        raise EmbeddingFileError(f"motion embedding file not found: {path}")
    try:
        with safe_open(path, framework="pt", device="cpu") as fh:
            raw_meta = (fh.metadata() or {}).get(METADATA_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:   # safetensors raises several types for a damaged header or body
        raise EmbeddingFileError(f"{path} is not a readable .safetensors file ({exc}); "
                                 "load a file saved by Save Motion Embedding") from exc
    if raw_meta is None:
        raise EmbeddingFileError(f"{path} has no {METADATA_KEY!r} metadata: it is a .safetensors file but not a "
                                 "Motion Inversion embedding (a LoRA or checkpoint?); load a file saved by Save Motion Embedding")
    try:
        return json.loads(raw_meta), tensors
    except (ValueError, RecursionError) as exc:   # JSONDecodeError is a ValueError; deep nesting recurses
        raise _bad(path, METADATA_KEY, f"is not valid JSON ({type(exc).__name__}: {str(exc):.120})") from exc


def load_embedding(path: str) -> MotionEmbedding:
    """Read and validate a file written by :func:`save_embedding`.

    Every malformed field raises :class:`EmbeddingFileError` naming the file and the field;
    tensors must be floating point, of the shapes the metadata gives, and finite.
    """
    raw_meta, tensors = _read(path)
    meta = _check_metadata(path, raw_meta)
    frames, tokens, layers = meta["frames"], meta.get("tokens_per_frame", 0), meta.get("layers", {})
    embedding = MotionEmbedding(metadata=meta)
    for key in sorted(tensors):
        tensor = tensors[key]
        if key == "spatial_tokens":
            if tokens < 1 or tensor.ndim != 3:
                raise _bad(path, key, f"has shape {tuple(tensor.shape)} with 'tokens_per_frame' {tokens}, "
                                      f"expected ({frames}, tokens_per_frame >= 1, width)")
            embedding.spatial_tokens = _tensor(path, key, tensor, (frames, tokens, tensor.shape[-1]))
        elif key == "temporal_tokens":
            if "spatial_tokens" not in tensors or tensor.ndim != 2:
                raise _bad(path, key, f"has shape {tuple(tensor.shape)}, expected ({tokens}, width) next to "
                                      "'spatial_tokens'")
            embedding.temporal_tokens = _tensor(path, key, tensor, (tokens, tensors["spatial_tokens"].shape[-1]))
        elif key.startswith(("temporal_qk.", "value_embedding.")):
            kind, name = key.split(".", 1)
            if name not in layers:
                raise _bad(path, key, "has no entry in metadata 'layers'")
            layer = layers[name]
            if kind == "temporal_qk":
                embedding.temporal_qk[name] = _tensor(path, key, tensor, (1, frames, layer["channels"]))
            else:
                if f"temporal_qk.{name}" not in tensors:
                    raise _bad(path, key, f"has no 'temporal_qk.{name}' beside it")
                shape = (layer["height"] * layer["width"], frames, layer["channels"])
                embedding.value_embedding[name] = _tensor(path, key, tensor, shape)
        else:
            raise EmbeddingFileError(f"{path}: unexpected field {key!r}; the file was not written by this pack")
    if not embedding.tensors():
        raise EmbeddingFileError(f"{path} holds no embedding tensors; load a file saved by Save Motion Embedding")
    return embedding
