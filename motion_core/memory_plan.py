"""What one learning step needs in memory, planned before the first step.

The plan adds four parts:

- **weights**: the frozen UNet's parameters in the dtype it computes in; without
  checkpointing, once more: ComfyUI loads weights as inference tensors, which autograd
  cannot keep, so each layer hands out a copy per call and the backward pass keeps them
  all (with checkpointing only one unit's copies live at a time);
- **activations**: what the backward pass keeps, linear in the latent positions
  ``P = frames * latent_h * latent_w``: ``fixed + per_position * P`` bytes, measured in
  float32 on the full-size SVD UNet by ``bench/learn_memory.py`` (see
  ``docs/benchmarks.md``) for each representation with checkpointing off and on, scaled by
  the dtype's size and by the model's width relative to SVD's;
- **attention**: when the attention kernel materialises its probabilities (ComfyUI's
  ``sub_quad`` / ``split`` / ``basic``, its CPU default), the spatial self-attention's
  ``frames * heads * (h*w)^2`` float32 weights of every transformer block (of one block at
  a time with checkpointing); memory-efficient kernels (PyTorch SDPA, xformers, flash,
  sage, the NVIDIA default) keep none;
- **learned**: the learned tensors with their gradients and Adam's two moments, float32.

Host-free: the caller reads the model's layout and the device's memory.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

GIB = 2 ** 30
USABLE_FRACTION = 0.95      # of the device's total memory; the rest is the driver's and ComfyUI's

# bench/learn_memory.py on the full-size SVD UNet (random weights), ComfyUI 0.3.64 on the CPU,
# float32, PyTorch SDPA attention, 14 frames, fitted on 128x72 and 192x112 and within 8% of the
# measured activations at 256x144 (docs/benchmarks.md, docs/learn_memory.json; a test keeps them
# equal). (representation, checkpointing) -> (fixed bytes, bytes per latent position), after the
# learned state and, without checkpointing, the kept weight copies are taken out.
ACTIVATION_BYTES = {
    ("motion_text", False): (143369496, 1077516),
    ("motion_text", True): (790402048, 123710),
    ("temporal", False): (0, 1079394),
    ("temporal", True): (879191040, 113120),
}
# sum over SVD's 16 temporal layers of channels / downsample^2 (5 x 320 + 5 x 640/4 + 5 x 1280/16 + 1280/64)
SVD_WIDTH = 2820.0
# AnimateDiff (SD1.5's UNet + an ADE motion model), measured the same way by bench/learn_memory.py
# --families animatediff on SD1.5's real config and a motion model in mm_sd_v15_v2's layout, random
# weights, ComfyUI 0.33 + ADE 1.5.7 on the CPU, float32, PyTorch SDPA, 16 frames (docs/benchmarks.md;
# a test keeps them equal). What the backward pass keeps grows with the part of the network from the
# first learned motion module on (``LearnShape.tracked_width``: sum channels / downsample^2 over those
# modules), so: checkpointing -> (fixed bytes, bytes per latent position, bytes per latent position and
# unit of tracked width), the learned state and kept weight copies taken out. Checkpointing on: fitted on
# `widest` at 128x128 and 192x192 and `all` at 128x128; off: `widest` at 128x128, taken as proportional
# to the tracked width. Temporal only: motion-text tokens are not learned on AnimateDiff.
AD_ACTIVATION_BYTES = {
    True: (342507520, 8539, 51.029),
    False: (0, 0, 166.758),
}
MEMORY_EFFICIENT_KERNELS = ("attention_pytorch", "attention_xformers", "attention_flash", "attention_sage")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclasses.dataclass
class LearnShape:
    """What the plan depends on. ``layers``: the temporal layout ``{name: {"channels",
    "height", "width", "downsample"}}`` of the layers the embedding learns (empty for
    motion_text); ``model_layout``: the same for every temporal layer of the model;
    ``spatial_heads``: ``[(heads, downsample)]`` of each spatial transformer block."""
    frames: int
    latent_height: int
    latent_width: int
    representation: str
    checkpointing: bool
    dtype: str
    weight_bytes: float
    model_layout: dict
    layers: dict = dataclasses.field(default_factory=dict)
    tokens: int = 0                      # motion-text token values, (F + 1) * N * d
    spatial_heads: list = dataclasses.field(default_factory=list)
    attention_kernel: str = "attention_pytorch"
    copies_weights: bool = True          # the weights are inference tensors (as ComfyUI loads them)
    family: str = "svd"                  # "svd" or "animatediff": whose measured constants apply
    tracked_width: float = 0.0           # AnimateDiff: model_width of the motion modules from the first learned one on

    @property
    def positions(self) -> int:
        return self.frames * self.latent_height * self.latent_width


@dataclasses.dataclass
class MemoryPlan:
    weights: float
    activations: float
    attention: float
    learned: float
    weight_copies: float = 0.0
    host: float = 0.0                    # kept in CPU memory instead (offloaded block inputs): not in the total
    adam_on_host: bool = False           # ``learned`` is then the tensors and their gradients only

    @property
    def total(self) -> float:
        return self.weights + self.weight_copies + self.activations + self.attention + self.learned

    def describe(self) -> str:
        copies = f" + {self.weight_copies / GIB:.1f} kept copies" if self.weight_copies else ""
        host = f"; {self.host / GIB:.1f} GiB kept in CPU memory" if self.host else ""
        return (f"{self.total / GIB:.1f} GiB planned (weights {self.weights / GIB:.1f}{copies}, activations "
                f"{self.activations / GIB:.1f}, attention {self.attention / GIB:.1f}, learned tensors with "
                f"gradients{'' if self.adam_on_host else ' and Adam state'} {self.learned / GIB:.2f}{host})")


def model_width(layout: dict) -> float:
    """``sum channels / downsample^2`` over the temporal layers: activation size per position, relative."""
    return sum(layer["channels"] / layer["downsample"] ** 2 for layer in layout.values())


def learned_values(shape: LearnShape) -> int:
    """Number of learned float32 values: tokens, query-key ``(1 f c)`` and value ``(h*w f c)`` per layer."""
    count = shape.tokens if shape.representation in ("motion_text", "both") else 0
    if shape.representation in ("temporal", "both"):
        for layer in shape.layers.values():
            count += shape.frames * layer["channels"] * (1 + layer["height"] * layer["width"])
    return count


def attention_bytes(shape: LearnShape) -> float:
    """Materialised spatial attention weights kept for backward (0 for memory-efficient kernels)."""
    if shape.attention_kernel in MEMORY_EFFICIENT_KERNELS or not shape.spatial_heads:
        return 0.0
    per_block = [shape.frames * heads * (shape.latent_height * shape.latent_width / factor ** 2) ** 2 * 4
                 for heads, factor in shape.spatial_heads]
    return max(per_block) if shape.checkpointing else sum(per_block)


def plan(shape: LearnShape, constants: Optional[dict] = None) -> MemoryPlan:
    """The plan for one learning step of ``shape`` (bytes); ``constants`` replaces ``ACTIVATION_BYTES`` (for
    AnimateDiff, ``AD_ACTIVATION_BYTES``)."""
    if shape.dtype not in DTYPE_BYTES:
        raise ValueError(f"no plan for dtype {shape.dtype!r}; expected one of {sorted(DTYPE_BYTES)}")
    if shape.family == "animatediff":
        fixed, per_position, per_width = (constants or AD_ACTIVATION_BYTES)[shape.checkpointing]
        per_position += per_width * shape.tracked_width
        scale = DTYPE_BYTES[shape.dtype] / 4
    else:
        kind = "motion_text" if shape.representation == "motion_text" else "temporal"
        fixed, per_position = (constants or ACTIVATION_BYTES)[(kind, shape.checkpointing)]
        scale = DTYPE_BYTES[shape.dtype] / 4 * model_width(shape.model_layout) / SVD_WIDTH
    activations = (fixed + per_position * shape.positions) * scale
    copies = float(shape.weight_bytes) if shape.copies_weights and not shape.checkpointing else 0.0
    return MemoryPlan(weights=float(shape.weight_bytes), activations=activations, attention=attention_bytes(shape),
                      learned=4.0 * 4 * learned_values(shape), weight_copies=copies)


def alternatives(shape: LearnShape, budget: float, reshape) -> list[str]:
    """Settings that would fit ``budget`` bytes, as sentences for an error message.

    ``reshape(shape, **changes)`` rebuilds the shape for other settings (the caller knows
    the model's layout at another size): tried are checkpointing on, the ``widest``
    layers, fewer frames, a smaller size.
    """
    tries = []
    if not shape.checkpointing:
        tries.append(("activation_checkpointing on", {"checkpointing": True}))
    if shape.representation != "motion_text":
        tries.append(("layers = widest", {"layers": "widest"}))
    for frames in (shape.frames * 3 // 4, shape.frames // 2):
        if 2 <= frames < shape.frames:
            tries.append((f"{frames} frames", {"frames": frames}))
    for factor in (0.75, 0.5):
        tries.append((f"the reference at {factor:g}x its size", {"size_factor": factor}))
    fitting = []
    for label, changes in tries:
        changed: Optional[LearnShape] = reshape(shape, **changes)
        if changed is not None:
            need = plan(changed).total
            if need <= budget:
                fitting.append(f"{label} ({need / GIB:.1f} GiB)")
    return fitting


# ---- Wan ------------------------------------------------------------------------------------
# bench/learn_memory.py --families wan on ComfyUI's WanModel at Wan 1.3B's width (dim 1536, ffn
# 8960) with 2 and 4 blocks, random weights, float32, on the CPU (docs/benchmarks.md, section
# learn_memory_wan). Bytes per video token (latent frame x token grid) of the step's peak above
# the loaded weights, learned state taken out:
# - "kept_per_block": checkpointing on, what each block from the first learned one on keeps for
#   the backward pass (its input, one dim-wide vector a token);
# - "outside": what the step keeps outside the blocks (patch embedding, head, loss);
# - "recompute": checkpointing on, one block recomputed and backpropagated at a time;
# - "block": checkpointing off, what each block keeps;
# - "fixed": checkpointing on, bytes that do not grow with the video: about two blocks' weight
#   copies (ComfyUI's weights are inference tensors, copied per call while learning), so it
#   scales with a block's parameters and the dtype. Without checkpointing the plan counts
#   every weight copy instead.
# Fitted on 256x160x17 and 480x272x17 (800 and 2550 tokens); the 5B-width row checks the scaling.
WAN_REFERENCE = {"dim": 1536, "ffn_dim": 8960}
WAN_ACTIVATION_BYTES = {
    "kept_per_block": 6144,
    "outside": 7176,
    "recompute": 155164,
    "block": 130084,
    "fixed": 208064629,
}


@dataclasses.dataclass
class WanLearnShape:
    """What Wan's plan depends on: the token grid ``frames x height x width`` (latent frames and
    patchified latent), the model's ``dim``, ``ffn_dim`` and ``blocks``, the ``learned`` values
    (Motion Embeddings and tokens), the compute ``dtype`` and the weights' bytes."""
    frames: int
    token_height: int
    token_width: int
    dim: int
    ffn_dim: int
    blocks: int
    learned: int
    checkpointing: bool
    dtype: str
    weight_bytes: float
    attention_kernel: str = "attention_pytorch"
    heads: int = 12
    copies_weights: bool = True
    first_block: int = 0                 # the first block with a learned tensor (motion tokens: 0)
    offload: bool = False                # checkpointed blocks' inputs kept in CPU memory (an accelerator only)
    host_optimizer: bool = False         # Adam's state and master copies in CPU memory (training.HostAdam)

    @property
    def tokens(self) -> int:
        return self.frames * self.token_height * self.token_width

    @property
    def tracked_blocks(self) -> int:
        """Blocks the backward pass goes through: the first learned one and every one after it."""
        return self.blocks - self.first_block


