"""Clip augmentation in latent space: one random draw per sample, shared by all frames.

The reference is VAE-encoded once per run, so augmentation works on latents: a random
crop (scale and position) resized back to the full grid, an optional horizontal flip,
and a per-channel gain/offset jitter that stands in for colour jitter (SD-VAE latent
channels carry luminance and colour). Every frame of a sample gets the same crop, flip
and jitter, so appearance varies between steps while the motion stays intact
(Reenact Anything, C.2). Flip is off by default: it reverses horizontal camera motion.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as nnf


@dataclasses.dataclass
class AugmentSettings:
    enabled: bool = True
    min_crop_scale: float = 0.8   # the crop keeps at least this fraction of each side
    color_jitter: float = 0.1     # relative gain / offset jitter per latent channel
    flip: bool = False

    def __post_init__(self):
        if not 0.1 <= self.min_crop_scale <= 1.0:
            raise ValueError(f"min_crop_scale must be in 0.1..1, got {self.min_crop_scale}")
        if not 0.0 <= self.color_jitter <= 1.0:
            raise ValueError(f"color_jitter must be in 0..1, got {self.color_jitter}")


def _uniform(generator: torch.Generator, low: float, high: float, shape=()) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def augment_clip(latents: torch.Tensor, generator: torch.Generator, settings: AugmentSettings) -> torch.Tensor:
    """Augment a clip with one draw for all frames.

    ``latents`` ``(f c h w)`` -> ``(f c h w)``, same dtype and device. Random numbers come
    from the CPU ``generator`` so a seed gives the same augmentation on every device.
    """
    if not settings.enabled:
        return latents
    frames, channels, height, width = latents.shape
    scale = float(_uniform(generator, settings.min_crop_scale, 1.0))
    crop_h, crop_w = max(1, round(height * scale)), max(1, round(width * scale))
    top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
    left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
    flip = settings.flip and bool(torch.rand((), generator=generator) < 0.5)
    gain = 1.0 + _uniform(generator, -settings.color_jitter, settings.color_jitter, (channels,))
    offset = _uniform(generator, -settings.color_jitter, settings.color_jitter, (channels,))

    out = latents[:, :, top:top + crop_h, left:left + crop_w]
    if (crop_h, crop_w) != (height, width):
        out = nnf.interpolate(out.float(), size=(height, width), mode="bilinear", align_corners=False).to(latents.dtype)
    if flip:
        out = out.flip(-1)
    spread = latents.float().std(dim=(0, 2, 3)).clamp_min(1e-6)          # (c)
    gain = gain.to(out.device, torch.float32)[None, :, None, None]
    offset = (offset * spread.cpu()).to(out.device, torch.float32)[None, :, None, None]
    mean = out.float().mean(dim=(0, 2, 3), keepdim=True)
    return ((out.float() - mean) * gain + mean + offset).to(latents.dtype)
