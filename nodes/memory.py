"""The Learn node's memory plan: reads the model and the device, plans with ``motion_core.memory_plan``."""
from __future__ import annotations

import dataclasses
import logging

import torch

import comfy.ldm.modules.attention
import comfy.model_management

from ..motion_core.layers import embedding_cost, select_layers, spread
from ..motion_core.memory_plan import (GIB, MEMORY_EFFICIENT_KERNELS, USABLE_FRACTION, LearnShape, MemoryPlan,
                                       WanLearnShape, alternatives, keep_in_cpu_memory, model_width, plan, plan_wan)
from .host_training import compute_dtype
from .hooks import animatediff as ad_hooks
from .hooks.svd import spatial_attention_heads, temporal_layout

log = logging.getLogger(__name__)

DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


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


def wan_learn_shape(model, layers: dict[str, dict], frames: int, token_height: int, token_width: int,
                    motion_tokens: int, checkpointing: bool) -> WanLearnShape:
    """Everything Wan's plan needs about this model and these settings (``motion_tokens``: learned token values)."""
    diffusion_model = model.model.diffusion_model
    block = diffusion_model.blocks[0]
    return WanLearnShape(frames=frames, token_height=token_height, token_width=token_width,
                         dim=int(diffusion_model.dim), ffn_dim=int(block.ffn[0].out_features),
                         blocks=len(diffusion_model.blocks),
                         learned=embedding_cost(layers, frames)["parameters"] + motion_tokens,
                         checkpointing=checkpointing, dtype=DTYPE_NAMES.get(compute_dtype(model), "float32"),
                         weight_bytes=float(model.model_size()), attention_kernel=attention_kernel(),
                         heads=int(diffusion_model.num_heads),
                         copies_weights=any(p.is_inference() for p in diffusion_model.parameters()),
                         first_block=0 if motion_tokens or not layers else min(
                             int(name.rsplit(".", 1)[1]) for name in layers))      # block.NN


def _wan_alternatives(shape: WanLearnShape, layers: dict[str, dict], budget: float, video_frames: int,
                      learn_scale: float) -> list[str]:
    """Settings that would fit ``budget``, as sentences: fewer blocks, a smaller learn_scale, fewer frames,
    or two of different kinds together when none fits alone."""
    tries = []      # (kind, label, shape): one change each
    if not shape.checkpointing:
        tries.append(("checkpointing", "activation_checkpointing on", dataclasses.replace(shape, checkpointing=True)))
    per_block = {name: embedding_cost({name: layer}, shape.frames)["parameters"] for name, layer in layers.items()}
    others = shape.learned - sum(per_block.values())
    names = list(layers)
    for count in (2, 1):
        if count < len(names):
            chosen = spread(names, count)
            numbers = ", ".join(name.split(".")[-1].lstrip("0") or "0" for name in chosen)
            tries.append(("layers", f"layers explicit '{numbers}' ({count} block{'s' if count > 1 else ''})",
                          dataclasses.replace(shape, learned=others + sum(per_block[n] for n in chosen))))
    for factor in (0.75, 0.5):
        scale = learn_scale * factor
        if scale >= 0.5 - 1e-6:
            tries.append(("scale", f"learn_scale {scale:g}", dataclasses.replace(
                shape, token_height=max(1, round(shape.token_height * factor)),
                token_width=max(1, round(shape.token_width * factor)))))
    for fraction in (0.5, 0.25):
        latent = 1 + int((shape.frames - 1) * fraction)
        if 2 <= latent < shape.frames:
            tries.append(("frames", f"{1 + 4 * (latent - 1)} reference frames (instead of {video_frames})",
                          dataclasses.replace(shape, frames=latent)))
    tries = [(kind, label, dataclasses.replace(changed, learned=_learned_at(shape, changed)))
             for kind, label, changed in tries]
    fitting = [f"{label} ({plan_wan(changed).total / GIB:.1f} GiB)" for _kind, label, changed in tries
               if plan_wan(changed).total <= budget]
    if fitting:
        return fitting
    for (kind, label, one), (other_kind, other_label, other) in (
            (a, b) for i, a in enumerate(tries) for b in tries[i + 1:]):
        if kind == other_kind:
            continue
        both = dataclasses.replace(shape, checkpointing=one.checkpointing or other.checkpointing,
                                   frames=min(one.frames, other.frames),
                                   token_height=min(one.token_height, other.token_height),
                                   token_width=min(one.token_width, other.token_width),
                                   learned=min(one.learned, other.learned))
        both = dataclasses.replace(both, learned=_learned_at(shape, both, one if kind == "layers" else
                                                             other if other_kind == "layers" else shape))
        if plan_wan(both).total <= budget:
            fitting.append(f"{label} and {other_label} together ({plan_wan(both).total / GIB:.1f} GiB)")
    return fitting[:3]


