"""The toy world's image-to-video model: SVD's architecture, small enough for a CPU.

Three parts, all in one ``.safetensors`` file shipped with the pack
(``motion_core/toy/weights/toy_svd.safetensors``, keys prefixed ``unet.``, ``vae.``,
``image_encoder.``, plus ``motion_tokens``):

- ``unet``: diffusers ``UNetSpatioTemporalConditionModel`` of the tiny config below (the
  same layout as ComfyUI's SVD ``UNetModel`` with model_channels 64, channel_mult [1, 1]).
  Conditioned like SVD: the first frame's latent concatenated to the input, fps / motion
  bucket / augmentation as added time ids, and cross-attention tokens of width 1024.
- ``vae``: a diffusers ``AutoencoderKL`` (4x down, 4 latent channels) whose raw latents are
  scaled so that SVD's latent scale factor 0.18215 brings them to unit variance.
- ``image_encoder``: a frozen random convolutional encoder giving a 1024-wide "CLIP image
  embedding" of a frame (SVD's conditioning token), used for token initialisation and as
  the "no motion input" conditioning.

In training, the cross-attention tokens carry the *motion class* (learned tokens per
class, ``motion_tokens (classes n d)``, as text does in SVD's pre-training; the shipped
model has n = 1, files of one token a class load as n = 1); 15 % of the time it is the
first frame's image embedding instead, so without a motion token the model moves things
ambiguously.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

TOKEN_WIDTH = 1024
FRAMES = 8
IMAGE_SIZE = 64
VAE_DOWNSCALE = 4
LATENT_SIZE = IMAGE_SIZE // VAE_DOWNSCALE
SVD_LATENT_SCALE = 0.18215      # ComfyUI's SVD latent format (SD1.5 scale factor)
COND_FPS = 6
COND_MOTION_BUCKET = 127
STILL_MOTION_BUCKET = 0         # the SVD-like model's bucket for still clips (moving ones: COND_MOTION_BUCKET)
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
WEIGHTS_PATH = os.path.join(WEIGHTS_DIR, "toy_svd.safetensors")
MANIFEST_PATH = os.path.join(WEIGHTS_DIR, "manifest.json")
# The SVD-like toy model: cross-attention sees only the first frame's image embedding, as
# SVD's does; its motion is its own draw given the first frame (``train-toy --conditioning image``)
SVD_LIKE_WEIGHTS_PATH = os.path.join(WEIGHTS_DIR, "toy_svd_like.safetensors")
SVD_LIKE_MANIFEST_PATH = os.path.join(WEIGHTS_DIR, "manifest_svd_like.json")
# Load Toy Video Model's choice -> file
TOY_MODELS = {"class-token toy (toy_svd)": WEIGHTS_PATH, "SVD-like toy (toy_svd_like)": SVD_LIKE_WEIGHTS_PATH}

UNET_CONFIG = {
    "sample_size": LATENT_SIZE, "in_channels": 8, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal"],
    "up_block_types": ["CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
    "block_out_channels": [64, 64], "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 768,
    "layers_per_block": 1, "cross_attention_dim": TOKEN_WIDTH, "transformer_layers_per_block": 1,
    "num_attention_heads": [4, 4], "num_frames": FRAMES,
}
# The same network in ComfyUI's terms (comfy.supported_models.SVD_img2vid unet_config)
COMFY_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 768, "in_channels": 8, "out_channels": 4,
    "model_channels": 64, "num_res_blocks": [1, 1], "channel_mult": [1, 1], "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1, "use_linear_in_transformer": True,
    "context_dim": TOKEN_WIDTH, "extra_ff_mix_layer": True, "use_spatial_context": True,
    "merge_strategy": "learned_with_images", "merge_factor": 0.0, "video_kernel_size": [3, 1, 1],
    "use_temporal_resblock": True, "use_temporal_attention": True, "disable_temporal_crossattention": False,
    "num_head_channels": 16,
}
VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 32,
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [32, 64, 64], "sample_size": IMAGE_SIZE,
}
# The same VAE in ComfyUI's (LDM) terms
COMFY_VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": IMAGE_SIZE, "in_channels": 3, "out_ch": 3,
                      "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


class ImageEncoder(torch.nn.Module):
    """Frozen stand-in for CLIP-H's image tower: ``(b h w c)`` in 0..1 -> ``(b 1024)``."""

    def __init__(self, width: int = TOKEN_WIDTH):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 4, stride=4), torch.nn.GELU(),
            torch.nn.Conv2d(32, 64, 4, stride=4), torch.nn.GELU(), torch.nn.AdaptiveAvgPool2d(2))
        self.project = torch.nn.Linear(64 * 4, width)
        self.norm = torch.nn.LayerNorm(width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.permute(0, 3, 1, 2).to(self.project.weight) * 2 - 1
        return self.norm(self.project(self.features(pixels).flatten(1)))


class ToyWorld:
    """The three models plus the motion-class tokens, on the CPU, frozen."""

    def __init__(self, unet, vae, image_encoder, motion_tokens: torch.Tensor, metadata: dict):
        self.unet, self.vae, self.image_encoder = unet, vae, image_encoder
        if motion_tokens.dim() == 2:                # files before tokens_per_class: one token a class
            motion_tokens = motion_tokens[:, None]
        self.motion_tokens = motion_tokens          # (classes n d)
        self.metadata = metadata

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """``(f h w c)`` in 0..1 -> raw latents ``(f 4 h/4 w/4)`` (SVD's c_concat space)."""
        pixels = frames.permute(0, 3, 1, 2).float() * 2 - 1
        return self.vae.encode(pixels).latent_dist.mode()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """raw latents ``(f 4 h w)`` -> frames ``(f h w c)`` in 0..1."""
        return ((self.vae.decode(latents.float()).sample + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    @torch.no_grad()
    def image_embeds(self, frames: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(frames.float())


def build_models(seed: int = 0):
    """Fresh (untrained) UNet, VAE and image encoder of the toy configs, deterministic."""
    from diffusers import AutoencoderKL, UNetSpatioTemporalConditionModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = UNetSpatioTemporalConditionModel(**UNET_CONFIG)
        vae = AutoencoderKL(**VAE_CONFIG)
        image_encoder = ImageEncoder()
    return unet, vae, image_encoder


def save_world(world: ToyWorld, path: str = WEIGHTS_PATH) -> str:
    tensors = {}
    for prefix, module in (("unet.", world.unet), ("vae.", world.vae), ("image_encoder.", world.image_encoder)):
        tensors.update({prefix + k: v.detach().half().contiguous() for k, v in module.state_dict().items()})
    tensors["motion_tokens"] = world.motion_tokens.detach().half().contiguous()   # float16 on disk: half the size
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".partial"
    save_file(tensors, tmp, metadata={"toy_world": json.dumps(world.metadata)})
    os.replace(tmp, path)
    return path


def load_state(path: str = WEIGHTS_PATH) -> tuple[dict[str, dict[str, torch.Tensor]], torch.Tensor, dict]:
    """The file's state dicts by part (``unet``, ``vae``, ``image_encoder``), tokens and metadata."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"toy model weights not found at {path}; train them with "
                                "`python -m motion_core train-toy` or reinstall the pack")
    parts: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "vae": {}, "image_encoder": {}}
    with safe_open(path, framework="pt", device="cpu") as fh:
        metadata = json.loads((fh.metadata() or {}).get("toy_world", "{}"))
        tokens = fh.get_tensor("motion_tokens").float()
        for key in fh.keys():
            part, _, name = key.partition(".")
            if part in parts:
                parts[part][name] = fh.get_tensor(key).float()
    return parts, tokens, metadata


def load_world(path: str = WEIGHTS_PATH) -> ToyWorld:
    parts, tokens, metadata = load_state(path)
    unet, vae, image_encoder = build_models()
    unet.load_state_dict(parts["unet"])
    vae.load_state_dict(parts["vae"])
    image_encoder.load_state_dict(parts["image_encoder"])
    for module in (unet, vae, image_encoder):
        module.eval().requires_grad_(False)
    return ToyWorld(unet, vae, image_encoder, tokens, metadata)


def class_token(world: ToyWorld, index: Optional[int]) -> torch.Tensor:
    """The learned tokens of motion class ``index`` ``(n d)``."""
    return world.motion_tokens[index]
