"""Motion Embeddings on AnimateDiff through the real AnimateDiff-Evolved (ADE), loaded beside the pack in a real
ComfyUI: SD1.5's UNet and a motion model in ADE's key layout, random weights, loaded through ADE's own nodes."""
import gc
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import need_host
from host_support import (REPO_ROOT, ade_loaded, ade_model, build_sd15, build_tiny_vae, pack_module,
                          write_motion_model)

PACK = "MotionInversion_"
FRAMES, HEIGHT, WIDTH = 4, 8, 8               # latent frames and size: the UNet's levels are 8, 4, 2, 1 wide
CHANNELS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280]    # down blocks 0..3 (two modules each), mid block
DOWNSAMPLE = [1, 1, 2, 2, 4, 4, 8, 8, 8]


@pytest.fixture(scope="module")
def animatediff(comfy_nodes):
    """``(MODEL from Use Evolved Sampling, MOTION_MODEL_ADE, the plain SD1.5 MODEL)``."""
    if not ade_loaded():
        need_host("needs AnimateDiff-Evolved beside the pack: put its source beside the ComfyUI tree "
                  "(../shared/animatediff-evolved-1.5.x) or set ADE_PATH")
    sd_model = build_sd15()
    model, motion_model = ade_model(sd_model, write_motion_model())
    yield model, motion_model, sd_model
    import comfy.model_management          # the 860M-parameter UNet goes before the next test module

    del model, motion_model, sd_model
    comfy.model_management.unload_all_models()
    gc.collect()


def _positive(seed=3):
    return [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(seed)), {}]]


def _latents(frames=FRAMES, seed=5):
    return torch.randn(frames, 4, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(seed))


