"""The one container for every motion representation the pack learns.

Shapes (einops notation; F frames, N tokens per frame, d token width, C channels of one
temporal attention layer, h w the latent size at that layer's level):

- ``spatial_tokens``  ``(f n d)``: motion-text tokens, row f feeds frame f's spatial
  cross-attention (Reenact Anything, sec. 3.3).
- ``temporal_tokens`` ``(n d)``: motion-text tokens of the temporal cross-attention.
- ``temporal_qk[layer]`` ``(1 f c)``: query-key Motion Embedding (Motion Inversion, eq. 3).
- ``value_embedding[layer]`` ``((h w) f c)``: value Motion Embedding.

Layers are named ``"temporal_attn.NN"``, the NN-th temporal self-attention in forward
order (down, mid, up), which is the same order in ComfyUI's ``UNetModel`` and in
diffusers' ``UNetSpatioTemporalConditionModel``, so one file drives both.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Optional

import torch

from . import __version__
from .resample import resample_frames, resize_value_embedding

FORMAT_VERSION = 1
TOKEN_WIDTH = 1024  # SVD's CLIP-H image-embedding width
MODEL_FAMILY_SVD = "svd"


def layer_name(index: int) -> str:
    """Name of the index-th temporal self-attention layer (forward order)."""
    return f"temporal_attn.{index:02d}"


def dit_layer_name(index: int) -> str:
    """Name of the index-th block of a video DiT (Wan), whose self-attention carries the embeddings."""
    return f"block.{index:02d}"


@dataclasses.dataclass
class MotionEmbedding:
    """Learned motion, in one or both representations, plus what it was learned on.

    ``metadata`` is JSON-serialisable: ``format_version``, ``model_family``, ``frames``,
    ``tokens_per_frame``, ``width``, ``height``, ``training`` (settings), ``loss_history``,
    ``pack_version``, ``debias`` and, for temporal embeddings, ``layers`` (per layer:
    ``channels``, ``height``, ``width`` of its latent grid).
    """

    spatial_tokens: Optional[torch.Tensor] = None
    temporal_tokens: Optional[torch.Tensor] = None
    temporal_qk: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    value_embedding: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    metadata: dict = dataclasses.field(default_factory=dict)

    # ---- what is inside -------------------------------------------------------------
    @property
    def has_motion_text(self) -> bool:
        return self.spatial_tokens is not None

    @property
    def has_temporal(self) -> bool:
        return bool(self.temporal_qk)

    @property
    def frames(self) -> int:
        if self.spatial_tokens is not None:
            return int(self.spatial_tokens.shape[0])
        for qk in self.temporal_qk.values():
            return int(qk.shape[1])
        return int(self.metadata.get("frames", 0))

    @property
    def tokens_per_frame(self) -> int:
        return 0 if self.spatial_tokens is None else int(self.spatial_tokens.shape[1])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor view of every learned tensor (the file layout)."""
        out: dict[str, torch.Tensor] = {}
        if self.spatial_tokens is not None:
            out["spatial_tokens"] = self.spatial_tokens
        if self.temporal_tokens is not None:
            out["temporal_tokens"] = self.temporal_tokens
        for name, qk in self.temporal_qk.items():
            out[f"temporal_qk.{name}"] = qk
        for name, v in self.value_embedding.items():
            out[f"value_embedding.{name}"] = v
        return out

    def parameters(self) -> list[torch.Tensor]:
        return list(self.tensors().values())

    def num_parameters(self) -> int:
        return sum(t.numel() for t in self.tensors().values())

    # ---- copies ----------------------------------------------------------------------
    def _map(self, fn) -> "MotionEmbedding":
        return MotionEmbedding(
            spatial_tokens=None if self.spatial_tokens is None else fn(self.spatial_tokens),
            temporal_tokens=None if self.temporal_tokens is None else fn(self.temporal_tokens),
            temporal_qk={k: fn(v) for k, v in self.temporal_qk.items()},
            value_embedding={k: fn(v) for k, v in self.value_embedding.items()},
            metadata=copy.deepcopy(self.metadata),
        )

    def detached_copy(self, device: torch.device | str | None = "cpu") -> "MotionEmbedding":
        """A float32 copy that shares no storage and needs no grad (a snapshot)."""
        return self._map(lambda t: t.detach().to(device=device or t.device, dtype=torch.float32, copy=True))

    def trainable_copy(self, device: torch.device | str) -> "MotionEmbedding":
        """float32 leaf tensors on ``device`` with ``requires_grad`` set, for an optimiser."""
        return self._map(lambda t: t.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True))

    def load_values_(self, other: "MotionEmbedding") -> None:
        """Copy ``other``'s values into this embedding's tensors in place (same layout)."""
        mine, theirs = self.tensors(), other.tensors()
        if mine.keys() != theirs.keys():
            raise ValueError(f"embedding layouts differ: {sorted(mine)} vs {sorted(theirs)}")
        with torch.no_grad():
            for name, t in mine.items():
                t.copy_(theirs[name].to(t))

    def all_finite(self) -> bool:
        return all(bool(torch.isfinite(t.detach()).all()) for t in self.tensors().values())

    # ---- adapting to another run ---------------------------------------------------------
    def resampled(self, frames: int) -> "MotionEmbedding":
        """The same motion for another frame count (linear over the frame axis).

        ``spatial_tokens`` ``(f n d) -> (f' n d)``; ``temporal_qk`` ``(1 f c) -> (1 f' c)``;
        ``value_embedding`` ``(s f c) -> (s f' c)``. Temporal tokens have no frame axis.
        """
        if frames == self.frames:
            return self
        out = self._map(lambda t: t)
        if out.spatial_tokens is not None:
            out.spatial_tokens = resample_frames(self.spatial_tokens, frames, dim=0)
        out.temporal_qk = {k: resample_frames(v, frames, dim=1) for k, v in self.temporal_qk.items()}
        out.value_embedding = {k: resample_frames(v, frames, dim=1) for k, v in self.value_embedding.items()}
        out.metadata["resampled_from_frames"] = self.frames
        out.metadata["frames"] = frames
        return out

    def value_embedding_at(self, name: str, height: int, width: int) -> torch.Tensor:
        """The value embedding of ``name`` on an ``height x width`` latent grid.

        ``((h w) f c) -> ((h' w') f c)``, bilinear over (h, w); identity when sizes match.
        """
        layer = self.metadata["layers"][name]
        return resize_value_embedding(self.value_embedding[name], (layer["height"], layer["width"]), (height, width))

    def summary(self) -> str:
        parts = []
        if self.has_motion_text:
            parts.append(f"motion-text {self.frames}x{self.tokens_per_frame} tokens + "
                         f"{0 if self.temporal_tokens is None else self.temporal_tokens.shape[0]} temporal")
        if self.has_temporal:
            parts.append(f"temporal embeddings on {len(self.temporal_qk)} layers"
                         f" ({len(self.value_embedding)} with values, debias={self.metadata.get('debias', 'none')})")
        size = f"{self.metadata.get('width', '?')}x{self.metadata.get('height', '?')}"
        return (f"MotionEmbedding[{self.metadata.get('model_family', '?')}, {self.frames} frames, {size}: "
                + "; ".join(parts or ["empty"]) + f"; {self.num_parameters():,} parameters]")


