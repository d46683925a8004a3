"""Per-frame motion tokens on ComfyUI's own Wan models (tiny, built in code), inside a real ComfyUI.

Each frame's queries attend to the prompt's tokens plus that frame's motion tokens in one
softmax; the reference written here is ComfyUI's own cross-attention run frame by frame on
the prompt with the frame's tokens appended, which is what that sentence means.
"""
import os

import pytest
import torch

from host_support import build_tiny_svd, build_tiny_wan, pack_module
from test_host_wan import CHANNELS, FRAMES, HEIGHT, PACK, POSITIONS, WIDTH, _apply, _clip, _conds, _embedding, \
    _reference_latents, _sample

DIM, TOKENS = 64, 2


def _token_embedding(variant="t2v", scale=1.0, seed=1, temporal=False):
    wan = pack_module("nodes.hooks.wan")
    embedding = _embedding(scale=scale) if temporal else _embedding(layers=())
    generator = torch.Generator().manual_seed(seed)
    embedding.spatial_tokens = scale * torch.randn(FRAMES, TOKENS, DIM, generator=generator)
    embedding.metadata.update(tokens_per_frame=TOKENS,
                              token_context=wan.TOKENS_WITH_IMAGE if variant == "i2v" else wan.TOKENS_WITH_TEXT)
    return embedding


def _patched_cross_attention(model, embedding, first_token=0, cond_rows=None):
    """Block 0's cross-attention module and its patched forward, with the grid of a ``FRAMES x 4 x 4`` run."""
    wan = pack_module("nodes.hooks.wan")
    grid = wan.WanGrid()
    grid.frames, grid.height, grid.width, grid.first_token = FRAMES, HEIGHT // 2, WIDTH // 2, first_token
    grid.cond_rows = cond_rows
    motion = wan.WanMotionEmbeddings(embedding, grid)
    module = model.model.diffusion_model.blocks[0].cross_attn
    with_image = embedding.metadata["token_context"] == wan.TOKENS_WITH_IMAGE
    return module, wan.CrossAttentionForward(module.forward, module, motion, with_image)


def _inputs(batch=1, extra_tokens=0, image_tokens=0, seed=7):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, extra_tokens + FRAMES * POSITIONS, DIM, generator=generator)
    context = torch.randn(batch, image_tokens + 6, DIM, generator=generator)
    return x, context


@pytest.mark.parametrize("variant", ["t2v", "i2v"])
def test_each_frames_queries_attend_to_the_prompt_and_their_own_tokens_in_one_softmax(comfy_nodes, variant):
    """T2V: tokens beside the prompt's; 2.1 I2V: beside the CLIP image tokens (its second softmax)."""
    model = build_tiny_wan(variant)
    embedding = _token_embedding(variant)
    module, patched = _patched_cross_attention(model, embedding)
    image = 257 if variant == "i2v" else 0
    x, context = _inputs(image_tokens=image)
    kwargs = {"context_img_len": image} if image else {}
    with torch.no_grad():
        out = patched(x, context, transformer_options={}, **kwargs)
        expected = []
        for frame in range(FRAMES):
            queries = x[:, frame * POSITIONS:(frame + 1) * POSITIONS]
            tokens = embedding.spatial_tokens[frame][None]
            if image:   # the frame's tokens join the image tokens, and the image softmax grows by them
                extended = torch.cat([context[:, :image], tokens, context[:, image:]], dim=1)
                expected.append(module.forward(queries, extended, context_img_len=image + TOKENS))
            else:
                expected.append(module.forward(queries, torch.cat([context, tokens], dim=1)))
        plain = module.forward(x, context, **kwargs)
    assert torch.allclose(out, torch.cat(expected, dim=1), atol=1e-5)
    assert not torch.allclose(out, plain, atol=1e-3)


def test_a_frames_tokens_reach_only_that_frames_queries(comfy_nodes):
    model = build_tiny_wan("t2v")
    embedding = _token_embedding()
    module, patched = _patched_cross_attention(model, embedding)
    x, context = _inputs()
    with torch.no_grad():
        before = patched(x, context)
        embedding.spatial_tokens[1] += 3.0
        after = patched(x, context)
    changed = (after - before).abs().amax(dim=-1)[0].reshape(FRAMES, POSITIONS).amax(dim=-1)
    assert changed[1] > 1e-3 and changed[0] == 0 and changed[2] == 0


def test_reference_tokens_and_a_negatives_rows_see_the_prompt_alone(comfy_nodes):
    """Tokens a variant prepends (a reference image's) and the rows of the negative prompt are ComfyUI's own."""
    model = build_tiny_wan("t2v")
    module, patched = _patched_cross_attention(model, _token_embedding(), first_token=POSITIONS,
                                               cond_rows=[True, False])
    x, context = _inputs(batch=2, extra_tokens=POSITIONS)
    with torch.no_grad():
        out = patched(x, context)
        plain = module.forward(x, context)
    assert torch.equal(out[1], plain[1])                                        # the negative's row
    assert torch.allclose(out[0, :POSITIONS], plain[0, :POSITIONS], atol=1e-6)   # the reference's tokens
    assert not torch.allclose(out[0, POSITIONS:], plain[0, POSITIONS:], atol=1e-3)