def _embedding(names=None, scale=0.5, seed=0, frames=FRAMES):
    """Motion Embeddings on the layers ``names`` (all by default) at the tests' latent size."""
    core = pack_module("motion_core.embedding")
    layout = {f"temporal_attn.{i:02d}": {"channels": c, "height": -(-HEIGHT // f), "width": -(-WIDTH // f),
                                         "downsample": f} for i, (c, f) in enumerate(zip(CHANNELS, DOWNSAMPLE))}
    layout = {name: layer for name, layer in layout.items() if names is None or name in names}
    qk, values = core.init_temporal(layout, frames)
    generator = torch.Generator().manual_seed(seed)
    for tensor in list(qk.values()) + list(values.values()):
        tensor.normal_(0, scale, generator=generator)
    metadata = core.base_metadata(frames, WIDTH * 8, HEIGHT * 8, model_family="animatediff")
    metadata["layers"] = layout
    return core.MotionEmbedding(temporal_qk=qk, value_embedding=values, metadata=metadata)


def _denoise(model, latents, sigma=3.0, seed=0):
    """One denoiser call on ``latents (f c h w)`` through ComfyUI's guider, so ADE's own sampling wrapper injects
    the motion model and sets its video length, as when sampling."""
    import comfy.samplers

    class OneCall(comfy.samplers.Sampler):
        denoised = None

        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            noisy = latent_image + sigma * torch.randn(latent_image.shape, generator=torch.Generator().manual_seed(seed))
            OneCall.denoised = model_wrap(noisy, torch.full((latent_image.shape[0],), sigma), **extra_args)
            return torch.zeros_like(latent_image)

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(_positive(), [])
    guider.set_cfg(1.0)
    with torch.inference_mode():
        guider.sample(torch.zeros_like(latents), latents, OneCall(), torch.tensor([sigma, 0.0]), seed=seed,
                      disable_pbar=True)
    return OneCall.denoised


def test_the_family_its_layers_and_what_is_refused(animatediff):
    hooks = pack_module("nodes.hooks")
    ad = pack_module("nodes.hooks.animatediff")
    model, motion_model, sd_model = animatediff
    family = hooks.model_family(model)
    assert family.family == "animatediff" and family.widths["motion_layers"] == len(CHANNELS)
    layers = ad.motion_layers(ad.motion_models(model)[0])
    assert [layer.name for layer in layers] == [f"temporal_attn.{i:02d}" for i in range(len(CHANNELS))]
    assert [layer.channels for layer in layers] == CHANNELS and [layer.downsample for layer in layers] == DOWNSAMPLE
    assert layers[0].module == "down_blocks.0.motion_modules.0" and layers[-1].module == "mid_block.motion_modules.0"
    select = pack_module("motion_core.layers").select_layers
    assert list(select(ad.motion_layout(motion_model, HEIGHT, WIDTH), "widest")) == [l.name for l in layers[4:]]
    with pytest.raises(ValueError, match="Use Evolved Sampling"):       # SD1.5 without a motion model
        hooks.require_family(sd_model, "Learn Motion Embedding")
    svd_learned = _embedding()
    svd_learned.metadata["model_family"] = "svd"
    with pytest.raises(ValueError, match="learned on svd"):
        hooks.check_family(svd_learned, family)
    too_wide = _embedding(["temporal_attn.00"])
    too_wide.temporal_qk["temporal_attn.00"] = torch.zeros(1, FRAMES, 640)
    with pytest.raises(ValueError, match="640 wide"):
        ad.with_ad_motion(model, too_wide)


def test_zero_embeddings_leave_ades_output_bit_identical_and_the_patched_attention_is_eq3(animatediff):
    ad = pack_module("nodes.hooks.animatediff")
    attention_math = pack_module("motion_core.attention")
    model, _motion_model, _sd = animatediff
    latents = _latents()
    plain = _denoise(model, latents)
    zero, _ = ad.with_ad_motion(model, _embedding(scale=0.0))
    assert torch.equal(_denoise(zero, latents), plain)
    faded = pack_module("motion_core.library").scaled_over_frames(_embedding(), [0.0])    # Apply's frame_strengths
    assert torch.equal(_denoise(ad.with_ad_motion(model, faded)[0], latents), plain)

    embedding = _embedding()
    patched, motion = ad.with_ad_motion(model, embedding)
    patched_motion_model = ad.motion_models(patched)[0]
    assert not ad.has_motion(model) and ad.has_motion(patched)      # the user's MODEL and motion model untouched
    layer = ad.motion_layers(patched_motion_model)[2]                # a 640-wide layer on the 4 x 4 level
    attention = patched_motion_model.get_model_object(layer.attention)
    seen = {}

    def keep(_module, args, kwargs, output):
        seen["input"], seen["frames"], seen["output"] = args[0].detach(), kwargs["video_length"], output.detach()
    handle = attention.register_forward_hook(keep, with_kwargs=True)
    try:
        moved = _denoise(patched, latents)
    finally:
        handle.remove()
    assert not torch.equal(moved, plain) and motion.calls > 0
    # eq. 3 written out on the same input: ((b f) d c) -> ((b d) f c), the positional encoding, then
    # softmax(Wq(x + m_qk) Wk(x + m_qk)^T / sqrt(d)) Wv(x + m_v), then the output projection
    frames = seen["frames"]
    features = seen["input"]
    positions = features.shape[1]
    x = features.reshape(-1, frames, positions, features.shape[-1]).transpose(1, 2).reshape(-1, frames,
                                                                                           features.shape[-1])
    x = x + attention.pos_encoder.pe[:, :frames].to(x)
    plain_projection = {name: type(getattr(attention, name)).forward.__get__(getattr(attention, name))
                        for name in ("to_q", "to_k", "to_v")}
    with torch.inference_mode():
        reference = attention_math.temporal_self_attention(
            x, plain_projection["to_q"], plain_projection["to_k"], plain_projection["to_v"], attention.heads,
            embedding.temporal_qk[layer.name], embedding.value_embedding[layer.name])
        reference = attention.to_out(reference)
    reference = reference.reshape(-1, positions, frames, reference.shape[-1]).transpose(1, 2).reshape_as(seen["output"])
    assert torch.allclose(seen["output"], reference, atol=1e-4), float((seen["output"] - reference).abs().max())


def _learn(model, steps=4, checkpointing=True, on_gradients=None, learning_rate=5e-2, names=None, seed=0,
           schedule=(), frames=2, on_step=None, more_latents=(), loss_scale=0.0):
    """Learning through ``train_ad_in_host`` on a clip of ``frames`` (2: the fewest SD1.5 passes that still have a
    temporal attention to learn in)."""
    training = pack_module("nodes.host_training")
    TrainSettings = pack_module("motion_core.training").TrainSettings
    AugmentSettings = pack_module("motion_core.augment").AugmentSettings
    settings = TrainSettings(steps=steps, learning_rate=learning_rate, seed=seed, augment=AugmentSettings(enabled=False),
                             objective="eps", eps_schedule=schedule, loss_scale=loss_scale)
    with torch.inference_mode():          # the executor runs every node in inference mode
        return training.train_ad_in_host(model, _positive(), _latents(frames), _embedding(names, scale=0.0,
                                                                                          frames=frames),
                                         settings, on_step=on_step, checkpointing=checkpointing,
                                         on_gradients=on_gradients, more_latents=more_latents)


def test_a_short_learning_run_reaches_every_embedding_and_lowers_the_loss(animatediff):
    """One noise level for every step and the same seed (the same noise, step by step): a run that barely moves
    the embedding (learning rate 1e-6) is the baseline for one that learns. Without checkpointing (the next test
    shows it gives the same gradients), to keep the SD1.5 passes few."""
    model, _motion_model, _sd = animatediff
    ad = pack_module("nodes.hooks.animatediff")
    middle = (float(model.get_model_object("model_sampling").sigmas[500]),)
    grads = []
    baseline = _learn(model, steps=3, learning_rate=1e-6, checkpointing=False, schedule=middle)
    result = _learn(model, steps=3, learning_rate=5e-2, checkpointing=False, schedule=middle,
                    on_gradients=lambda step, values: grads.append(values))
    assert all(float(g.abs().max()) > 0 for g in grads[0]), "a learned tensor got no gradient"
    assert baseline.loss_history[0] == pytest.approx(result.loss_history[0])      # the same first draw
    assert sum(result.loss_history[1:]) < sum(baseline.loss_history[1:]), (result.loss_history,
                                                                           baseline.loss_history)
    assert not ad.has_motion(model)                                  # the patches went with the private clone
    assert not any(type(m.__dict__.get("forward")).__name__ in ("ProjectionForward", "ModuleForward",
                                                               "RecomputedForward")
                   for m in ad.motion_models(model)[0].model.modules())


def test_several_clips_learn_through_ades_sampling(animatediff):
    """More clips of the motion go through the MODEL's own process_latent_in; the seed makes the one step draw the
    second clip."""
    model, _motion_model, _sd = animatediff
    seed = next(s for s in range(10) if int(torch.randint(0, 2, (), generator=torch.Generator().manual_seed(s))) == 1)
    result = _learn(model, steps=1, checkpointing=False, seed=seed, more_latents=[_latents(2, seed=9)])
    assert len(result.loss_history) == 1 and result.embedding.all_finite()
    with pytest.raises(ValueError, match="differ in shape"):
        _learn(model, steps=1, checkpointing=False, more_latents=[_latents(3, seed=9)])


def test_checkpointing_gives_the_gradients_of_the_plain_backward_and_cancel_keeps_the_last_good_embedding(
        animatediff):
    """Epsilon prediction with the timestep drawn from the MODEL's own schedule (ADE's sqrt_linear, set by Use
    Evolved Sampling); the same gradients with the UNet's blocks and the motion modules recomputed; a Cancel after
    the first step keeps that step's embedding and takes every patch off."""
    import comfy.model_management

    ad = pack_module("nodes.hooks.animatediff")
    TrainingInterrupted = pack_module("motion_core.training").TrainingInterrupted
    model, _motion_model, _sd = animatediff
    names = ["temporal_attn.00", "temporal_attn.08"]
    grads = {}
    plain = _learn(model, steps=1, checkpointing=False, names=names,
                   on_gradients=lambda step, values: grads.setdefault(False, values))

    def cancel_at_one(step, _total, _loss):
        if step == 1:
            comfy.model_management.interrupt_current_processing(True)

    try:
        with pytest.raises(TrainingInterrupted) as stop:
            _learn(model, steps=3, checkpointing=True, names=names, on_step=cancel_at_one,
                   on_gradients=lambda step, values: grads.setdefault(True, values))
    finally:
        comfy.model_management.interrupt_current_processing(False)
    for without, recomputed in zip(grads[False], grads[True]):
        assert torch.allclose(without, recomputed, rtol=1e-4, atol=1e-6)
    training = plain.embedding.metadata["training"]
    sigmas = model.get_model_object("model_sampling").sigmas
    assert training["objective"] == "eps" and training["eps_schedule"]["timesteps"] == len(sigmas) == 1000
    assert training["eps_schedule"]["sigma_max"] == pytest.approx(float(sigmas.max()))
    kept = stop.value.result
    assert kept.steps_done == 1 and kept.embedding.all_finite()
    assert float(kept.embedding.temporal_qk["temporal_attn.08"].abs().max()) > 0       # the one step it learned
    assert isinstance(stop.value.cause, comfy.model_management.InterruptProcessingException)
    assert not any(type(m.__dict__.get("forward")).__name__ in ("ProjectionForward", "ModuleForward",
                                                               "RecomputedForward")
                   for m in ad.motion_models(model)[0].model.modules())


def test_float16_weights_learn_and_loss_scaling_leaves_the_steps_as_they_were(animatediff, monkeypatch):
    """The files AnimateDiff users load are float16 (``v1-5-pruned-emaonly-fp16``, ``mm_sd15_v2.safetensors``).
    SD1.5 with float16 weights computes in the dtype ComfyUI's loader picks for them on this device (float32 on the
    CPU, which multiplies float16 at under 1 GFLOPS); ADE, told the UNet's dtype is float16, casts the motion model
    to it and, since this device computes float16 weights in float32, gives it manual-cast ops. Learning reaches every embedding and keeps
    float32 tensors, and the float16 loss-scaling path (a power-of-two scale, undone before Adam) takes the same
    steps as without it."""
    import comfy.model_management

    ad = pack_module("nodes.hooks.animatediff")
    host_training = pack_module("nodes.host_training")
    sd_model = build_sd15(dtype=torch.float16)
    with monkeypatch.context() as patch:          # what ADE's loader sees where the UNet's dtype is float16
        patch.setattr(comfy.model_management, "unet_dtype", lambda *args, **kwargs: torch.float16)
        model, _motion_model = ade_model(sd_model, write_motion_model())
    try:
        motion_model = ad.motion_models(model)[0]
        assert {p.dtype for p in sd_model.model.diffusion_model.parameters()} == {torch.float16}
        assert {p.dtype for name, p in motion_model.model.named_parameters() if "pos_encoder" not in name} == {
            torch.float16}
        assert host_training.compute_dtype(model) == comfy.model_management.unet_manual_cast(
            torch.float16, torch.device("cpu"), sd_model.model.model_config.supported_inference_dtypes)
        assert any("manual_cast" in type(module).__module__ + type(module).__qualname__.lower()
                   for module in motion_model.model.modules() if isinstance(module, torch.nn.Linear))
        middle = (float(model.get_model_object("model_sampling").sigmas[500]),)
        grads = []
        plain = _learn(model, steps=2, schedule=middle, on_gradients=lambda step, values: grads.append(values))
        assert plain.steps_done == 2 and plain.embedding.all_finite() and len(plain.loss_history) == 2
        assert all(tensor.dtype == torch.float32 for tensor in plain.embedding.tensors().values())
        assert all(float(g.abs().max()) > 0 for g in grads[0]), "a learned tensor got no gradient"
        scaled = _learn(model, steps=2, schedule=middle, loss_scale=2.0 ** 16)
        assert scaled.loss_history == pytest.approx(plain.loss_history, rel=1e-5)
        for name, tensor in plain.embedding.tensors().items():
            assert torch.allclose(scaled.embedding.tensors()[name], tensor, rtol=1e-4, atol=1e-6), name
    finally:
        del model, sd_model
        comfy.model_management.unload_all_models()
        gc.collect()


def test_context_windows_take_the_window_frames_of_the_whole_videos_embedding(animatediff):
    """ADE's context windows (4 of 8 frames) set each motion module's sub_idxs; the embedding learned for 4 frames
    is resampled to the whole 8 and each window's frames taken."""
    ad = pack_module("nodes.hooks.animatediff")
    resample = pack_module("motion_core.resample").resample_frames
    _model, _motion, sd_model = animatediff
    windowed, _ = ade_model(sd_model, write_motion_model(), context_length=4, context_overlap=0)
    embedding = _embedding(["temporal_attn.00"])
    patched, motion = ad.with_ad_motion(windowed, embedding)
    windows = []
    prepare = motion.prepare

    def spy(names, frames, height, width, window, total, like):
        prepare(names, frames, height, width, window, total, like)
        windows.append((window, total, motion.current["temporal_attn.00"][0]))
    motion.prepare = spy
    _denoise(patched, _latents(frames=8))
    whole = resample(embedding.temporal_qk["temporal_attn.00"], 8, dim=1)
    seen = {tuple(window) for window, _total, _qk in windows}
    assert len(seen) >= 2 and set().union(*seen) == set(range(8)), seen
    for window, total, qk in windows:
        assert total == 8 and len(window) == 4
        assert torch.allclose(qk, whole[:, window], atol=1e-6)


def test_apply_motion_reference_noise_and_learn_on_the_ade_model(animatediff, comfy_nodes):
    """The nodes: Apply Motion patches a clone's motion model; Reference Noise inverts along SD1.5's ODE with the
    embedding; Learn's preparation plans, encodes and lays the embedding out, refusing what AnimateDiff cannot do."""
    ad = pack_module("nodes.hooks.animatediff")
    learn = pack_module("nodes.learn")
    model, _motion_model, _sd = animatediff
    embedding = _embedding()
    apply_motion = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "ApplyMotion"]
    patched = apply_motion.execute(model, embedding, 1.0, 0.0, 1.0, 0).result[0]
    assert ad.has_motion(patched) and not ad.has_motion(model)
    with pytest.raises(ValueError, match="already carries Motion Embeddings"):
        apply_motion.execute(patched, embedding, 1.0, 0.0, 1.0, 0)
    vae = build_tiny_vae()
    frames = torch.rand(FRAMES, HEIGHT * 8, WIDTH * 8, 3, generator=torch.Generator().manual_seed(2))
    reference_noise = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "ReferenceNoise"]
    with torch.inference_mode():
        noise = reference_noise.execute(model, vae, frames, torch.tensor([8.0, 1.0, 0.0]), 0.5, 2, 0,
                                        embedding, _positive()).result[0]
        inverted = noise.inverted
        prepared = learn.prepare_learning(model, vae, frames, "temporal", 5, 10, 1e-2, 0, 2.8, 1.6, "edm", False,
                                          False, 6, 127, 0.0, "widest", positive=_positive())
    assert inverted.shape == (FRAMES, 4, HEIGHT, WIDTH) and 0.3 < float(inverted.std()) < 3.0
    assert prepared.family == "animatediff" and prepared.settings.objective == "eps"
    assert list(prepared.initial.temporal_qk) == [f"temporal_attn.{i:02d}" for i in range(4, 9)]
    assert prepared.initial.metadata["model_family"] == "animatediff" and "memory plan (AnimateDiff" in \
        prepared.memory_account
    assert tuple(prepared.latents.shape) == (FRAMES, 4, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="representation to 'temporal'"):
        learn.prepare_learning(model, vae, frames, "motion_text", 5, 10, 1e-2, 0, 2.8, 1.6, "edm", False, False, 6,
                               127, 0.0, "widest", positive=_positive())
    with pytest.raises(ValueError, match="needs the prompt"):
        learn.prepare_learning(model, vae, frames, "temporal", 5, 10, 1e-2, 0, 2.8, 1.6, "edm", False, False, 6,
                               127, 0.0, "widest")
    long_clip = torch.rand(40, HEIGHT * 8, WIDTH * 8, 3)
    with pytest.raises(ValueError, match="at most 32 frames"):
        learn.prepare_learning(model, vae, long_clip, "temporal", 5, 10, 1e-2, 0, 2.8, 1.6, "edm", False, False, 6,
                               127, 0.0, "widest", positive=_positive())


