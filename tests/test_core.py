"""motion_core without any host: container, init, resampling, objective, loop, debias, attention."""
import ast
import glob
import math
import os
import subprocess
import sys

import pytest
import torch

from motion_core.attention import motion_inputs, temporal_self_attention
from motion_core.augment import AugmentSettings, augment_clip
from motion_core.debias import debias, debias_value
from motion_core.embedding import MotionEmbedding, base_metadata, init_motion_text, init_temporal, layer_name
from motion_core.layers import embedding_cost, select_layers
from motion_core.objectives import anchor_debiased, edm_loss, training_loss
from motion_core.resample import resample_frames, resize_value_embedding
from motion_core.training import (TrainingInterrupted, TrainSettings, fixed_noise_loss, fixed_noise_losses,
                                 train_motion_embedding)

REPO = __file__.rsplit("/tests/", 1)[0]


def test_motion_core_never_imports_comfyui():
    code = ("import sys, motion_core.embedding, motion_core.training, motion_core.fileio, motion_core.video, "
            "motion_core.debias, motion_core.attention, motion_core.plot, motion_core.layers, motion_core.diffusers_svd\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'server', 'nodes')]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def _comfy_api_imports(path):
    """Every ``comfy_api...`` module a source file imports (``from comfy_api import latest`` included)."""
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("comfy_api")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("comfy_api"):
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def test_nodes_use_the_versioned_node_api_not_latest():
    """comfy_api.latest is ComfyUI's unstable API; the nodes build on the versioned v0_0_2 (issue 39)."""
    files = sorted(glob.glob(os.path.join(REPO, "nodes", "**", "*.py"), recursive=True)) + [os.path.join(REPO, "__init__.py")]
    imports = {os.path.relpath(f, REPO): _comfy_api_imports(f) for f in files}
    latest = {f: [m for m in found if m.split(".")[:2] == ["comfy_api", "latest"]] for f, found in imports.items()}
    assert not any(latest.values()), {f: m for f, m in latest.items() if m}
    assert sum("comfy_api.v0_0_2" in found for found in imports.values()) >= 5, imports


def test_init_from_image_embeds_follows_the_paper():
    embeds = torch.randn(6, 1024)
    spatial, temporal = init_motion_text(6, 5, embeds, noise_std=0.1, generator=torch.Generator().manual_seed(0))
    assert spatial.shape == (6, 5, 1024) and temporal.shape == (5, 1024)
    assert (spatial - embeds[:, None]).std().item() == pytest.approx(0.1, rel=0.05)
    assert (temporal - embeds.mean(0)).std().item() == pytest.approx(0.1, rel=0.05)
    fallback, _ = init_motion_text(6, 5, None, generator=torch.Generator().manual_seed(0))
    assert fallback.abs().mean() < 0.1


def test_resample_frames_is_linear_and_identity_when_equal():
    tokens = torch.arange(14.0)[:, None, None].expand(14, 2, 3)
    assert resample_frames(tokens, 14) is tokens
    out = resample_frames(tokens, 27)
    assert out.shape == (27, 2, 3)
    assert torch.allclose(out[:, 0, 0], torch.linspace(0, 13, 27))
    embedding = MotionEmbedding(spatial_tokens=tokens.clone(), temporal_tokens=torch.zeros(2, 3),
                                temporal_qk={"temporal_attn.00": torch.randn(1, 14, 8)},
                                value_embedding={"temporal_attn.00": torch.randn(4, 14, 8)},
                                metadata=base_metadata(14, 64, 64, 2))
    moved = embedding.resampled(25)
    assert moved.frames == 25 and moved.temporal_qk["temporal_attn.00"].shape == (1, 25, 8)
    assert moved.value_embedding["temporal_attn.00"].shape == (4, 25, 8)
    assert moved.metadata["resampled_from_frames"] == 14


def test_resize_value_embedding_shapes_and_identity():
    value = torch.randn(6 * 4, 3, 8)
    assert resize_value_embedding(value, (6, 4), (6, 4)) is value
    assert resize_value_embedding(value, (6, 4), (12, 8)).shape == (96, 3, 8)
    constant = torch.ones(24, 3, 8)
    assert torch.allclose(resize_value_embedding(constant, (6, 4), (3, 2)), torch.ones(6, 3, 8))


def test_edm_loss_matches_direct_computation():
    denoised, clean = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    sigma = 3.7
    direct = ((sigma ** 2 + 1.0) / (sigma * 1.0) ** 2 * (denoised - clean) ** 2).mean()
    assert torch.allclose(edm_loss(denoised, clean, sigma, 1.0), direct)
    half = ((sigma ** 2 + 0.25) / (sigma * 0.5) ** 2 * (denoised - clean) ** 2).mean()
    assert torch.allclose(edm_loss(denoised, clean, sigma, 0.5), half)


def test_appearance_debiased_loss_ignores_shared_appearance():
    clean = torch.randn(5, 4, 6, 6)
    shifted = clean + torch.randn(1, 4, 6, 6)          # same motion, another appearance
    debiased = anchor_debiased(shifted, 2) - anchor_debiased(clean, 2)
    assert torch.allclose(debiased, (math.sqrt(2) - 1) * (shifted - clean), atol=1e-5)
    total = training_loss(shifted, clean, 2.0, 1.0, "appearance_debiased", anchor=2)
    assert total > edm_loss(shifted, clean, 2.0)
    with pytest.raises(ValueError, match="unknown loss"):
        training_loss(shifted, clean, 2.0, 1.0, "l1")


def test_augmentation_is_shared_by_all_frames():
    frame = torch.randn(1, 4, 16, 16)
    clip = frame.expand(6, -1, -1, -1).clone()
    out = augment_clip(clip, torch.Generator().manual_seed(3), AugmentSettings(flip=True))
    assert out.shape == clip.shape
    assert all(torch.allclose(out[0], out[f]) for f in range(6))
    assert not torch.allclose(out, clip)
    assert augment_clip(clip, torch.Generator(), AugmentSettings(enabled=False)) is clip


class ToyDenoiser(torch.nn.Module):
    """A frozen linear 'video model' whose output depends on per-frame tokens: a real graph to optimise."""

    def __init__(self, embedding):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.mix = torch.randn(4, 4, generator=generator) * 0.3
        self.embedding = embedding

    def forward(self, noisy, sigma, first_frame):
        c_in = 1 / (sigma[:, None, None, None] ** 2 + 1).sqrt()
        shift = self.embedding.spatial_tokens.mean(-1)[:, :4, None, None]   # (f 4 1 1)
        return torch.einsum("fchw,cd->fdhw", noisy * c_in, self.mix) + shift + 0 * first_frame


def _toy_run(seed=0, steps=40, **settings):
    spatial, temporal = init_motion_text(4, 4, None, generator=torch.Generator().manual_seed(seed), token_width=16)
    embedding = MotionEmbedding(spatial_tokens=spatial, temporal_tokens=temporal,
                                metadata=base_metadata(4, 32, 32, 4)).trainable_copy("cpu")
    denoiser = ToyDenoiser(embedding)
    clean = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(9)) * 0.5 + 0.7
    before = fixed_noise_loss(denoiser, clean)
    options = dict(steps=steps, learning_rate=5e-2, seed=seed, log_sigma_mean=-1.0, log_sigma_std=0.5,
                   augment=AugmentSettings(enabled=False))
    options.update(settings)
    result = train_motion_embedding(denoiser, clean, embedding, TrainSettings(**options))
    return result, before, fixed_noise_loss(denoiser, clean)