def test_frame_strengths_mix_each_frames_tokens_in_by_its_weight(comfy_nodes):
    """Apply Motion's frame_strengths on tokens: frame f's output is plain + w_f * (with tokens - plain)."""
    library = pack_module("motion_core.library")
    model = build_tiny_wan("t2v")
    embedding = _token_embedding()
    module, patched = _patched_cross_attention(model, embedding)
    _module, scheduled = _patched_cross_attention(model, library.scaled_over_frames(embedding, [0.0, 1.0]))
    x, context = _inputs()
    with torch.no_grad():
        full, plain, out = patched(x, context), module.forward(x, context), scheduled(x, context)
    weights = torch.linspace(0, 1, FRAMES).repeat_interleave(POSITIONS)[None, :, None]
    assert torch.allclose(out, plain + weights * (full - plain), atol=1e-5)
    assert torch.allclose(out[:, :POSITIONS], plain[:, :POSITIONS], atol=1e-6)          # weight 0: no tokens


@pytest.mark.parametrize("variant", ["t2v", "i2v", "ti2v"])
def test_tokens_act_in_sampling_and_the_clone_leaves_no_trace(comfy_nodes, variant):
    model = build_tiny_wan(variant)
    plain = _sample(model, variant)
    moved = _sample(_apply(comfy_nodes, model, _token_embedding(variant, scale=3.0)), variant)
    assert not torch.allclose(moved, plain, atol=1e-4)
    assert torch.equal(_sample(model, variant), plain)
    patch_type = pack_module("nodes.hooks.wan").CrossAttentionForward
    assert not any(isinstance(block.cross_attn.__dict__.get("forward"), patch_type)
                   for block in model.model.diffusion_model.blocks)
    off = _sample(_apply(comfy_nodes, model, _token_embedding(variant, scale=3.0), strength=0.0), variant)
    assert torch.equal(off, plain)


def _learn_tokens(model, variant, representation, steps, learning_rate=5e-2, on_gradients=None):
    training = pack_module("nodes.host_training")
    wan = pack_module("nodes.hooks.wan")
    TrainSettings = pack_module("motion_core.training").TrainSettings
    AugmentSettings = pack_module("motion_core.augment").AugmentSettings
    positive, _negative = _conds(variant)
    initial = _embedding(scale=0.0) if representation == "both" else _embedding(layers=())
    with torch.inference_mode():
        initial.spatial_tokens = wan.initial_tokens(model, positive, FRAMES, TOKENS,
                                                    generator=torch.Generator().manual_seed(0))
        initial.metadata["token_context"] = wan.token_context(model.model.diffusion_model)
        settings = TrainSettings(steps=steps, learning_rate=learning_rate, seed=0,
                                 augment=AugmentSettings(enabled=False))
        return training.train_wan_in_host(model, positive, _reference_latents(channels=CHANNELS[variant]), initial,
                                          settings, on_gradients=on_gradients)


@pytest.mark.parametrize("variant, representation", [("t2v", "motion_text"), ("i2v", "motion_text"),
                                                     ("ti2v", "both")])
def test_gradients_reach_the_tokens_and_learning_lowers_the_loss(comfy_nodes, variant, representation):
    model = build_tiny_wan(variant)
    first = {}

    def keep(step, gradients):
        if step == 1:
            first.update(zip(names, [g.detach().clone() for g in gradients]))

    names = ["spatial_tokens"] + (["temporal_qk.block.00", "temporal_qk.block.01", "value_embedding.block.00",
                                   "value_embedding.block.01"] if representation == "both" else [])
    result = _learn_tokens(model, variant, representation, steps=40, learning_rate=1e-1, on_gradients=keep)
    assert set(result.embedding.tensors()) == set(names)
    assert all(float(first[name].abs().max()) > 0 for name in names), {k: float(v.abs().max()) for k, v in first.items()}
    history = result.loss_history
    assert sum(history[-10:]) < sum(history[:10]), history


def test_tokens_start_from_the_prompt_or_the_clip_image_tokens(comfy_nodes):
    wan = pack_module("nodes.hooks.wan")
    for variant, source in (("t2v", "text"), ("i2v", "image")):
        model = build_tiny_wan(variant)
        positive, _negative = _conds(variant)
        diffusion_model = model.model.diffusion_model
        tokens = wan.initial_tokens(model, positive, FRAMES, TOKENS, noise_std=0.0)
        with torch.no_grad():
            if source == "text":
                expected = diffusion_model.text_embedding(positive[0][0][0]).mean(dim=0)
            else:
                clip = positive[0][1]["clip_vision_output"].penultimate_hidden_states[0]
                expected = diffusion_model.img_emb(clip).mean(dim=0)
        assert tokens.shape == (FRAMES, TOKENS, DIM) and wan.token_context(diffusion_model) == source
        assert torch.allclose(tokens, expected.expand_as(tokens), atol=1e-5)
    with pytest.raises(ValueError, match="clip_vision_output"):
        wan.initial_tokens(build_tiny_wan("i2v"), _conds("t2v")[0], FRAMES, TOKENS)


