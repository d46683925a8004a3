"""Load Toy Video Model: the toy world's small SVD as ComfyUI's MODEL, CLIP_VISION and VAE.

The weights file (``motion_core/toy/weights/toy_svd.safetensors``) holds diffusers state
dicts (see :mod:`motion_core.toyworld`); here they become ComfyUI objects:

- MODEL: ``comfy.model_base.SVD_img2vid`` with ``toyworld.COMFY_UNET_CONFIG`` (the same
  network as the diffusers ``UNetSpatioTemporalConditionModel``), weights converted by
  :func:`motion_core.svd_convert.diffusers_svd_unet_to_comfy` and loaded strictly.
- VAE: ``comfy.sd.VAE`` of ``toyworld.COMFY_VAE_DDCONFIG`` (4x down: 64x64 images <-> 16x16
  latents), weights converted by :func:`motion_core.svd_convert.diffusers_vae_to_comfy`.
- CLIP_VISION: :class:`ToyClipVision`, the toy's frozen image encoder behind the interface
  SVD's nodes use (``encode_image(image) -> .image_embeds (b 1024)``).

Nothing is cached here: ComfyUI's output cache keeps the built models while the ``weights``
input and the file's modification time stay the same (see ``fingerprint_inputs``).
"""
from __future__ import annotations

import logging
import os

import torch

import comfy.clip_vision
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
from comfy_api.v0_0_2 import io

from ...motion_core.toy import toyworld
from ...motion_core.toy.svd_convert import diffusers_svd_unet_to_comfy, diffusers_vae_to_comfy
from ..common import CATEGORY, NODE_PREFIX

log = logging.getLogger(__name__)


DEFAULT_TOY_MODEL = next(iter(toyworld.TOY_MODELS))


def weights_path(weights: str = "", toy_model: str = DEFAULT_TOY_MODEL) -> str:
    """The file to load: ``weights`` when given (``~`` expanded), else the shipped file of ``toy_model``."""
    weights = (weights or "").strip()
    if weights:
        return os.path.abspath(os.path.expanduser(weights))
    if toy_model not in toyworld.TOY_MODELS:
        raise ValueError(f"Load Toy Video Model: unknown toy_model {toy_model!r}; choose one of "
                         f"{list(toyworld.TOY_MODELS)}")
    return toyworld.TOY_MODELS[toy_model]


def _missing_weights_message(path: str) -> str:
    return (f"Load Toy Video Model: no toy model weights at {path}. Train them with "
            f"`python -m motion_core train-toy` (run in the pack's folder; it writes {toyworld.WEIGHTS_PATH}), "
            "reinstall the pack to get the shipped file, or set `weights` to the path of a toy_svd.safetensors.")


# ---- MODEL --------------------------------------------------------------------------------------
def build_model(unet_state: dict[str, torch.Tensor]) -> comfy.model_patcher.ModelPatcher:
    """A ``ModelPatcher`` around ``SVD_img2vid`` holding the toy UNet, set up as ComfyUI's loaders do.

    ``unet_state``: the diffusers UNet state dict of ``toyworld.UNET_CONFIG``. dtype and
    devices come from ComfyUI (``unet_dtype``, ``get_torch_device``, ``unet_offload_device``).
    Raises ValueError when the converted weights do not fill the network exactly.
    """
    state = diffusers_svd_unet_to_comfy(unet_state, toyworld.UNET_CONFIG)
    model_config = comfy.supported_models.SVD_img2vid(dict(toyworld.COMFY_UNET_CONFIG))
    # SVD's extra config sets 64-channel heads; the toy's 32-channel level needs 16
    model_config.unet_config["num_head_channels"] = toyworld.COMFY_UNET_CONFIG["num_head_channels"]
    return load_diffusion_model(model_config, state, "toy SVD UNet", "toyworld.COMFY_UNET_CONFIG")


