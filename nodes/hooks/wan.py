"""Motion Embeddings on ComfyUI's Wan models (``comfy.ldm.wan.model.WanModel``): the Wan family's hooks.

Motion Inversion's eq. 3 in a DiT: in each chosen ``WanAttentionBlock`` the query-key
embedding ``(1 f c)`` is added to the self-attention's input (after norm1's modulation)
before the ``q`` and ``k`` projections, the value embedding ``((h w) f c)`` before ``v``,
with the video's tokens frame-major. ``norm_q`` / ``norm_k``, RoPE and the attention run as
ComfyUI wrote them, on either host version, because the patches wrap only the three
projections' ``forward``s (object patches on the clone, undone with it); a
``DIFFUSION_MODEL`` wrapper reads the token grid and the noise level of each forward.
Reference tokens a variant prepends and frames it concatenates are left as they are.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

import comfy.patcher_extension
from comfy.ldm.wan.model import WanModel

from ...motion_core.attention import sequence_qk_input, sequence_value_input
from ...motion_core.embedding import MotionEmbedding, dit_layer_name
from ...motion_core.resample import resample_frames

log = logging.getLogger(__name__)

HOOK_KEY = "motion_inversion"
PROJECTIONS = ("q", "k", "v")


def latent_frames(frames: int) -> int:
    """Wan's VAE keeps the first frame and compresses the rest by 4: ``F' = 1 + (F - 1) // 4``."""
    return 1 + (frames - 1) // 4


