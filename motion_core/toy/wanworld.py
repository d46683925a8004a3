"""The Wan toy world: a text-to-video model of Wan 2.1's architecture, small enough for a CPU.

Three parts in one ``.safetensors`` file (``motion_core/toy/weights/toy_wan.safetensors``,
keys prefixed ``transformer.``, ``vae.``, ``text.``), trained host-free with diffusers'
classes and loaded in ComfyUI as its own (``wan_convert``, ``wan_vae_convert``):

- ``transformer``: diffusers ``WanTransformer3DModel`` (= ComfyUI's ``WanModel``, T2V) of the
  tiny config below: patch (1, 2, 2), 16 latent channels as Wan 2.1's, 6 blocks of width 128.
- ``vae``: diffusers ``AutoencoderKLWan`` (= ComfyUI's ``WanVAE``) with Wan's causal 4x
  temporal compression (13 frames -> 4 latent frames, F' = 1 + (F - 1) / 4) and a 4x
  spatial stride (two downsampling levels instead of Wan's three: 64x64 frames -> 16x16
  latents -> 8x8 tokens a frame). Its latent is calibrated to ComfyUI's ``Wan21`` latent
  format: ``(raw - latents_mean) / latents_std`` has unit variance per channel, so the
  model sees what a Wan model sees after ``process_latent_in``.
- ``text``: the toy's stand-in for T5, a learned vector per caption word plus a learned
  vector per position, ``(CAPTION_TOKENS, TEXT_DIM)`` a caption, zero padded as T5's is.

Captions name the scene word by word: the motion word (``toyclips.MOTION_CLASSES``), then
per object its colour, texture and shape, then the background's kind and two colours. In
training the motion word is left out a share of the time, so without it the model draws a
motion of its own for the scene; the whole caption is dropped a share of the time (zeros,
the unconditional prompt of classifier-free guidance).
"""
from __future__ import annotations

import json
import os
import re
from typing import Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import toyclips

FRAMES = 13                      # 1 + 4 * 3: four latent frames
IMAGE_SIZE = 64
VAE_DOWNSCALE = 4                # spatial; 4 in time as Wan's
LATENT_CHANNELS = 16
TEXT_DIM = 32
CAPTION_TOKENS = 16
SAMPLING_SHIFT = 3.0             # flow shift the model is trained with and ComfyUI samples with (Wan 1.3B: 8 at 81x832x480)
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
WEIGHTS_PATH = os.path.join(WEIGHTS_DIR, "toy_wan.safetensors")
MANIFEST_PATH = os.path.join(WEIGHTS_DIR, "manifest_wan.json")

TRANSFORMER_CONFIG = {
    "patch_size": (1, 2, 2), "num_attention_heads": 4, "attention_head_dim": 32, "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS, "text_dim": TEXT_DIM, "freq_dim": 64, "ffn_dim": 512, "num_layers": 6,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 64,
}
# The same network in ComfyUI's terms (comfy.supported_models.WAN21_T2V unet_config)
COMFY_WAN_CONFIG = {
    "image_model": "wan2.1", "model_type": "t2v", "patch_size": (1, 2, 2), "in_dim": LATENT_CHANNELS,
    "dim": 128, "ffn_dim": 512, "freq_dim": 64, "text_dim": TEXT_DIM, "out_dim": LATENT_CHANNELS, "num_heads": 4,
    "num_layers": 6, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
}
VAE_CONFIG = {"base_dim": 32, "z_dim": LATENT_CHANNELS, "dim_mult": [1, 2, 2], "num_res_blocks": 1, "attn_scales": [],
              "temperal_downsample": [True, True], "dropout": 0.0}
# ComfyUI's WanVAE of the same config (``dim`` is diffusers' ``base_dim``)
COMFY_VAE_CONFIG = {"dim": 32, "z_dim": LATENT_CHANNELS, "dim_mult": [1, 2, 2], "num_res_blocks": 1,
                    "attn_scales": [], "temperal_downsample": [True, True], "dropout": 0.0}
# ComfyUI's Wan21 latent format (comfy/latent_formats.py): what the model's process_latent_in removes
WAN21_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