def load_diffusion_model(model_config, state: dict[str, torch.Tensor], what: str,
                         config_name: str) -> comfy.model_patcher.ModelPatcher:
    """``model_config``'s model holding ``state`` (ComfyUI's keys, loaded strictly) in a ``ModelPatcher``, with the
    dtype and devices ComfyUI's loaders pick (``unet_dtype``, ``get_torch_device``, ``unet_offload_device``).
    Raises ValueError when the weights do not fill the network exactly."""
    mm = comfy.model_management
    parameters = sum(t.numel() for t in state.values())
    load_device = mm.get_torch_device()
    supported = list(model_config.supported_inference_dtypes)
    dtype = mm.unet_dtype(model_params=parameters, supported_dtypes=supported)
    model_config.set_inference_dtype(dtype, mm.unet_manual_cast(dtype, load_device, supported))
    initial_device = mm.unet_inital_load_device(parameters, dtype)
    model = model_config.get_model({}, "", device=initial_device)
    try:
        model.diffusion_model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the {what} weights do not fit ComfyUI's model of {config_name} (was the file written for "
                         f"another config?): {exc}") from exc
    model.eval()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=mm.unet_offload_device())
    if initial_device != torch.device("cpu"):
        mm.load_models_gpu([patcher], force_full_load=True)
    log.info("%s: %s parameters, %s on %s", what, f"{parameters:,}", dtype, load_device)
    return patcher


# ---- VAE ----------------------------------------------------------------------------------------
def build_vae(vae_state: dict[str, torch.Tensor]) -> comfy.sd.VAE:
    """``comfy.sd.VAE`` of the toy AutoencoderKL: IMAGE ``(f 64 64 3)`` <-> raw latents ``(f 4 16 16)``.

    ``vae_state``: the diffusers state dict of ``toyworld.VAE_CONFIG``. ComfyUI's own
    diffusers conversion assumes SD's four levels, so the weights are converted here and
    the key set is checked (``comfy.sd.VAE`` itself loads non-strictly).
    """
    state = diffusers_vae_to_comfy(vae_state, toyworld.VAE_CONFIG)
    config = {"params": {"ddconfig": dict(toyworld.COMFY_VAE_DDCONFIG), "embed_dim": toyworld.VAE_CONFIG["latent_channels"]}}
    vae = comfy.sd.VAE(sd=dict(state), config=config)
    expected = set(vae.first_stage_model.state_dict())
    if expected != set(state):
        raise ValueError(f"the toy VAE weights do not fit toyworld.COMFY_VAE_DDCONFIG: missing "
                         f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}")
    vae.downscale_ratio = vae.upscale_ratio = toyworld.VAE_DOWNSCALE   # comfy.sd.VAE assumes 8x
    return vae


