"""Motion Embeddings on ComfyUI's own Wan models (tiny, built in code), inside a real ComfyUI."""
import pytest
import torch

from host_support import build_tiny_svd, build_tiny_wan, pack_module

PACK = "MotionInversion_"
FRAMES, HEIGHT, WIDTH = 3, 8, 8             # latent frames (9 video frames) and latent size: 3 x 4 x 4 tokens
POSITIONS = (HEIGHT // 2) * (WIDTH // 2)
CHANNELS = {"t2v": 16, "i2v": 16, "ti2v": 48}


def _embedding(layers=("block.00", "block.01"), seed=0, scale=1.0, frames=FRAMES, width=64, blocks=2):
    embedding_module = pack_module("motion_core.embedding")
    generator = torch.Generator().manual_seed(seed)
    metadata = embedding_module.base_metadata(frames, WIDTH * 8, HEIGHT * 8, model_family="wan")
    metadata["layers"] = {name: {"channels": width, "height": HEIGHT // 2, "width": WIDTH // 2} for name in layers}
    metadata["model_widths"] = {"dim": width, "blocks": blocks}
    return embedding_module.MotionEmbedding(
        temporal_qk={name: scale * torch.randn(1, frames, width, generator=generator) for name in layers},
        value_embedding={name: scale * torch.randn(POSITIONS, frames, width, generator=generator) for name in layers},
        metadata=metadata)


def _conds(variant):
    """positive / negative for the variant: T5-like tokens, plus CLIP image tokens and an image latent for I2V."""
    import comfy.clip_vision

    context = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(3))
    extra = {}
    if variant == "i2v":
        vision = comfy.clip_vision.Output()
        vision["penultimate_hidden_states"] = torch.randn(1, 257, 1280, generator=torch.Generator().manual_seed(4))
        extra = {"clip_vision_output": vision,
                 "concat_latent_image": torch.randn(1, 16, FRAMES, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(5))}
    return [[context, dict(extra)]], [[torch.zeros_like(context), dict(extra)]]


def _sample(model, variant, steps=2):
    import comfy.sample

    latent = torch.zeros(1, CHANNELS[variant], FRAMES, HEIGHT, WIDTH)
    noise = comfy.sample.prepare_noise(latent, 11)
    mask = None
    if variant == "ti2v":   # Wan 2.2 5B: the first frame kept, per-frame timesteps from the noise mask
        mask = torch.ones(1, 1, FRAMES, HEIGHT, WIDTH)
        mask[:, :, 0] = 0.0
    positive, negative = _conds(variant)
    return comfy.sample.sample(model, noise, steps, 2.0, "euler", "simple", positive, negative, latent,
                               noise_mask=mask, seed=11, disable_pbar=True)


def _apply(comfy_nodes, model, embedding, strength=1.0, start=0.0, end=1.0, frames=0):
    node = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "ApplyMotion"]
    return node.execute(model, embedding, strength, start, end, frames).result[0]


@pytest.mark.parametrize("variant, name", [("t2v", "Wan T2V"), ("i2v", "Wan 2.1 I2V / first-last-frame"),
                                           ("ti2v", "Wan 2.2 TI2V")])
def test_the_pack_recognises_comfyuis_wan_models(comfy_nodes, variant, name):
    hooks = pack_module("nodes.hooks")
    family = hooks.model_family(build_tiny_wan(variant))
    assert family.family == "wan" and family.variant == name and family.widths == {"dim": 64, "blocks": 2}
    assert hooks.model_family(build_tiny_svd()).family == "svd"


@pytest.mark.parametrize("variant", ["t2v", "i2v", "ti2v"])
def test_zero_embeddings_sample_bit_identical_and_the_clone_leaves_no_trace(comfy_nodes, variant):
    model = build_tiny_wan(variant)
    plain = _sample(model, variant)
    zero = _embedding(scale=0.0)
    patched = _apply(comfy_nodes, model, zero)
    assert torch.equal(_sample(patched, variant), plain)
    moved = _sample(_apply(comfy_nodes, model, _embedding(scale=2.0)), variant)
    assert not torch.allclose(moved, plain, atol=1e-4)              # the embeddings act ...
    assert torch.equal(_sample(model, variant), plain)              # ... on the clone only
    patch_type = pack_module("nodes.hooks.wan").ProjectionForward
    linears = [getattr(block.self_attn, p) for block in model.model.diffusion_model.blocks for p in "qkv"]
    assert not any(isinstance(linear.__dict__.get("forward"), patch_type) for linear in linears)


def _self_attention_io(model, embedding_model, block=0):
    """Input ``(x, freqs)`` and output of a block's self-attention in one forward of ``embedding_model``."""
    seen = {}
    attention = model.model.diffusion_model.blocks[block].self_attn

    def record(_module, args, kwargs, output):
        seen.update(x=args[0], freqs=args[1] if len(args) > 1 else kwargs["freqs"], out=output)

    handle = attention.register_forward_hook(record, with_kwargs=True)
    try:
        _sample(embedding_model, "t2v", steps=1)
    finally:
        handle.remove()
    return seen


def test_the_patched_self_attention_is_eq3_written_for_wan(comfy_nodes):
    """o(softmax(RoPE(norm_q(Wq(x + m_qk))) RoPE(norm_k(Wk(x + m_qk)))^T / sqrt(d)) Wv(x + m_v)), frame-major."""
    from comfy.ldm.flux.math import apply_rope1

    model = build_tiny_wan("t2v")
    embedding = _embedding(seed=1)
    seen = _self_attention_io(model, _apply(comfy_nodes, model, embedding))
    attention = model.model.diffusion_model.blocks[0].self_attn
    x, freqs = seen["x"], seen["freqs"]
    qk = embedding.temporal_qk["block.00"][0]                       # (f c)
    value = embedding.value_embedding["block.00"]                   # (s f c)
    tokens = torch.arange(x.shape[1])
    frame, position = tokens // POSITIONS, tokens % POSITIONS
    b, s, heads, d = x.shape[0], x.shape[1], attention.num_heads, attention.head_dim
    # the projections by their weights: the clone may still be patched in (ComfyUI unpatches lazily)
    def linear(layer, inputs):
        return torch.nn.functional.linear(inputs, layer.weight, layer.bias)

    with torch.no_grad():
        q = apply_rope1(attention.norm_q(linear(attention.q, x + qk[frame])).view(b, s, heads, d), freqs)
        k = apply_rope1(attention.norm_k(linear(attention.k, x + qk[frame])).view(b, s, heads, d), freqs)
        v = linear(attention.v, x + value[position, frame]).view(b, s, heads, d)
        weights = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / d ** 0.5, dim=-1)
        reference = linear(attention.o, torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, s, heads * d))
    assert torch.allclose(seen["out"], reference, atol=1e-5), float((seen["out"] - reference).abs().max())