def _learned_at(shape: WanLearnShape, changed: WanLearnShape, blocks: WanLearnShape | None = None) -> int:
    """The learned values of ``changed``: ``blocks``' (or ``changed``'s own) count at ``shape``'s size, with the
    value embeddings (all but one query-key vector a frame and block) following the token grid and the frames."""
    learned = (blocks or changed).learned
    area = changed.token_height * changed.token_width / (shape.token_height * shape.token_width)
    return int(learned * changed.frames / shape.frames * area)


def check_wan_learn_memory(model, layers: dict[str, dict], frames: int, token_height: int, token_width: int,
                           motion_tokens: int = 0, checkpointing: bool = True, video_frames: int = 0,
                           learn_scale: float = 1.0) -> tuple[str, WanLearnShape]:
    """Wan's plan (:func:`motion_core.memory_plan.plan_wan`): a one-line account of it, and the shape planned,
    whose ``offload`` and ``host_optimizer`` say what learning keeps in CPU memory.

    On an accelerator, when the step would not fit with checkpointing, the blocks' kept inputs
    go to CPU memory, and if that is not enough Adam's state too (:class:`HostAdam`); what
    fits stays on the device, which is faster. Raises ``MemoryError`` naming settings that fit (fewer blocks,
    learn_scale, fewer frames) when the plan exceeds the device even so.
    """
    device = model.load_device
    total = comfy.model_management.get_total_memory(device)
    budget = total * USABLE_FRACTION
    shape = wan_learn_shape(model, layers, frames, token_height, token_width, motion_tokens, checkpointing)
    accelerator = torch.device(device).type != "cpu"
    if accelerator:
        shape = keep_in_cpu_memory(shape, budget)
    memory = plan_wan(shape)
    name = comfy.model_management.get_torch_device_name(device)
    account = (f"memory plan (Wan, {shape.tokens:,} video tokens, {len(layers)} blocks with Motion Embeddings): "
               f"{memory.describe()}; {name} has {total / GIB:.1f} GiB (attention: {shape.attention_kernel}, "
               f"{shape.dtype})")
    log.info("Learn Motion Embedding %s", account)
    if memory.total <= budget:
        return account, shape
    shape = dataclasses.replace(shape, offload=accelerator, host_optimizer=accelerator)   # for every setting tried
    fitting = _wan_alternatives(shape, layers, budget, video_frames or 1 + 4 * (frames - 1), learn_scale)
    advice = ("these would fit: " + "; ".join(fitting)) if fitting else \
        "nothing tried fits: use a smaller reference (Load Reference Video's width/height) and fewer frames"
    if shape.attention_kernel not in MEMORY_EFFICIENT_KERNELS and memory.attention > memory.total / 2:
        advice += (f"; most of it is the attention weights that {shape.attention_kernel} keeps: start ComfyUI "
                   "with --use-pytorch-cross-attention")
    raise MemoryError(f"Learn Motion Embedding would need about {memory.total / GIB:.1f} GiB on Wan but {name} has "
                      f"{total / GIB:.1f} GiB ({memory.describe()}); {advice}. Nothing was learned yet.")