def test_training_lowers_fixed_noise_loss_and_records_history():
    result, before, after = _toy_run()
    assert result.completed and result.steps_done == 40 and len(result.loss_history) == 40
    assert after < before * 0.8
    assert result.embedding.metadata["training"]["learning_rate"] == 5e-2
    assert not result.embedding.spatial_tokens.requires_grad


def test_fixed_noise_losses_measure_either_objective_per_noise_level():
    spatial, temporal = init_motion_text(4, 4, None, generator=torch.Generator().manual_seed(0), token_width=16)
    denoiser = ToyDenoiser(MotionEmbedding(spatial_tokens=spatial, temporal_tokens=temporal,
                                           metadata=base_metadata(4, 32, 32, 4)))
    clean = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(9)) * 0.5 + 0.7
    edm = fixed_noise_losses(denoiser, clean)
    debiased = fixed_noise_losses(denoiser, clean, loss="appearance_debiased")
    assert len(edm) == 4 and sum(edm) / 4 == pytest.approx(fixed_noise_loss(denoiser, clean))
    # the debiased objective adds a non-negative term to the same EDM loss, level by level
    assert all(d > e > 0 for d, e in zip(debiased, edm))
    with pytest.raises(ValueError, match="'l1' is not one of"):
        fixed_noise_losses(denoiser, clean, loss="l1")