# ---- CLIP_VISION --------------------------------------------------------------------------------
class ToyClipVision:
    """Toy stand-in for ComfyUI's ``ClipVisionModel`` (the CLIP_VISION type).

    Not CLIP: the toy world's frozen convolutional :class:`motion_core.toyworld.ImageEncoder`,
    whose 1024-wide output plays SVD's CLIP-H image embedding. It offers what
    ``SVD_img2vid_Conditioning`` and Learn Motion Embedding call: :meth:`encode_image`
    returning a ``comfy.clip_vision.Output`` with ``image_embeds`` ``(b 1024)`` (plus
    ``last_hidden_state`` and ``penultimate_hidden_states`` ``(b 1 1024)`` = the same embedding,
    and ``mm_projected`` None). Nodes needing CLIP's real hidden states do not work with it.
    Runs on ComfyUI's text-encoder device through a ModelPatcher, like ``ClipVisionModel``.
    """

    image_size = toyworld.IMAGE_SIZE

    def __init__(self, encoder: toyworld.ImageEncoder):
        mm = comfy.model_management
        self.load_device = mm.text_encoder_device()
        self.model = encoder.eval().requires_grad_(False)
        self.patcher = comfy.model_patcher.ModelPatcher(self.model, load_device=self.load_device,
                                                        offload_device=mm.text_encoder_offload_device())

    def get_sd(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def encode_image(self, image: torch.Tensor, crop: bool = True) -> comfy.clip_vision.Output:
        """IMAGE ``(b h w c)`` in 0..1 -> Output with ``image_embeds`` ``(b 1024)`` (float32).

        Frames are brought to the toy's 64x64 first, as CLIP's preprocessing brings them to
        224: centre crop + resize with ``crop``, a plain resize without.
        """
        comfy.model_management.load_model_gpu(self.patcher)
        pixels = image[..., :3].float()
        if tuple(pixels.shape[1:3]) != (self.image_size, self.image_size):
            pixels = comfy.utils.common_upscale(pixels.movedim(-1, 1), self.image_size, self.image_size, "bilinear",
                                                "center" if crop else "disabled").movedim(1, -1)
        with torch.no_grad():
            embeds = self.model(pixels.to(self.load_device)).float()
        embeds = embeds.to(comfy.model_management.intermediate_device())
        out = comfy.clip_vision.Output()
        out["image_embeds"] = embeds
        out["last_hidden_state"] = embeds[:, None]
        out["penultimate_hidden_states"] = embeds[:, None]
        out["mm_projected"] = None
        return out


def build_clip_vision(encoder_state: dict[str, torch.Tensor]) -> ToyClipVision:
    encoder = toyworld.ImageEncoder()
    encoder.load_state_dict(encoder_state, strict=True)
    return ToyClipVision(encoder)


def load_toy_models(path: str) -> tuple[comfy.model_patcher.ModelPatcher, ToyClipVision, comfy.sd.VAE]:
    """``(MODEL, CLIP_VISION, VAE)`` from a toy weights file; FileNotFoundError naming the fix."""
    if not os.path.isfile(path):
        raise FileNotFoundError(_missing_weights_message(path))
    parts, _tokens, metadata = toyworld.load_state(path)
    for part in ("unet", "vae", "image_encoder"):
        if not parts[part]:
            raise ValueError(f"{path} holds no `{part}.` tensors: not a toy world weights file")
    log.info("Loading the toy video model from %s (%s)", path,
             ", ".join(f"{k}={v}" for k, v in metadata.items() if isinstance(v, (int, float, str))) or "no metadata")
    return build_model(parts["unet"]), build_clip_vision(parts["image_encoder"]), build_vae(parts["vae"])


class LoadToyVideoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "LoadToyVideoModel",
            display_name="Load Toy Video Model",
            category=CATEGORY,
            description="Loads the pack's toy image-to-video model: Stable Video Diffusion's architecture shrunk to "
                        "run on a CPU (8 frames of 64x64, 16x16 latents), trained on the toy world. Use it to try the "
                        "motion workflows in seconds without downloading SVD. Its VAE downsamples 4x, not 8x, while "
                        "ComfyUI's latent nodes size latents as width/8: run SVD_img2vid_Conditioning at 64x64 but "
                        "sample a 16x16 latent (e.g. Empty Latent Image at 128x128, batch = frames) instead of its "
                        "8x8 latent output. Its CLIP_VISION is a toy image encoder, not CLIP: it only feeds SVD "
                        "conditioning and Learn Motion Embedding.",
            inputs=[
                io.Combo.Input("toy_model", options=list(toyworld.TOY_MODELS), default=DEFAULT_TOY_MODEL,
                               tooltip="Which shipped toy model. class-token toy: trained with a learned "
                                       "cross-attention token per motion class, so motion-text inversion has "
                                       "tokens to find. SVD-like toy: trained as SVD is, its cross-attention only "
                                       "ever saw the first frame's image embedding and it draws its own motion "
                                       "for an image (a spread over seeds); the fairer bench for Motion "
                                       "Embeddings. Both measured in the pack's docs/quality.md."),
                io.String.Input("weights", default="", optional=True,
                                tooltip="Path of a toy model .safetensors file (from `python -m motion_core "
                                        "train-toy`); empty = the shipped file of `toy_model`."),
            ],
            outputs=[
                io.Model.Output(display_name="model",
                                tooltip="The toy SVD UNet (ComfyUI's SVD_img2vid, v-prediction EDM) for the samplers "
                                        "and the motion nodes."),
                io.ClipVision.Output(display_name="clip_vision",
                                     tooltip="The toy image encoder standing in for CLIP-H: 1024-wide image embeddings "
                                             "for SVD_img2vid_Conditioning and Learn Motion Embedding."),
                io.Vae.Output(display_name="vae",
                              tooltip="The toy VAE: 64x64 frames <-> 4x16x16 latents (4x, not SVD's 8x)."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, toy_model: str = DEFAULT_TOY_MODEL, weights: str = "", **_kwargs):
        path = weights_path(weights, toy_model)
        return f"{path}:{os.path.getmtime(path)}" if os.path.isfile(path) else path

    @classmethod
    def execute(cls, toy_model: str = DEFAULT_TOY_MODEL, weights: str = "") -> io.NodeOutput:
        return io.NodeOutput(*load_toy_models(weights_path(weights, toy_model)))
