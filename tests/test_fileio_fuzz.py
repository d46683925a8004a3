"""Property-based (fuzz) tests of the embedding file reader: whatever the file holds, loading
either gives an embedding that the rest of the pack can use, or raises EmbeddingFileError
naming the file (and the field); never another exception, never non-finite values.

Each test counts the files it generated and checks that thousands were tried in all.
"""
import json
import math
import os
import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from motion_core.embedding import MotionEmbedding, base_metadata
from motion_core.fileio import METADATA_KEY, EmbeddingFileError, load_embedding

FUZZ = settings(max_examples=int(os.environ.get("MI_FUZZ_EXAMPLES", "1200")), deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
LAYER = "temporal_attn.00"

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                      st.text(max_size=8))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                          max_leaves=12)
# values that are nearly right, where type confusions hide: counts as bools, floats, strings, zero, negatives
near_count = st.one_of(st.integers(-3, 9), st.sampled_from([True, False, 2.0, 2.5, "2", None, [2], {"h": 2},
                                                            math.nan, math.inf, 2**70]))


def _valid():
    meta = base_metadata(3, 64, 64, 2)
    meta["layers"] = {LAYER: {"channels": 4, "height": 2, "width": 3, "downsample": 4}}
    meta["loss_history"] = [0.5, 0.25]
    tensors = {"spatial_tokens": torch.randn(3, 2, 8), "temporal_tokens": torch.randn(2, 8),
               f"temporal_qk.{LAYER}": torch.randn(1, 3, 4), f"value_embedding.{LAYER}": torch.randn(6, 3, 4)}
    return meta, tensors


class Files:
    """A folder of generated files and how many were tried."""

    def __init__(self, folder):
        self.folder, self.count = folder, 0

    def write(self, tensors, raw_meta: str) -> str:
        self.count += 1
        path = os.path.join(self.folder, f"fuzz_{self.count:05d}.safetensors")
        save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={METADATA_KEY: raw_meta})
        return path


def _load_or_file_error(path: str):
    """The embedding, or None after an EmbeddingFileError that names the file; anything else fails the test."""
    try:
        embedding = load_embedding(path)
    except EmbeddingFileError as exc:
        assert path in str(exc), f"the error does not name the file: {exc}"
        return None
    _usable(embedding)
    return embedding


def _usable(embedding: MotionEmbedding) -> None:
    """What the nodes do with a loaded embedding must work, and the values are finite float32."""
    assert embedding.tensors() and embedding.all_finite()
    assert all(t.dtype == torch.float32 for t in embedding.tensors().values())
    frames = embedding.metadata["frames"]
    assert embedding.frames == frames
    if embedding.spatial_tokens is not None:
        assert embedding.tokens_per_frame == embedding.metadata["tokens_per_frame"] >= 1
        if embedding.temporal_tokens is not None:
            assert embedding.temporal_tokens.shape == embedding.spatial_tokens.shape[1:]
    for name, qk in embedding.temporal_qk.items():
        assert qk.shape == (1, frames, embedding.metadata["layers"][name]["channels"])
    for name in embedding.value_embedding:
        assert name in embedding.temporal_qk
        assert embedding.value_embedding_at(name, 2, 2).shape[0] == 4
    assert embedding.resampled(frames + 1).frames == frames + 1
    assert "MotionEmbedding[" in embedding.summary()


def _run(test, minimum):
    with tempfile.TemporaryDirectory(prefix="mi_fuzz_") as folder:
        files = Files(folder)
        test(files)
        assert files.count >= minimum, f"only {files.count} files were generated"


