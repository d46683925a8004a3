"""The motion library's nodes inside a real ComfyUI, on a tiny SVD built in code: several reference clips, resume,
Blend Motion Embeddings, frame and step schedules in Apply Motion and Inflate SVD Conditioning."""
import pytest
import torch

from host_support import build_tiny_svd, build_tiny_vae, pack_module, svd_conditioning

FRAMES, HEIGHT, WIDTH = 4, 64, 64   # latent 8x8


def _clip(frames=FRAMES, height=HEIGHT, width=WIDTH, seed=0):
    """A bright square moving right over a gradient whose colour depends on ``seed``, (f h w 3) in 0..1."""
    clip = torch.zeros(frames, height, width, 3)
    clip[..., (seed % 3)] = torch.linspace(0, 0.5, width)
    side = height // 3
    for f in range(frames):
        left = min(width - side, 4 + f * width // (frames + 2))
        clip[f, side:2 * side, left:left + side, (seed + 1) % 3] = 1.0
    return clip


def _learn(comfy_nodes, steps=3, representation="both", model=None, vae=None, **overrides):
    learn = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LearnMotionEmbedding"]
    args = dict(model=model or build_tiny_svd(), vae=vae or build_tiny_vae(), reference_frames=_clip(),
                representation=representation, tokens_per_frame=2, steps=steps, learning_rate=1e-2, seed=0,
                noise_mean=0.5, noise_std=1.0, loss="edm", augmentation=False, flip=False, fps=6,
                motion_bucket_id=127, augmentation_level=0.0, layers="all", explicit_layers="")
    args.update(overrides)
    with torch.inference_mode():       # the executor runs every node in inference mode
        return learn.execute(**args)


def _node(comfy_nodes, name):
    return comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_" + name]


def test_learn_from_gathered_clips_conforms_encodes_and_learns_from_each(comfy_nodes, monkeypatch):
    gather = _node(comfy_nodes, "GatherReferenceClips")
    clips = gather.execute(clip_1=_clip(frames=7, height=48, width=80, seed=1)).result[0]
    clips = gather.execute(clip_1=_clip(frames=3, seed=2), clips=clips).result[0]
    assert len(clips) == 2
    vae = build_tiny_vae()
    encoded = []
    original = vae.encode
    monkeypatch.setattr(vae, "encode", lambda pixels: encoded.append(tuple(pixels.shape)) or original(pixels))
    out = _learn(comfy_nodes, steps=6, vae=vae, more_references=clips)
    embedding = out.result[0]
    assert encoded == [(FRAMES, HEIGHT, WIDTH, 3)] * 3          # the reference, then each clip conformed to it
    assert "learned from 3 clips" in out.ui.as_dict()["text"][0]
    alone = _learn(comfy_nodes, steps=6).result[0]
    assert not torch.allclose(embedding.temporal_qk["temporal_attn.00"], alone.temporal_qk["temporal_attn.00"])
    with pytest.raises(ValueError, match="clip_1 must be a clip of 2 frames or more"):
        gather.execute(clip_1=torch.zeros(1, 8, 8, 3))


def test_resume_goes_on_from_the_embedding_and_its_loss_curve(comfy_nodes, monkeypatch):
    first = _learn(comfy_nodes, steps=3).result[0]
    events = []
    monkeypatch.setattr(pack_module("nodes.learn"), "send_event", lambda name, payload: events.append(payload))
    resumed, _plot, history = _learn(comfy_nodes, steps=2, seed=1, resume_from=first).result
    assert [event["step"] for event in events] == [4, 5] and events[0]["total"] == 5     # the live curve goes on
    assert events[0]["previous"] == first.metadata["loss_history"] and "previous" not in events[1]
    assert resumed.metadata["loss_history"][:3] == first.metadata["loss_history"]
    assert len(resumed.metadata["loss_history"]) == 5 and len(history) > 0
    assert resumed.metadata["training"]["steps_done"] == 5 and resumed.metadata["resumed"] == {"steps": 3}
    assert not torch.equal(resumed.spatial_tokens, first.spatial_tokens)
    # one step at a learning rate too small to move it: the resumed run starts from the first's values
    still = _learn(comfy_nodes, steps=1, learning_rate=1e-6, resume_from=first).result[0]
    assert torch.allclose(still.temporal_qk["temporal_attn.03"], first.temporal_qk["temporal_attn.03"], atol=1e-4)
    debiased = _node(comfy_nodes, "DebiasValueEmbedding").execute(first, "difference").result[0]
    with pytest.raises(ValueError, match="not from Debias Value Embedding"):
        _learn(comfy_nodes, steps=1, resume_from=debiased)
    with pytest.raises(ValueError, match="layers differ"):
        _learn(comfy_nodes, steps=1, layers="explicit", explicit_layers="0", resume_from=first)


def test_blend_node_mixes_two_learned_motions_and_refuses_a_misfit(comfy_nodes):
    blend = _node(comfy_nodes, "BlendMotionEmbeddings")
    first = _learn(comfy_nodes, steps=2).result[0]
    second = _learn(comfy_nodes, steps=2, seed=5).result[0]
    mixed = blend.execute(first, 0.5, second, 0.5).result[0]
    for name, tensor in mixed.tensors().items():
        assert torch.allclose(tensor, 0.5 * (first.tensors()[name] + second.tensors()[name]), atol=1e-6), name
    other = _learn(comfy_nodes, steps=1, representation="temporal").result[0]
    with pytest.raises(ValueError, match="embedding 2: one has spatial tokens and the other not"):
        blend.execute(first, 0.5, other, 0.5)


def _sample(model, positive=None, negative=None, steps=2):
    import comfy.sample

    latent = torch.zeros(FRAMES, 4, HEIGHT // 8, WIDTH // 8)
    if positive is None:
        positive, negative = svd_conditioning(torch.randn(1, 4, HEIGHT // 8, WIDTH // 8,
                                                          generator=torch.Generator().manual_seed(1)))
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), steps, 3.0, "euler", "karras",
                               positive, negative, latent, seed=0, disable_pbar=True)


