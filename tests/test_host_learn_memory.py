"""Learning at the paper's size inside a real ComfyUI: activation checkpointing, half precision, the memory plan."""
import pytest
import torch

from host_support import TINY_SVD_UNET, build_tiny_svd, build_tiny_vae, pack_module, svd_conditioning

FRAMES, HEIGHT, WIDTH = 4, 64, 64   # latent 8x8
# bfloat16 keeps 8 significant bits (about 0.4% per value); through the UNet and the EDM loss's
# difference (D - x0) the learned tensors' gradients differ from float32's by up to this much:
BFLOAT16_GRADIENT_TOLERANCE = 0.15  # relative L2 difference, bfloat16 vs float32
BFLOAT16_GRADIENT_COSINE = 0.99     # and they point the same way
# float8 e4m3 weights (3 mantissa bits, about 6% per weight) change the model itself, not only
# the arithmetic: the first gradients still point the same way as float32's, roughly.
FLOAT8_GRADIENT_COSINE = 0.8


def _reference_frames():
    frames = torch.zeros(FRAMES, HEIGHT, WIDTH, 3)
    frames[..., 2] = torch.linspace(0, 0.5, WIDTH)
    for f in range(FRAMES):
        frames[f, 20:40, 8 + 8 * f:28 + 8 * f, 0] = 1.0
    return frames


def _loaded_model(dtype=torch.float32, seed=0, manual_cast=False):
    """The tiny SVD as ComfyUI's loader makes it: weights are inference tensors (optionally in ``dtype``).

    ``manual_cast``: choose the compute dtype as UNETLoader does for its ``weight_dtype``
    (``load_diffusion_model_state_dict``: weights stay in ``dtype``, layers cast them to the
    compute dtype ``unet_manual_cast`` picks for the device; float32 for float8 on the CPU).
    """
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    initialised = build_tiny_svd(seed)
    config = comfy.supported_models.SVD_img2vid(dict(TINY_SVD_UNET))
    config.unet_config["num_head_channels"] = 16
    cast = (comfy.model_management.unet_manual_cast(dtype, torch.device("cpu"), config.supported_inference_dtypes)
            if manual_cast else None)
    config.set_inference_dtype(dtype, cast)
    with torch.inference_mode():
        model = comfy.model_base.SVD_img2vid(config, device=torch.device("cpu"))
        model.load_state_dict(initialised.model.state_dict())
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def _learn_args(model, representation="motion_text", steps=2, **overrides):
    args = dict(model=model, vae=build_tiny_vae(), reference_frames=_reference_frames(), representation=representation,
                tokens_per_frame=3, steps=steps, learning_rate=1e-2, seed=0, noise_mean=0.5, noise_std=1.0, loss="edm",
                augmentation=True, flip=False, fps=6, motion_bucket_id=127, augmentation_level=0.0, layers="all",
                explicit_layers="")
    args.update(overrides)
    return args


def _first_gradients(model, representation, checkpointing, during=None):
    """The learned tensors' gradients of the first step, through the Learn node's own path."""
    learn, host_training = pack_module("nodes.learn"), pack_module("nodes.host_training")
    grads = []

    def on_gradients(step, values):
        grads.append([g.detach().float().clone() for g in values])
        if during is not None:
            during()

    with torch.inference_mode():       # the executor runs every node in inference mode
        prepared = learn.prepare_learning(**_learn_args(model, representation, steps=1,
                                                        activation_checkpointing=checkpointing))
        host_training.train_in_host(model, prepared.make_positive, prepared.latents, prepared.initial,
                                    prepared.settings, checkpointing=checkpointing, on_gradients=on_gradients)
    return grads[0]


def _relative_difference(first, second):
    num = sum(float((a - b).pow(2).sum()) for a, b in zip(first, second)) ** 0.5
    return num / sum(float(a.pow(2).sum()) for a in first) ** 0.5


def _sample(model, steps=2, seed=0):
    import comfy.sample
    latent = torch.zeros(FRAMES, 4, 8, 8)
    positive, negative = svd_conditioning(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)))
    return comfy.sample.sample(model, comfy.sample.prepare_noise(latent, seed), steps, 3.0, "euler", "karras",
                               positive, negative, latent, seed=seed, disable_pbar=True)


@pytest.mark.parametrize("representation", ["motion_text", "temporal", "both"])
def test_checkpointing_gives_the_gradients_of_the_plain_backward(comfy_nodes, representation):
    model = _loaded_model()
    hooks = pack_module("nodes.hooks.svd")
    seen = []
    plain = _first_gradients(model, representation, False)
    recomputed = _first_gradients(model, representation, True, during=lambda: seen.append(hooks.has_recompute(model)))
    assert seen == [True]                                  # the units were recomputed while learning ...
    assert not hooks.has_recompute(model)                  # ... and are plain forwards again after it
    assert len(plain) == len(recomputed) and any(float(g.abs().max()) > 0 for g in plain)
    assert _relative_difference(plain, recomputed) < 1e-5


