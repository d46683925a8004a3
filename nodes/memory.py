"""The Learn node's memory plan: reads the model and the device, plans with ``motion_core.memory_plan``."""
from __future__ import annotations

import dataclasses
import logging

import torch

import comfy.ldm.modules.attention
import comfy.model_management

from ..motion_core.layers import embedding_cost, select_layers
from ..motion_core.memory_plan import GIB, LearnShape, MemoryPlan, alternatives, plan
from .host_training import compute_dtype
from .hooks.svd import spatial_attention_heads, temporal_layout

log = logging.getLogger(__name__)

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
USABLE_FRACTION = 0.95      # of the device's total memory; the rest is the driver's and ComfyUI's


def attention_kernel() -> str:
    """The name of the attention function ComfyUI runs (``attention_pytorch``, ``attention_sub_quad``, ...)."""
    return getattr(comfy.ldm.modules.attention.optimized_attention, "__name__", "unknown")


def learn_shape(model, frames: int, latent_height: int, latent_width: int, representation: str,
                checkpointing: bool, layer_preset: str, explicit_layers: str, tokens_per_frame: int,
                token_width: int) -> LearnShape:
    """Everything the plan needs about this model and these settings."""
    diffusion_model = model.model.diffusion_model
    model_layout = temporal_layout(model, latent_height, latent_width)
    layers = (select_layers(model_layout, layer_preset, explicit_layers)
              if representation in ("temporal", "both") else {})
    dtype = DTYPE_NAMES.get(compute_dtype(model), "float32")
    return LearnShape(frames=frames, latent_height=latent_height, latent_width=latent_width,
                      representation=representation, checkpointing=checkpointing, dtype=dtype,
                      weight_bytes=float(model.model_size()), model_layout=model_layout, layers=layers,
                      tokens=(frames + 1) * tokens_per_frame * token_width,
                      spatial_heads=spatial_attention_heads(diffusion_model), attention_kernel=attention_kernel(),
                      copies_weights=any(p.is_inference() for p in diffusion_model.parameters()))


def _reshaper(model, layer_preset, explicit_layers, tokens_per_frame, token_width):
    def reshape(shape: LearnShape, **changes) -> LearnShape:
        frames = changes.get("frames", shape.frames)
        factor = changes.get("size_factor", 1.0)
        height = max(1, round(shape.latent_height * factor))
        width = max(1, round(shape.latent_width * factor))
        preset = changes.get("layers", layer_preset)
        changed = learn_shape(model, frames, height, width, shape.representation,
                              changes.get("checkpointing", shape.checkpointing), preset, explicit_layers,
                              tokens_per_frame, token_width)
        return dataclasses.replace(changed, dtype=shape.dtype)
    return reshape


def check_learn_memory(model, shape: LearnShape, layer_preset: str, explicit_layers: str, tokens_per_frame: int,
                       token_width: int) -> tuple[MemoryPlan, str]:
    """The plan and a one-line account of it; raises ``MemoryError`` naming settings that fit when it does not."""
    device = model.load_device
    memory = plan(shape)
    total = comfy.model_management.get_total_memory(device)
    free = comfy.model_management.get_free_memory(device)
    budget = total * USABLE_FRACTION
    account = (f"memory plan: {memory.describe()}; {comfy.model_management.get_torch_device_name(device)} has "
               f"{total / GIB:.1f} GiB, {free / GIB:.1f} GiB free now (attention: {shape.attention_kernel}, "
               f"{shape.dtype}, checkpointing {'on' if shape.checkpointing else 'off'})")
    log.info("Learn Motion Embedding %s", account)
    if memory.total > budget:
        fitting = alternatives(shape, budget, _reshaper(model, layer_preset, explicit_layers, tokens_per_frame,
                                                         token_width))
        advice = ("; these would fit: " + ", ".join(fitting)) if fitting else \
            "; nothing tried fits: use a smaller reference (Load Reference Video's width/height) and fewer frames"
        raise MemoryError(f"Learn Motion Embedding would need about {memory.total / GIB:.1f} GiB but "
                          f"{comfy.model_management.get_torch_device_name(device)} has {total / GIB:.1f} GiB "
                          f"({memory.describe()}){advice}. Nothing was learned yet.")
    return memory, account


LEARNED_STATE_FACTOR = 4   # each learned float32 value: itself, its gradient and Adam's two moments


def check_wan_learn_memory(model, layers: dict[str, dict], frames: int) -> str:
    """Wan's plan so far: the frozen weights plus the learned tensors' state (activations are not planned yet).

    Returns a one-line account; raises ``MemoryError`` naming how many blocks, or which
    ``learn_scale``, would fit when the weights and the learned state alone exceed the device.
    """
    device = model.load_device
    total = comfy.model_management.get_total_memory(device)
    budget = total * USABLE_FRACTION
    weights = model.model_size()
    learned = LEARNED_STATE_FACTOR * embedding_cost(layers, frames)["bytes_fp32"]
    name = comfy.model_management.get_torch_device_name(device)
    account = (f"memory (Wan, partial plan: activations are not planned yet): weights {weights / GIB:.2f} GiB + "
               f"Motion Embeddings on {len(layers)} blocks with their gradients and Adam state "
               f"{learned / GIB:.2f} GiB; "
               f"{name} has {total / GIB:.1f} GiB")
    log.info("Learn Motion Embedding %s", account)
    if weights + learned <= budget:
        return account
    per_block = max(LEARNED_STATE_FACTOR * embedding_cost({k: v}, frames)["bytes_fp32"] for k, v in layers.items())
    blocks = int(max(0, budget - weights) // per_block)
    spread = ", ".join(str(i) for i in range(0, len(layers), max(1, -(-len(layers) // max(1, blocks)))))
    advice = (f"layers explicit with {blocks} of the {len(layers)} blocks or fewer (e.g. '{spread}')"
              if blocks >= 1 else
              "a smaller reference (Load Reference Video's width/height, or learn_scale 0.5: 4x smaller value "
              "embeddings)")
    raise MemoryError(f"Learn Motion Embedding would need more than {(weights + learned) / GIB:.1f} GiB on Wan "
                      f"(weights {weights / GIB:.2f} GiB, Motion Embeddings on {len(layers)} blocks with their "
                      f"gradients and Adam state {learned / GIB:.1f} GiB) but {name} has {total / GIB:.1f} GiB; "
                      f"this would fit: {advice}. Nothing was learned yet.")