def _random_embedding(model, scale=0.5):
    hooks, core = pack_module("nodes.hooks.svd"), pack_module("motion_core.embedding")
    layout = hooks.temporal_layout(model, HEIGHT // 8, WIDTH // 8)
    qk, values = core.init_temporal(layout, FRAMES)
    generator = torch.Generator().manual_seed(0)
    for tensor in list(qk.values()) + list(values.values()):
        tensor.normal_(0, scale, generator=generator)
    metadata = core.base_metadata(FRAMES, WIDTH, HEIGHT)
    metadata["layers"] = layout
    return core.MotionEmbedding(temporal_qk=qk, value_embedding=values, metadata=metadata)


def test_apply_motion_frame_strengths_scale_the_motion_frame_by_frame(comfy_nodes):
    apply = _node(comfy_nodes, "ApplyMotion")
    model = build_tiny_svd()
    embedding = _random_embedding(model)
    plain = _sample(model)
    full = _sample(apply.execute(model, embedding, 1.0, 0.0, 1.0, 0).result[0])
    assert not torch.allclose(full, plain, atol=1e-4)
    assert torch.equal(_sample(apply.execute(model, embedding, 1.0, 0.0, 1.0, 0, "0").result[0]), plain)
    assert torch.equal(_sample(apply.execute(model, embedding, 1.0, 0.0, 1.0, 0, "1, 1").result[0]), full)
    ramp = _sample(apply.execute(model, embedding, 1.0, 0.0, 1.0, 0, "0, 1").result[0])
    assert not torch.allclose(ramp, full, atol=1e-4) and not torch.allclose(ramp, plain, atol=1e-4)
    assert apply.validate_inputs(0.0, 1.0, "0, fast").startswith("frame_strengths: 'fast' is not a number")
    assert apply.validate_inputs(0.6, 0.4, "") == "start_percent (0.6) must not be after end_percent (0.4)"


def test_inflate_schedules_the_motion_tokens_over_frames_and_steps(comfy_nodes):
    inflate = _node(comfy_nodes, "InflateSVDConditioning")
    embedding = _learn(comfy_nodes, steps=1, representation="motion_text").result[0]
    first = torch.randn(1, 4, HEIGHT // 8, WIDTH // 8, generator=torch.Generator().manual_seed(1))
    token = torch.randn(1, 1, 1024, generator=torch.Generator().manual_seed(2))
    positive, negative = svd_conditioning(first, token)
    faded = inflate.execute(positive, negative, embedding, 0, None, frame_strengths="1, 0").result[0]
    tokens = inflate.execute(positive, negative, embedding, 0).result[0][0][0]
    assert torch.allclose(faded[0][0][-1], token[0].expand(2, 1024), atol=1e-6)      # last frame: the image token
    assert torch.allclose(faded[0][0][0], tokens[0], atol=1e-6)                        # first: the motion tokens
    windowed, windowed_negative = inflate.execute(positive, negative, embedding, 0, None,
                                                          start_percent=0.25, end_percent=0.75).result
    assert [(entry[1]["start_percent"], entry[1]["end_percent"]) for entry in windowed] == [
        (0.25, 0.75), (0.0, 0.25), (0.75, 1.0)]
    assert windowed[1][0] is positive[0][0]                                            # outside: as it came
    samples = _sample(build_tiny_svd(), windowed, windowed_negative)
    assert torch.isfinite(samples).all()
    assert inflate.validate_inputs(0.9, 0.1) == "start_percent (0.9) must not be after end_percent (0.1)"



def test_save_into_the_output_folder_names_the_file_for_http_clients(comfy_nodes):
    import os
    import shutil

    import folder_paths

    save = _node(comfy_nodes, "SaveMotionEmbedding")
    embedding = _random_embedding(build_tiny_svd())
    folder = os.path.join(folder_paths.get_output_directory(), "motion_embeddings", "save_test")
    try:
        out = save.execute(embedding, "save_test/walk", "output")
        path = out.result[0]
        assert path.startswith(os.path.join(folder, "walk_"))
        assert out.ui.as_dict()["text"][0].splitlines()[-1] == "file: output/motion_embeddings/save_test/" + \
            os.path.basename(path)
        with pytest.raises(ValueError, match="leaves the output folder"):
            save.execute(embedding, "../../walk", "output")
    finally:
        shutil.rmtree(folder, ignore_errors=True)      # other tests list output/motion_embeddings