def _projection_outputs(model, embedding_model, projection):
    outputs = []
    linear = getattr(model.model.diffusion_model.blocks[1].self_attn, projection)
    handle = linear.register_forward_hook(lambda _m, _a, output: outputs.append(output))
    try:
        _sample(embedding_model, "t2v", steps=1)
    finally:
        handle.remove()
    return outputs[0]


def test_a_frames_embedding_reaches_only_that_frames_queries_keys_and_values(comfy_nodes):
    model = build_tiny_wan("t2v")
    embedding = _embedding(scale=0.0)
    embedding.temporal_qk["block.01"][0, 2] = 1.0                  # frame 2's query-key embedding
    embedding.value_embedding["block.01"][5, 1] = 1.0               # position 5 of frame 1's value
    patched = _apply(comfy_nodes, model, embedding)
    base = _apply(comfy_nodes, model, _embedding(scale=0.0))
    for projection, expected in (("q", range(2 * POSITIONS, 3 * POSITIONS)),
                                 ("k", range(2 * POSITIONS, 3 * POSITIONS)), ("v", [POSITIONS + 5])):
        changed = (_projection_outputs(model, patched, projection) != _projection_outputs(model, base, projection))
        assert changed.any(-1).any(0).nonzero().flatten().tolist() == list(expected), projection


