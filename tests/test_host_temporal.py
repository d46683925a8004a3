"""Temporal Motion Embeddings inside a real ComfyUI: patching, undoing, learning, reference noise."""
import pytest
import torch

from host_support import build_tiny_svd, build_tiny_vae, pack_module, svd_conditioning

# what comfy.model_detection finds in an SVD / SVD-XT checkpoint (plus SVD's extra config)
SVD_UNET = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 768, "in_channels": 8, "out_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "transformer_depth_middle": 1,
    "use_linear_in_transformer": True, "context_dim": 1024, "extra_ff_mix_layer": True, "use_spatial_context": True,
    "merge_strategy": "learned_with_images", "merge_factor": 0.0, "video_kernel_size": [3, 1, 1],
    "use_temporal_resblock": True, "use_temporal_attention": True, "disable_temporal_crossattention": False,
    "num_heads": -1, "num_head_channels": 64,
}


def _sample(model, frames, height, width, positive=None, negative=None, steps=2, seed=0):
    import comfy.sample

    latent = torch.zeros(frames, 4, height, width)
    if positive is None:
        positive, negative = svd_conditioning(torch.randn(1, 4, height, width, generator=torch.Generator().manual_seed(1)))
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, seed), steps, 3.0, "euler", "karras",
                               positive, negative, latent, seed=seed, disable_pbar=True)


def _random_embedding(model, frames, height, width, scale=0.5, seed=0):
    hooks = pack_module("nodes.hooks.svd")
    core = pack_module("motion_core.embedding")
    layout = hooks.temporal_layout(model, height, width)
    qk, values = core.init_temporal(layout, frames)
    generator = torch.Generator().manual_seed(seed)
    for tensor in list(qk.values()) + list(values.values()):
        tensor.normal_(0, scale, generator=generator)
    metadata = core.base_metadata(frames, width * 8, height * 8)
    metadata["layers"] = layout
    return core.MotionEmbedding(temporal_qk=qk, value_embedding=values, metadata=metadata)


def _apply(comfy_nodes, model, embedding, strength=1.0, start=0.0, end=1.0, frames=0):
    node = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_ApplyMotion"]
    return node.execute(model, embedding, strength, start, end, frames).result[0]


def test_full_size_svd_has_16_temporal_self_attention_layers(comfy_nodes):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**SVD_UNET, device="meta", operations=comfy.ops.disable_weight_init)
    blocks = pack_module("nodes.hooks.svd").temporal_blocks(unet)
    assert len(blocks) == 16
    assert [channels for _n, _b, channels, _f in blocks] == [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280,
                                                              640, 640, 640, 320, 320, 320]
    assert [factor for *_rest, factor in blocks][:6] == [1, 1, 2, 2, 4, 4]
    assert all(block is not None for _n, block, _c, _f in blocks)


@pytest.mark.parametrize("frames,height,width", [(3, 8, 8), (4, 4, 4)])   # (4, 4, 4): level 1 has h*w == frames
def test_patch_fires_on_exactly_the_temporal_self_attention_layers(comfy_nodes, frames, height, width):
    model = build_tiny_svd()
    embedding = _random_embedding(model, frames, height, width)
    hooks = pack_module("nodes.hooks.svd")
    names = [name for name, *_ in hooks.temporal_blocks(model.model.diffusion_model)]
    assert len(names) == 7                            # tiny SVD: 2 down + 1 mid + 4 up
    patched, patch = hooks.with_motion(model, embedding)
    seen = []
    patch_call = patch.__call__

    class Recorder:
        def __deepcopy__(self, memo):
            return self

        def __call__(self, n, context, value, extra_options):
            seen.append((extra_options.get(hooks.LAYER_OPTION), tuple(n.shape)))
            return n, context, value

    patched.set_model_attn1_patch(Recorder())
    _sample(patched, frames, height, width, steps=1)
    temporal = [name for name, _shape in seen if name is not None]
    assert sorted(temporal) == sorted(names)          # each temporal layer once in the one batched forward
    assert all(shape[1] == frames for name, shape in seen if name is not None)
    assert len(seen) == 2 * len(names)                # the other attn1 calls are the spatial ones, left alone
    assert patch.calls == len(names) and patch_call is not None


def test_zero_embeddings_leave_sampling_unchanged(comfy_nodes):
    model = build_tiny_svd()
    reference = _sample(model, 3, 8, 8)
    zero = _random_embedding(model, 3, 8, 8, scale=0.0)
    patched = _apply(comfy_nodes, model, zero)
    assert torch.equal(_sample(patched, 3, 8, 8), reference)
    moved = _apply(comfy_nodes, model, _random_embedding(model, 3, 8, 8))
    assert not torch.allclose(_sample(moved, 3, 8, 8), reference)


