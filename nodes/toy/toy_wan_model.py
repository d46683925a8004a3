"""Load Toy Wan Model: the Wan toy world's text-to-video model as ComfyUI's MODEL, CLIP and VAE.

The weights file (``motion_core/toy/weights/toy_wan.safetensors``) holds diffusers state
dicts (see :mod:`motion_core.toy.wanworld`); here they become ComfyUI's own Wan objects:

- MODEL: ``comfy.model_base.WAN21`` (Wan 2.1 T2V) of ``wanworld.COMFY_WAN_CONFIG``, weights
  converted by :func:`motion_core.toy.wan_convert.diffusers_wan_to_comfy` and loaded strictly;
  sampled with the flow shift it was trained with (``wanworld.SAMPLING_SHIFT``).
- VAE: ComfyUI's Wan 2.1 VAE wrapper (``comfy.sd.VAE``) around ``comfy.ldm.wan.vae.WanVAE`` of
  ``wanworld.COMFY_VAE_CONFIG``: Wan's 4x temporal compression, a 4x spatial stride.
- CLIP: :class:`ToyWanTextEncoder`, the toy's word-vector encoder behind the two calls
  ``CLIP Text Encode`` makes.
"""
from __future__ import annotations

import logging
import math
import os

import torch

import comfy.ldm.wan.vae
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
from comfy_api.v0_0_2 import io

from ...motion_core.toy import wanworld
from ...motion_core.toy.wan_convert import diffusers_wan_to_comfy
from ...motion_core.toy.wan_vae_convert import diffusers_wan_vae_to_comfy
from ..common import CATEGORY, NODE_PREFIX
from ..hooks.wan import latent_frames as wan_latent_frames
from .toy_model import load_diffusion_model

log = logging.getLogger(__name__)


def _missing_weights_message(path: str) -> str:
    return (f"Load Toy Wan Model: no toy Wan weights at {path}. Train them with `python -m motion_core "
            f"train-toy-wan` (run in the pack's folder; it writes {wanworld.WEIGHTS_PATH}), reinstall the pack to get "
            "the shipped file, or set `weights` to the path of a toy_wan.safetensors.")


def build_wan_model(transformer_state: dict[str, torch.Tensor]) -> comfy.model_patcher.ModelPatcher:
    """A ``ModelPatcher`` around ComfyUI's Wan 2.1 T2V model holding the toy transformer, as UNETLoader sets one up."""
    model_config = comfy.supported_models.WAN21_T2V(dict(wanworld.COMFY_WAN_CONFIG))
    model_config.sampling_settings = dict(model_config.sampling_settings, shift=wanworld.SAMPLING_SHIFT)
    return load_diffusion_model(model_config, diffusers_wan_to_comfy(transformer_state), "toy Wan transformer",
                                "wanworld.COMFY_WAN_CONFIG")


# the keys by which comfy.sd.VAE recognises a Wan 2.1 VAE, at the shapes of its one built-in size (dim 96)
_WAN21_VAE_MARKERS = {"decoder.middle.0.residual.0.gamma": (384, 1, 1, 1), "decoder.head.0.gamma": (96, 1, 1, 1),
                      "encoder.conv1.weight": (96, 3, 3, 3, 3), "decoder.head.2.weight": (3, 96, 3, 3, 3)}


def build_wan_vae(vae_state: dict[str, torch.Tensor]) -> comfy.sd.VAE:
    """ComfyUI's Wan 2.1 VAE wrapper around the toy ``WanVAE``: IMAGE ``(13 64 64 3)`` <-> ``(1 16 4 16 16)``.

    ``comfy.sd.VAE`` builds a Wan 2.1 VAE at its one size from the keys (dim 96, 8x in space);
    the wrapper is made for those keys, then given the toy's network (loaded strictly), its
    patcher and its 4x spatial ratios (time stays Wan's ``1 + (F - 1) / 4``).
    """
    toy = comfy.ldm.wan.vae.WanVAE(**wanworld.COMFY_VAE_CONFIG)
    try:
        toy.load_state_dict(diffusers_wan_vae_to_comfy(vae_state), strict=True)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"the toy Wan VAE weights do not fit wanworld.COMFY_VAE_CONFIG: {exc}") from exc
    vae = comfy.sd.VAE(sd={key: torch.zeros(shape) for key, shape in _WAN21_VAE_MARKERS.items()})
    toy = toy.eval().requires_grad_(False).to(torch.float32)
    vae.first_stage_model = toy
    vae.vae_dtype = torch.float32
    vae.patcher = comfy.model_patcher.ModelPatcher(toy, load_device=vae.device,
                                                   offload_device=comfy.model_management.vae_offload_device())
    stride = wanworld.VAE_DOWNSCALE
    vae.downscale_ratio = (lambda frames: max(0, math.floor((frames + 3) / 4)), stride, stride)
    vae.upscale_ratio = (lambda frames: max(0, frames * 4 - 3), stride, stride)
    vae.downscale_index_formula = vae.upscale_index_formula = (4, stride, stride)
    return vae


class ToyWanTextEncoder:
    """Toy stand-in for ComfyUI's ``CLIP`` (Wan's T5) with the calls ``CLIP Text Encode`` makes.

    :meth:`tokenize` reads the prompt's words (``wanworld.caption_ids``: the toy's vocabulary,
    at most 16 words); :meth:`encode_from_tokens_scheduled` gives the conditioning
    ``[[(1 16 32), {"pooled_output": None}]]``, zeros where the caption is padded. Nodes that
    need a real text encoder (LoRA, hooks, token weights) do not work with it.
    """

    def __init__(self, encoder: wanworld.TextEncoder):
        self.encoder = encoder.eval().requires_grad_(False)

    def tokenize(self, text: str, return_word_ids: bool = False, **_kwargs) -> torch.Tensor:
        return wanworld.caption_ids(text)

    def encode_from_tokens(self, tokens: torch.Tensor, return_pooled=False, return_dict=False):
        with torch.no_grad():
            cond = self.encoder(tokens[None]).to(comfy.model_management.intermediate_device())
        if return_dict:
            return {"cond": cond, "pooled_output": None}
        return (cond, None) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens: torch.Tensor, unprojected=False, add_dict=None, show_pbar=True):
        return [[self.encode_from_tokens(tokens), {"pooled_output": None, **(add_dict or {})}]]