def test_gradients_reach_every_embedding_through_the_wan_model(comfy_nodes):
    hooks, training = pack_module("nodes.hooks.wan"), pack_module("nodes.host_training")
    import comfy.model_management

    model = build_tiny_wan("t2v")
    with torch.inference_mode(False), torch.enable_grad(), training.host_training_mode():
        embedding = _embedding(scale=0.0).trainable_copy("cpu")
        patched, motion = hooks.with_wan_motion(model, embedding)
        comfy.model_management.load_models_gpu([patched])
        options = dict(patched.model_options.get("transformer_options", {}), wrappers=patched.wrappers)
        latent = torch.randn(1, 16, FRAMES, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(2))
        context = torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(3))
        out = patched.model.apply_model(latent, torch.tensor([0.6]), c_crossattn=context, transformer_options=options)
        out.pow(2).mean().backward()
    grads = [t.grad for t in embedding.tensors().values()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads) and motion.calls == 2


def test_embeddings_of_another_model_are_refused_with_both_named(comfy_nodes):
    from host_support import TINY_WAN

    wan = build_tiny_wan("t2v")
    svd_embedding = _embedding()
    svd_embedding.metadata["model_family"] = "svd"
    with pytest.raises(ValueError, match="learned on svd.*Wan T2V"):
        _apply(comfy_nodes, wan, svd_embedding)
    narrow = _embedding(width=32)
    with pytest.raises(ValueError, match=r"learned on wan \(dim 32, blocks 2\).*Wan T2V \(dim 64, blocks 2\)"):
        _apply(comfy_nodes, wan, narrow)
    with pytest.raises(ValueError, match="learned on wan.*Stable Video Diffusion"):
        _apply(comfy_nodes, build_tiny_svd(), _embedding())
    assert TINY_WAN["dim"] == 64


def test_apply_motion_resamples_to_the_sampled_length(comfy_nodes):
    """An embedding of 3 latent frames applied to 5 (17 video frames): resampled, no error, it acts."""
    import comfy.sample

    model = build_tiny_wan("t2v")
    patched = _apply(comfy_nodes, model, _embedding(scale=2.0))
    latent = torch.zeros(1, 16, 5, HEIGHT, WIDTH)
    positive, negative = _conds("t2v")
    noise = comfy.sample.prepare_noise(latent, 1)
    run = lambda m: comfy.sample.sample(m, noise, 1, 2.0, "euler", "simple", positive, negative, latent,  # noqa: E731
                                        seed=1, disable_pbar=True)
    assert not torch.allclose(run(patched), run(model), atol=1e-4)
    assert pack_module("nodes.hooks.wan").latent_frames(81) == 21 and pack_module("nodes.hooks.wan").latent_frames(17) == 5


# ---- learning on Wan ------------------------------------------------------------------------
def _reference_latents(frames=FRAMES, channels=16):
    """A bright blob moving right across the latent, frame by frame: ``(1 c t h w)``."""
    latents = torch.zeros(1, channels, frames, HEIGHT, WIDTH)
    for frame in range(frames):
        latents[:, :4, frame, 2:5, 1 + 2 * frame:4 + 2 * frame] = 1.5
    return latents


def _learn_wan(model, steps=6, checkpointing=True, on_gradients=None, on_step=None, seed=0, learning_rate=5e-2,
               variant="t2v"):
    training = pack_module("nodes.host_training")
    TrainSettings = pack_module("motion_core.training").TrainSettings
    AugmentSettings = pack_module("motion_core.augment").AugmentSettings
    positive, _negative = _conds(variant)
    settings = TrainSettings(steps=steps, learning_rate=learning_rate, seed=seed,
                             augment=AugmentSettings(enabled=False))
    with torch.inference_mode():          # the executor runs every node in inference mode
        return training.train_wan_in_host(model, positive, _reference_latents(channels=CHANNELS[variant]),
                                          _embedding(scale=0.0), settings, on_step=on_step,
                                          checkpointing=checkpointing, on_gradients=on_gradients)


