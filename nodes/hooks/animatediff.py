"""Motion Embeddings in AnimateDiff's motion modules, through AnimateDiff-Evolved (ADE): the AnimateDiff family.

ADE is optional and never imported. Its motion models reach the pack attached to an SD1.5
MODEL: ADE's "Use Evolved Sampling" puts them on the MODEL as additional models under the
key ``"ADE"`` (each a ``ModelPatcher`` around ADE's ``AnimateDiffModel``), and ADE injects
their ``VanillaTemporalModule``s into the UNet when the MODEL is loaded. The modules are
found by their ADE class names and attributes.

Motion Inversion's eq. 3 in each chosen temporal self-attention (ADE's ``VersatileAttention``):
its input ``((b d) f c)`` (``d = h*w`` positions, after the positional encoding, as the
official UNet3D code places the embedding where the temporal positional encoding is added)
goes to ``to_q`` / ``to_k`` as ``x + m_qk`` (``m_qk (1 f c)``) and to ``to_v`` as ``x + m_v``
(``m_v ((h w) f c)``). ADE offers no q/k/v hook, so the patches are object patches on a
clone of the motion model's ``ModelPatcher`` (undone with it; modules are never replaced,
which keeps motion-LoRA keys): each projection's ``forward``, and the ``forward`` of each
``VanillaTemporalModule`` holding a chosen attention, which reads the call's grid (its input
``((b f) c h w)``), frames and context window (``video_length``, ``full_length``, ``sub_idxs``,
which ADE sets per window) and noise level, and prepares that layer's embeddings for it.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Optional

import torch

from ...motion_core.attention import motion_inputs
from ...motion_core.embedding import MotionEmbedding, layer_name
from ...motion_core.resample import resample_frames

log = logging.getLogger(__name__)

ADE_KEY = "ADE"                  # ADE's additional-model key on the SD MODEL (ModelPatcherHelper.ADE)
ADE_PACK = "ComfyUI-AnimateDiff-Evolved"
ADE_MISSING = (f"AnimateDiff needs the custom node pack {ADE_PACK} (AnimateDiff-Evolved), which is not loaded: "
               "install it with ComfyUI Manager, restart ComfyUI, and connect the MODEL output of its 'Use Evolved "
               "Sampling' node (with m_models from 'Apply AnimateDiff Model' and 'Load AnimateDiff Model')")


def ade_loaded() -> bool:
    """True if ADE's motion-module code has been imported by ComfyUI (its custom node pack is loaded)."""
    return any(name.endswith("animatediff.motion_module_ad") for name in list(sys.modules))


def motion_models(model) -> list:
    """The ADE motion models (``ModelPatcher``s) attached to an SD ``model``, in ADE's order."""
    additional = getattr(model, "additional_models", None)
    return list(additional.get(ADE_KEY, [])) if isinstance(additional, dict) else []


def is_motion_model(patcher) -> bool:
    """Duck-typed: a ``ModelPatcher`` around ADE's ``AnimateDiffModel`` (down / up / mid blocks of motion modules)."""
    inner = getattr(patcher, "model", None)
    return type(inner).__name__ == "AnimateDiffModel" and hasattr(inner, "layer_channels") \
        and hasattr(inner, "set_video_length")


@dataclasses.dataclass(frozen=True)
class MotionLayer:
    """One temporal self-attention of a motion model. ``module``: the path (under the motion model) of its
    ``VanillaTemporalModule``; ``attention``: of the ``VersatileAttention``; ``downsample``: its UNet level's."""
    name: str
    module: str
    attention: str
    channels: int
    downsample: int


