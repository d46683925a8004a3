"""Stable Video Diffusion's hooks (the SVD family of :mod:`nodes.hooks`), all under one key.

All hooks go on a ``clone()`` of the user's MODEL through patches and keyed wrappers
that ComfyUI owns and drops with the clone: nothing global, no monkeypatching.

- :func:`with_temporal_marks`: a ``DIFFUSION_MODEL`` wrapper that, for the length of one
  forward, puts forward pre-hooks on SVD's temporal ``time_stack`` blocks. Each hook adds
  ``motion_inversion_layer`` (the layer's name) to the block's ``transformer_options``,
  which ComfyUI hands to attn1 patches as ``extra_options``. That identifies the temporal
  self-attention without shape guessing (ambiguous when h*w == frames).
- :class:`MotionAttentionPatch`: the attn1 patch computing Motion Inversion's eq. 3.
- :func:`with_training_frame`: an ``APPLY_MODEL`` wrapper that feeds the training loop's
  augmented first frame as SVD's ``c_concat`` image conditioning.
- :func:`trainable_clone`: identity weight wrappers so a model built under
  ``inference_mode`` can be backpropagated through.
- :func:`with_recompute` / :func:`end_recompute`: activation checkpointing for learning,
  as object patches on the training clone (ComfyUI's undoable ``add_object_patch``),
  explicitly unpatched when learning ends, so the user's MODEL keeps plain forwards.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

import comfy.model_base
import comfy.patcher_extension
from comfy.ldm.modules.attention import BasicTransformerBlock, SpatialVideoTransformer
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, ResBlock, Upsample

from ...motion_core.attention import motion_inputs
from ...motion_core.embedding import MotionEmbedding, layer_name
from . import describe_model
from .common import RecomputedForward, end_recompute, has_recompute, recompute, trainable_clone  # noqa: F401

log = logging.getLogger(__name__)

HOOK_KEY = "motion_inversion"
LAYER_OPTION = "motion_inversion_layer"


# ---- what the model is ------------------------------------------------------------------
def require_svd(model, node: str) -> None:
    """Refuse anything that is not SVD-like (an ``SVD_img2vid`` with temporal attention)."""
    inner = getattr(model, "model", None)
    has_temporal = inner is not None and any(
        isinstance(m, SpatialVideoTransformer) for m in inner.diffusion_model.modules())
    if not isinstance(inner, comfy.model_base.SVD_img2vid) or not has_temporal:
        raise ValueError(f"{node} needs a Stable Video Diffusion model (SVD / SVD-XT, loaded with "
                         f"ImageOnlyCheckpointLoader), but the MODEL input is {describe_model(model)}. "
                         "Connect the MODEL output of an SVD checkpoint loader.")


def context_width(model) -> int:
    """Token width of the spatial cross-attention (1024 for SVD)."""
    for module in model.model.diffusion_model.modules():
        if isinstance(module, SpatialVideoTransformer):
            return int(module.transformer_blocks[0].attn2.to_k.in_features)
    raise ValueError(f"no cross-attention found in {describe_model(model)}")


def video_transformers(diffusion_model) -> list[tuple[SpatialVideoTransformer, int]]:
    """``(transformer, downsample)`` for each SpatialVideoTransformer, in forward order.

    Walks input, middle and output blocks like the forward pass does, tracking the
    downsample factor.
    """
    found = []
    factor = 1

    def visit(container):
        nonlocal factor
        for module in container:
            if isinstance(module, SpatialVideoTransformer):
                found.append((module, factor))
            elif isinstance(module, Downsample):
                factor *= 2
            elif isinstance(module, Upsample):
                factor //= 2

    for block in diffusion_model.input_blocks:
        visit(block)
    visit(diffusion_model.middle_block)
    for block in diffusion_model.output_blocks:
        visit(block)
    return found


def temporal_blocks(diffusion_model) -> list[tuple[str, torch.nn.Module, int, int]]:
    """``(name, block, channels, downsample)`` for each temporal self-attention, forward order,
    so layer i here is layer i of the diffusers adapter too."""
    found = []
    for transformer, factor in video_transformers(diffusion_model):
        for block in transformer.time_stack:
            found.append((layer_name(len(found)), block, int(block.attn1.to_q.in_features), factor))
    return found


def spatial_attention_heads(diffusion_model) -> list[tuple[int, int]]:
    """``(heads, downsample)`` of each spatial self-attention (for the memory plan)."""
    return [(int(block.attn1.heads), factor) for transformer, factor in video_transformers(diffusion_model)
            for block in transformer.transformer_blocks]


def temporal_layout(model, latent_height: int, latent_width: int, names: Optional[list[str]] = None) -> dict:
    """``{name: {"channels", "height", "width", "downsample"}}`` at a latent size."""
    layout = {}
    for name, _block, channels, factor in temporal_blocks(model.model.diffusion_model):
        if names is None or name in names:
            layout[name] = {"channels": channels, "height": -(-latent_height // factor),
                            "width": -(-latent_width // factor), "downsample": factor}
    return layout


def check_compatible(embedding: MotionEmbedding, model) -> None:
    """Every temporal layer of ``embedding`` must exist in ``model`` with its channel count."""
    available = {name: channels for name, _b, channels, _f in temporal_blocks(model.model.diffusion_model)}
    for name, qk in embedding.temporal_qk.items():
        if name not in available:
            raise ValueError(f"the motion embedding has layer {name} (query-key {tuple(qk.shape)}) but this "
                             f"model has only {len(available)} temporal attention layers ({describe_model(model)}); "
                             "it was learned on another model: re-learn it on this one")
        if available[name] != qk.shape[-1]:
            raise ValueError(f"layer {name} does not fit: the embedding's query-key is {tuple(qk.shape)} "
                             f"({qk.shape[-1]} channels), the model's layer has {available[name]} channels; "
                             "the embedding was learned on another model: re-learn it on this one")
    if embedding.has_motion_text and embedding.spatial_tokens.shape[-1] != context_width(model):
        raise ValueError(f"the motion-text tokens are {embedding.spatial_tokens.shape[-1]} wide, the model's "
                         f"cross-attention takes {context_width(model)}: learned on another model")


# ---- the temporal marker ---------------------------------------------------------------------
def _mark_hook(name: str):
    def hook(_module, args, kwargs):
        options = kwargs.get("transformer_options")
        if options is None:
            return None
        return args, {**kwargs, "transformer_options": {**options, LAYER_OPTION: name}}
    return hook


def _temporal_marks_wrapper(executor, *args, **kwargs):
    handles = [block.register_forward_pre_hook(_mark_hook(name), with_kwargs=True)
               for name, block, _c, _f in temporal_blocks(executor.class_obj)]
    try:
        return executor(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


def with_temporal_marks(model) -> None:
    """Install the marker on ``model`` (a clone) once; idempotent."""
    wrappers = model.wrappers    # where add_wrapper_with_key puts them, on both ComfyUI versions
    if HOOK_KEY in wrappers.get(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, {}):
        return
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, HOOK_KEY, _temporal_marks_wrapper)


# ---- eq. 3 as an attn1 patch -------------------------------------------------------------------
class MotionAttentionPatch:
    """attn1 patch adding Motion Embeddings to the inputs of Q/K and V (eq. 3).

    Fires on every attn1; acts only where the temporal marker named a layer the
    embedding has and the current sigma lies in ``[sigma_end, sigma_start]``. The
    embedding's tensors are used as they are (training updates them in place) and cast
    to the activations' device and dtype per call. ``__deepcopy__`` returns ``self``:
    ``ModelPatcher.clone()`` deep-copies model_options and must not orphan the tensors.
    """

    def __init__(self, embedding: MotionEmbedding, strength: float = 1.0,
                 sigma_start: float = float("inf"), sigma_end: float = 0.0):
        self.embedding = embedding
        self.strength = strength
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.calls = 0   # patched calls, for tests and logs
        self._prepared = {}   # (layer, h, w, dtype, device) -> (qk, value), when nothing is being learned
        self.learning = any(t.requires_grad for t in embedding.tensors().values())

    def __deepcopy__(self, memo):
        return self

    def _tensors(self, name, height, width, like):
        """The layer's (query-key, value) cast, scaled and resized for this call."""
        learning = self.learning
        key = (name, height, width, like.dtype, like.device)
        if not learning and key in self._prepared:
            return self._prepared[key]
        qk = self.embedding.temporal_qk[name].to(like) * self.strength
        value = None
        if name in self.embedding.value_embedding:
            value = self.embedding.value_embedding_at(name, height, width).to(like) * self.strength
        if not learning:
            self._prepared[key] = (qk, value)
        return qk, value

    def _active(self, extra_options) -> bool:
        sigmas = extra_options.get("sigmas")
        if sigmas is None or (self.sigma_start == float("inf") and self.sigma_end <= 0):
            return True
        sigma = float(sigmas.max())
        return self.sigma_end <= sigma <= self.sigma_start

    def __call__(self, n, context_attn1, value_attn1, extra_options):
        name = extra_options.get(LAYER_OPTION)
        if name is None or name not in self.embedding.temporal_qk or not self._active(extra_options):
            return n, context_attn1, value_attn1
        frames = n.shape[1]
        _bt, _c, height, width = extra_options["activations_shape"]
        qk = self.embedding.temporal_qk[name]
        if qk.shape[1] != frames:
            raise ValueError(f"layer {name}: the embedding has {qk.shape[1]} frames, the run has {frames}; "
                             "resample the embedding (Apply Motion does this) before sampling")
        qk, value = self._tensors(name, height, width, n)
        qk_input, value_input = motion_inputs(n, qk, value)
        self.calls += 1
        return qk_input, qk_input, value_input