@pytest.mark.parametrize("variant, shift", [("t2v", 8.0), ("i2v", 8.0), ("ti2v", 8.0)])
def test_learning_on_wan_uses_flow_matching_with_the_models_shift_and_lowers_the_loss(comfy_nodes, variant, shift):
    """T2V, I2V (image latent and CLIP tokens in the conditioning) and TI2V 5B (48 channels) alike."""
    model = build_tiny_wan(variant)
    result = _learn_wan(model, steps=40, learning_rate=1e-1, variant=variant)
    training = result.embedding.metadata["training"]
    assert training["objective"] == "flow" and training["flow_shift"] == pytest.approx(shift)   # the config's shift
    history = result.loss_history
    assert len(history) == 40 and sum(history[-10:]) < sum(history[:10]), history
    assert any(float(t.abs().max()) > 0 for t in result.embedding.tensors().values())


def test_checkpointing_gives_the_gradients_of_the_plain_backward_on_wan(comfy_nodes):
    hooks = pack_module("nodes.hooks.common")
    model = build_tiny_wan("t2v")
    grads, seen = {}, []

    def keep(name):
        def on_gradients(_step, values):
            grads[name] = [g.detach().clone() for g in values]
            seen.append(hooks.has_recompute(model))
        return on_gradients

    _learn_wan(model, steps=1, checkpointing=False, on_gradients=keep("plain"))
    _learn_wan(model, steps=1, checkpointing=True, on_gradients=keep("recomputed"))
    assert seen == [False, True] and not hooks.has_recompute(model)
    assert any(float(g.abs().max()) > 0 for g in grads["plain"])
    for plain, recomputed in zip(grads["plain"], grads["recomputed"]):
        assert torch.allclose(plain, recomputed, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_wan_weights_in_half_and_float8_learn(comfy_nodes, dtype):
    import comfy.model_management

    model = build_tiny_wan("t2v", dtype=dtype, manual_cast=dtype == torch.float8_e4m3fn)
    assert {p.dtype for p in model.model.diffusion_model.blocks.parameters()} == {dtype}
    flags = []
    result = _learn_wan(model, steps=3,
                        on_step=lambda *_: flags.append(getattr(comfy.model_management, "in_training", None)))
    assert result.embedding.all_finite() and result.steps_done == 3 and len(result.loss_history) >= 1
    assert all(t.dtype == torch.float32 for t in result.embedding.tensors().values())
    assert set(flags) == ({True} if hasattr(comfy.model_management, "in_training") else {None})


def test_cancel_while_learning_on_wan_keeps_the_last_good_embedding(comfy_nodes):
    import comfy.model_management

    TrainingInterrupted = pack_module("motion_core.training").TrainingInterrupted

    def cancel_at_two(step, _total, _loss):
        if step == 2:
            comfy.model_management.interrupt_current_processing(True)

    try:
        with pytest.raises(TrainingInterrupted) as stop:
            _learn_wan(build_tiny_wan("t2v"), steps=6, on_step=cancel_at_two)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert stop.value.result.steps_done == 2 and stop.value.result.embedding.all_finite()
    assert isinstance(stop.value.cause, comfy.model_management.InterruptProcessingException)
    assert getattr(comfy.model_management, "in_training", False) is False


# ---- the nodes on Wan: Learn, Debias, Save / Load, Apply ------------------------------------
@pytest.fixture(scope="module")
def wan_vae(comfy_nodes):
    from host_support import build_wan_vae

    return build_wan_vae()


def _clip(frames=9, height=64, width=64):
    """A red square moving right over a blue gradient, ``(f h w 3)`` in 0..1."""
    clip = torch.zeros(frames, height, width, 3)
    clip[..., 2] = torch.linspace(0, 0.5, width)
    for frame in range(frames):
        clip[frame, 20:36, 4 + 4 * frame:20 + 4 * frame, 0] = 1.0
    return clip


def _learn_node(comfy_nodes, model, vae, **overrides):
    learn = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "LearnMotionEmbedding"]
    positive, _negative = _conds("t2v")
    args = dict(model=model, vae=vae, reference_frames=_clip(), representation="temporal", tokens_per_frame=3,
                steps=3, learning_rate=1e-2, seed=0, noise_mean=0.5, noise_std=1.0, loss="appearance_debiased",
                augmentation=True, flip=False, fps=6, motion_bucket_id=127, augmentation_level=0.0, layers="all",
                explicit_layers="", positive=positive)
    args.update(overrides)
    with torch.inference_mode():
        return learn.execute(**args)