def motion_layers(motion_model) -> list[MotionLayer]:
    """Every temporal self-attention of ``motion_model`` in the UNet's forward order (down, mid, up blocks),
    named ``temporal_attn.NN`` by that order."""
    ad = motion_model.model
    levels = len(ad.layer_channels)
    groups = []
    for index, block in enumerate(ad.down_blocks or []):
        groups.append((f"down_blocks.{index}", block, 2 ** index))
    if ad.mid_block is not None:
        groups.append(("mid_block", ad.mid_block, 2 ** (levels - 1)))
    for index, block in enumerate(ad.up_blocks or []):
        groups.append((f"up_blocks.{index}", block, 2 ** (levels - 1 - index)))
    found = []
    for prefix, block, factor in groups:
        for number, module in enumerate(block.motion_modules):
            path = f"{prefix}.motion_modules.{number}"
            for t, transformer_block in enumerate(module.temporal_transformer.transformer_blocks):
                for a, attention in enumerate(transformer_block.attention_blocks):
                    if getattr(attention, "is_cross_attention", False):
                        continue
                    found.append(MotionLayer(layer_name(len(found)), path,
                                             f"{path}.temporal_transformer.transformer_blocks.{t}.attention_blocks.{a}",
                                             int(attention.to_q.in_features), factor))
    return found


