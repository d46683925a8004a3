"""The memory plan's arithmetic (host-free): learned state, weight copies, attention, scaling, alternatives."""
import dataclasses
import json
import os

import pytest

from motion_core import memory_plan
from motion_core.layers import embedding_cost, select_layers
from motion_core.memory_plan import GIB, LearnShape, alternatives, plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _svd_layout(latent_height, latent_width):
    """SVD's 16 temporal layers: 5 at 320 channels (full size), 5 at 640 (/2), 5 at 1280 (/4), 1 at 1280 (/8)."""
    levels = [(320, 1)] * 2 + [(640, 2)] * 2 + [(1280, 4)] * 2 + [(1280, 8)] + [(1280, 4)] * 3 + [(640, 2)] * 3 + [(320, 1)] * 3
    return {f"temporal_attn.{i:02d}": {"channels": c, "downsample": f, "height": -(-latent_height // f),
                                       "width": -(-latent_width // f)} for i, (c, f) in enumerate(levels)}


def _shape(representation="motion_text", checkpointing=True, frames=14, height=72, width=128, preset="all", **kw):
    layout = _svd_layout(height, width)
    layers = select_layers(layout, preset) if representation != "motion_text" else {}
    heads = [(5, 1)] * 5 + [(10, 2)] * 5 + [(20, 4)] * 5 + [(20, 8)]
    values = dict(frames=frames, latent_height=height, latent_width=width, representation=representation,
                  checkpointing=checkpointing, dtype="float16", weight_bytes=3.05 * GIB, model_layout=layout,
                  layers=layers, tokens=(frames + 1) * 5 * 1024, spatial_heads=heads)
    values.update(kw)
    return LearnShape(**values)


def test_svd_width_constant_is_the_layout_sum():
    assert memory_plan.model_width(_svd_layout(72, 128)) == memory_plan.SVD_WIDTH


def test_learned_state_is_four_float32_copies_of_the_embedding():
    shape = _shape("temporal", preset="widest")
    cost = embedding_cost(shape.layers, shape.frames)
    assert memory_plan.learned_values(shape) == cost["parameters"]
    assert plan(shape).learned == 16 * cost["parameters"]          # value, gradient, Adam's two moments
    both = _shape("both", preset="widest")
    assert memory_plan.learned_values(both) == cost["parameters"] + 15 * 5 * 1024


def test_weight_copies_are_kept_only_without_checkpointing_and_for_inference_weights():
    assert plan(_shape(checkpointing=False)).weight_copies == 3.05 * GIB
    assert plan(_shape(checkpointing=True)).weight_copies == 0
    assert plan(_shape(checkpointing=False, copies_weights=False)).weight_copies == 0


def test_activations_scale_with_positions_dtype_and_model_width():
    constants = {key: (GIB, 1000.0) for key in memory_plan.ACTIVATION_BYTES}
    small, large = plan(_shape(height=36, width=64), constants), plan(_shape(), constants)
    assert large.activations - small.activations == pytest.approx(1000.0 * 14 * (72 * 128 - 36 * 64) / 2)
    full = plan(dataclasses.replace(_shape(), dtype="float32"), constants)
    assert full.activations == pytest.approx(2 * large.activations)
    half_width = {name: dict(layer, channels=layer["channels"] // 2) for name, layer in _svd_layout(72, 128).items()}
    narrow = plan(dataclasses.replace(_shape(), model_layout=half_width), constants)
    assert narrow.activations == pytest.approx(large.activations / 2)


def test_attention_is_quadratic_for_materialising_kernels_only():
    assert plan(_shape(attention_kernel="attention_pytorch")).attention == 0
    one = _shape(attention_kernel="attention_sub_quad", height=36, width=64)
    two = _shape(attention_kernel="attention_sub_quad")
    assert plan(two).attention == pytest.approx(16 * plan(one).attention)   # 4x the positions
    per_block = 14 * 5 * (72 * 128) ** 2 * 4
    assert plan(two).attention == per_block                                 # checkpointing: one block at a time
    assert plan(dataclasses.replace(two, checkpointing=False)).attention > 5 * per_block


def test_unknown_dtype_is_refused_by_name():
    with pytest.raises(ValueError, match="float8"):
        plan(_shape(dtype="float8"))


def test_alternatives_name_only_settings_that_fit():
    shape = _shape("temporal", checkpointing=False)

    def reshape(current, **changes):
        frames = changes.get("frames", current.frames)
        factor = changes.get("size_factor", 1.0)
        return _shape("temporal", checkpointing=changes.get("checkpointing", current.checkpointing), frames=frames,
                      height=round(current.latent_height * factor), width=round(current.latent_width * factor),
                      preset=changes.get("layers", "all"))

    need = plan(shape).total
    fitting = alternatives(shape, need * 0.999, reshape)
    assert any(item.startswith("activation_checkpointing on") for item in fitting)
    assert all(float(item.rsplit("(", 1)[1].split()[0]) <= need / GIB for item in fitting)
    assert alternatives(shape, 1.0, reshape) == []


def test_committed_constants_are_the_benchmarks():
    """motion_core's activation constants are the ones bench/learn_memory.py measured (docs/learn_memory.json)."""
    with open(os.path.join(ROOT, "docs", "learn_memory.json"), encoding="utf-8") as fh:
        measured = json.load(fh)["activation_constants"]
    for (representation, checkpointing), (fixed, per_position) in memory_plan.ACTIVATION_BYTES.items():
        fitted = measured[f"{representation}/{'on' if checkpointing else 'off'}"]
        assert fixed == pytest.approx(fitted[0], rel=1e-3, abs=1e6)
        assert per_position == pytest.approx(fitted[1], rel=1e-3)


def test_downscale_frames_keeps_multiples_of_eight_and_the_mean():
    import torch
    from motion_core.resample import downscale_frames
    frames = torch.rand(3, 80, 128, 3, generator=torch.Generator().manual_seed(0))
    half = downscale_frames(frames, 0.5)
    assert half.shape == (3, 40, 64, 3)
    assert torch.allclose(half.mean(), frames.mean(), atol=0.01)
    assert downscale_frames(frames, 1.0) is frames
    assert downscale_frames(frames, 0.01).shape == (3, 8, 8, 3)
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        downscale_frames(frames, 1.5)


def test_benchmark_fits_constants_on_two_distinct_sizes_only():
    from bench.learn_memory import fit_constants

    def row(width, height, rise, checkpointing=True):
        return {"width": width, "height": height, "frames": 14, "representation": "motion_text",
                "checkpointing": checkpointing, "peak_rise_gib": rise}

    one_size = [row(128, 72, 1.0), row(128, 72, 1.1)]
    assert fit_constants(one_size, lambda r: 0.0) == {}                # a timing run: nothing to fit
    fitted = fit_constants([row(128, 72, 1.0), row(192, 112, 1.5), row(256, 144, 9.0)], lambda r: 0.25)
    fixed, per_position = fitted[("motion_text", True)]
    positions = (14 * 9 * 16, 14 * 14 * 24)                            # latent positions of the two smallest
    assert per_position == pytest.approx(0.5 * GIB / (positions[1] - positions[0]))
    assert fixed + per_position * positions[0] == pytest.approx(0.75 * GIB)


# ---- Wan ------------------------------------------------------------------------------------
def _wan_shape(**changes):
    shape = memory_plan.WanLearnShape(frames=21, token_height=30, token_width=52, dim=1536, ffn_dim=8960, blocks=30,
                                      learned=4 * 21 * 1536 * (1 + 30 * 52), checkpointing=True, dtype="bfloat16",
                                      weight_bytes=2.64 * GIB)
    return dataclasses.replace(shape, **changes)


def test_wan_plan_keeps_each_blocks_input_and_recomputes_one_block():
    c = memory_plan.WAN_ACTIVATION_BYTES
    shape = _wan_shape()
    assert shape.tokens == 32760
    per_token = (c["kept_per_block"] * 30 + c["outside"] + c["recompute"]) / 2        # bfloat16: half of float32
    assert memory_plan.plan_wan(shape).activations == pytest.approx(per_token * 32760 + c["fixed"] / 2)
    more_blocks = memory_plan.plan_wan(dataclasses.replace(shape, blocks=40)).activations
    assert more_blocks - memory_plan.plan_wan(shape).activations == pytest.approx(10 * c["kept_per_block"] / 2 * 32760)
    off = memory_plan.plan_wan(dataclasses.replace(shape, checkpointing=False))
    assert off.activations > 10 * memory_plan.plan_wan(shape).activations and off.weight_copies == 2.64 * GIB


def test_wan_plan_with_offloaded_inputs_moves_exactly_the_kept_inputs_to_cpu_memory():
    c = memory_plan.WAN_ACTIVATION_BYTES
    on_device = memory_plan.plan_wan(_wan_shape())
    offloaded = memory_plan.plan_wan(_wan_shape(offload=True))
    kept = c["kept_per_block"] * 30 / 2 * 32760                     # 30 tracked blocks, bfloat16
    assert offloaded.host == pytest.approx(kept) and on_device.host == 0
    assert on_device.total - offloaded.total == pytest.approx(kept)
    assert "kept in CPU memory" in offloaded.describe() and "CPU memory" not in on_device.describe()
    assert memory_plan.plan_wan(_wan_shape(offload=True, first_block=10)).host == pytest.approx(kept * 20 / 30)
    both = memory_plan.plan_wan(_wan_shape(offload=True, host_optimizer=True))
    learned = _wan_shape().learned
    assert both.learned == 8 * learned and both.host == pytest.approx(kept + 16 * learned)
    assert "with gradients 0." in both.describe() or "with gradients 1." in both.describe()
    assert "Adam" not in both.describe() and "Adam state" in offloaded.describe()
    plain = memory_plan.plan_wan(_wan_shape(offload=True, checkpointing=False))      # nothing kept to move
    assert plain.host == 0 and plain.total == memory_plan.plan_wan(_wan_shape(checkpointing=False)).total


def test_wan_plan_scales_with_the_models_width_and_counts_learned_state():
    narrow = memory_plan.plan_wan(_wan_shape())
    wide = memory_plan.plan_wan(_wan_shape(dim=5120, ffn_dim=13824, blocks=30))
    assert wide.activations > 2 * narrow.activations
    assert narrow.learned == 16 * _wan_shape().learned
    assert memory_plan.plan_wan(_wan_shape(attention_kernel="attention_pytorch")).attention == 0
    materialised = memory_plan.plan_wan(_wan_shape(attention_kernel="attention_sub_quad", heads=12)).attention
    assert materialised == 12 * 32760 ** 2 * 4
    with pytest.raises(ValueError, match="no plan for dtype"):
        memory_plan.plan_wan(_wan_shape(dtype="float8"))


def test_wan_plan_at_full_size_is_what_the_docs_quote():
    """Wan 2.1 T2V 1.3B, 832x480x81, bfloat16, the spread preset (4 blocks), checkpointing on."""
    total = memory_plan.plan_wan(_wan_shape()).total / GIB
    assert 8 < total < 16, total          # above the 8 GiB target at learn_scale 1: docs/benchmarks.md says so
    half = memory_plan.plan_wan(_wan_shape(token_height=15, token_width=26, learned=4 * 21 * 1536 * (1 + 15 * 26)))
    assert half.total / GIB <= 8          # learn_scale 0.5 fits an 8 GiB card


def test_spread_preset_picks_a_few_blocks_and_widest_means_it_on_identical_blocks():
    from motion_core.layers import select_layers, spread
    layout = {f"block.{i:02d}": {"channels": 1536, "height": 30, "width": 52} for i in range(30)}
    assert list(select_layers(layout, "spread")) == ["block.00", "block.10", "block.19", "block.29"]
    assert select_layers(layout, "widest") == select_layers(layout, "spread")
    assert spread(["a", "b", "c"], 1) == ["b"] and spread(["a", "b"], 4) == ["a", "b"]
    svd_like = {"t.00": {"channels": 320}, "t.01": {"channels": 1280}, "t.02": {"channels": 1280}}
    assert list(select_layers(svd_like, "widest")) == ["t.01", "t.02"]


def test_wan_plan_tracks_only_the_blocks_from_the_first_learned_one():
    c = memory_plan.WAN_ACTIVATION_BYTES
    early, late = memory_plan.plan_wan(_wan_shape()), memory_plan.plan_wan(_wan_shape(first_block=20))
    assert early.activations - late.activations == pytest.approx(20 * c["kept_per_block"] / 2 * 32760)
    off = memory_plan.plan_wan(_wan_shape(first_block=20, checkpointing=False))
    assert off.weight_copies == pytest.approx(2.64 * GIB / 3)