def test_learn_save_load_debias_and_apply_on_wan(comfy_nodes, wan_vae):
    model = build_tiny_wan("t2v")
    out = _learn_node(comfy_nodes, model, wan_vae)
    embedding, _plot, history = out.result
    meta = embedding.metadata
    assert meta["model_family"] == "wan" and meta["model_widths"] == {"dim": 64, "blocks": 2}
    assert meta["frames"] == 3 and meta["video_frames"] == 9 and meta["training"]["objective"] == "flow"
    assert set(embedding.temporal_qk) == {"block.00", "block.01"}
    assert embedding.temporal_qk["block.00"].shape == (1, 3, 64)
    assert embedding.value_embedding["block.01"].shape == (POSITIONS, 3, 64)
    assert len(meta["loss_history"]) == 3 and embedding.all_finite() and not embedding.temporal_qk["block.00"].is_inference()
    assert "memory plan (Wan, 48 video tokens, 2 blocks with Motion Embeddings)" in out.ui.as_dict()["text"][0]

    debiased = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "DebiasValueEmbedding"].execute(embedding, "difference").result[0]
    values = embedding.value_embedding["block.00"]
    assert torch.allclose(debiased.value_embedding["block.00"][:, 2], values[:, 2] - values[:, 1])
    path = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "SaveMotionEmbedding"].execute(debiased, "wan_motion").result[0]
    import os
    loaded = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "LoadMotionEmbedding"].execute(os.path.basename(path)).result[0]
    assert loaded.metadata["model_family"] == "wan" and loaded.metadata["model_widths"] == {"dim": 64, "blocks": 2}
    assert all(torch.equal(loaded.tensors()[k], debiased.tensors()[k].float()) for k in debiased.tensors())
    patched = _apply(comfy_nodes, model, loaded, strength=20.0)
    assert not torch.equal(_sample(patched, "t2v"), _sample(model, "t2v"))
    with pytest.raises(ValueError, match="learned on wan.*Stable Video Diffusion"):
        _apply(comfy_nodes, build_tiny_svd(), loaded)


@pytest.mark.parametrize("overrides, message", [
    (dict(positive=None), "connect the positive CONDITIONING"),
    (dict(reference_frames=_clip(frames=4)), "at least 5 reference frames"),
    (dict(reference_frames=_clip(width=72)), "multiples of 16"),
])
def test_learn_on_wan_refuses_bad_input_naming_the_fix(comfy_nodes, wan_vae, overrides, message):
    with pytest.raises(ValueError, match=message):
        _learn_node(comfy_nodes, build_tiny_wan("t2v"), wan_vae, **overrides)


def test_learn_on_wan_refuses_another_models_vae(comfy_nodes):
    from host_support import build_tiny_vae

    with pytest.raises(ValueError, match="connect the Wan VAE"):
        _learn_node(comfy_nodes, build_tiny_wan("t2v"), build_tiny_vae())


def test_reference_noise_inverts_along_wans_flow_and_blends(comfy_nodes, wan_vae):
    import comfy.samplers

    model = build_tiny_wan("t2v")
    node = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "ReferenceNoise"]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 4)
    positive, _negative = _conds("t2v")
    with torch.inference_mode():
        only_fresh = node.execute(model, wan_vae, _clip(), sigmas, 0.0, 2, 7, _embedding(), positive).result[0]
        only_inverted = node.execute(model, wan_vae, _clip(), sigmas, 1.0, 2, 7, _embedding(), positive).result[0]
    latent = {"samples": torch.zeros(1, 16, FRAMES, HEIGHT, WIDTH)}
    import comfy.sample
    assert torch.equal(only_fresh.generate_noise(latent), comfy.sample.prepare_noise(latent["samples"], 7))
    inverted = only_inverted.generate_noise(latent)
    assert inverted.shape == (1, 16, FRAMES, HEIGHT, WIDTH) and bool(torch.isfinite(inverted).all())
    assert not torch.allclose(inverted, only_fresh.generate_noise(latent))
    longer = only_inverted.generate_noise({"samples": torch.zeros(1, 16, 5, 2 * HEIGHT, 2 * WIDTH)})
    assert longer.shape == (1, 16, 5, 2 * HEIGHT, 2 * WIDTH) and float(longer.std()) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="needs the prompt"):
        node.execute(model, wan_vae, _clip(), sigmas, 0.5, 2, 7, None, None)