def motion_layout(motion_model, latent_height: int, latent_width: int, names: Optional[list[str]] = None) -> dict:
    """``{name: {"channels", "height", "width", "downsample"}}`` at a latent size (the UNet halves with padding)."""
    layout = {}
    for layer in motion_layers(motion_model):
        if names is None or layer.name in names:
            layout[layer.name] = {"channels": layer.channels, "height": -(-latent_height // layer.downsample),
                                  "width": -(-latent_width // layer.downsample), "downsample": layer.downsample}
    return layout


def describe_motion_model(motion_model) -> str:
    info = getattr(motion_model.model, "mm_info", None)
    name = getattr(info, "mm_name", "motion model")
    version = getattr(info, "mm_version", "")
    return f"{name}{f' ({version})' if version else ''}"


def frame_limit(motion_model) -> Optional[int]:
    """The most frames the motion model attends over at once (its positional encoding's length), or None."""
    return getattr(motion_model.model, "encoding_max_len", None)


def check_compatible(embedding: MotionEmbedding, motion_model) -> None:
    """Every layer of ``embedding`` must be a temporal attention of ``motion_model`` as wide."""
    available = {layer.name: layer.channels for layer in motion_layers(motion_model)}
    for name, qk in embedding.temporal_qk.items():
        if name not in available:
            raise ValueError(f"the motion embedding has layer {name} but the motion model "
                             f"{describe_motion_model(motion_model)} has {len(available)} temporal attention layers: "
                             "it was learned with another motion model; learn the motion again with this one")
        if available[name] != qk.shape[-1]:
            raise ValueError(f"layer {name} does not fit: the embedding is {qk.shape[-1]} wide, the motion model's "
                             f"layer {available[name]}; it was learned with another motion model; learn it again")


class LayerCall:
    """What one motion module's current call needs: the layers' embeddings at its grid, frames and window."""

    def __init__(self):
        self.tensors: dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}

    def __deepcopy__(self, memo):
        return self


class AnimateDiffMotion:
    """The learned tensors as the projection patches use them.

    Acts in calls whose noise level lies in ``[sigma_end, sigma_start]``. Each motion module's
    wrapper prepares its layers' tensors for the call (frames resampled to the run's, or to
    the whole video's and the context window's frames taken; values resized to the grid),
    cached per size while nothing is being learned. ``__deepcopy__`` returns ``self``
    (``ModelPatcher.clone()`` copies object patches' owners).
    """

    def __init__(self, embedding: MotionEmbedding, strength: float = 1.0,
                 sigma_start: float = float("inf"), sigma_end: float = 0.0):
        self.embedding = embedding
        self.strength = strength
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.learning = any(t.requires_grad for t in embedding.tensors().values())
        self.calls = 0                  # projection calls that added an embedding (tests, logs)
        self.keys: list[str] = []       # the object patches on the motion model
        self.current: dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
        self._prepared = {}

    def __deepcopy__(self, memo):
        return self

    def active(self, transformer_options) -> bool:
        sigmas = transformer_options.get("sigmas") if isinstance(transformer_options, dict) else None
        if sigmas is None or (self.sigma_start == float("inf") and self.sigma_end <= 0):
            return True
        return self.sigma_end <= float(sigmas.max()) <= self.sigma_start

    def prepare(self, names: list[str], frames: int, height: int, width: int, window: Optional[list[int]],
                total: Optional[int], like: torch.Tensor) -> None:
        """Set the layers ``names``' tensors for a call with ``frames`` frames on an ``height x width`` grid."""
        for name in names:
            key = (name, frames, height, width, None if window is None else (total, tuple(window)), like.dtype,
                   like.device)
            if not self.learning and key in self._prepared:
                self.current[name] = self._prepared[key]
                continue
            qk = self._frames_of_run(self.embedding.temporal_qk[name], frames, window, total)
            value = None
            if name in self.embedding.value_embedding:
                value = self._frames_of_run(self.embedding.value_embedding_at(name, height, width), frames, window,
                                            total)
            prepared = (qk.to(like) * self.strength, None if value is None else value.to(like) * self.strength)
            if not self.learning:
                self._prepared[key] = prepared
            self.current[name] = prepared

    @staticmethod
    def _frames_of_run(tensor: torch.Tensor, frames: int, window: Optional[list[int]], total: Optional[int]):
        """``(s f c) -> (s frames c)``: resampled to the run's frames, or in a context window to the whole
        video's ``total`` frames and the window's taken."""
        if window is not None and len(window) == frames:
            total = max(int(total or 0), max(window) + 1)
            whole = tensor if tensor.shape[1] == total else resample_frames(tensor, total, dim=1)
            return whole.index_select(1, torch.tensor(window, device=whole.device))
        return tensor if tensor.shape[1] == frames else resample_frames(tensor, frames, dim=1)


class ModuleForward:
    """A ``VanillaTemporalModule.forward`` that first prepares its layers' embeddings for the call.

    ``(input_tensor ((b f) c h w), encoder_hidden_states, attention_mask, transformer_options)``
    as ADE calls it. Outside the noise range the layers' entries are cleared, so the
    projections run plain.
    """

    def __init__(self, forward, module, motion: AnimateDiffMotion, names: list[str]):
        self.forward = forward
        self.module = module
        self.motion = motion
        self.names = names

    def __deepcopy__(self, memo):
        return self

    def __call__(self, input_tensor, *args, **kwargs):
        options = kwargs.get("transformer_options", args[2] if len(args) > 2 else None)
        motion = self.motion
        if motion.active(options):
            module = self.module
            window = getattr(module, "sub_idxs", None)
            motion.prepare(self.names, int(module.video_length), int(input_tensor.shape[-2]),
                           int(input_tensor.shape[-1]), None if window is None else list(window),
                           getattr(module, "full_length", None), input_tensor)
        else:
            for name in self.names:
                motion.current.pop(name, None)
        return self.forward(input_tensor, *args, **kwargs)


class ProjectionForward:
    """``to_q`` / ``to_k`` (``role="qk"``) or ``to_v`` (``"v"``) of one layer: ``x ((b d) f c)`` plus its embedding.

    Where ADE's motion-module-level view options cut the frames into windows it does not
    name, the call's frames differ from the prepared ones: the embedding is resampled to them.
    """

    def __init__(self, forward, motion: AnimateDiffMotion, name: str, role: str):
        self.forward = forward
        self.motion = motion
        self.name = name
        self.role = role

    def __deepcopy__(self, memo):
        return self

    def __call__(self, features, *args, **kwargs):
        prepared = self.motion.current.get(self.name)
        if prepared is None:
            return self.forward(features, *args, **kwargs)
        qk, value = prepared
        frames = int(features.shape[1])
        if qk.shape[1] != frames:
            qk = resample_frames(qk, frames, dim=1)
            value = None if value is None else resample_frames(value, frames, dim=1)
        if self.role == "v" and value is None:
            return self.forward(features, *args, **kwargs)
        qk_input, value_input = motion_inputs(features, qk, value if self.role == "v" else None)
        self.motion.calls += 1
        return self.forward(qk_input if self.role == "qk" else value_input, *args, **kwargs)


def install(motion_model, motion: AnimateDiffMotion) -> list[str]:
    """Object patches on ``motion_model`` (a private clone) for ``motion``'s layers; returns their keys."""
    layers = {layer.name: layer for layer in motion_layers(motion_model)}
    by_module: dict[str, list[str]] = {}
    keys = []
    for name in motion.embedding.temporal_qk:
        layer = layers[name]
        by_module.setdefault(layer.module, []).append(name)
        for projection, role in (("to_q", "qk"), ("to_k", "qk"), ("to_v", "v")):
            key = f"{layer.attention}.{projection}.forward"
            motion_model.add_object_patch(key, ProjectionForward(motion_model.get_model_object(key), motion, name,
                                                                 role))
            keys.append(key)
    for path, names in by_module.items():
        key = f"{path}.forward"
        module = motion_model.get_model_object(path)
        motion_model.add_object_patch(key, ModuleForward(motion_model.get_model_object(key), module, motion, names))
        keys.append(key)
    motion.keys = keys
    return keys


def single_motion_model(model, node: str):
    """The one ADE motion model on ``model``, or a ValueError saying what to connect."""
    found = motion_models(model)
    if not found:
        raise ValueError(f"{node}: this SD MODEL carries no AnimateDiff motion model. "
                         + (ADE_MISSING if not ade_loaded() else
                            "Connect the MODEL output of AnimateDiff-Evolved's 'Use Evolved Sampling' with m_models "
                            "from 'Apply AnimateDiff Model'."))
    if len(found) > 1:
        raise ValueError(f"{node}: this MODEL carries {len(found)} AnimateDiff motion models; Motion Embeddings are "
                         "learned and applied on one: give 'Use Evolved Sampling' a single motion model")
    if not is_motion_model(found[0]):
        raise ValueError(f"{node}: the MODEL's AnimateDiff attachment is a {type(found[0].model).__name__}, not "
                         "AnimateDiff-Evolved's AnimateDiffModel; update ComfyUI-AnimateDiff-Evolved")
    return found[0]


def with_ad_motion(model, embedding: MotionEmbedding, strength: float = 1.0, sigma_start: float = float("inf"),
                   sigma_end: float = 0.0, node: str = "Apply Motion"):
    """A clone of ``model`` (SD with one ADE motion model) whose motion model computes eq. 3 with ``embedding``.

    The clone carries a clone of the motion model with the object patches; the user's MODEL
    and its motion model are untouched. Returns ``(clone, motion)``.
    """
    single_motion_model(model, node)
    if has_motion(model):
        raise ValueError(f"{node}: this MODEL's motion model already carries Motion Embeddings (an Apply Motion "
                         "output); connect the MODEL from Use Evolved Sampling: one embedding a motion model")
    patched = model.clone()                     # clones its additional models too
    motion_model = motion_models(patched)[0]
    check_compatible(embedding, motion_model)
    motion = AnimateDiffMotion(embedding, strength, sigma_start, sigma_end)
    install(motion_model, motion)
    return patched, motion


def has_motion(model) -> bool:
    """True if ``model``'s motion model already carries Motion Embeddings (Apply Motion's output)."""
    return any(isinstance(patch, (ProjectionForward, ModuleForward)) for motion_model in motion_models(model)
               for patch in motion_model.object_patches.values())


def spatial_attention_heads(diffusion_model) -> list[tuple[int, int]]:
    """``(heads, downsample)`` of each spatial self-attention of an SD UNet (for the memory plan)."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, Upsample

    found, factor = [], 1
    for block in [*diffusion_model.input_blocks, diffusion_model.middle_block, *diffusion_model.output_blocks]:
        for module in block:
            if isinstance(module, SpatialTransformer):
                found.extend((int(inner.attn1.heads), factor) for inner in module.transformer_blocks)
            elif isinstance(module, Downsample):
                factor *= 2
            elif isinstance(module, Upsample):
                factor //= 2
    return found


def recompute_units(motion_model) -> list[str]:
    """Names (under the motion model) of its motion modules, each recomputed in the backward pass when learning."""
    return sorted({layer.module for layer in motion_layers(motion_model)})
