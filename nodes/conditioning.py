"""Inflate SVD Conditioning: per-frame motion-text tokens into SVD's conditioning."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
from comfy_api.v0_0_2 import io

from ..motion_core.embedding import MotionEmbedding
from ..motion_core.library import frame_weights, parse_frame_strengths
from .common import CATEGORY, FRAME_STRENGTHS_TOOLTIP, NODE_PREFIX, MotionEmbeddingSocket, check_percent_range

log = logging.getLogger(__name__)


NEGATIVE_ZEROS = "zeros (SVD)"
NEGATIVE_KEEP = "keep input negative"
NEGATIVE_MODES = (NEGATIVE_ZEROS, NEGATIVE_KEEP)


def inflate(positive: list, negative: list, embedding: MotionEmbedding, frames: int,
            negative_mode: str = NEGATIVE_ZEROS, frame_strengths: Sequence[float] = (),
            start_percent: float = 0.0, end_percent: float = 1.0) -> tuple[list, list]:
    """Replace SVD's single image token by the embedding's tokens.

    positive: ``[[tokens (f n d), {..., "time_conditioning": (1 n d)}]]`` (row f of the
    frame batch attends to ``tokens[f]``; the temporal cross-attention to the time tokens).
    negative, ``NEGATIVE_ZEROS``: zeros ``(1 n d)`` and zero ``time_conditioning`` of the
    same shape (SVD's unconditional tokens). ``NEGATIVE_KEEP``: the input negative's own
    tokens ``(1 k d)``, repeated to ``(1 n d)`` when k = 1 (attention over n copies of one
    token equals attention over that token), as both tokens and ``time_conditioning``, and
    its own options (its first-frame latent): guidance against a model with no motion
    tokens, e.g. the toy model's image token. Either way cond and uncond have equal shapes
    and batch in one forward.

    ``frame_strengths`` (spread evenly over the frames, ``w (f)``): frame f's tokens become
    ``w_f * tokens[f] + (1 - w_f) * t`` with ``t`` the positive's own image token (its mean
    token), so 0 is plain SVD for that frame. ``start_percent`` / ``end_percent``: the motion
    tokens act over that share of the sampling steps and the positive as it came over the
    rest (ComfyUI's conditioning timestep ranges, as ConditioningSetTimestepRange sets them).
    """
    if negative_mode not in NEGATIVE_MODES:
        raise ValueError(f"unknown negative mode {negative_mode!r}; choose one of {', '.join(NEGATIVE_MODES)}")
    if embedding.metadata.get("model_family", "svd") != "svd":
        raise ValueError(f"this motion embedding was learned on {embedding.metadata.get('model_family')}, not SVD: "
                         "on Wan, Apply Motion puts its motion tokens into the model; connect the embedding there")
    if not embedding.has_motion_text:
        raise ValueError("this motion embedding has no motion-text tokens (it was learned with representation="
                         f"{embedding.metadata.get('representation', 'temporal')!r}); use Apply Motion on the MODEL "
                         "instead, or learn with representation motion_text or both")
    resampled = embedding.resampled(frames)
    spatial = resampled.spatial_tokens.detach().float().cpu()
    tokens, width = spatial.shape[1], spatial.shape[2]
    temporal = resampled.temporal_tokens
    temporal = (spatial.mean(0) if temporal is None else temporal.detach().float().cpu())[None]
    new_positive = []
    for cond_tokens, options in positive:
        if cond_tokens.shape[-1] != width:
            raise ValueError(f"the positive conditioning has {cond_tokens.shape[-1]}-wide tokens, the motion "
                             f"embedding {width}-wide: connect the positive of SVD_img2vid_Conditioning")
        tokens_here = spatial.clone()
        if frame_strengths:
            weights = frame_weights(frame_strengths, frames)[:, None, None]                  # (f 1 1)
            own = cond_tokens.detach().float().cpu().reshape(-1, width).mean(0)             # (d)
            tokens_here = weights * tokens_here + (1 - weights) * own
        if start_percent <= 0.0 and end_percent >= 1.0:
            new_positive.append([tokens_here, dict(options, time_conditioning=temporal.clone())])
            continue
        new_positive.append([tokens_here, dict(options, time_conditioning=temporal.clone(),
                                               start_percent=start_percent, end_percent=end_percent)])
        for low, high in ((0.0, start_percent), (end_percent, 1.0)):     # the positive as it came, outside
            if high > low:
                new_positive.append([cond_tokens, dict(options, start_percent=low, end_percent=high)])
    new_negative = []
    for cond_tokens, options in negative:
        if negative_mode == NEGATIVE_ZEROS:
            kept = torch.zeros(1, tokens, width)
        else:
            kept = _negative_tokens(cond_tokens, tokens, width)
        new_negative.append([kept, dict(options, time_conditioning=kept.clone())])
    return new_positive, new_negative


def _negative_tokens(cond_tokens: torch.Tensor, tokens: int, width: int) -> torch.Tensor:
    """The input negative's tokens ``(1 k d)`` as ``(1 n d)`` (one token repeated, or n already)."""
    if cond_tokens.dim() != 3 or cond_tokens.shape[0] != 1 or cond_tokens.shape[-1] != width:
        raise ValueError(f"the negative conditioning's tokens have shape {tuple(cond_tokens.shape)}; keeping them needs "
                         f"(1, 1, {width}) or (1, {tokens}, {width}): connect the negative of the video conditioning "
                         f"node, or set negative_mode to {NEGATIVE_ZEROS!r}")
    if cond_tokens.shape[1] == tokens:
        return cond_tokens.detach().float().cpu().clone()
    if cond_tokens.shape[1] != 1:
        raise ValueError(f"the negative conditioning has {cond_tokens.shape[1]} tokens and the motion embedding "
                         f"{tokens}; keeping them needs 1 or {tokens}, or set negative_mode to {NEGATIVE_ZEROS!r}")
    return cond_tokens.detach().float().cpu().expand(1, tokens, width).clone()


def reference_conditioning(first_latent: torch.Tensor, embedding: Optional[MotionEmbedding], fps: int,
                           motion_bucket_id: int, augmentation_level: float, width: int,
                           image_embeds: Optional[torch.Tensor] = None) -> list:
    """SVD positive for learning (and inverting) on the reference.

    ``first_latent`` ``(1 c h w)``: the reference's first frame, raw latent space. With
    motion-text tokens, the embedding's own tensors go in (so gradients reach them);
    otherwise SVD's usual single image token ``(1 1 d)`` (zeros without CLIP vision).
    """
    extra = {"motion_bucket_id": motion_bucket_id, "fps": fps, "augmentation_level": augmentation_level,
             "concat_latent_image": first_latent}
    if embedding is not None and embedding.has_motion_text:
        return [[embedding.spatial_tokens, dict(extra, time_conditioning=embedding.temporal_tokens[None])]]
    token = torch.zeros(1, 1, width) if image_embeds is None else image_embeds[:1, None, :]
    return [[token.to(first_latent.device), extra]]


class InflateSVDConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "InflateSVDConditioning",
            display_name="Inflate SVD Conditioning",
            category=CATEGORY,
            description="Puts a learned motion-text embedding into SVD's conditioning: the target image still "
                        "comes from SVD_img2vid_Conditioning (its latent), the motion from the learned per-frame "
                        "tokens. Resamples the tokens when the video has another frame count than the reference.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="positive of SVD_img2vid_Conditioning (the target image)."),
                io.Conditioning.Input("negative", tooltip="negative of SVD_img2vid_Conditioning."),
                MotionEmbeddingSocket.Input("motion_embedding", tooltip="From Learn or Load Motion Embedding."),
                io.Int.Input("frames", default=0, min=0, max=256,
                             tooltip="Frames of the video to make; 0 = from the latent input, else the embedding's."),
                io.Latent.Input("latent", optional=True,
                                tooltip="The video latent to sample (its frame count is used when frames = 0)."),
                io.Combo.Input("negative_mode", options=list(NEGATIVE_MODES), default=NEGATIVE_ZEROS, optional=True,
                               tooltip="zeros (SVD): SVD's unconditional tokens, for SVD checkpoints. keep input "
                                       "negative: the negative's own tokens (repeated to the motion token count), so "
                                       "CFG pushes away from 'no motion': for models whose no-motion conditioning "
                                       "is not zeros, such as the toy model (Toy Video Conditioning's negative)."),
                io.String.Input("frame_strengths", default="", optional=True,
                                tooltip=FRAME_STRENGTHS_TOOLTIP + " Here 0 gives a frame the target image's own "
                                        "token (plain SVD) instead of the motion tokens."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="Sampling progress at which the motion tokens start acting (0 = first step); "
                                       "before it the positive works as it came."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, optional=True,
                               tooltip="Sampling progress after which the motion tokens stop acting (1 = last step)."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Per-frame motion tokens + the target image."),
                io.Conditioning.Output(display_name="negative",
                                       tooltip="Zero tokens or the input negative's, shaped like the positive's, for CFG."),
            ],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None):
        return check_percent_range(start_percent, end_percent)

    @classmethod
    def execute(cls, positive, negative, motion_embedding, frames, latent=None, negative_mode=NEGATIVE_ZEROS,
                frame_strengths="", start_percent=0.0, end_percent=1.0) -> io.NodeOutput:
        if frames == 0:
            frames = int(latent["samples"].shape[0]) if latent is not None else motion_embedding.frames
        if frames != motion_embedding.frames:
            log.info("Inflate SVD Conditioning: resampling motion tokens from %d to %d frames",
                     motion_embedding.frames, frames)
        return io.NodeOutput(*inflate(positive, negative, motion_embedding, frames, negative_mode,
                                      parse_frame_strengths(frame_strengths or ""), start_percent, end_percent))