def wan_block_parameters(dim: int, ffn_dim: int) -> int:
    """A Wan block's weights: self- and cross-attention's q, k, v, o (``dim x dim`` each) and the feed-forward."""
    return 8 * dim * dim + 2 * dim * ffn_dim


def wan_kept_inputs_bytes(shape: WanLearnShape, constants: Optional[dict] = None) -> float:
    """What checkpointing keeps of the tracked blocks' inputs (one dim-wide vector a token and block)."""
    if not shape.checkpointing:
        return 0.0
    c = constants or WAN_ACTIVATION_BYTES
    return (c["kept_per_block"] * shape.tracked_blocks * shape.dim / WAN_REFERENCE["dim"] * shape.tokens
            * DTYPE_BYTES[shape.dtype] / 4)


def wan_activation_bytes(shape: WanLearnShape, constants: Optional[dict] = None) -> float:
    """Activations of one Wan learning step on the device: measured per-token bytes scaled to the model's width and
    dtype (with ``offload``, the blocks' kept inputs are in CPU memory instead: :func:`wan_kept_inputs_bytes`).

    Terms that are one dim-wide vector a token scale with ``dim``; a block's own activations
    with ``4 dim + 2 ffn_dim`` (its projections and its feed-forward's hidden layer), both
    relative to the width they were measured at; the fixed part with a block's parameters.
    """
    c = constants or WAN_ACTIVATION_BYTES
    if shape.dtype not in DTYPE_BYTES:
        raise ValueError(f"no plan for dtype {shape.dtype!r}; expected one of {sorted(DTYPE_BYTES)}")
    narrow = shape.dim / WAN_REFERENCE["dim"]
    block = (4 * shape.dim + 2 * shape.ffn_dim) / (4 * WAN_REFERENCE["dim"] + 2 * WAN_REFERENCE["ffn_dim"])
    dtype = DTYPE_BYTES[shape.dtype] / 4
    if shape.checkpointing:
        kept = 0 if shape.offload else c["kept_per_block"] * shape.tracked_blocks
        per_token = (kept + c["outside"]) * narrow + c["recompute"] * block
        fixed = c["fixed"] * dtype * wan_block_parameters(shape.dim, shape.ffn_dim) / wan_block_parameters(
            WAN_REFERENCE["dim"], WAN_REFERENCE["ffn_dim"]) if shape.copies_weights else 0.0
    else:
        per_token = c["outside"] * narrow + c["block"] * block * shape.tracked_blocks
        fixed = 0.0
    return per_token * shape.tokens * dtype + fixed