def with_motion(model, embedding: MotionEmbedding, strength: float = 1.0,
                sigma_start: float = float("inf"), sigma_end: float = 0.0):
    """A clone of ``model`` whose temporal self-attention computes eq. 3 with ``embedding``."""
    check_compatible(embedding, model)
    patched = model.clone()
    with_temporal_marks(patched)
    patch = MotionAttentionPatch(embedding, strength, sigma_start, sigma_end)
    patched.set_model_attn1_patch(patch)
    return patched, patch


# ---- training helpers ----------------------------------------------------------------------------
class TrainingFrame:
    """Holds the current (augmented) first-frame latent ``(1 c h w)`` in the model's raw latent space."""

    def __init__(self):
        self.latent: Optional[torch.Tensor] = None

    def __deepcopy__(self, memo):
        return self


def with_training_frame(model, frame: TrainingFrame) -> None:
    """Make ``c_concat`` (SVD's image conditioning) follow ``frame`` on every forward."""

    def apply_model_wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None,
                            transformer_options={}, **kwargs):
        if frame.latent is not None and c_concat is not None:
            c_concat = frame.latent.to(c_concat).expand(c_concat.shape[0], -1, -1, -1)
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, HOOK_KEY, apply_model_wrapper)


# ---- activation checkpointing ------------------------------------------------------------------
RECOMPUTED_UNITS = (ResBlock, BasicTransformerBlock)   # VideoResBlock is a ResBlock


def recompute_units(diffusion_model) -> list[str]:
    """Names (under ``diffusion_model``) of the outermost ResBlocks and transformer blocks.

    The units are disjoint (a VideoResBlock's inner time_stack ResBlock is part of it), so
    each activation is recomputed once; the largest unit at full resolution is one
    spatial or temporal transformer block, not a whole SpatialVideoTransformer.
    """
    names, taken = [], []
    for name, module in diffusion_model.named_modules():
        if isinstance(module, RECOMPUTED_UNITS) and not any(name.startswith(t + ".") for t in taken):
            names.append(name)
            taken.append(name)
    return names


def with_recompute(model) -> list[str]:
    """Checkpoint every SVD unit (:func:`recompute_units`) of ``model``, a private clone; returns the keys."""
    return recompute(model, recompute_units(model.model.diffusion_model))