def test_same_seed_same_embedding():
    first, _, _ = _toy_run(seed=5, steps=10)
    second, _, _ = _toy_run(seed=5, steps=10)
    other, _, _ = _toy_run(seed=6, steps=10)
    assert torch.equal(first.embedding.spatial_tokens, second.embedding.spatial_tokens)
    assert not torch.equal(first.embedding.spatial_tokens, other.embedding.spatial_tokens)


def _tiny_text_embedding(frames=2, width=8):
    spatial, temporal = init_motion_text(frames, 1, None, generator=torch.Generator().manual_seed(3), token_width=width)
    return MotionEmbedding(spatial_tokens=spatial, temporal_tokens=temporal,
                           metadata=base_metadata(frames, 8, 8, 1)).trainable_copy("cpu")


def _spoiling_denoiser(embedding, spoil):
    """A denoiser of the tokens' sum whose output ``spoil(call)`` multiplies (nan, inf or 1);
    ``seen[call]`` is the tokens' value when call ``call`` (1-based) started."""
    calls, seen = {"n": 0}, {}

    def denoiser(noisy, sigma, first):
        calls["n"] += 1
        seen[calls["n"]] = embedding.spatial_tokens.detach().clone()
        return (noisy * 0 + embedding.spatial_tokens.sum()) * spoil(calls["n"])
    return denoiser, seen


def test_a_non_finite_step_is_skipped_and_counted_not_fatal():
    embedding = _tiny_text_embedding()
    denoiser, seen = _spoiling_denoiser(embedding, lambda call: float("nan") if call == 4 else 1.0)
    result = train_motion_embedding(denoiser, torch.zeros(2, 1, 2, 2), embedding,
                                    TrainSettings(steps=10, augment=AugmentSettings(enabled=False)))
    assert result.completed and result.steps_done == 10 and result.skipped_steps == 1
    assert len(result.loss_history) == 9 and result.embedding.metadata["training"]["skipped_steps"] == 1
    assert torch.equal(seen[4], seen[5])              # the skipped step changed nothing
    assert not torch.equal(seen[3], seen[4]) and result.embedding.all_finite()


def test_non_finite_steps_in_a_row_stop_with_the_last_good_embedding():
    embedding = _tiny_text_embedding()
    denoiser, seen = _spoiling_denoiser(embedding, lambda call: float("inf") if call >= 4 else 1.0)
    result = train_motion_embedding(denoiser, torch.zeros(2, 1, 2, 2), embedding,
                                    TrainSettings(steps=50, max_bad_steps=3, augment=AugmentSettings(enabled=False)))
    assert not result.completed and "3 non-finite steps in a row" in result.stopped_reason
    assert result.steps_done == 6 and result.skipped_steps == 3 and len(result.loss_history) == 3
    assert torch.equal(result.embedding.spatial_tokens, seen[4]) and result.embedding.all_finite()