def usable_frames(frames: int) -> int:
    """The video frames Wan's VAE encodes of ``frames``: ``1 + 4k`` (it drops the rest)."""
    return 1 + 4 * ((frames - 1) // 4)


def wan_layers(diffusion_model: WanModel) -> list[tuple[str, torch.nn.Module, int]]:
    """``(name, block, channels)`` of each block's self-attention, in forward order."""
    return [(dit_layer_name(index), block, int(block.self_attn.q.in_features))
            for index, block in enumerate(diffusion_model.blocks)]


def token_grid(diffusion_model: WanModel, latent_shape) -> tuple[int, int, int]:
    """``(frames, height, width)`` of the patchified grid of a latent ``(b c t h w)`` (padded up as Wan does)."""
    patch = diffusion_model.patch_size
    return tuple(-(-int(size) // int(step)) for size, step in zip(latent_shape[-3:], patch))


def wan_layout(model, latent_height: int, latent_width: int, names: Optional[list[str]] = None) -> dict:
    """``{name: {"channels", "height", "width"}}``: each layer's token grid at a latent size."""
    diffusion_model = model.model.diffusion_model
    _frames, height, width = token_grid(diffusion_model, (1, latent_height, latent_width))
    return {name: {"channels": channels, "height": height, "width": width}
            for name, _block, channels in wan_layers(diffusion_model) if names is None or name in names}


def recompute_units(diffusion_model: WanModel) -> list[str]:
    """Names (under ``diffusion_model``) of the blocks, each recomputed in the backward pass when learning."""
    return [f"blocks.{index}" for index in range(len(diffusion_model.blocks))]


def check_compatible(embedding: MotionEmbedding, model) -> None:
    """Every layer of ``embedding`` must be a block of ``model`` of the same width."""
    available = {name: channels for name, _block, channels in wan_layers(model.model.diffusion_model)}
    for name, qk in embedding.temporal_qk.items():
        if name not in available:
            raise ValueError(f"the motion embedding has layer {name} but this Wan model has {len(available)} blocks: "
                             "it was learned on another model; learn the motion again on this one")
        if available[name] != qk.shape[-1]:
            raise ValueError(f"layer {name} does not fit: the embedding is {qk.shape[-1]} wide, the model's blocks "
                             f"{available[name]}; it was learned on another model; learn the motion again on this one")


class WanGrid:
    """What the running forward looks like, for the projection patches: set by the wrapper.

    ``frames``, ``height``, ``width``: the video's token grid; ``first_token``: how many
    tokens a variant put before the video's (a reference image's); ``sigma``: the noise
    level. ``__deepcopy__`` returns ``self`` (``ModelPatcher.clone()`` copies options).
    """

    def __init__(self):
        self.frames: Optional[int] = None
        self.height = self.width = self.first_token = 0
        self.sigma: Optional[float] = None

    def __deepcopy__(self, memo):
        return self


def _grid_wrapper(grid: WanGrid):
    def wrapper(executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={},
                **kwargs):
        diffusion_model = executor.class_obj
        grid.frames, grid.height, grid.width = token_grid(diffusion_model, x.shape)
        reference = kwargs.get("reference_latent")
        grid.first_token = 0
        if reference is not None and getattr(diffusion_model, "ref_conv", None) is not None:
            patch = diffusion_model.patch_size     # ref_conv: a strided Conv2d on the unpadded latent (floors)
            grid.first_token = (int(reference.shape[-2]) // patch[1]) * (int(reference.shape[-1]) // patch[2])
        sigmas = transformer_options.get("sigmas") if isinstance(transformer_options, dict) else None
        grid.sigma = None if sigmas is None else float(sigmas.max())
        # the grid stays set after the forward: activation checkpointing recomputes the
        # blocks in the backward pass, after this returns, and must see the same grid
        return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
    return wrapper


class WanMotionEmbeddings:
    """The learned tensors as the projection patches use them: per layer, at the run's grid.

    Acts where the wrapper saw a forward whose noise level lies in ``[sigma_end,
    sigma_start]``. Frames are resampled to the run's latent frames and values resized to
    its token grid, cached per size while nothing is being learned.
    """

    def __init__(self, embedding: MotionEmbedding, grid: WanGrid, strength: float = 1.0,
                 sigma_start: float = float("inf"), sigma_end: float = 0.0):
        self.embedding = embedding
        self.grid = grid
        self.strength = strength
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.learning = any(t.requires_grad for t in embedding.tensors().values())
        self.calls = 0
        self.keys: list[str] = []      # the object patches that carry it (learning removes them when done)
        self._prepared = {}
        self._qk_inputs = {}           # layer -> (x, q's input), for k of the same call

    def __deepcopy__(self, memo):
        return self

    def active(self) -> bool:
        grid = self.grid
        if grid.frames is None:
            return False
        return grid.sigma is None or self.sigma_end <= grid.sigma <= self.sigma_start

    def tensors(self, name: str, like: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(temporal_qk (1 f c), value ((h w) f c) or None)`` at the run's grid, cast like ``like``."""
        grid = self.grid
        key = (name, grid.frames, grid.height, grid.width, like.dtype, like.device)
        if not self.learning and key in self._prepared:
            return self._prepared[key]
        qk = self.embedding.temporal_qk[name]
        value = None
        if name in self.embedding.value_embedding:
            value = self.embedding.value_embedding_at(name, grid.height, grid.width)
        if qk.shape[1] != grid.frames:
            qk = resample_frames(qk, grid.frames, dim=1)
            value = None if value is None else resample_frames(value, grid.frames, dim=1)
        qk = qk.to(like) * self.strength
        value = None if value is None else value.to(like) * self.strength
        if not self.learning:
            self._prepared[key] = (qk, value)
        return qk, value


class ProjectionForward:
    """A self-attention projection's ``forward`` (q, k or v of one block) fed eq. 3's input."""

    def __init__(self, forward, motion: WanMotionEmbeddings, name: str, projection: str):
        self.forward = forward
        self.motion = motion
        self.name = name
        self.projection = projection

    def __deepcopy__(self, memo):
        return self

    def __call__(self, x, *args, **kwargs):
        motion = self.motion
        if not motion.active():
            return self.forward(x, *args, **kwargs)
        grid = motion.grid
        qk, value = motion.tensors(self.name, x)
        if self.projection == "v" and value is None:
            return self.forward(x, *args, **kwargs)
        positions = grid.height * grid.width
        if x.shape[1] < grid.first_token + grid.frames * positions:
            raise ValueError(f"Wan block {self.name}: the self-attention sees {x.shape[1]} tokens, fewer than the "
                             f"{grid.frames} x {positions} of the latent; this Wan variant is not supported by "
                             "Motion Embeddings")
        if self.projection == "v":
            return self.forward(sequence_value_input(x, value, grid.frames, positions, grid.first_token),
                                *args, **kwargs)
        if self.projection == "k":      # q and k take the same input: k reuses the one q just built
            seen, qk_input = motion._qk_inputs.pop(self.name, (None, None))
            if seen is x:
                return self.forward(qk_input, *args, **kwargs)
        qk_input = sequence_qk_input(x, qk, grid.frames, positions, grid.first_token)
        if self.projection == "q":
            motion._qk_inputs[self.name] = (x, qk_input)
            motion.calls += 1
        return self.forward(qk_input, *args, **kwargs)


def with_wan_motion(model, embedding: MotionEmbedding, strength: float = 1.0,
                    sigma_start: float = float("inf"), sigma_end: float = 0.0):
    """A clone of the Wan ``model`` whose chosen blocks compute eq. 3; returns ``(clone, motion)``.

    The caller checks that the embedding fits the model first.
    """
    patched = model.clone()
    grid = WanGrid()
    motion = WanMotionEmbeddings(embedding, grid, strength, sigma_start, sigma_end)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, HOOK_KEY, _grid_wrapper(grid))
    index = {name: i for i, (name, _block, _c) in enumerate(wan_layers(model.model.diffusion_model))}
    for name in embedding.temporal_qk:
        for projection in PROJECTIONS:
            key = f"diffusion_model.blocks.{index[name]}.self_attn.{projection}.forward"
            patched.add_object_patch(key, ProjectionForward(patched.get_model_object(key), motion, name, projection))
            motion.keys.append(key)
    return patched, motion


def has_motion(model) -> bool:
    """Whether ``model`` already carries Motion Embeddings (it is Apply Motion's output)."""
    wrappers = model.wrappers    # where add_wrapper_with_key puts them, on both ComfyUI versions
    return HOOK_KEY in wrappers.get(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, {})