def test_fuzzed_metadata_fields():
    """One field of a valid file replaced by anything JSON can hold (or removed)."""
    paths = [(k,) for k in ("format_version", "frames", "tokens_per_frame", "width", "height", "model_family",
                            "debias", "training", "loss_history", "layers")]
    paths += [("layers", LAYER)] + [("layers", LAYER, k) for k in ("channels", "height", "width", "downsample")]

    @FUZZ
    @given(field=st.sampled_from(paths), value=st.one_of(json_value, near_count), remove=st.booleans())
    def fuzz(files, field, value, remove):
        meta, tensors = _valid()
        target = meta
        for key in field[:-1]:
            target = target[key]
        if remove:
            target.pop(field[-1], None)
        else:
            target[field[-1]] = value
        loaded = _load_or_file_error(files.write(tensors, json.dumps(meta)))
        if loaded is not None:
            assert loaded.metadata == json.loads(json.dumps(meta))

    _run(lambda files: fuzz(files), 1000)


def test_fuzzed_whole_metadata_and_raw_text():
    """Metadata that is any JSON value, or text that is not JSON at all."""
    raw = st.one_of(json_value.map(json.dumps), st.text(max_size=40), st.just("[" * 5000 + "]" * 5000),
                    st.just('{"format_version": 1, "frames": NaN}'), st.just('{"format_version": 1, "frames": 1e400}'))

    @FUZZ
    @given(raw_meta=raw)
    def fuzz(files, raw_meta):
        _meta, tensors = _valid()
        assert _load_or_file_error(files.write(tensors, raw_meta)) is None   # nothing here is a valid file

    _run(lambda files: fuzz(files), 1000)


_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8, torch.bool,
           torch.uint8]


@st.composite
def _tensor(draw):
    shape = tuple(draw(st.lists(st.integers(0, 7), max_size=4)))
    dtype = draw(st.sampled_from(_DTYPES))
    values = torch.randn(shape) * draw(st.sampled_from([0.0, 1.0, 1e3]))
    if values.numel() and draw(st.booleans()):
        flat = values.view(-1)
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return values.to(dtype) if dtype.is_floating_point else values.nan_to_num().clamp(-5, 5).to(dtype)


def test_fuzzed_tensors():
    """Tensors of a valid file replaced, added or removed: any shape, dtype, NaN or inf."""
    names = ["spatial_tokens", "temporal_tokens", f"temporal_qk.{LAYER}", f"value_embedding.{LAYER}",
             "temporal_qk.temporal_attn.07", "value_embedding.temporal_attn.07", "other", "value_embedding."]

    @FUZZ
    @given(changes=st.dictionaries(st.sampled_from(names), st.one_of(st.none(), _tensor()), min_size=1, max_size=3),
           tokens=near_count)
    def fuzz(files, changes, tokens):
        meta, tensors = _valid()
        meta["tokens_per_frame"] = tokens
        for name, tensor in changes.items():
            if tensor is None:
                tensors.pop(name, None)
            else:
                tensors[name] = tensor
        if tensors:
            _load_or_file_error(files.write(tensors, json.dumps(meta)))
        else:
            files.count += 1

    _run(lambda files: fuzz(files), 1000)


def test_the_reported_cases_name_the_field(tmp_path):
    """The cases of issue 39: each one refused with the field named."""
    cases = {"list metadata": ([], METADATA_KEY), "layers a list": ({"layers": []}, "layers"),
             "layer without height": ({"layers": {LAYER: {"channels": 4, "width": 3}}}, f"layers.{LAYER}.height")}
    for label, (change, field) in cases.items():
        meta, tensors = _valid()
        meta = change if isinstance(change, list) else dict(meta, **change)
        path = str(tmp_path / f"{label.replace(' ', '_')}.safetensors")
        save_file(tensors, path, metadata={METADATA_KEY: json.dumps(meta)})
        try:
            load_embedding(path)
        except EmbeddingFileError as exc:
            assert path in str(exc) and repr(field) in str(exc), (label, str(exc))
        else:
            raise AssertionError(f"{label}: loaded")
    meta, tensors = _valid()
    tensors["spatial_tokens"][1, 0, 3] = math.nan
    path = str(tmp_path / "nan.safetensors")
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps(meta)})
    try:
        load_embedding(path)
    except EmbeddingFileError as exc:
        assert "'spatial_tokens'" in str(exc) and "non-finite" in str(exc)
    else:
        raise AssertionError("NaN tokens were loaded")