def test_float16_loss_scaling_skips_overflowing_steps_and_learns():
    """A float16 'model' whose backward overflows at a 2^24 loss scale: the scale halves on
    each overflow (steps skipped, counted), then learning goes on with finite float32 tensors."""
    embedding = _tiny_text_embedding(width=64)
    clean = torch.full((2, 1, 2, 2), 0.5)

    def denoiser(noisy, sigma, first):
        tokens = embedding.spatial_tokens.half()
        return (noisy.half() * 0 + (tokens * 300).sum() / 300).float()

    grads = []
    result = train_motion_embedding(denoiser, clean, embedding,
                                    TrainSettings(steps=30, learning_rate=1e-3, loss_scale=2.0 ** 24, max_bad_steps=30,
                                                  augment=AugmentSettings(enabled=False)),
                                    on_gradients=lambda step, g: grads.append(g[0].clone()))
    assert result.completed and 0 < result.skipped_steps < 30
    assert result.embedding.spatial_tokens.dtype == torch.float32 and result.embedding.all_finite()
    assert all(torch.isfinite(g).all() and g.abs().max() < 1e3 for g in grads)   # unscaled before Adam
    assert result.loss_history[-1] < result.loss_history[0]


class _HostInterrupt(BaseException):
    """Like ComfyUI 0.33's InterruptProcessingException: a BaseException, not an Exception."""


@pytest.mark.parametrize("cancel_error", [KeyError("cancelled"), _HostInterrupt()])
def test_interrupt_carries_the_last_good_result(cancel_error):
    def cancel(step, total, loss):
        if step == 3:
            raise cancel_error

    spatial, temporal = init_motion_text(4, 4, None, token_width=16)
    embedding = MotionEmbedding(spatial_tokens=spatial, temporal_tokens=temporal,
                                metadata=base_metadata(4, 32, 32, 4)).trainable_copy("cpu")
    with pytest.raises(TrainingInterrupted) as stop:
        train_motion_embedding(ToyDenoiser(embedding), torch.zeros(4, 4, 4, 4), embedding,
                               TrainSettings(steps=10, augment=AugmentSettings(enabled=False)), cancel)
    assert stop.value.result.steps_done == 3 and stop.value.cause is cancel_error
    assert torch.equal(stop.value.result.embedding.spatial_tokens, embedding.spatial_tokens.detach())


def test_debias_modes():
    value = torch.randn(6, 5, 3)
    difference = debias_value(value, "difference")
    assert torch.equal(difference[:, 0], value[:, 0])
    assert torch.allclose(difference[:, 3], value[:, 3] - value[:, 2])
    assert torch.allclose(debias_value(value, "normalize").mean(1), torch.zeros(6, 3), atol=1e-6)
    embedding = MotionEmbedding(temporal_qk={"temporal_attn.00": torch.zeros(1, 5, 3)},
                                value_embedding={"temporal_attn.00": value}, metadata=base_metadata(5, 8, 8))
    once = debias(embedding, "difference")
    assert once.metadata["debias"] == "difference" and embedding.metadata["debias"] == "none"
    with pytest.raises(ValueError, match="already debiased"):
        debias(once, "difference")
    dropped = debias(embedding, "drop")
    assert not dropped.value_embedding and dropped.temporal_qk
    assert debias(dropped, "difference") is dropped      # nothing to debias: a no-op, not an error


