"""Working with learned motions as a library: blend several, schedule one over the frames, resume one.

Shapes as in :mod:`motion_core.embedding` (F frames, N tokens per frame, d token width,
C channels of a layer, h w its latent grid).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .embedding import MotionEmbedding
from .resample import resample_frames

MAX_FRAME_STRENGTHS = 1024


def _layer_widths(embedding: MotionEmbedding) -> dict[str, int]:
    return {name: int(qk.shape[-1]) for name, qk in embedding.temporal_qk.items()}


def mixing_problems(first: MotionEmbedding, other: MotionEmbedding) -> list[str]:
    """Why ``other`` cannot be mixed with (blended into, or resumed from as) ``first``; empty when it can.

    Frame counts and value grids may differ (they are resampled); the model family, the
    layers and their widths, what is learned (motion-text tokens, query-key, values), the
    token count and width, and the debias applied must match.
    """
    problems = []
    family, other_family = first.metadata.get("model_family"), other.metadata.get("model_family")
    if family != other_family:
        problems.append(f"model families differ ({family} vs {other_family})")
    widths, other_widths = _layer_widths(first), _layer_widths(other)
    if widths.keys() != other_widths.keys():
        problems.append(f"layers differ ({', '.join(sorted(widths)) or 'none'} vs "
                        f"{', '.join(sorted(other_widths)) or 'none'})")
    else:
        wrong = [f"{name}: {widths[name]} vs {other_widths[name]} channels"
                 for name in widths if widths[name] != other_widths[name]]
        if wrong:
            problems.append("layer widths differ (" + "; ".join(wrong) + "): learned on different models")
    if set(first.value_embedding) != set(other.value_embedding):
        problems.append(f"value embeddings differ (on {len(first.value_embedding)} vs {len(other.value_embedding)} "
                        "layers: one was debiased with drop?)")
    if first.metadata.get("debias", "none") != other.metadata.get("debias", "none"):
        problems.append(f"debias differs ({first.metadata.get('debias', 'none')} vs "
                        f"{other.metadata.get('debias', 'none')}): debias both the same way first")
    for field in ("spatial_tokens", "temporal_tokens"):
        mine, theirs = getattr(first, field), getattr(other, field)
        if (mine is None) != (theirs is None):
            problems.append(f"one has {field.replace('_', ' ')} and the other not")
        elif mine is not None and mine.shape[-2:] != theirs.shape[-2:]:
            problems.append(f"{field.replace('_', ' ')} differ in count or width "
                            f"({tuple(mine.shape[-2:])} vs {tuple(theirs.shape[-2:])})")
    return problems


def conformed(embedding: MotionEmbedding, like: MotionEmbedding) -> MotionEmbedding:
    """``embedding`` at ``like``'s frame count and value grids (linear over frames, bilinear over the grid)."""
    out = embedding.resampled(like.frames) if like.frames and embedding.frames != like.frames else \
        embedding.detached_copy(device=None)
    for name in like.value_embedding:
        layer = like.metadata.get("layers", {}).get(name)
        if layer and out.value_embedding[name].shape[0] != like.value_embedding[name].shape[0]:
            out.value_embedding[name] = out.value_embedding_at(name, layer["height"], layer["width"])
    return out


def blend(embeddings: Sequence[MotionEmbedding], weights: Sequence[float]) -> MotionEmbedding:
    """The weighted sum of ``embeddings``: every learned tensor ``sum_i w_i t_i``.

    The first embedding sets the frame count and the value grids; the others are resampled
    to them. Weights that sum to 1 keep the strength of a single motion; Apply Motion's
    strength scales the result as a whole. Raises a ValueError naming each pair that cannot
    be mixed (:func:`mixing_problems`).
    """
    if len(embeddings) < 2:
        raise ValueError(f"blending needs at least two motion embeddings, got {len(embeddings)}")
    if len(weights) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(weights)} weights")
    if not all(math.isfinite(weight) for weight in weights):
        raise ValueError(f"blend weights must be finite numbers, got {list(weights)}")
    first = embeddings[0]
    if not first.tensors():
        raise ValueError("motion embedding 1 holds no learned tensors: nothing to blend")
    problems = [f"embedding {index + 1}: " + "; ".join(found)
                for index, other in enumerate(embeddings[1:], start=1)
                if (found := mixing_problems(first, other))]
    if problems:
        raise ValueError("these motion embeddings cannot be blended with embedding 1 (learned on another model, "
                         "layers or representation): " + " | ".join(problems))
    aligned = [first.detached_copy(device=None)] + [conformed(other, first) for other in embeddings[1:]]
    out = aligned[0]
    sums = {name: sum(float(weight) * one.tensors()[name].float() for weight, one in zip(weights, aligned))
            for name in out.tensors()}
    if out.spatial_tokens is not None:
        out.spatial_tokens = sums["spatial_tokens"]
    if out.temporal_tokens is not None:
        out.temporal_tokens = sums["temporal_tokens"]
    out.temporal_qk = {name: sums[f"temporal_qk.{name}"] for name in out.temporal_qk}
    out.value_embedding = {name: sums[f"value_embedding.{name}"] for name in out.value_embedding}
    out.metadata["blend"] = [{"weight": float(weight), "frames": one.frames,
                              "representation": one.metadata.get("representation"),
                              "final_loss": (one.metadata.get("loss_history") or [None])[-1],
                              "source": one.metadata.get("source") or one.metadata.get("blend_name")}
                             for weight, one in zip(weights, embeddings)]
    out.metadata["loss_history"] = []
    return out


