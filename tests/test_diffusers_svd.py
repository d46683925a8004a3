"""Tests for motion_core.diffusers_svd on a tiny, randomly initialised SVD UNet (CPU).

The tiny UNet (``tiny_unet_config``) has the real block types and the real token width
(1024) at two resolution levels: temporal self-attention layers at down 0 (32 ch, full
grid), mid (64 ch, half grid) and up 1 (2 x 32 ch, full grid).
"""
import json
import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

from motion_core.attention import temporal_self_attention
from motion_core.augment import AugmentSettings
from motion_core.diffusers_svd import (SVD_VAE_SCALING_FACTOR, SpatialTokensProcessor, SVDDenoiser,
                                       TemporalMotionProcessor, TemporalTokensProcessor, build_unet,
                                       init_embedding, install_motion, learn_motion, temporal_layer_layout)
from motion_core.embedding import layer_name
from motion_core.objectives import edm_loss
from motion_core.resample import resize_value_embedding
from motion_core.training import TrainSettings, fixed_noise_loss, train_motion_embedding

F, H, W = 4, 8, 8
TOKENS = 2


pytestmark = pytest.mark.usefixtures("one_thread")   # see conftest.py


@pytest.fixture(scope="module")
def unet():
    return build_unet(seed=0)


@pytest.fixture(scope="module")
def clean():
    """A blob moving right by one latent pixel per frame, plus a little noise: (f c h w)."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    blobs = [torch.exp(-((xx - 2 - f) ** 2 + (yy - 4) ** 2) / 4.0) for f in range(F)]
    clip = torch.stack([torch.stack([b * s for s in (1.0, -1.0, 0.5, 0.8)]) for b in blobs])
    return clip + 0.1 * torch.randn(clip.shape, generator=torch.Generator().manual_seed(0))


def random_embedding(unet, frames=F, height=H, width=W, tokens=TOKENS, temporal=True, with_values=True, seed=1):
    """An embedding laid out for ``unet`` with every tensor random and non-zero."""
    emb = init_embedding(unet, frames, height, width, tokens_per_frame=tokens, temporal=temporal,
                         with_values=with_values)
    g = torch.Generator().manual_seed(seed)
    for t in emb.tensors().values():
        t.copy_(torch.randn(t.shape, generator=g) * 0.5)
    return emb


def unet_inputs(unet, batch=1, frames=F, height=H, width=W, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(sample=torch.randn(batch, frames, 8, height, width, generator=g),
                timestep=torch.tensor([0.3]),
                encoder_hidden_states=torch.randn(batch, 1, 1024, generator=g),
                added_time_ids=torch.tensor([[5.0, 127.0, 0.0]]).repeat(batch, 1))


def run(unet, **inputs):
    with torch.no_grad():
        return unet(**inputs, return_dict=False)[0]


def module_names(unet):
    return {id(m): n for n, m in unet.named_modules()}


# ---- layout -------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(8, 8), (16, 12), (9, 7)])
def test_layout_matches_real_hidden_states(unet, size):
    height, width = size
    layout = temporal_layer_layout(unet, height, width)
    assert list(layout) == [layer_name(i) for i in range(4)]
    assert [L["channels"] for L in layout.values()] == [32, 64, 32, 32]
    assert [L["downsample"] for L in layout.values()] == [1, 2, 1, 1]
    json.dumps(layout)

    names, seen, grids, handles = module_names(unet), [], {}, []
    for name, module in unet.named_modules():
        if isinstance(module, TransformerSpatioTemporalModel):
            handles.append(module.register_forward_pre_hook(
                lambda m, args, name=name: grids.__setitem__(name, tuple(args[0].shape[-2:]))))
        if name.endswith("temporal_transformer_blocks.0.attn1"):
            handles.append(module.register_forward_pre_hook(
                lambda m, args: seen.append((names[id(m)], tuple(args[0].shape)))))
    batch = 2
    try:
        run(unet, **unet_inputs(unet, batch=batch, frames=3, height=height, width=width))
    finally:
        for h in handles:
            h.remove()
    assert [n for n, _ in seen] == [L["module"] for L in layout.values()]   # forward order
    for (module, shape), L in zip(seen, layout.values()):
        assert shape == (batch * L["height"] * L["width"], 3, L["channels"])
        assert grids[module.split(".temporal_transformer_blocks")[0]] == (L["height"], L["width"])


def test_layout_of_the_real_svd_unet():
    """SVD's own config (built on the meta device, no weights): 16 layers at 576x1024."""
    with torch.device("meta"):
        real = UNetSpatioTemporalConditionModel()
    layout = temporal_layer_layout(real, 72, 128)
    assert [L["channels"] for L in layout.values()] == [320] * 2 + [640] * 2 + [1280] * 6 + [640] * 3 + [320] * 3
    assert [L["downsample"] for L in layout.values()] == [1, 1, 2, 2, 4, 4, 8, 4, 4, 4, 2, 2, 2, 1, 1, 1]
    assert layout[layer_name(6)]["module"].startswith("mid_block.") and layout[layer_name(6)]["height"] == 9
    assert all((L["height"], L["width"]) == (72 // L["downsample"], 128 // L["downsample"]) for L in layout.values())


# ---- routing of the motion-text tokens ------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 2])
def test_tokens_reach_the_right_rows(unet, batch):
    emb = random_embedding(unet, temporal=False)
    spatial_seen, temporal_seen, calls, handles = [], [], [], []
    for name, module in unet.named_modules():
        if name.endswith("transformer_blocks.0.attn2"):
            kind = "temporal" if "temporal_transformer_blocks" in name else "spatial"
            store = temporal_seen if kind == "temporal" else spatial_seen
            handles.append(module.to_k.register_forward_pre_hook(lambda m, args, store=store: store.append(args[0])))
            handles.append(module.register_forward_hook(
                lambda m, args, kwargs, out, kind=kind: calls.append((kind, m, args[0], out)), with_kwargs=True))
    try:
        with install_motion(unet, emb, H, W, frames=F) as handle:
            types = {type(p) for p in handle.processors.values()}
            assert types == {SpatialTokensProcessor, TemporalTokensProcessor}
            run(unet, **unet_inputs(unet, batch=batch))
    finally:
        for h in handles:
            h.remove()
    assert len(spatial_seen) == 4 and len(temporal_seen) == 4 == len(calls) // 2
    assert all(torch.equal(x, emb.spatial_tokens) for x in spatial_seen)      # (f n d): one row per frame
    assert all(torch.equal(x, emb.temporal_tokens) for x in temporal_seen)    # (n d)
    reference = AttnProcessor2_0()
    for kind, attn, hidden, out in calls:
        rows = hidden.shape[0]
        if kind == "spatial":   # row r = (b, f) batch-major: frame r % F
            context = torch.stack([emb.spatial_tokens[r % F] for r in range(rows)])
            assert torch.equal(SpatialTokensProcessor(emb).context(rows), context)
            wrong = torch.stack([emb.spatial_tokens[(r + 1) % F] for r in range(rows)])
            assert not torch.allclose(reference(attn, hidden, encoder_hidden_states=wrong), out, atol=1e-4)
        else:
            context = emb.temporal_tokens.expand(rows, TOKENS, 1024)
            assert torch.equal(TemporalTokensProcessor(emb).context(rows), context)
        torch.testing.assert_close(out, reference(attn, hidden, encoder_hidden_states=context), rtol=1e-5, atol=1e-5)


# ---- exactness and restore ------------------------------------------------------------------
def test_zero_embedding_is_exactly_the_plain_model_and_exit_restores(unet):
    inputs = unet_inputs(unet, batch=2)
    saved = unet.attn_processors
    before = run(unet, **inputs)
    emb = init_embedding(unet, F, H, W, temporal=True, with_values=True)   # all zeros, no motion text
    assert emb.num_parameters() > 0 and not emb.has_motion_text
    with install_motion(unet, emb, H, W, frames=F) as handle:
        assert len(handle.processors) == 4
        assert all(isinstance(p, TemporalMotionProcessor) for p in handle.processors.values())
        during = run(unet, **inputs)
    # x + 0 == x in floating point, and the processor repeats AttnProcessor2_0's operations
    # one by one, so the result is bit-identical, not merely close.
    assert torch.equal(during, before)
    assert all(unet.attn_processors[k] is saved[k] for k in saved)
    assert torch.equal(run(unet, **inputs), before)

    with install_motion(unet, random_embedding(unet, tokens=0), H, W, strength=0.0):
        assert torch.equal(run(unet, **inputs), before)                   # strength 0: no motion
    handle = install_motion(unet, random_embedding(unet, tokens=0), H, W)
    assert not torch.equal(run(unet, **inputs), before)                   # the embeddings do act
    handle.remove()
    handle.remove()                                                       # idempotent
    assert torch.equal(run(unet, **inputs), before)


# ---- eq. 3 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_values,grid", [(True, None), (False, None), (True, (6, 5))])
def test_processor_is_eq3(unet, with_values, grid):
    emb = random_embedding(unet, tokens=0, with_values=with_values)
    name = layer_name(1)                                                  # mid block, 64 ch, 4 heads
    layer = temporal_layer_layout(unet, H, W)[name]
    attn = dict(unet.named_modules())[layer["module"]]
    height, width = grid or (layer["height"], layer["width"])
    features = torch.randn(2 * height * width, F, layer["channels"], generator=torch.Generator().manual_seed(3))
    value = None
    if with_values:
        value = resize_value_embedding(emb.value_embedding[name], (layer["height"], layer["width"]), (height, width))
    expected = temporal_self_attention(features, attn.to_q, attn.to_k, attn.to_v, attn.heads,
                                       emb.temporal_qk[name], value)
    expected = attn.to_out[1](attn.to_out[0](expected))
    with torch.no_grad():
        got = TemporalMotionProcessor(emb, name, height, width)(attn, features)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ---- gradients and training --------------------------------------------------------------------------
def test_gradients_reach_every_tensor(unet, clean):
    emb = init_embedding(unet, F, H, W, tokens_per_frame=TOKENS).trainable_copy("cpu")
    with install_motion(unet, emb, H, W, frames=F):
        sigma = torch.full((F,), 1.5)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
        loss = edm_loss(SVDDenoiser(unet)(clean + 1.5 * noise, sigma, clean[:1]), clean, 1.5)
        loss.backward()
    names = emb.tensors()
    assert len(names) == 2 + 4 + 4
    for name, t in names.items():
        assert t.grad is not None and float(t.grad.abs().sum()) > 0, name
    assert all(p.grad is None for p in unet.parameters())


@pytest.mark.parametrize("kind", ["motion_text", "temporal", "both"])
def test_training_lowers_fixed_noise_loss(unet, clean, kind):
    emb = init_embedding(unet, F, H, W, tokens_per_frame=0 if kind == "temporal" else TOKENS,
                         temporal=kind != "motion_text").trainable_copy("cpu")
    denoiser = SVDDenoiser(unet)
    settings = TrainSettings(steps=40, learning_rate=5e-2, augment=AugmentSettings(enabled=False))
    with install_motion(unet, emb, H, W, frames=F):
        before = fixed_noise_loss(denoiser, clean)
        result = train_motion_embedding(denoiser, clean, emb, settings)
        after = fixed_noise_loss(denoiser, clean)
    assert result.completed and len(result.loss_history) == 40
    assert after < 0.9 * before, (before, after)


def _train(unet, clean, seed, steps=3):
    emb = init_embedding(unet, F, H, W, tokens_per_frame=TOKENS).trainable_copy("cpu")
    settings = TrainSettings(steps=steps, learning_rate=1e-2, seed=seed)   # augmentation on
    with install_motion(unet, emb, H, W, frames=F):
        return train_motion_embedding(SVDDenoiser(unet), clean, emb, settings).embedding


def test_same_seed_same_embedding(unet, clean):
    a, b, c = _train(unet, clean, 7), _train(unet, clean, 7), _train(unet, clean, 8)
    assert all(torch.equal(a.tensors()[k], b.tensors()[k]) for k in a.tensors())
    assert not all(torch.equal(a.tensors()[k], c.tensors()[k]) for k in a.tensors())


def test_learn_motion_encodes_once_and_restores(unet):
    calls = []

    def encode(frames):   # (f h w 3) in 0..1 -> (f 4 h/8 w/8)
        calls.append(frames.shape)
        pooled = torch.nn.functional.avg_pool2d(frames.permute(0, 3, 1, 2), 8)
        return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1) * 2 - 1

    frames = torch.rand(F, 8 * H, 8 * W, 3, generator=torch.Generator().manual_seed(2))
    saved = unet.attn_processors
    steps = []
    emb = init_embedding(unet, F, H, W, tokens_per_frame=TOKENS)
    result = learn_motion(unet, encode, frames, emb, TrainSettings(steps=3), {"fps": 7},
                          callback=lambda step, total, loss: steps.append(step))
    assert calls == [frames.shape]
    assert steps == [1, 2, 3] and result.steps_done == 3 and result.completed
    assert all(unet.attn_processors[k] is saved[k] for k in saved)
    assert result.embedding.all_finite() and not result.embedding.temporal_qk["temporal_attn.00"].requires_grad
    json.dumps(result.embedding.metadata)


# ---- the denoiser's preconditioning ------------------------------------------------------------------
class _StubUNet:
    """Records its inputs and returns a fixed v-prediction (1 f 4 h w)."""

    def __init__(self, output):
        self.output, self.config = output, type("C", (), {"cross_attention_dim": 1024})()
        self.device, self.dtype, self.calls = torch.device("cpu"), torch.float32, []

    def __call__(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict):
        self.calls.append((sample, timestep, encoder_hidden_states, added_time_ids))
        return (self.output,)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # numpy 2 notice inside the scheduler
def test_denoiser_matches_diffusers_euler_v_prediction(clean):
    scheduler = EulerDiscreteScheduler(prediction_type="v_prediction", timestep_type="continuous",
                                       use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0)
    scheduler.set_timesteps(5)
    g = torch.Generator().manual_seed(4)
    v = torch.randn(1, *clean.shape, generator=g)
    stub = _StubUNet(v)
    for index in (0, 2):
        t, sigma = scheduler.timesteps[index], float(scheduler.sigmas[index])
        scheduler._step_index = index
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        denoised = SVDDenoiser(stub, fps=7, motion_bucket_id=100, noise_aug_strength=0.02)(
            noisy, torch.full((F,), sigma), clean[:1])
        sample, timestep, context, time_ids = stub.calls[-1]
        torch.testing.assert_close(sample[0, :, :4], scheduler.scale_model_input(noisy, t))
        torch.testing.assert_close(sample[0, :, 4:], (clean[:1] / SVD_VAE_SCALING_FACTOR).expand(F, -1, -1, -1))
        torch.testing.assert_close(timestep, t.reshape(1).float())
        assert torch.equal(context, torch.zeros(1, 1, 1024))
        assert time_ids.tolist() == [[6.0, 100.0, pytest.approx(0.02)]]   # fps - 1, as the pipeline does
        scheduler._step_index = index
        expected = scheduler.step(v[0], t, noisy).pred_original_sample
        torch.testing.assert_close(denoised, expected, rtol=1e-5, atol=1e-5)
    assert math.isclose(float(timestep), 0.25 * math.log(sigma), rel_tol=1e-6)
    with pytest.raises(ValueError, match="one noise level"):
        SVDDenoiser(stub)(clean, torch.tensor([1.0, 2.0, 1.0, 1.0]), clean[:1])


# ---- errors ----------------------------------------------------------------------------------------
def test_frame_count_mismatch_suggests_resampled(unet):
    emb = random_embedding(unet)
    with pytest.raises(ValueError, match=r"resampled\(6\)"):
        install_motion(unet, emb, H, W, frames=6)
    saved = unet.attn_processors
    with install_motion(unet, emb, H, W):
        with pytest.raises(ValueError, match=r"4 frames but the run has 6.*resampled\(6\)"):
            run(unet, **unet_inputs(unet, frames=6))
    assert all(unet.attn_processors[k] is saved[k] for k in saved)
    with install_motion(unet, emb.resampled(6), H, W, frames=6):
        assert run(unet, **unet_inputs(unet, frames=6)).shape == (1, 6, 4, H, W)


def test_layer_that_does_not_fit_is_named_with_both_shapes(unet):
    saved = unet.attn_processors
    emb = random_embedding(unet, tokens=0)
    emb.temporal_qk["temporal_attn.01"] = torch.zeros(1, F, 48)
    with pytest.raises(ValueError, match=r"temporal_attn\.01.*\(1, 4, 48\).*\(1, 4, 64\)"):
        install_motion(unet, emb, H, W)
    emb = random_embedding(unet, tokens=0)
    emb.value_embedding["temporal_attn.02"] = torch.zeros(10, F, 32)
    with pytest.raises(ValueError, match=r"temporal_attn\.02.*\(10, 4, 32\).*\(64, 4, 32\)"):
        install_motion(unet, emb, H, W)
    emb = random_embedding(unet, tokens=0)
    emb.temporal_qk["temporal_attn.07"] = torch.zeros(1, F, 32)
    with pytest.raises(ValueError, match=r"temporal_attn\.07.*\(1, 4, 32\).*no such"):
        install_motion(unet, emb, H, W)
    emb = random_embedding(unet, temporal=False)
    emb.spatial_tokens = torch.zeros(F, TOKENS, 768)
    with pytest.raises(ValueError, match=r"spatial_tokens.*\(4, 2, 768\).*\(4, n, 1024\)"):
        install_motion(unet, emb, H, W)
    assert all(unet.attn_processors[k] is saved[k] for k in saved)   # nothing was installed


def test_runs_at_another_latent_size(unet):
    emb = random_embedding(unet)                                          # learned at 8x8
    with install_motion(unet, emb, 12, 10, frames=F) as handle:
        motion = [p for p in handle.processors.values() if isinstance(p, TemporalMotionProcessor)]
        assert [(p.height, p.width) for p in motion] == [(12, 10), (6, 5), (12, 10), (12, 10)]
        out = run(unet, **unet_inputs(unet, height=12, width=10))
    assert out.shape == (1, F, 4, 12, 10) and torch.isfinite(out).all()