PAD, UNKNOWN = "<pad>", "<unknown>"
VOCABULARY: tuple[str, ...] = ((PAD, UNKNOWN) + toyclips.MOTION_CLASSES + tuple(toyclips.COLOURS)
                               + tuple(toyclips.SHAPES) + tuple(toyclips.TEXTURES)
                               + tuple(b for b in toyclips.BACKGROUNDS if b not in toyclips.TEXTURES))
_WORD_INDEX = {word.lower(): index for index, word in enumerate(VOCABULARY)}     # prompts are read case-blind


def caption_words(spec: toyclips.ClipSpec, with_motion: bool = True) -> list[str]:
    """The caption of a clip, word by word: ``[motion] (colour texture shape)* background colour colour``."""
    words = [spec.motion] if with_motion else []
    for obj in spec.objects:
        words += [obj.colour, obj.texture, obj.shape]
    return words + [spec.background, *spec.bg_colours]


def caption(spec: toyclips.ClipSpec, with_motion: bool = True) -> str:
    """The caption as a prompt: its words joined by spaces (what a workflow's text box holds)."""
    return " ".join(caption_words(spec, with_motion))


def caption_ids(text: str) -> torch.Tensor:
    """A prompt -> word indices ``(CAPTION_TOKENS)``, padded with ``<pad>`` (0); unknown words count as one word."""
    words = [w for w in re.split(r"[\s,;.]+", text.strip().lower()) if w]
    if len(words) > CAPTION_TOKENS:
        raise ValueError(f"the toy Wan model reads at most {CAPTION_TOKENS} words, got {len(words)}: {text!r}; "
                         "name the motion, each object's colour, texture and shape, and the background")
    ids = [_WORD_INDEX.get(w, _WORD_INDEX[UNKNOWN]) for w in words]
    return torch.tensor(ids + [0] * (CAPTION_TOKENS - len(ids)))