def test_recompute_units_are_disjoint_blocks_of_the_unet(comfy_nodes):
    hooks = pack_module("nodes.hooks.svd")
    diffusion_model = build_tiny_svd().model.diffusion_model
    units = hooks.recompute_units(diffusion_model)
    assert not any(a != b and b.startswith(a + ".") for a in units for b in units)
    kinds = {type(diffusion_model.get_submodule(name)).__name__ for name in units}
    assert kinds == {"VideoResBlock", "BasicTransformerBlock"}
    temporal = [name for name in units if ".time_stack." in name]
    assert len(temporal) == len(hooks.temporal_blocks(diffusion_model))


def test_learn_leaves_the_users_model_bit_identical(comfy_nodes):
    model = _loaded_model()
    before = _sample(model)
    learn = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LearnMotionEmbedding"]
    with torch.inference_mode():
        learn.execute(**_learn_args(model, "both", steps=2))
    assert not pack_module("nodes.hooks.svd").has_recompute(model)
    assert not any("forward" in module.__dict__ for module in model.model.diffusion_model.modules())
    assert torch.equal(_sample(model), before)


def test_recompute_is_undone_after_an_error_and_after_cancel(comfy_nodes):
    import comfy.model_management
    hooks = pack_module("nodes.hooks.svd")
    model = _loaded_model()
    before = _sample(model)

    def fail():
        raise RuntimeError("a failure in the middle of learning")

    with pytest.raises(RuntimeError, match="middle of learning"):
        _first_gradients(model, "temporal", True, during=fail)
    assert not hooks.has_recompute(model) and torch.equal(_sample(model), before)

    learn = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LearnMotionEmbedding"]
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException), torch.inference_mode():
            learn.execute(**_learn_args(model, "motion_text", steps=5))
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert not hooks.has_recompute(model) and torch.equal(_sample(model), before)


@pytest.mark.parametrize("representation", ["motion_text", "temporal"])
def test_bfloat16_model_gradients_match_float32(comfy_nodes, representation):
    """The model computes in bfloat16, the learned tensors stay float32; gradients agree within the tolerance."""
    full = _first_gradients(_loaded_model(torch.float32), representation, True)
    half = _first_gradients(_loaded_model(torch.bfloat16), representation, True)
    assert all(g.dtype == torch.float32 for g in half)
    difference = _relative_difference(full, half)
    dot = sum(float((a * b).sum()) for a, b in zip(full, half))
    cosine = dot / (sum(float(a.pow(2).sum()) for a in full) * sum(float(b.pow(2).sum()) for b in half)) ** 0.5
    assert 0 < difference < BFLOAT16_GRADIENT_TOLERANCE and cosine > BFLOAT16_GRADIENT_COSINE, (difference, cosine)


def test_float16_model_learns_with_loss_scaling(comfy_nodes):
    model = _loaded_model(torch.float16)
    learn = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LearnMotionEmbedding"]
    with torch.inference_mode():
        embedding = learn.execute(**_learn_args(model, "motion_text", steps=3)).result[0]
    training = embedding.metadata["training"]
    assert training["loss_scale"] == 2.0 ** 16 and embedding.spatial_tokens.dtype == torch.float32
    assert embedding.all_finite() and training["steps_done"] == 3


def test_float8_weights_learn(comfy_nodes):
    """UNETLoader's ``weight_dtype`` fp8_e4m3fn: float8 weights, cast per layer; learning still works.

    On ComfyUI 0.33 this needs ``in_training`` while learning (quantised paths have no backward).
    """
    import comfy.model_management

    model = _loaded_model(torch.float8_e4m3fn, manual_cast=True)
    weights = {p.dtype for p in model.model.diffusion_model.parameters()}
    assert torch.float8_e4m3fn in weights and model.model.manual_cast_dtype == torch.float32
    flags = []
    low = _first_gradients(model, "both", True,
                           during=lambda: flags.append(getattr(comfy.model_management, "in_training", None)))
    assert flags == ([True] if hasattr(comfy.model_management, "in_training") else [None])
    full = _first_gradients(_loaded_model(torch.float32), "both", True)
    assert all(bool(torch.isfinite(g).all()) for g in low) and all(float(g.abs().max()) > 0 for g in low)
    dot = sum(float((a * b).sum()) for a, b in zip(full, low))
    cosine = dot / (sum(float(a.pow(2).sum()) for a in full) * sum(float(b.pow(2).sum()) for b in low)) ** 0.5
    assert cosine > FLOAT8_GRADIENT_COSINE, cosine
    learn = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LearnMotionEmbedding"]
    with torch.inference_mode():
        embedding = learn.execute(**_learn_args(model, "both", steps=3)).result[0]
    history = embedding.metadata["loss_history"]
    assert embedding.all_finite() and embedding.metadata["training"]["steps_done"] == 3 and len(history) == 3