def test_learn_on_wan_refuses_what_cannot_fit_before_encoding_and_names_what_would(comfy_nodes, wan_vae, monkeypatch):
    import comfy.model_management

    memory = pack_module("nodes.memory")
    plan_wan = pack_module("motion_core.memory_plan").plan_wan
    model = build_tiny_wan("t2v")
    layout = {f"block.0{i}": {"channels": 64, "height": 4, "width": 4} for i in range(2)}
    one, two = (plan_wan(memory.wan_learn_shape(model, dict(list(layout.items())[:n]), FRAMES, 4, 4, 0, True)).total
                for n in (1, 2))
    total = (one + two) / 2 / memory.USABLE_FRACTION      # room for one block, not two
    monkeypatch.setattr(comfy.model_management, "get_total_memory", lambda *args, **kwargs: total)
    encoded = []
    monkeypatch.setattr(wan_vae, "encode", lambda pixels: encoded.append(1))
    with pytest.raises(MemoryError, match=r"would need about .* on Wan.*these would fit: layers explicit '1' \(1 block\)"):
        _learn_node(comfy_nodes, model, wan_vae)
    assert encoded == []


def test_learning_takes_its_patches_off_the_shared_modules_when_done(comfy_nodes):
    """The projection patches hold the learned tensors on the device: none is left after learning."""
    model = build_tiny_wan("t2v")
    _learn_wan(model, steps=2)
    patch_type = pack_module("nodes.hooks.wan").ProjectionForward
    modules = [getattr(block.self_attn, p) for block in model.model.diffusion_model.blocks for p in "qkv"]
    assert not any(isinstance(m.__dict__.get("forward"), patch_type) for m in modules)
    assert not pack_module("nodes.hooks.common").has_recompute(model)


def test_learn_refuses_a_model_that_already_carries_motion(comfy_nodes):
    patched = _apply(comfy_nodes, build_tiny_wan("t2v"), _embedding())
    with pytest.raises(ValueError, match="already has Motion Embeddings applied"):
        _learn_wan(patched, steps=1)


def test_learn_on_wan_i2v_names_the_image_conditionings_length(comfy_nodes, wan_vae):
    positive, _negative = _conds("i2v")             # image latent of 3 frames; the clip below has 13 (4 latent)
    with pytest.raises(ValueError, match="set WanImageToVideo's length to 13"):
        _learn_node(comfy_nodes, build_tiny_wan("i2v"), wan_vae, reference_frames=_clip(frames=13), positive=positive)


def test_several_clips_learn_on_wan_t2v_and_are_refused_on_i2v(comfy_nodes, wan_vae):
    more = [_clip(frames=13, height=48, width=80)]            # conformed to the reference's 9 frames at 64x64
    embedding = _learn_node(comfy_nodes, build_tiny_wan("t2v"), wan_vae, steps=2, more_references=more).result[0]
    assert embedding.temporal_qk["block.00"].shape == (1, 3, 64) and embedding.all_finite()
    positive, _negative = _conds("i2v")
    with pytest.raises(ValueError, match="more_references on Wan I2V"):
        _learn_node(comfy_nodes, build_tiny_wan("i2v"), wan_vae, positive=positive, more_references=more)


# ---- ComfyUI's context windows ---------------------------------------------------------------
def _with_context_windows(comfy_nodes, model, video_frames=9, overlap=4):
    """ComfyUI's own WAN Context Windows (Manual) node on ``model``: windows of ``video_frames``."""
    import inspect

    import comfy.context_windows

    node = comfy_nodes.NODE_CLASS_MAPPINGS["WanContextWindowsManual"]
    args = dict(model=model, context_length=video_frames, context_overlap=overlap,
                context_schedule=comfy.context_windows.ContextSchedules.STATIC_STANDARD, context_stride=1,
                closed_loop=False, fuse_method=comfy.context_windows.ContextFuseMethods.PYRAMID)
    if "freenoise" in inspect.signature(node.execute).parameters:      # ComfyUI 0.33
        args["freenoise"] = False
    out = node.execute(**args)
    return out.result[0] if hasattr(out, "result") else out[0]


