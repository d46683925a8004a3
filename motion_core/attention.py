"""The attention arithmetic of Motion Embeddings (Motion Inversion, eq. 3).

For one temporal self-attention layer with input features ``x`` (one row per spatial
position, frames as the sequence):

    TA(x) = softmax(Wq(x + m_qk) (Wk(x + m_qk))^T / sqrt(d_k)) Wv(x + m_v)

``m_qk`` ``(1 f c)`` is shared by every spatial position (no appearance), ``m_v``
``((h w) f c)`` has one entry per position. Hosts only need :func:`motion_inputs`: it
returns what goes into the Q/K and V projections, which is exactly what ComfyUI's
``attn1_patch`` and a diffusers attention processor can replace.
"""
from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange, repeat


def motion_inputs(features: torch.Tensor, temporal_qk: torch.Tensor, value_embedding: Optional[torch.Tensor],
                  strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of the Q/K and V projections with the Motion Embeddings added.

    ``features`` ``((b s) f c)`` with ``s = h*w`` positions, position-major inside each
    batch item (ComfyUI's and diffusers' temporal layout); ``temporal_qk`` ``(1 f c)``;
    ``value_embedding`` ``(s f c)`` or None (camera-only motion / dropped values).
    Returns ``(qk_input ((b s) f c), value_input ((b s) f c))`` in the dtype of ``features``.
    """
    qk = temporal_qk.to(features)
    qk_input = features + (qk if strength == 1.0 else qk * strength)
    if value_embedding is None:
        return qk_input, features
    positions = value_embedding.shape[0]
    if features.shape[0] % positions:
        raise ValueError(f"features have {features.shape[0]} rows, not a multiple of the value embedding's "
                         f"{positions} positions; resize the embedding to this latent size first")
    batch = features.shape[0] // positions
    value = value_embedding.to(features)
    value = value if strength == 1.0 else value * strength
    value_input = rearrange(rearrange(features, "(b s) f c -> b s f c", b=batch) + value, "b s f c -> (b s) f c")
    return qk_input, value_input


def temporal_self_attention(features: torch.Tensor, to_q: torch.nn.Module, to_k: torch.nn.Module,
                            to_v: torch.nn.Module, heads: int, temporal_qk: Optional[torch.Tensor] = None,
                            value_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. 3 written out (before the output projection), for tests and reference.

    ``features`` ``((b s) f c)`` -> ``((b s) f c')`` with ``c'`` the projection width.
    """
    if temporal_qk is None:
        qk_input, value_input = features, features
    else:
        qk_input, value_input = motion_inputs(features, temporal_qk, value_embedding)
    q = rearrange(to_q(qk_input), "n f (h d) -> n h f d", h=heads)
    k = rearrange(to_k(qk_input), "n f (h d) -> n h f d", h=heads)
    v = rearrange(to_v(value_input), "n f (h d) -> n h f d", h=heads)
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return rearrange(weights @ v, "n h f d -> n f (h d)")


def _video_span(tokens: torch.Tensor, frames: int, positions: int, first_token: int) -> slice:
    video = frames * positions
    if tokens.shape[1] < first_token + video:
        raise ValueError(f"the attention sees {tokens.shape[1]} tokens, fewer than the {first_token} + "
                         f"{frames} frames x {positions} positions the motion embedding expects")
    return slice(first_token, first_token + video)


def sequence_qk_input(tokens: torch.Tensor, temporal_qk: torch.Tensor, frames: int, positions: int,
                      first_token: int = 0, strength: float = 1.0) -> torch.Tensor:
    """The Q/K input ``(b n c)`` of eq. 3 on a DiT's sequence: ``temporal_qk`` ``(1 f c)`` added to every
    token of its frame (broadcast, never expanded to the tokens' size); see :func:`sequence_motion_inputs`."""
    if temporal_qk.shape[1] != frames:
        raise ValueError(f"the query-key embedding has {temporal_qk.shape[1]} frames, the video has {frames}: "
                         "resample the embedding to the run's frames first")
    span = _video_span(tokens, frames, positions, first_token)
    qk = temporal_qk.to(tokens)
    qk = qk if strength == 1.0 else qk * strength
    video = rearrange(tokens[:, span], "b (f s) c -> b f s c", f=frames)
    qk_input = tokens.clone()
    qk_input[:, span] = rearrange(video + qk[:, :, None], "b f s c -> b (f s) c")
    return qk_input


def sequence_value_input(tokens: torch.Tensor, value_embedding: torch.Tensor, frames: int, positions: int,
                         first_token: int = 0, strength: float = 1.0) -> torch.Tensor:
    """The V input ``(b n c)`` of eq. 3 on a DiT's sequence: ``value_embedding`` ``(s f c)`` added to its
    frame's and position's token; see :func:`sequence_motion_inputs`."""
    if value_embedding.shape[0] != positions or value_embedding.shape[1] != frames:
        raise ValueError(f"the value embedding is {tuple(value_embedding.shape)}, the run has {positions} positions "
                         f"x {frames} frames: resize it to this latent size first")
    span = _video_span(tokens, frames, positions, first_token)
    value = rearrange(value_embedding.to(tokens), "s f c -> (f s) c")[None]
    value_input = tokens.clone()
    value_input[:, span] = tokens[:, span] + (value if strength == 1.0 else value * strength)
    return value_input


def sequence_motion_inputs(tokens: torch.Tensor, temporal_qk: torch.Tensor, value_embedding: Optional[torch.Tensor],
                           frames: int, positions: int, first_token: int = 0,
                           strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3's Q/K and V inputs for a video DiT, whose self-attention sees every frame at once.

    ``tokens`` ``(b n c)``: the self-attention input, frames' tokens frame-major from
    ``first_token`` on (``(f s)`` with ``s`` positions a frame, e.g. Wan's patchified grid);
    tokens before ``first_token`` or after the video's (reference or concatenated tokens)
    are left as they are. ``temporal_qk`` ``(1 f c)`` goes to every token of its frame;
    ``value_embedding`` ``(s f c)`` to its frame and position, or None. Returns
    ``(qk_input (b n c), value_input (b n c))`` in the dtype of ``tokens``.
    """
    qk_input = sequence_qk_input(tokens, temporal_qk, frames, positions, first_token, strength)
    if value_embedding is None:
        return qk_input, tokens
    return qk_input, sequence_value_input(tokens, value_embedding, frames, positions, first_token, strength)


def per_frame_token_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                              token_keys: torch.Tensor, token_values: torch.Tensor, frames: int, positions: int,
                              attention, first_token: int = 0) -> torch.Tensor:
    """Cross-attention in which each frame's queries also see that frame's motion tokens (one softmax).

    Reenact Anything's per-frame motion-text tokens on a DiT, whose cross-attention sees all
    frames' tokens at once. ``queries`` ``(b n c)``: projected (and normed) video queries,
    frame-major from ``first_token`` (``(f s)``, ``s = positions``); ``keys`` / ``values``
    ``(b l c)``: the prompt's, projected; ``token_keys`` / ``token_values`` ``(f m c)``: the
    ``m`` tokens of each frame, projected by the same layers. Frame ``f``'s queries attend
    to ``[keys; token_keys[f]]``; tokens outside the video's span (a reference image's)
    attend to the prompt alone. ``attention(q (B n c), k (B l c), v (B l c)) -> (B n c)``
    is the host's multi-head attention. Returns ``(b n c)``.
    """
    if token_keys.shape[0] != frames or token_values.shape[0] != frames:
        raise ValueError(f"the motion tokens have {token_keys.shape[0]} frames, the video has {frames}: "
                         "resample them to the run's frames first")
    span = _video_span(queries, frames, positions, first_token)
    batch = queries.shape[0]
    frame_queries = rearrange(queries[:, span], "b (f s) c -> (b f) s c", f=frames)
    frame_keys = torch.cat([repeat(keys, "b l c -> (b f) l c", f=frames),
                            repeat(token_keys.to(keys), "f m c -> (b f) m c", b=batch)], dim=1)
    frame_values = torch.cat([repeat(values, "b l c -> (b f) l c", f=frames),
                              repeat(token_values.to(values), "f m c -> (b f) m c", b=batch)], dim=1)
    video = rearrange(attention(frame_queries, frame_keys, frame_values), "(b f) s c -> b (f s) c", b=batch)
    parts = []
    if span.start > 0:
        parts.append(attention(queries[:, :span.start], keys, values))
    parts.append(video)
    if span.stop < queries.shape[1]:
        parts.append(attention(queries[:, span.stop:], keys, values))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
