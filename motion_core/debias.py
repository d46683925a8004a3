"""Debiasing the value embedding at inference (Motion Inversion, eq. 5 and sec. 4.3)."""
from __future__ import annotations

import logging

import torch

from .embedding import MotionEmbedding

log = logging.getLogger(__name__)

DIFFERENCE = "difference"
NORMALIZE = "normalize"
NONE = "none"
DROP = "drop"
DEBIAS_MODES = (DIFFERENCE, NORMALIZE, NONE, DROP)


def debias_value(value: torch.Tensor, mode: str) -> torch.Tensor:
    """Debias one value embedding ``(s f c) -> (s f c)`` over its frame axis.

    difference (eq. 5): frame 1 kept, frame j > 1 replaced by ``v[:, j] - v[:, j-1]``;
    normalize: the mean over frames subtracted; none: unchanged.
    """
    if mode == DIFFERENCE:
        out = value.clone()
        out[:, 1:] = value[:, 1:] - value[:, :-1]
        return out
    if mode == NORMALIZE:
        return value - value.mean(dim=1, keepdim=True)
    if mode == NONE:
        return value
    raise ValueError(f"debias mode {mode!r} is not one of {DEBIAS_MODES[:3]} (use drop_values for 'drop')")


def debias(embedding: MotionEmbedding, mode: str = DIFFERENCE) -> MotionEmbedding:
    """A debiased copy; ``metadata["debias"]`` records what was applied.

    ``drop`` removes the value embeddings (camera-only motion). Applying ``difference``
    twice is refused; an embedding without value embeddings is returned unchanged.
    """
    if mode not in DEBIAS_MODES:
        raise ValueError(f"debias mode {mode!r} is not one of {DEBIAS_MODES}")
    applied = embedding.metadata.get("debias", NONE)
    if not embedding.value_embedding:
        log.info("Debias Value Embedding: this embedding has no value embeddings (%s); nothing to do",
                 "dropped" if applied == DROP else "motion-text only or query-key only")
        return embedding
    if mode == DIFFERENCE and DIFFERENCE in applied.split("+"):
        raise ValueError("the value embedding was already debiased with 'difference'; applying it twice "
                         "differentiates the motion again and destroys it. Use the embedding as it is.")
    out = embedding.detached_copy(device=None)
    if mode == DROP:
        out.value_embedding = {}
    else:
        out.value_embedding = {k: debias_value(v, mode) for k, v in out.value_embedding.items()}
    if mode != NONE:
        out.metadata["debias"] = mode if applied == NONE else f"{applied}+{mode}"
    return out