def parse_frame_strengths(text: str) -> list[float]:
    """``"1"``, ``"0, 1"`` (a ramp), ``"1 1 0.5 0"``: strengths spread evenly over the frames; empty: ``[]``.

    Commas, spaces or semicolons separate the numbers; each must be finite and in [0, 2].
    """
    parts = [part for part in text.replace(";", ",").replace(",", " ").split() if part]
    if len(parts) > MAX_FRAME_STRENGTHS:
        raise ValueError(f"frame_strengths has {len(parts)} numbers; at most {MAX_FRAME_STRENGTHS}")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"frame_strengths: {part!r} is not a number; write numbers separated by commas, "
                             "e.g. 0, 1 (a ramp) or 1, 1, 0.5, 0") from None
        if not (math.isfinite(value) and 0.0 <= value <= 2.0):
            raise ValueError(f"frame_strengths: {value} is outside 0 to 2")
        values.append(value)
    return values


def frame_weights(strengths: Sequence[float], frames: int) -> torch.Tensor:
    """``strengths`` spread evenly over ``frames`` (linear between them, first and last kept) ``(f)``."""
    if not strengths:
        return torch.ones(frames)
    return resample_frames(torch.tensor([float(value) for value in strengths]), frames, dim=0)


def scaled_over_frames(embedding: MotionEmbedding, strengths: Sequence[float]) -> MotionEmbedding:
    """A copy whose Motion Embeddings are multiplied frame by frame by ``strengths`` spread over its frames.

    ``temporal_qk`` ``(1 f c)`` and ``value_embedding`` ``((h w) f c)`` times ``w (f)``. The
    motion-text tokens are left as they are (they are not scaled: a token scaled down still
    draws attention); the per-frame weights go to ``metadata["frame_strengths"]`` for the
    hooks that route tokens. With no strengths, ``embedding`` itself.
    """
    if not strengths:
        return embedding
    weights = frame_weights(strengths, embedding.frames)
    out = embedding.detached_copy(device=None)
    out.temporal_qk = {name: qk * weights[None, :, None] for name, qk in out.temporal_qk.items()}
    out.value_embedding = {name: value * weights[None, :, None] for name, value in out.value_embedding.items()}
    out.metadata["frame_strengths"] = [float(value) for value in strengths]
    return out


def resume_from(initial: MotionEmbedding, previous: MotionEmbedding) -> MotionEmbedding:
    """``initial`` (the layout a new learning run built) holding ``previous``'s values, to learn on from them.

    ``previous`` must have been learned on the same model with the same layers and
    representation, and must not be debiased (learning goes on from raw values); its
    frames and value grids are resampled to the new run's. The loss history so far is kept
    in ``metadata["resumed"]`` and continued by the run.
    """
    problems = mixing_problems(initial, previous)
    if previous.metadata.get("debias", "none") != "none":
        problems = [p for p in problems if not p.startswith("debias")]
        problems.append(f"it was debiased ({previous.metadata['debias']}): resume from the embedding Learn made "
                        "(or its saved / interrupted file), not from Debias Value Embedding's output")
    if "blend" in previous.metadata:
        problems.append("it is a blend of several motions; resume from one learned embedding")
    if problems:
        raise ValueError("resume_from does not fit this learning run: " + "; ".join(problems)
                         + ". Use the same model, representation, layers and tokens_per_frame it was learned with "
                           f"({previous.metadata.get('representation', '?')}, layers "
                           f"{previous.metadata.get('layer_preset', '?')}, tokens_per_frame "
                           f"{previous.metadata.get('tokens_per_frame', 0)}).")
    values = conformed(previous, initial)
    out = initial.detached_copy(device=None)
    out.load_values_(values)
    training = previous.metadata.get("training", {})
    # a run that resumed another records the steps and the loss curve of both (nodes.learn.continue_history)
    out.metadata["resumed"] = {"steps": int(training.get("steps_done", 0)),
                               "loss_history": list(previous.metadata.get("loss_history", []))}
    return out


def conform_clip(frames: torch.Tensor, count: int, height: int, width: int) -> torch.Tensor:
    """A reference clip at another frame count and size, to learn beside the first clip of the same motion.

    ``frames`` ``(f h w c)`` -> ``(count height width c)``: ``count`` frames picked evenly from
    first to last (nearest; no frame is blended into another, so a shorter or longer clip of
    the same motion plays slower or faster), each scaled to cover ``height x width``
    (bilinear, antialiased) and centre-cropped. Identity when everything already matches.
    """
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise ValueError(f"a reference clip must be an IMAGE batch (frames, height, width, channels); got shape "
                         f"{tuple(frames.shape)}")
    if count < 1 or height < 1 or width < 1:
        raise ValueError(f"cannot conform a clip to {count} frames of {width}x{height}")
    total = int(frames.shape[0])
    if total != count:
        picks = torch.linspace(0, total - 1, count).round().long()
        frames = frames.index_select(0, picks)
    source_height, source_width = int(frames.shape[1]), int(frames.shape[2])
    if (source_height, source_width) == (height, width):
        return frames
    scale = max(height / source_height, width / source_width)
    scaled_height = max(height, round(source_height * scale))
    scaled_width = max(width, round(source_width * scale))
    grid = frames.movedim(-1, 1).float()                                  # (f c h w)
    grid = torch.nn.functional.interpolate(grid, size=(scaled_height, scaled_width), mode="bilinear",
                                           align_corners=False, antialias=True)
    top, left = (scaled_height - height) // 2, (scaled_width - width) // 2
    grid = grid[:, :, top:top + height, left:left + width]
    return grid.movedim(1, -1).clamp(0, 1).to(frames.dtype)