def base_metadata(frames: int, width: int, height: int, tokens_per_frame: int = 0,
                  model_family: str = MODEL_FAMILY_SVD) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "model_family": model_family,
        "frames": frames,
        "tokens_per_frame": tokens_per_frame,
        "width": width,
        "height": height,
        "training": {},
        "loss_history": [],
        "pack_version": __version__,
        "debias": "none",
        "layers": {},
    }


def init_motion_text(frames: int, tokens_per_frame: int, image_embeds: Optional[torch.Tensor] = None,
                     noise_std: float = 0.1, generator: Optional[torch.Generator] = None,
                     token_width: int = TOKEN_WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper init (Reenact Anything, sec. 3.4): tokens from per-frame image embeddings.

    ``image_embeds`` ``(f d)``: the CLIP image embedding of each reference frame. Spatial
    tokens ``(f n d)`` repeat frame f's embedding N times, temporal tokens ``(n d)`` repeat
    the mean over frames; both get Gaussian noise of std ``noise_std`` so the N tokens
    differ. Without ``image_embeds`` (no CLIP vision model given) every token is drawn
    from ``N(0, noise_std^2)`` around zero, which SVD treats as a weak, neutral prompt.
    Returns ``(spatial (f n d), temporal (n d))`` in float32 on the CPU.
    """
    if image_embeds is None:
        base_spatial = torch.zeros(frames, token_width)
    else:
        if image_embeds.ndim != 2 or image_embeds.shape[0] != frames:
            raise ValueError(f"image_embeds must be (frames={frames}, width); got {tuple(image_embeds.shape)}")
        base_spatial = image_embeds.detach().float().cpu()
        token_width = base_spatial.shape[1]
    base_temporal = base_spatial.mean(dim=0)
    spatial = base_spatial[:, None, :].repeat(1, tokens_per_frame, 1)
    temporal = base_temporal[None, :].repeat(tokens_per_frame, 1)
    spatial = spatial + noise_std * torch.randn(spatial.shape, generator=generator)
    temporal = temporal + noise_std * torch.randn(temporal.shape, generator=generator)
    return spatial, temporal


def init_temporal(layers: dict[str, dict], frames: int, with_values: bool = True
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Zero Motion Embeddings (Motion Inversion, sec. 3.2) for the given layers.

    ``layers[name] = {"channels": c, "height": h, "width": w}``. Returns
    ``temporal_qk[name]`` ``(1 f c)`` and ``value_embedding[name]`` ``((h w) f c)``.
    """
    temporal_qk = {n: torch.zeros(1, frames, L["channels"]) for n, L in layers.items()}
    values = {n: torch.zeros(L["height"] * L["width"], frames, L["channels"]) for n, L in layers.items()} if with_values else {}
    return temporal_qk, values