def load_toy_wan(path: str):
    """``(MODEL, CLIP, VAE)`` from a toy Wan weights file; FileNotFoundError naming the fix."""
    if not os.path.isfile(path):
        raise FileNotFoundError(_missing_weights_message(path))
    parts, metadata = wanworld.load_state(path)
    for part in ("transformer", "vae", "text"):
        if not parts[part]:
            raise ValueError(f"{path} holds no `{part}.` tensors: not a toy Wan weights file")
    log.info("Loading the toy Wan model from %s (%s transformer steps)", path,
             metadata.get("transformer_steps_done", "?"))
    text = wanworld.TextEncoder()
    text.load_state_dict(parts["text"], strict=True)
    return build_wan_model(parts["transformer"]), ToyWanTextEncoder(text), build_wan_vae(parts["vae"])


class LoadToyWanModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "LoadToyWanModel",
            display_name="Load Toy Wan Model",
            category=CATEGORY,
            description="Loads the pack's toy text-to-video model: Wan 2.1's architecture (ComfyUI's own WanModel and "
                        "Wan VAE) shrunk to run on a CPU (13 frames of 64x64, 4 latent frames of 16x16), trained on "
                        "the toy world. Prompts are word lists: the motion (e.g. translate_E_2, circle_cw, zoom_in), "
                        "then each object's colour, texture and shape, then the background and two colours. Its VAE "
                        "downsamples 4x in space, not Wan's 8x: size empty latents as for a 128x128 Wan video, or "
                        "animate a target image with Toy Wan First Frame Latent (toy_wan_motion.json). A test bench, "
                        "not sharp: asked for a motion by its word it draws it in few clips (docs/wan_toy.md).",
            inputs=[io.String.Input("weights", default="", optional=True,
                                    tooltip="Path of a toy Wan .safetensors file (from `python -m motion_core "
                                            "train-toy-wan`); empty = the shipped toy_wan.safetensors.")],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The toy Wan 2.1 T2V model (flow matching, shift 3)."),
                io.Clip.Output(display_name="clip", tooltip="The toy's text encoder, for CLIP Text Encode: word lists."),
                io.Vae.Output(display_name="vae", tooltip="The toy Wan VAE: 13 frames of 64x64 <-> 16 x 4 x 16 x 16."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, weights: str = "", **_kwargs):
        path = _path(weights)
        return f"{path}:{os.path.getmtime(path)}" if os.path.isfile(path) else path

    @classmethod
    def execute(cls, weights: str = "") -> io.NodeOutput:
        return io.NodeOutput(*load_toy_wan(_path(weights)))


class ToyWanFirstFrameLatent(io.ComfyNode):
    """The toy Wan model is text-to-video: a target image is animated by keeping it as latent frame 0."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "ToyWanFirstFrameLatent",
            display_name="Toy Wan First Frame Latent",
            category=CATEGORY + "/toy",
            description="An empty video latent for the toy Wan model whose first latent frame is the image, kept "
                        "while sampling by a noise mask (as ComfyUI's latent inpainting): the text-to-video toy then "
                        "animates that image. The toy's benchmark (docs/quality_wan_toy.md) samples this way, so a "
                        "clip can be read against the ideal animation of its first frame.",
            inputs=[io.Vae.Input("vae", tooltip="From Load Toy Wan Model."),
                    io.Image.Input("image", tooltip="The first frame to animate (64 x 64)."),
                    io.Int.Input("length", default=wanworld.FRAMES, min=5, max=49, step=4,
                                 tooltip="Frames to make, 1 + 4k (the toy Wan model is trained on 13: 4 latent "
                                         "frames).")],
            outputs=[io.Latent.Output(display_name="latent",
                                      tooltip="(1, 16, 1 + (length - 1) / 4, h / 4, w / 4), frame 0 kept.")],
        )

    @classmethod
    def execute(cls, vae, image, length) -> io.NodeOutput:
        return io.NodeOutput(first_frame_latent(vae, image, length))


def first_frame_latent(vae, image: torch.Tensor, length: int) -> dict:
    """``{"samples": (1 16 t h w), "noise_mask": (1 1 t h w)}``: ``image`` ``(1 H W 3)``'s latent as frame 0, masked
    out of the noise; the other ``t - 1 = (length - 1) / 4`` latent frames zeros, to be sampled."""
    if image.ndim != 4 or image.shape[0] < 1:
        raise ValueError(f"Toy Wan First Frame Latent needs an IMAGE (1, H, W, 3), got shape {tuple(image.shape)}")
    first = vae.encode(image[:1, ..., :3])                      # the causal VAE: one frame is one latent frame
    samples = torch.zeros(1, first.shape[1], wan_latent_frames(int(length)), first.shape[-2], first.shape[-1])
    samples[:, :, :1] = first
    mask = torch.ones(1, 1, *samples.shape[2:])
    mask[:, :, 0] = 0.0
    return {"samples": samples, "noise_mask": mask}


def _path(weights: str) -> str:
    weights = (weights or "").strip()
    return os.path.abspath(os.path.expanduser(weights)) if weights else wanworld.WEIGHTS_PATH