def test_learn_shows_its_memory_plan(comfy_nodes):
    learn = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LearnMotionEmbedding"]
    with torch.inference_mode():
        out = learn.execute(**_learn_args(_loaded_model(), "temporal", steps=1))
    text = out.ui.as_dict()["text"][0]
    assert "memory plan:" in text and "GiB free now" in text and "checkpointing on" in text


def test_learn_refuses_a_plan_that_does_not_fit_and_names_what_would(comfy_nodes, monkeypatch):
    import comfy.model_management
    memory = pack_module("nodes.memory")
    plan = pack_module("motion_core.memory_plan").plan
    model = _loaded_model()
    need = plan(memory.learn_shape(model, FRAMES, 8, 8, "temporal", False, "all", "", 3, 1024)).total
    budget = need - 2 ** 20                                   # 1 MiB short
    monkeypatch.setattr(comfy.model_management, "get_total_memory",
                        lambda *args, **kwargs: budget / memory.USABLE_FRACTION)
    learn = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LearnMotionEmbedding"]
    args = _learn_args(model, "temporal", steps=1, activation_checkpointing=False)
    encoded = []
    original = args["vae"].encode
    monkeypatch.setattr(args["vae"], "encode", lambda pixels: encoded.append(1) or original(pixels))
    with pytest.raises(MemoryError, match="these would fit: .*the reference at 0.5x its size") as refused, \
            torch.inference_mode():
        learn.execute(**args)
    assert "Nothing was learned yet" in str(refused.value) and f"{need / 2 ** 30:.1f} GiB" in str(refused.value)
    assert encoded == []                                           # refused before any work
    with torch.inference_mode():                                   # a setting it named does fit, and runs
        embedding = learn.execute(**dict(args, learn_scale=0.5)).result[0]
    assert embedding.metadata["width"] == WIDTH // 2


def test_learning_at_half_size_samples_at_full_size(comfy_nodes):
    model = _loaded_model()
    learn = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LearnMotionEmbedding"]
    with torch.inference_mode():
        embedding = learn.execute(**_learn_args(model, "both", steps=1, learn_scale=0.5)).result[0]
    assert (embedding.metadata["width"], embedding.metadata["height"]) == (WIDTH // 2, HEIGHT // 2)
    assert embedding.metadata["learn_scale"] == 0.5
    first = embedding.value_embedding[sorted(embedding.value_embedding)[0]]
    assert first.shape[0] == (HEIGHT // 16) * (WIDTH // 16)              # learned on the 4x4 latent grid
    apply = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_ApplyMotion"]
    patched = apply.execute(model, embedding, 1.0, 0.0, 1.0, 0).result[0]
    out = _sample(patched)                                                 # sampled on the 8x8 grid
    assert out.shape == (FRAMES, 4, 8, 8) and torch.isfinite(out).all()


def test_learn_memory_benchmark_measures_the_node_path(comfy_nodes):
    """bench/learn_memory.py's row measurement and report on the tiny model: checkpointing keeps less
    for backward, gives the same gradients, and the report plans every extrapolated size."""
    import host_support
    from bench import learn_memory
    from bench.learn_memory_report import report
    model, vae = _loaded_model(), build_tiny_vae()
    rows, gradients = [], {}
    for checkpointing in (False, True):
        row = learn_memory.measure_row(host_support, model, vae, WIDTH, HEIGHT, FRAMES, "temporal", checkpointing,
                                       "cpu", steps=3)
        gradients[checkpointing] = row.pop("gradients")
        rows.append(row)
    assert rows[1]["saved_gib"] < rows[0]["saved_gib"] and rows[0]["step_seconds"] > 0
    assert 1.0 <= rows[1]["loop_overhead"] < 2.0
    assert learn_memory.relative_difference(gradients[False], gradients[True]) < 1e-5
    rows.append(dict(rows[0], width=2 * WIDTH, height=2 * HEIGHT, peak_rise_gib=rows[0]["peak_rise_gib"] + 0.01))
    text, payload = report(rows, host_support, model, "cpu", "test", 1.0, learn_memory.fit_constants)
    assert "1024x576x14 | motion_text" in text and "temporal/off" in payload["activation_constants"]
    extrapolated = [r for r in payload["rows"] if r["kind"] == "extrapolated"]
    assert len(extrapolated) == 24 and all(r["planned_peak_gib"] > 0 for r in extrapolated)