class TextEncoder(torch.nn.Module):
    """The toy's T5: ``(b n)`` word indices -> ``(b n TEXT_DIM)``, zeros where the caption is padded."""

    def __init__(self):
        super().__init__()
        self.words = torch.nn.Embedding(len(VOCABULARY), TEXT_DIM)
        self.positions = torch.nn.Parameter(torch.zeros(CAPTION_TOKENS, TEXT_DIM))
        torch.nn.init.normal_(self.words.weight, std=1.0)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        vectors = self.words(ids) + self.positions[: ids.shape[-1]]
        return vectors * (ids != 0)[..., None].to(vectors)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> ``(b CAPTION_TOKENS TEXT_DIM)``; an empty prompt gives zeros (the unconditional one)."""
        return self.forward(torch.stack([caption_ids(p) for p in prompts]))


class WanToyWorld:
    """The transformer, the VAE and the text encoder, on the CPU, frozen."""

    def __init__(self, transformer, vae, text_encoder: TextEncoder, metadata: dict):
        self.transformer, self.vae, self.text_encoder, self.metadata = transformer, vae, text_encoder, metadata

    @torch.no_grad()
    def encode(self, clip: torch.Tensor) -> torch.Tensor:
        """``(f h w c)`` in 0..1 -> raw latents ``(1 16 t h/4 w/4)``, ``t = 1 + (f - 1) / 4``."""
        pixels = clip.permute(3, 0, 1, 2)[None].float() * 2 - 1
        return self.vae.encode(pixels).latent_dist.mode()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """raw latents ``(1 16 t h w)`` -> frames ``(f h w c)`` in 0..1."""
        return ((self.vae.decode(latents.float()).sample[0] + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0)


def latent_to_model(raw: torch.Tensor) -> torch.Tensor:
    """Raw latents ``(b c t h w)`` -> what the model sees (ComfyUI's ``Wan21.process_in``)."""
    mean = torch.tensor(WAN21_LATENTS_MEAN).view(1, -1, 1, 1, 1).to(raw)
    std = torch.tensor(WAN21_LATENTS_STD).view(1, -1, 1, 1, 1).to(raw)
    return (raw - mean) / std


def model_to_latent(normalised: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`latent_to_model` (ComfyUI's ``Wan21.process_out``)."""
    mean = torch.tensor(WAN21_LATENTS_MEAN).view(1, -1, 1, 1, 1).to(normalised)
    std = torch.tensor(WAN21_LATENTS_STD).view(1, -1, 1, 1, 1).to(normalised)
    return normalised * std + mean


def build_models(seed: int = 0):
    """Fresh (untrained) transformer, VAE and text encoder of the toy configs, deterministic."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**TRANSFORMER_CONFIG)
        vae = AutoencoderKLWan(**VAE_CONFIG)
        text_encoder = TextEncoder()
    return transformer, vae, text_encoder


@torch.no_grad()
def calibrate_latent(vae, clips: torch.Tensor, batch: int = 16) -> dict:
    """Fold an affine map into the VAE so its raw latents have ComfyUI's Wan21 mean and std per channel.

    ``clips (n f h w c)``: measured on their latents' means. The encoder's ``quant_conv``
    (mean and log-variance) and the decoder's ``post_quant_conv`` are 1x1x1 convolutions,
    so the map and its inverse fold in exactly. Returns the measured mean and std.
    """
    pixels = clips.permute(0, 4, 1, 2, 3) * 2 - 1
    means = torch.cat([vae.encode(pixels[i:i + batch]).latent_dist.mean for i in range(0, len(pixels), batch)])
    mean = means.mean(dim=(0, 2, 3, 4))
    std = means.std(dim=(0, 2, 3, 4))
    scale = torch.tensor(WAN21_LATENTS_STD) / std                  # raw' = scale * raw + offset
    offset = torch.tensor(WAN21_LATENTS_MEAN) - scale * mean
    z = LATENT_CHANNELS
    quant, post = vae.quant_conv, vae.post_quant_conv
    quant.weight[:z] *= scale.view(-1, 1, 1, 1, 1)
    quant.bias[:z] = scale * quant.bias[:z] + offset
    quant.bias[z:] += 2 * torch.log(scale)
    post.bias -= torch.einsum("oi,i->o", post.weight.flatten(1), offset / scale)
    post.weight /= scale.view(1, -1, 1, 1, 1)
    return {"mean": mean.tolist(), "std": std.tolist()}


def save_world(world: WanToyWorld, path: str = WEIGHTS_PATH) -> str:
    tensors = {}
    for prefix, module in (("transformer.", world.transformer), ("vae.", world.vae), ("text.", world.text_encoder)):
        tensors.update({prefix + k: v.detach().float().contiguous() for k, v in module.state_dict().items()})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial"
    save_file(tensors, partial, metadata={"toy_wan": json.dumps(world.metadata)})
    os.replace(partial, path)
    return path


def load_state(path: str = WEIGHTS_PATH) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """The file's state dicts by part (``transformer``, ``vae``, ``text``) and its metadata."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"toy Wan weights not found at {path}; train them with "
                                "`python -m motion_core train-toy-wan` or reinstall the pack")
    parts: dict[str, dict[str, torch.Tensor]] = {"transformer": {}, "vae": {}, "text": {}}
    with safe_open(path, framework="pt", device="cpu") as fh:
        metadata = json.loads((fh.metadata() or {}).get("toy_wan", "{}"))
        for key in fh.keys():
            part, _, name = key.partition(".")
            if part in parts:
                parts[part][name] = fh.get_tensor(key).float()
    return parts, metadata


def load_world(path: str = WEIGHTS_PATH) -> WanToyWorld:
    parts, metadata = load_state(path)
    transformer, vae, text_encoder = build_models()
    transformer.load_state_dict(parts["transformer"])
    vae.load_state_dict(parts["vae"])
    text_encoder.load_state_dict(parts["text"])
    for module in (transformer, vae, text_encoder):
        module.eval().requires_grad_(False)
    return WanToyWorld(transformer, vae, text_encoder, metadata)


def sample_caption_spec(rng, motion: Optional[str] = None, palette: str = "train") -> toyclips.ClipSpec:
    """A clip spec of the toy world's length and size (``toyclips.sample_clip_spec``)."""
    return toyclips.sample_clip_spec(rng, motion, frames=FRAMES, size=IMAGE_SIZE, palette=palette)