def _learn_node(comfy_nodes, model, vae, representation):
    learn = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "LearnMotionEmbedding"]
    positive, _negative = _conds("t2v")
    with torch.inference_mode():
        return learn.execute(model=model, vae=vae, reference_frames=_clip(), representation=representation,
                             tokens_per_frame=TOKENS, steps=2, learning_rate=1e-2, seed=0, noise_mean=0.5,
                             noise_std=1.0, loss="appearance_debiased", augmentation=False, flip=False, fps=6,
                             motion_bucket_id=127, augmentation_level=0.0, layers="all", explicit_layers="",
                             positive=positive).result[0]


@pytest.fixture(scope="module")
def wan_vae(comfy_nodes):
    from host_support import build_wan_vae

    return build_wan_vae()


def test_representations_on_wan_mean_what_they_mean_on_svd_and_round_trip(comfy_nodes, wan_vae):
    model = build_tiny_wan("t2v")
    text = _learn_node(comfy_nodes, model, wan_vae, "motion_text")
    assert text.spatial_tokens.shape == (FRAMES, TOKENS, DIM) and not text.has_temporal
    assert text.metadata["token_context"] == "text" and text.metadata["representation"] == "motion_text"
    both = _learn_node(comfy_nodes, model, wan_vae, "both")
    assert both.has_motion_text and set(both.temporal_qk) == {"block.00", "block.01"}
    path = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "SaveMotionEmbedding"].execute(both, "wan_tokens").result[0]
    loaded = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "LoadMotionEmbedding"].execute(os.path.basename(path)).result[0]
    assert torch.equal(loaded.spatial_tokens, both.spatial_tokens.float())
    assert loaded.metadata["token_context"] == "text"
    assert not torch.equal(_sample(_apply(comfy_nodes, model, loaded), "t2v"), _sample(model, "t2v"))


def test_tokens_of_another_model_or_family_are_refused_naming_both(comfy_nodes):
    wider = _token_embedding()
    wider.spatial_tokens = torch.zeros(FRAMES, TOKENS, 2 * DIM)
    with pytest.raises(ValueError, match=f"{2 * DIM} wide.*{DIM}"):
        _apply(comfy_nodes, build_tiny_wan("t2v"), wider)
    with pytest.raises(ValueError, match="beside the text tokens.*beside the image tokens"):
        _apply(comfy_nodes, build_tiny_wan("i2v"), _token_embedding("t2v"))
    inflate = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "InflateSVDConditioning"]
    positive, negative = _conds("t2v")
    with pytest.raises(ValueError, match="learned on wan.*Apply Motion"):
        inflate.execute(positive, negative, _token_embedding(), 0)
    with pytest.raises(ValueError, match="learned on wan.*Stable Video Diffusion"):
        _apply(comfy_nodes, build_tiny_svd(), _token_embedding())


def test_a_first_last_frame_model_starts_its_tokens_from_both_images(comfy_nodes):
    """Wan 2.1 first-last-frame: img_emb adds a position embedding to 2 x 257 image tokens (a batch axis)."""
    import comfy.clip_vision

    wan = pack_module("nodes.hooks.wan")
    model = build_tiny_wan("i2v")
    diffusion_model = model.model.diffusion_model
    diffusion_model.img_emb.emb_pos = torch.nn.Parameter(torch.randn(1, 514, 1280) * 0.1)
    vision = comfy.clip_vision.Output()
    vision["penultimate_hidden_states"] = torch.randn(1, 514, 1280, generator=torch.Generator().manual_seed(4))
    positive = [[torch.randn(1, 6, 32), {"clip_vision_output": vision}]]
    tokens = wan.initial_tokens(model, positive, FRAMES, TOKENS, noise_std=0.0)
    with torch.no_grad():
        expected = diffusion_model.img_emb(vision.penultimate_hidden_states)[0].mean(dim=0)
    assert torch.allclose(tokens[0, 0], expected, atol=1e-5)


def test_an_i2v_model_without_clip_image_tokens_keeps_comfyuis_image_attention(comfy_nodes):
    """No clip_vision_output (context_img_len None): ComfyUI's I2V cross-attention runs both of its attentions
    over the whole context; the patched one does too, the frame's tokens joining the image attention."""
    model = build_tiny_wan("i2v")
    embedding = _token_embedding("i2v")
    module, patched = _patched_cross_attention(model, embedding)
    x, context = _inputs()
    with torch.no_grad():
        out = patched(x, context, context_img_len=None, transformer_options={})
        expected = []
        for frame in range(FRAMES):
            queries = x[:, frame * POSITIONS:(frame + 1) * POSITIONS]
            image_part = torch.cat([context, embedding.spatial_tokens[frame][None]], dim=1)
            expected.append(module.forward(queries, torch.cat([image_part, context], dim=1),
                                           context_img_len=image_part.shape[1]))
    assert torch.allclose(out, torch.cat(expected, dim=1), atol=1e-5)