def test_a_context_windows_forward_gets_the_embeddings_of_its_frames(comfy_nodes):
    wan = pack_module("nodes.hooks.wan")
    embedding = _embedding(frames=5)
    embedding.spatial_tokens = torch.randn(5, 2, 64)
    grid = wan.WanGrid()
    grid.frames, grid.height, grid.width, grid.total_frames, grid.frame_index = 3, 4, 4, 5, [2, 3, 4]
    motion = wan.WanMotionEmbeddings(embedding, grid)
    qk, value = motion.tensors("block.01", torch.zeros(1))
    assert torch.equal(qk, embedding.temporal_qk["block.01"][:, 2:5])
    assert torch.equal(value, embedding.value_embedding["block.01"][:, 2:5])
    assert torch.equal(motion.frame_tokens(torch.zeros(1)), embedding.spatial_tokens[2:5])
    grid.total_frames, grid.frame_index = 9, [0, 1, 2]        # a longer video: resampled to it, then the window's
    resampled = pack_module("motion_core.resample").resample_frames(embedding.temporal_qk["block.01"], 9, dim=1)
    assert torch.allclose(motion.tensors("block.01", torch.zeros(1))[0], resampled[:, 0:3])


def test_motion_samples_through_comfyuis_context_windows(comfy_nodes):
    """A 17-frame video (5 latent frames) sampled in windows of 9 frames (3 latent frames): zero embeddings
    leave the windowed result bit for bit, learned ones act, and no window fails on a shape."""
    if "WanContextWindowsManual" not in comfy_nodes.NODE_CLASS_MAPPINGS:
        pytest.fail("this ComfyUI has no WAN Context Windows node; the pack supports 0.3.64 and later, which have it")
    import comfy.sample

    model = build_tiny_wan("t2v")
    positive, negative = _conds("t2v")
    latent = torch.zeros(1, 16, 5, HEIGHT, WIDTH)
    noise = comfy.sample.prepare_noise(latent, 11)

    def sample(patched):
        windowed = _with_context_windows(comfy_nodes, patched)
        return comfy.sample.sample(windowed, noise, 2, 2.0, "euler", "simple", positive, negative, latent, seed=11,
                                   disable_pbar=True)

    plain = sample(model)
    assert torch.equal(sample(_apply(comfy_nodes, model, _embedding(scale=0.0, frames=5))), plain)
    seen = []
    moved_model = _apply(comfy_nodes, model, _embedding(scale=2.0, frames=5))
    motion = moved_model.object_patches["diffusion_model.blocks.0.self_attn.q.forward"].motion
    original = motion.tensors
    motion.tensors = lambda name, like: (seen.append((motion.grid.total_frames, motion.grid.frame_index)),
                                         original(name, like))[1]
    assert not torch.allclose(sample(moved_model), plain, atol=1e-4)
    windows = {tuple(index) for total, index in seen if index is not None}
    assert {total for total, _index in seen} == {5} and all(index is not None for _total, index in seen)
    assert (0, 1, 2) in windows and windows & {(2, 3, 4), (1, 2, 3, 4)}   # 0.33 prepends the frame before a window


