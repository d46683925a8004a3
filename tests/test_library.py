"""A motion library in the host-free core: blends, frame schedules, resuming, several clips of one motion."""
import pytest
import torch

from motion_core.augment import AugmentSettings
from motion_core.debias import debias
from motion_core.embedding import MotionEmbedding, base_metadata
from motion_core.fileio import load_embedding, save_embedding
from motion_core.library import (blend, conform_clip, frame_weights, parse_frame_strengths, resume_from,
                                 scaled_over_frames)
from motion_core.training import TrainSettings, train_motion_embedding

LAYER = "temporal_attn.00"


def _embedding(frames=6, seed=0, channels=8, grid=(2, 3), layers=(LAYER,), tokens=True, family="svd"):
    generator = torch.Generator().manual_seed(seed)
    meta = base_metadata(frames, 128, 64, 3 if tokens else 0, model_family=family)
    meta["layers"] = {name: {"channels": channels, "height": grid[0], "width": grid[1]} for name in layers}
    meta["loss_history"] = [0.5, 0.25]
    meta["training"] = {"steps_done": 2}
    return MotionEmbedding(
        spatial_tokens=torch.randn(frames, 3, 16, generator=generator) if tokens else None,
        temporal_tokens=torch.randn(3, 16, generator=generator) if tokens else None,
        temporal_qk={name: torch.randn(1, frames, channels, generator=generator) for name in layers},
        value_embedding={name: torch.randn(grid[0] * grid[1], frames, channels, generator=generator)
                         for name in layers},
        metadata=meta)


def test_blend_is_the_weighted_sum_of_every_tensor():
    first, second = _embedding(seed=0), _embedding(seed=1)
    out = blend([first, second], [0.25, 0.75])
    for name, tensor in out.tensors().items():
        expected = 0.25 * first.tensors()[name] + 0.75 * second.tensors()[name]
        assert torch.allclose(tensor, expected, atol=1e-6), name
    assert [part["weight"] for part in out.metadata["blend"]] == [0.25, 0.75]
    only_first = blend([first, second], [1.0, 0.0])
    assert all(torch.equal(only_first.tensors()[name], t) for name, t in first.tensors().items())


def test_blend_resamples_frames_and_grids_to_the_first():
    first, second = _embedding(frames=6), _embedding(frames=11, grid=(4, 6), seed=3)
    out = blend([first, second], [0.5, 0.5])
    assert out.frames == 6
    assert out.value_embedding[LAYER].shape == first.value_embedding[LAYER].shape
    assert torch.allclose(out.temporal_qk[LAYER][:, 0], 0.5 * (first.temporal_qk[LAYER][:, 0]
                                                              + second.temporal_qk[LAYER][:, 0]), atol=1e-6)


@pytest.mark.parametrize("other, problem", [
    (lambda: _embedding(family="wan"), "model families differ"),
    (lambda: _embedding(layers=("temporal_attn.01",)), "layers differ"),
    (lambda: _embedding(channels=4), "layer widths differ"),
    (lambda: _embedding(tokens=False), "spatial tokens"),
    (lambda: debias(_embedding(seed=2), "difference"), "debias both the same way"),
])
def test_blend_names_what_cannot_be_mixed(other, problem):
    with pytest.raises(ValueError, match=problem) as error:
        blend([_embedding(), other()], [0.5, 0.5])
    assert "embedding 2" in str(error.value)


def test_blend_needs_two_and_matching_weights():
    with pytest.raises(ValueError, match="at least two"):
        blend([_embedding()], [1.0])
    with pytest.raises(ValueError, match="2 embeddings but 3 weights"):
        blend([_embedding(), _embedding()], [1.0, 0.0, 0.0])


def test_blend_round_trips_through_a_file(tmp_path):
    out = blend([_embedding(), _embedding(seed=1)], [0.5, 0.5])
    loaded = load_embedding(save_embedding(out, str(tmp_path / "blend.safetensors")))
    assert all(torch.equal(loaded.tensors()[name], t) for name, t in out.tensors().items())
    assert len(loaded.metadata["blend"]) == 2


@pytest.mark.parametrize("text, values", [("", []), ("1", [1.0]), ("0, 1", [0.0, 1.0]),
                                          ("1 1;0.5,0", [1.0, 1.0, 0.5, 0.0])])
def test_frame_strengths_parse(text, values):
    assert parse_frame_strengths(text) == values


@pytest.mark.parametrize("text, problem", [("0, fast", "'fast' is not a number"), ("3", "outside 0 to 2"),
                                           ("nan", "outside 0 to 2")])