def test_dropping_the_patched_clone_restores_bit_identical_outputs(comfy_nodes):
    model = build_tiny_svd()
    before = _sample(model, 3, 8, 8)
    patched = _apply(comfy_nodes, model, _random_embedding(model, 3, 8, 8))
    _sample(patched, 3, 8, 8)
    del patched
    assert torch.equal(_sample(model, 3, 8, 8), before)
    assert not model.model_options.get("transformer_options", {}).get("patches")


def test_apply_motion_at_another_resolution_and_frame_count(comfy_nodes):
    model = build_tiny_svd()
    embedding = _random_embedding(model, 3, 8, 8)
    patched = _apply(comfy_nodes, model, embedding, frames=5)
    out = _sample(patched, 5, 16, 12)
    assert out.shape == (5, 4, 16, 12) and torch.isfinite(out).all()


def test_strength_zero_and_percent_window_are_no_ops(comfy_nodes):
    model = build_tiny_svd()
    reference = _sample(model, 3, 8, 8)
    embedding = _random_embedding(model, 3, 8, 8)
    assert torch.equal(_sample(_apply(comfy_nodes, model, embedding, strength=0.0), 3, 8, 8), reference)
    assert torch.equal(_sample(_apply(comfy_nodes, model, embedding, start=1.0, end=1.0), 3, 8, 8), reference)


def test_embedding_from_another_model_names_the_first_misfit_layer(comfy_nodes):
    model = build_tiny_svd()
    embedding = _random_embedding(model, 3, 8, 8)
    embedding.temporal_qk["temporal_attn.02"] = torch.zeros(1, 3, 48)
    with pytest.raises(ValueError, match=r"temporal_attn.02 does not fit.*\(1, 3, 48\).*64 channels"):
        _apply(comfy_nodes, model, embedding)
    embedding.temporal_qk["temporal_attn.40"] = torch.zeros(1, 3, 32)
    embedding.temporal_qk.pop("temporal_attn.02")
    with pytest.raises(ValueError, match="temporal_attn.40"):
        _apply(comfy_nodes, model, embedding)


def _learn(comfy_nodes, representation, steps=4, loss="edm"):
    from test_host_motion_text import _learn as learn_motion_text

    return learn_motion_text(comfy_nodes, steps=steps, representation=representation, loss=loss, learning_rate=5e-2)


@pytest.mark.parametrize("representation,loss", [("temporal", "appearance_debiased"), ("both", "edm")])
def test_learn_temporal_and_both_update_every_embedding(comfy_nodes, representation, loss):
    embedding = _learn(comfy_nodes, representation, loss=loss).result[0]
    assert len(embedding.temporal_qk) == 7 and len(embedding.value_embedding) == 7
    assert all(qk.abs().sum() > 0 for qk in embedding.temporal_qk.values())
    assert all(v.abs().sum() > 0 for v in embedding.value_embedding.values())
    assert embedding.has_motion_text == (representation == "both")
    debias = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_DebiasValueEmbedding"]
    debiased = debias.execute(embedding, "difference").result[0]
    assert debiased.metadata["debias"] == "difference"
    with pytest.raises(ValueError, match="already debiased"):
        debias.execute(debiased, "difference")
    patched = _apply(comfy_nodes, build_tiny_svd(), debiased)
    assert torch.isfinite(_sample(patched, 4, 8, 8)).all()


def test_reference_noise_blends_inverted_and_fresh_noise(comfy_nodes):
    import comfy.sample
    from test_host_motion_text import _reference_frames

    node = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_ReferenceNoise"]
    model, vae = build_tiny_svd(), build_tiny_vae()
    sigmas = torch.tensor([14.6, 2.0, 0.0])
    frames = _reference_frames()
    latent = {"samples": torch.zeros(4, 4, 8, 8)}
    fresh = comfy.sample.prepare_noise(latent["samples"], 7)
    only_fresh = node.execute(model, vae, frames, sigmas, 0.0, 3, 7).result[0]
    assert torch.equal(only_fresh.generate_noise(latent), fresh)
    blended = node.execute(model, vae, frames, sigmas, 0.5, 3, 7).result[0]
    noise = blended.generate_noise(latent)
    assert noise.shape == fresh.shape and not torch.allclose(noise, fresh)
    inverted = blended.inverted
    assert inverted.shape == (4, 4, 8, 8) and 0.2 < float(inverted.std()) < 5.0
    longer = blended.generate_noise({"samples": torch.zeros(6, 4, 8, 8)})
    assert longer.shape == (6, 4, 8, 8)