# ---- Wan 2.2 A14B experts ---------------------------------------------------------------------
def test_an_a14b_expert_learns_on_its_own_share_of_the_noise_levels(comfy_nodes):
    import comfy.patcher_extension

    learn_wan = pack_module("nodes.learn_wan")
    ModelFamily = pack_module("nodes.hooks").ModelFamily
    expert = ModelFamily("wan", "Wan T2V", {"dim": 5120, "blocks": 40})     # A14B's shapes: Wan 2.1 14B's
    t2v, i2v = build_tiny_wan("t2v"), build_tiny_wan("i2v")
    assert learn_wan.noise_range(t2v, expert, learn_wan.HIGH_NOISE_EXPERT) == (0.875, 1.0)
    assert learn_wan.noise_range(t2v, expert, learn_wan.LOW_NOISE_EXPERT) == (0.0, 0.875)
    assert learn_wan.noise_range(i2v, expert, learn_wan.HIGH_NOISE_EXPERT) == (0.9, 1.0)
    tiny = pack_module("nodes.hooks").model_family(t2v)
    with pytest.raises(ValueError, match="for a Wan 2.2 A14B expert.*dim 64.*'whole range'"):
        learn_wan.noise_range(t2v, tiny, learn_wan.HIGH_NOISE_EXPERT)

    seen = []

    def record(executor, x, timestep, *args, **kwargs):
        seen.append(float(timestep.flatten()[0]))
        return executor(x, timestep, *args, **kwargs)
    model = t2v.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_record", record)
    training = pack_module("nodes.host_training")
    TrainSettings = pack_module("motion_core.training").TrainSettings
    AugmentSettings = pack_module("motion_core.augment").AugmentSettings
    settings = TrainSettings(steps=12, seed=0, augment=AugmentSettings(enabled=False), flow_sigma_range=(0.875, 1.0))
    with torch.inference_mode():
        result = training.train_wan_in_host(model, _conds("t2v")[0], _reference_latents(), _embedding(scale=0.0),
                                            settings)
    sampling = model.get_model_object("model_sampling")
    sigmas = [float(sampling.sigma(torch.tensor(t))) for t in seen]          # the model's timesteps back to sigma
    assert len(sigmas) >= 12 and min(sigmas) >= 0.875 - 1e-3, sigmas
    assert result.embedding.metadata["training"]["flow_sigma_range"] == [0.875, 1.0] or \
        tuple(result.embedding.metadata["training"]["flow_sigma_range"]) == (0.875, 1.0)


def test_motion_refuses_to_run_on_a_copy_of_the_model_it_was_applied_to(comfy_nodes):
    """ComfyUI's multi-GPU clones deep-copy the diffusion model; the patches hold the original's modules."""
    wan = pack_module("nodes.hooks.wan")
    model = build_tiny_wan("t2v")
    patched, motion = wan.with_wan_motion(model, _embedding(scale=0.0))
    wrapper = patched.wrappers["diffusion_model"][wan.HOOK_KEY][0]

    class Executor:
        class_obj = build_tiny_wan("t2v").model.diffusion_model

        def __call__(self, *args, **kwargs):
            return "ran"
    with pytest.raises(RuntimeError, match="multi-GPU"):
        wrapper(Executor(), torch.zeros(1, 16, FRAMES, HEIGHT, WIDTH), torch.zeros(1), torch.zeros(1, 6, 32))
    Executor.class_obj = model.model.diffusion_model
    assert wrapper(Executor(), torch.zeros(1, 16, FRAMES, HEIGHT, WIDTH), torch.zeros(1), torch.zeros(1, 6, 32)) == "ran"


def test_learning_tracks_gradients_only_from_the_first_learned_block_and_restores_the_weights_flag(comfy_nodes):
    """The frozen weights do not require grad while learning, so a block before the first learned one keeps
    nothing for backward; afterwards the flags are back, also on weights built as inference tensors."""
    model = build_tiny_wan("t2v")
    with torch.inference_mode():           # as ComfyUI's loaders build them
        inference_built = build_tiny_wan("t2v")
    assert all(p.is_inference() for p in inference_built.model.parameters())
    for built in (model, inference_built):
        flags = {name: p.requires_grad for name, p in built.model.named_parameters()}
        entering = []
        handles = [block.register_forward_pre_hook(
            lambda _m, args, kwargs, i=i: entering.append((i, (args[0] if args else kwargs["x"]).requires_grad)),
            with_kwargs=True) for i, block in enumerate(built.model.diffusion_model.blocks)]
        training = pack_module("nodes.host_training")
        TrainSettings = pack_module("motion_core.training").TrainSettings
        AugmentSettings = pack_module("motion_core.augment").AugmentSettings
        with torch.inference_mode():
            result = training.train_wan_in_host(built, _conds("t2v")[0], _reference_latents(),
                                                _embedding(layers=("block.01",), scale=0.0),
                                                TrainSettings(steps=2, augment=AugmentSettings(enabled=False)))
        for handle in handles:
            handle.remove()
        assert set(entering) == {(0, False), (1, False)}       # block 1's embeddings enter inside its attention
        assert result.embedding.temporal_qk["block.01"].abs().max() > 0
        assert {name: p.requires_grad for name, p in built.model.named_parameters()} == flags