def plan_wan(shape: WanLearnShape, constants: Optional[dict] = None) -> MemoryPlan:
    """The plan for one Wan learning step (bytes).

    Attention kernels that materialise their probabilities (ComfyUI's ``sub_quad`` /
    ``split`` / ``basic``) keep ``heads * tokens^2`` float32 weights of a block (of every
    block without checkpointing); without checkpointing the backward pass also keeps each
    block's weight copies (ComfyUI loads weights as inference tensors). With ``offload`` the
    blocks' kept inputs are planned in CPU memory (``host``), outside the device's total; with
    ``host_optimizer``, Adam's state and the master copies too.
    """
    attention = 0.0
    if shape.attention_kernel not in MEMORY_EFFICIENT_KERNELS:
        attention = shape.heads * float(shape.tokens) ** 2 * 4 * (1 if shape.checkpointing else shape.blocks)
    copies = (float(shape.weight_bytes) * shape.tracked_blocks / shape.blocks
              if shape.copies_weights and not shape.checkpointing else 0.0)
    host = wan_kept_inputs_bytes(shape, constants) if shape.offload else 0.0
    learned = 16.0 * shape.learned          # float32 values, gradients and Adam's two moments
    if shape.host_optimizer:                # the moments, a master copy and its gradient in CPU memory instead
        learned, host = 8.0 * shape.learned, host + 16.0 * shape.learned
    return MemoryPlan(weights=float(shape.weight_bytes), activations=wan_activation_bytes(shape, constants),
                      attention=attention, learned=learned, weight_copies=copies, host=host,
                      adam_on_host=shape.host_optimizer)


def keep_in_cpu_memory(shape: WanLearnShape, budget: float) -> WanLearnShape:
    """``shape`` with what an accelerator's learning step keeps in CPU memory to fit ``budget`` bytes.

    Nothing when it fits (the fastest); else the checkpointed blocks' inputs (a copy each way
    per block and step); else Adam's state too (:class:`motion_core.training.HostAdam`: the
    gradients go to the CPU and the values come back once a step). The result may still not fit.
    """
    if shape.checkpointing and plan_wan(shape).total > budget:
        shape = dataclasses.replace(shape, offload=True)
    if plan_wan(shape).total > budget:
        shape = dataclasses.replace(shape, host_optimizer=True)
    return shape
