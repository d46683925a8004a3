"""Frame-count and latent-size resampling of embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as nnf
from einops import rearrange


def resample_frames(tensor: torch.Tensor, frames: int, dim: int = 0) -> torch.Tensor:
    """Linear resampling over the frame axis ``dim`` to ``frames`` entries.

    The first and last frame are kept exactly (``align_corners``), so an embedding
    learned on 14 frames spreads the same motion over a 25-frame SVD-XT run. Identity
    when the count already matches. Works on any rank; float math, input dtype kept.
    """
    if frames < 1:
        raise ValueError(f"frame count must be >= 1, got {frames}")
    current = tensor.shape[dim]
    if current == frames:
        return tensor
    moved = tensor.movedim(dim, -1)                       # (... f)
    flat = moved.reshape(-1, 1, current).float()          # (b 1 f)
    if current == 1:
        resized = flat.expand(-1, -1, frames)
    else:
        resized = nnf.interpolate(flat, size=frames, mode="linear", align_corners=True)
    return resized.reshape(*moved.shape[:-1], frames).movedim(-1, dim).to(tensor.dtype)


def resize_value_embedding(value: torch.Tensor, size: tuple[int, int], new_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a value embedding over its latent grid.

    ``value`` ``((h w) f c)`` on grid ``size = (h, w)`` -> ``((h' w') f c)`` on ``new_size``.
    Identity when the sizes match.
    """
    height, width = size
    if value.shape[0] != height * width:
        raise ValueError(f"value embedding has {value.shape[0]} positions, grid {height}x{width} needs {height * width}")
    if tuple(new_size) == (height, width):
        return value
    frames = value.shape[1]
    grid = rearrange(value.float(), "(h w) f c -> f c h w", h=height, w=width)
    grid = nnf.interpolate(grid, size=tuple(new_size), mode="bilinear", align_corners=False)
    return rearrange(grid, "f c h w -> (h w) f c", f=frames).to(value.dtype)


def downscale_frames(frames: torch.Tensor, scale: float, multiple: int = 8) -> torch.Tensor:
    """Area-averaged downscale of an image batch ``(f h w c) -> (f h' w' c)``.

    ``h' = round(h * scale)`` to a multiple of ``multiple`` (at least one multiple), the same
    for the width; ``scale == 1`` returns ``frames`` itself. For learning a motion at a lower
    resolution than it is sampled at.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"the learning scale must be in (0, 1], got {scale}")
    if scale == 1:
        return frames
    height, width = (max(multiple, int(round(side * scale / multiple)) * multiple) for side in frames.shape[1:3])
    grid = rearrange(frames.float(), "f h w c -> f c h w")
    grid = nnf.interpolate(grid, size=(height, width), mode="area")
    return rearrange(grid, "f c h w -> f h w c").to(frames.dtype)