def test_eq3_motion_attention_matches_direct_computation():
    torch.manual_seed(0)
    positions, frames, channels, heads, batch = 6, 5, 8, 2, 2
    to_q, to_k, to_v = (torch.nn.Linear(channels, channels, bias=False) for _ in range(3))
    features = torch.randn(batch * positions, frames, channels)
    qk, value = torch.randn(1, frames, channels), torch.randn(positions, frames, channels)
    out = temporal_self_attention(features, to_q, to_k, to_v, heads, qk, value)
    qk_in = features + qk
    value_in = (features.view(batch, positions, frames, channels) + value).view_as(features)
    q, k, v = (t.view(batch * positions, frames, heads, -1).transpose(1, 2) for t in (to_q(qk_in), to_k(qk_in), to_v(value_in)))
    direct = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(channels // heads), -1) @ v
    assert torch.allclose(out, direct.transpose(1, 2).reshape(batch * positions, frames, channels), atol=1e-6)
    zero_qk, zero_v = motion_inputs(features, torch.zeros(1, frames, channels), torch.zeros(positions, frames, channels))
    assert torch.equal(zero_qk, features) and torch.equal(zero_v, features)


def test_layer_presets_and_cost():
    layout = {layer_name(i): {"channels": c, "height": 4, "width": 4} for i, c in enumerate([320, 1280, 1280, 640])}
    assert list(select_layers(layout, "widest")) == ["temporal_attn.01", "temporal_attn.02"]
    assert list(select_layers(layout, "explicit", "0, 3")) == ["temporal_attn.00", "temporal_attn.03"]
    with pytest.raises(ValueError, match="numbered 0..3"):
        select_layers(layout, "explicit", "9")
    cost = embedding_cost(select_layers(layout, "all"), 14)
    assert cost["query_key_parameters"] == 14 * (320 + 2560 + 640)
    assert cost["bytes_fp32"] == 4 * cost["parameters"]
    qk, values = init_temporal(layout, 14)
    assert qk["temporal_attn.01"].shape == (1, 14, 1280) and values["temporal_attn.01"].shape == (16, 14, 1280)
    assert not any(t.any() for t in qk.values())


def test_flow_objective_is_the_velocity_loss_and_shifts_towards_noise():
    from motion_core.objectives import flow_loss, noised, sample_flow_sigma

    clean, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = 0.3
    noisy = noised(clean, noise, sigma, "flow")
    assert torch.allclose(noisy, 0.7 * clean + 0.3 * noise)
    velocity = torch.randn(3, 4, 2, 2)                     # a model's velocity estimate
    denoised = noisy - sigma * velocity                     # what ComfyUI's CONST model_sampling returns
    assert torch.allclose(flow_loss(denoised, clean, sigma), ((velocity - (noise - clean)) ** 2).mean(), atol=1e-5)
    draws = {shift: sorted(sample_flow_sigma(torch.Generator().manual_seed(i), shift) for i in range(400))
             for shift in (1.0, 5.0)}
    assert all(0 < s <= 1 for values in draws.values() for s in values)
    assert abs(draws[1.0][200] - 0.5) < 0.1 and draws[5.0][200] > 0.75   # shift 5: the median near 5/6


def test_flow_noise_levels_can_be_restricted_to_an_experts_range():
    """Wan 2.2 A14B: the high-noise expert sees sigma >= 0.875, the low-noise one below; the draws are the
    shifted distribution restricted to the range (the quantiles of the whole one that fall in it)."""
    from motion_core.objectives import sample_flow_sigma
    from motion_core.training import TrainSettings

    def draws(low, high, shift=8.0):
        return sorted(sample_flow_sigma(torch.Generator().manual_seed(i), shift, low, high) for i in range(400))
    high, low, whole = draws(0.875, 1.0), draws(0.0, 0.875), draws(0.0, 1.0)
    assert min(high) >= 0.875 and max(low) <= 0.875 and min(low) < 0.3
    assert whole == sorted(sample_flow_sigma(torch.Generator().manual_seed(i), 8.0) for i in range(400))
    share = sum(s >= 0.875 for s in whole) / len(whole)        # shift 8: about half the schedule is above 0.875
    assert 0.3 < share < 0.7
    with pytest.raises(ValueError, match="flow_sigma_range"):
        TrainSettings(flow_sigma_range=(0.9, 0.5))


def test_training_with_the_flow_objective_lowers_the_loss():
    from motion_core.objectives import training_loss

    result, before, after = _toy_run(steps=60, objective="flow", flow_shift=3.0)
    assert result.completed and result.embedding.metadata["training"]["objective"] == "flow"
    assert after < before
    with pytest.raises(ValueError, match="objective"):
        training_loss(torch.zeros(1), torch.zeros(1), 0.5, 1.0, objective="v")
    with pytest.raises(ValueError, match="objective"):
        TrainSettings(objective="v")


def test_epsilon_objective_is_the_noise_mse_on_the_models_discrete_schedule():
    """SD1.5 / AnimateDiff: x_t = x0 + sigma_t * eps, sigma_t from the model's 1000 timesteps drawn uniformly,
    the loss the noise's MSE read off the denoised estimate D = x_t - sigma * eps_hat."""
    from motion_core.objectives import noised, sample_discrete_sigma, training_loss

    clean, noise, eps_hat = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = 2.5
    noisy = noised(clean, noise, sigma, "eps")
    assert torch.allclose(noisy, clean + sigma * noise)
    denoised = noisy - sigma * eps_hat
    assert torch.allclose(training_loss(denoised, clean, sigma, 1.0, objective="eps"), ((eps_hat - noise) ** 2).mean(),
                          atol=1e-5)
    schedule = tuple(0.03 * 1.01 ** t for t in range(1000))
    generator = torch.Generator().manual_seed(0)
    draws = [sample_discrete_sigma(generator, schedule) for _ in range(2000)]
    assert set(draws) <= set(schedule)
    upper = sum(s >= schedule[500] for s in draws) / len(draws)          # uniform over timesteps, not over sigma
    assert 0.45 < upper < 0.55
    with pytest.raises(ValueError, match="noise schedule"):
        sample_discrete_sigma(generator, ())
    with pytest.raises(ValueError, match="eps_schedule"):
        TrainSettings(objective="eps", eps_schedule=(0.1, float("nan")))


def test_training_with_the_epsilon_objective_lowers_the_loss_and_records_the_schedule_briefly():
    schedule = tuple(0.05 * 1.003 ** t for t in range(1000))       # 0.05 .. 1.0
    result, before, after = _toy_run(steps=60, objective="eps", eps_schedule=schedule)
    assert result.completed and after < before
    recorded = result.embedding.metadata["training"]
    assert recorded["objective"] == "eps"
    assert recorded["eps_schedule"] == {"timesteps": 1000, "sigma_min": schedule[0], "sigma_max": schedule[-1]}


def test_adam_with_its_state_in_cpu_memory_learns_exactly_as_plain_adam():
    """HostAdam keeps master copies and moments apart from the learned tensors; on the CPU the same arithmetic."""
    from motion_core.training import HostAdam

    plain, _before, _after = _toy_run(steps=15)
    hosted, _before, _after = _toy_run(steps=15, host_optimizer=True)
    assert hosted.loss_history == plain.loss_history
    for name, tensor in plain.embedding.tensors().items():
        assert torch.equal(hosted.embedding.tensors()[name], tensor), name
    assert hosted.embedding.metadata["training"]["host_optimizer"] is True

    learned = torch.zeros(3, requires_grad=True)
    optimizer = HostAdam([learned], lr=0.1)
    assert optimizer.masters[0] is not learned and optimizer.masters[0].data_ptr() != learned.data_ptr()
    learned.grad = torch.tensor([1.0, -1.0, 0.0])
    optimizer.step()
    assert torch.allclose(learned.detach(), torch.tensor([-0.1, 0.1, 0.0]))      # Adam's first step: lr * sign
    assert optimizer.masters[0].grad is None and torch.equal(optimizer.masters[0], learned.detach())
    optimizer.zero_grad()
    assert learned.grad is None