def test_without_ade_the_pack_loads_and_the_animatediff_path_says_ade_is_needed(comfy_nodes):
    """A ComfyUI with the pack and no ADE: every node registers; an SD1.5 MODEL is refused naming ADE."""
    script = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, "tests")
        from host_support import start_comfy, pack_module, ade_loaded
        nodes = start_comfy()
        assert not ade_loaded() and "ADE_UseEvolvedSampling" not in nodes.NODE_CLASS_MAPPINGS
        assert "MotionInversion_ApplyMotion" in nodes.NODE_CLASS_MAPPINGS
        import comfy.model_patcher, comfy.supported_models
        config = comfy.supported_models.SD15({"image_size": 32, "in_channels": 4, "out_channels": 4,
            "model_channels": 32, "num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1],
            "transformer_depth_output": [1, 1], "transformer_depth_middle": 1, "use_spatial_transformer": True,
            "context_dim": 768, "num_heads": 2, "use_linear_in_transformer": False, "adm_in_channels": None,
            "use_temporal_attention": False, "use_temporal_resblock": False, "legacy": False})
        model = comfy.model_patcher.ModelPatcher(config.get_model({}, "", device=torch.device("cpu")),
                                                 torch.device("cpu"), torch.device("cpu"))
        try:
            pack_module("nodes.hooks").require_family(model, "Learn Motion Embedding")
        except ValueError as refusal:
            print("REFUSED:", refusal)
    """)
    environment = dict(os.environ, MI_WITHOUT_ADE="1", PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=environment, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REFUSED:" in done.stdout and "ComfyUI-AnimateDiff-Evolved" in done.stdout, done.stdout[-2000:]


def test_the_memory_plan_counts_both_models_and_refuses_naming_what_fits(animatediff, monkeypatch):
    import comfy.model_management

    memory = pack_module("nodes.memory")
    ad = pack_module("nodes.hooks.animatediff")
    model, _motion_model, _sd = animatediff
    motion_model = ad.motion_models(model)[0]
    layout = ad.motion_layout(motion_model, 64, 64)
    shape = memory.ad_learn_shape(model, motion_model, layout, 16, 64, 64, True)
    assert shape.weight_bytes == pytest.approx(model.model_size() + motion_model.model_size())
    assert list(shape.model_layout) == [layer.module for layer in ad.motion_layers(motion_model)]  # one a module
    plan = pack_module("motion_core.memory_plan").plan
    assert plan(shape).total < plan(memory.ad_learn_shape(model, motion_model, layout, 16, 64, 64, False)).total
    # the backward pass goes through the network from the first learned motion module on: learning the mid
    # block's layer alone tracks that module's width only, and keeps less
    width = pack_module("motion_core.memory_plan").model_width
    mid_only = memory.ad_learn_shape(model, motion_model, {"temporal_attn.08": layout["temporal_attn.08"]}, 16, 64,
                                     64, True)
    assert shape.tracked_width == width(shape.model_layout) and mid_only.tracked_width == pytest.approx(1280 / 8 ** 2)
    assert plan(mid_only).activations < plan(shape).activations
    account, _plan = memory.check_ad_learn_memory(model, motion_model, layout, 16, 64, 64, True, "all", "")
    assert account.startswith("memory plan (AnimateDiff, 9 temporal attention layers")
    needed = plan(shape).total
    monkeypatch.setattr(comfy.model_management, "get_total_memory", lambda *args, **kwargs: needed * 0.8)
    with pytest.raises(MemoryError, match="these would fit: .*(frames|size)") as refusal:
        memory.check_ad_learn_memory(model, motion_model, layout, 16, 64, 64, True, "all", "")
    assert "Nothing was learned yet" in str(refusal.value)