def test_frame_strengths_errors_say_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_frame_strengths(text)


def test_a_ramp_scales_the_motion_embeddings_frame_by_frame_and_leaves_tokens():
    embedding = _embedding(frames=5)
    ramp = scaled_over_frames(embedding, [0.0, 1.0])
    assert torch.allclose(frame_weights([0.0, 1.0], 5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    for scaled, original in ((ramp.temporal_qk[LAYER], embedding.temporal_qk[LAYER]),
                             (ramp.value_embedding[LAYER], embedding.value_embedding[LAYER])):
        assert not scaled[:, 0].any()
        assert torch.allclose(scaled[:, 2], 0.5 * original[:, 2])
        assert torch.equal(scaled[:, 4], original[:, 4])
    assert torch.equal(ramp.spatial_tokens, embedding.spatial_tokens)
    assert ramp.metadata["frame_strengths"] == [0.0, 1.0]
    assert scaled_over_frames(embedding, []) is embedding


def test_resume_loads_the_values_into_the_new_layout_and_keeps_the_curve():
    previous = _embedding(frames=6, seed=4)
    layout = _embedding(frames=8, grid=(4, 6), seed=9)          # what a new run at another size builds
    resumed = resume_from(layout, previous)
    assert resumed.frames == 8 and resumed.value_embedding[LAYER].shape == layout.value_embedding[LAYER].shape
    assert torch.allclose(resumed.temporal_qk[LAYER][:, 0], previous.temporal_qk[LAYER][:, 0])
    assert torch.allclose(resumed.temporal_qk[LAYER][:, -1], previous.temporal_qk[LAYER][:, -1])
    assert resumed.metadata["resumed"] == {"steps": 2, "loss_history": [0.5, 0.25]}


@pytest.mark.parametrize("previous, problem", [
    (lambda: debias(_embedding(), "difference"), "not from Debias Value Embedding"),
    (lambda: _embedding(layers=("temporal_attn.03",)), "layers differ"),
    (lambda: _embedding(tokens=False), "spatial tokens"),
    (lambda: blend([_embedding(), _embedding(seed=1)], [0.5, 0.5]), "a blend"),
])
def test_resume_refuses_what_does_not_fit(previous, problem):
    with pytest.raises(ValueError, match=problem) as error:
        resume_from(_embedding(seed=9), previous())
    assert "tokens_per_frame" in str(error.value)      # and says what to use


def test_conform_clip_picks_frames_evenly_and_crops_to_size():
    clip = torch.rand(9, 40, 80, 3)
    clip[:, :, :, 0] = torch.arange(9)[:, None, None] / 8
    out = conform_clip(clip, 5, 32, 32)
    assert out.shape == (5, 32, 32, 3)
    assert torch.allclose(out[:, 0, 0, 0], torch.tensor([0, 2, 4, 6, 8]) / 8, atol=1e-5)   # first, last kept
    same = torch.rand(4, 16, 16, 3)
    assert conform_clip(same, 4, 16, 16) is same
    with pytest.raises(ValueError, match="IMAGE batch"):
        conform_clip(torch.rand(16, 16, 3), 4, 16, 16)


def _toy_denoiser(scale, seen):
    """A denoiser whose only parameter is ``scale``; records the first frame of each step's clip."""
    def denoiser(noisy, sigma, first_frame):
        seen.append(float(first_frame.mean()))
        return noisy / (1 + sigma[:, None, None, None] ** 2) * scale[0, 0, 0]
    return denoiser


def _run(clean, steps=12, seed=0):
    embedding = MotionEmbedding(temporal_qk={LAYER: torch.ones(1, 1, 1)}).trainable_copy("cpu")
    seen = []
    settings = TrainSettings(steps=steps, seed=seed, augment=AugmentSettings(enabled=False))
    result = train_motion_embedding(_toy_denoiser(embedding.temporal_qk[LAYER], seen), clean, embedding, settings)
    return result, seen


def test_several_clips_are_each_drawn_and_one_clip_runs_as_before():
    clips = [torch.full((3, 2, 4, 4), float(value)) for value in (1, 2, 3)]
    _result, seen = _run(clips, steps=30)
    assert set(seen) == {1.0, 2.0, 3.0}
    single, seen_single = _run(clips[0])
    listed, seen_listed = _run(clips[:1])
    assert single.loss_history == listed.loss_history and seen_single == seen_listed


def test_clips_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        _run([torch.zeros(3, 2, 4, 4), torch.zeros(4, 2, 4, 4)])