# ---- AnimateDiff ----------------------------------------------------------------------------
def ad_learn_shape(model, motion_model, layers: dict[str, dict], frames: int, latent_height: int, latent_width: int,
                   checkpointing: bool) -> LearnShape:
    """AnimateDiff's plan shape (:func:`motion_core.memory_plan.plan` with AnimateDiff's own measured constants):
    its activations grow with the width (sum channels / downsample^2, one entry per motion module) of the part of
    the network from the first learned motion module on, which the backward pass goes through (mm_sd_v15_v2:
    1960 for ``widest``, 2920 for ``all``); the weights are the UNet's and the motion model's."""
    every = ad_hooks.motion_layout(motion_model, latent_height, latent_width)
    modules, tracked = {}, {}
    for layer in ad_hooks.motion_layers(motion_model):           # forward order
        modules.setdefault(layer.module, every[layer.name])
        if tracked or layer.name in layers:
            tracked.setdefault(layer.module, every[layer.name])
    diffusion_model = model.model.diffusion_model
    return LearnShape(frames=frames, latent_height=latent_height, latent_width=latent_width,
                      representation="temporal", checkpointing=checkpointing,
                      dtype=DTYPE_NAMES.get(compute_dtype(model), "float32"),
                      weight_bytes=float(model.model_size()) + float(motion_model.model_size()),
                      model_layout=modules, layers=layers, tokens=0,
                      spatial_heads=ad_hooks.spatial_attention_heads(diffusion_model),
                      attention_kernel=attention_kernel(),
                      copies_weights=any(p.is_inference() for p in diffusion_model.parameters()),
                      family="animatediff", tracked_width=model_width(tracked))


def check_ad_learn_memory(model, motion_model, layers: dict[str, dict], frames: int, latent_height: int,
                          latent_width: int, checkpointing: bool, layer_preset: str,
                          explicit_layers: str) -> tuple[str, MemoryPlan]:
    """AnimateDiff's plan: a one-line account and the plan; ``MemoryError`` naming settings that fit when it does
    not (checkpointing on, the widest layers, fewer frames, a smaller reference)."""
    device = model.load_device
    shape = ad_learn_shape(model, motion_model, layers, frames, latent_height, latent_width, checkpointing)
    memory = plan(shape)
    total = comfy.model_management.get_total_memory(device)
    budget = total * USABLE_FRACTION
    name = comfy.model_management.get_torch_device_name(device)
    account = (f"memory plan (AnimateDiff, {len(layers)} temporal attention layers with Motion Embeddings): "
               f"{memory.describe()}; {name} has {total / GIB:.1f} GiB (attention: {shape.attention_kernel}, "
               f"{shape.dtype}, checkpointing {'on' if checkpointing else 'off'})")
    log.info("Learn Motion Embedding %s", account)
    if memory.total <= budget:
        return account, memory

    def reshape(current: LearnShape, **changes) -> LearnShape:
        factor = changes.get("size_factor", 1.0)
        height = max(1, round(current.latent_height * factor))
        width = max(1, round(current.latent_width * factor))
        every = ad_hooks.motion_layout(motion_model, height, width)
        chosen = select_layers(every, changes.get("layers", layer_preset), explicit_layers)
        return dataclasses.replace(ad_learn_shape(model, motion_model, chosen, changes.get("frames", current.frames),
                                                  height, width, changes.get("checkpointing", current.checkpointing)),
                                   dtype=current.dtype)
    fitting = alternatives(shape, budget, reshape)
    advice = ("; these would fit: " + ", ".join(fitting)) if fitting else \
        "; nothing tried fits: use a smaller reference (Load Reference Video's width/height) and fewer frames"
    raise MemoryError(f"Learn Motion Embedding would need about {memory.total / GIB:.1f} GiB on AnimateDiff but "
                      f"{name} has {total / GIB:.1f} GiB ({memory.describe()}){advice}. Nothing was learned yet.")
