"""Debias Value Embedding and Apply Motion (temporal Motion Embeddings on the MODEL)."""
from __future__ import annotations

import logging

from comfy_api.v0_0_2 import io, ui

from ..motion_core.debias import DEBIAS_MODES, DIFFERENCE, debias
from ..motion_core.library import parse_frame_strengths, scaled_over_frames
from .common import CATEGORY, FRAME_STRENGTHS_TOOLTIP, NODE_PREFIX, MotionEmbeddingSocket, check_percent_range
from .hooks import MODEL_FAMILY_ANIMATEDIFF, MODEL_FAMILY_WAN, check_family, require_family
from .hooks import animatediff as ad_hooks
from .hooks import wan as wan_hooks
from .hooks.svd import with_motion

log = logging.getLogger(__name__)


class DebiasValueEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "DebiasValueEmbedding",
            display_name="Debias Value Embedding",
            category=CATEGORY,
            description="Removes the reference's appearance from the value embeddings before applying them "
                        "(Motion Inversion eq. 5). difference: frame 1 kept, each later frame minus the previous "
                        "(default, the paper's); normalize: subtract the mean over frames; none; drop: remove the "
                        "value embeddings (camera-only motion).",
            inputs=[
                MotionEmbeddingSocket.Input("motion_embedding", tooltip="An embedding with temporal embeddings."),
                io.Combo.Input("mode", options=list(DEBIAS_MODES), default=DIFFERENCE,
                               tooltip="difference (eq. 5, the paper's and the default), normalize, none, or drop "
                                       "the value embeddings (camera motion). Measured on the SVD-like toy model "
                                       "(docs/quality_svd_like.md, Motion Inversion's recipe): difference moved more "
                                       "targets' objects in the reference's motion than none (nearest ideal 67% vs "
                                       "40%) and kept less of the reference's look (leakage -0.132 vs -0.090); none "
                                       "reads more by dense flow (77% vs 57%): the reference's flow carried over the "
                                       "whole frame. drop moved the toy's objects less (43%). On the toy Wan model "
                                       "(docs/quality_wan_toy.md) difference also leaked less than none (-0.156 vs "
                                       "-0.146 with Reference Noise) and moved fewer targets (nearest ideal 13% vs "
                                       "20%, moving-points Motion Fidelity 0.33 vs 0.37)."),
            ],
            outputs=[MotionEmbeddingSocket.Output(display_name="motion_embedding", tooltip="The debiased copy.")],
        )

    @classmethod
    def execute(cls, motion_embedding, mode) -> io.NodeOutput:
        out = debias(motion_embedding, mode)
        return io.NodeOutput(out, ui=ui.PreviewText(out.summary()))


class ApplyMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "ApplyMotion",
            display_name="Apply Motion",
            category=CATEGORY,
            description="Returns a copy of the model whose self-attention across frames adds the learned Motion "
                        "Embeddings (Motion Inversion eq. 3) while sampling: SVD's temporal attention, or the "
                        "self-attention of Wan 2.1 / 2.2's blocks, or the temporal attention of the AnimateDiff motion "
                        "model on an SD1.5 MODEL from AnimateDiff-Evolved's Use Evolved Sampling (its context "
                        "windows index the embedding by their frames). On Wan it also routes learned per-frame motion "
                        "tokens (motion_text / both) into each frame's cross-attention, for the positive prompt only (the "
                        "first conditioning a sampler batches: KSampler's or CFGGuider's positive; not DualCFGGuider "
                        "or SAG). "
                        "Resizes value embeddings to the sampling resolution and resamples them to its frame count. "
                        "The original MODEL is untouched.",
            inputs=[
                io.Model.Input("model", tooltip="The model to sample with: SVD / SVD-XT, the Wan model the "
                                                "embedding was learned on, or for AnimateDiff the MODEL out of "
                                                "AnimateDiff-Evolved's Use Evolved Sampling (with the motion model "
                                                "it was learned with)."),
                MotionEmbeddingSocket.Input("motion_embedding", tooltip="Learned with representation temporal or both "
                                                                       "(debiased, usually); on Wan also motion_text."),
                io.Float.Input("strength", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Scale of the Motion Embeddings; 0 = no effect. Wan's motion tokens are not "
                                       "scaled: they act whenever strength is above 0."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Sampling progress at which the motion starts acting (0 = first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Sampling progress after which it stops acting (1 = last step)."),
                io.Int.Input("frames", default=0, min=0, max=256,
                             tooltip="Frames of the video to make; 0 = the embedding's frame count. On Wan and "
                                     "AnimateDiff the embedding follows the sampled length by itself (on Wan 81 "
                                     "video frames are 21 latent frames); a value here resamples it to that many "
                                     "video frames."),
                io.String.Input("frame_strengths", default="", optional=True,
                                tooltip=FRAME_STRENGTHS_TOOLTIP + " It scales the Motion Embeddings frame by frame; "
                                        "on Wan, a frame's motion tokens are mixed in by it (0: the frame's "
                                        "cross-attention as without tokens)."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The model with the motion applied.")],
        )

    @classmethod
    def validate_inputs(cls, start_percent, end_percent, frame_strengths=None):
        try:
            parse_frame_strengths(frame_strengths or "")
        except ValueError as error:
            return str(error)
        return check_percent_range(start_percent, end_percent)

    @classmethod
    def execute(cls, model, motion_embedding, strength, start_percent, end_percent, frames,
                frame_strengths="") -> io.NodeOutput:
        family = require_family(model, "Apply Motion")
        check_family(motion_embedding, family)
        on_wan = family.family == MODEL_FAMILY_WAN
        if not motion_embedding.has_temporal and not (on_wan and motion_embedding.has_motion_text):
            raise ValueError("this motion embedding has no temporal Motion Embeddings (learned with representation "
                             "motion_text); on SVD use Inflate SVD Conditioning for it, or learn with temporal or both")
        strengths = parse_frame_strengths(frame_strengths or "")
        sampling = model.get_model_object("model_sampling")
        sigma_start = sampling.percent_to_sigma(start_percent)
        sigma_end = sampling.percent_to_sigma(end_percent)
        if family.family == MODEL_FAMILY_ANIMATEDIFF:
            embedding = scaled_over_frames(motion_embedding.resampled(frames) if frames else motion_embedding,
                                           strengths)
            patched, _motion = ad_hooks.with_ad_motion(model, embedding, strength, sigma_start, sigma_end)
        elif on_wan:
            wan_hooks.check_compatible(motion_embedding, model)
            embedding = motion_embedding.resampled(wan_hooks.latent_frames(frames)) if frames else motion_embedding
            embedding = scaled_over_frames(embedding, strengths)
            patched, _motion = wan_hooks.with_wan_motion(model, embedding, strength, sigma_start, sigma_end)
        else:
            embedding = scaled_over_frames(motion_embedding.resampled(frames) if frames else motion_embedding,
                                           strengths)
            patched, _patch = with_motion(model, embedding, strength, sigma_start, sigma_end)
        return io.NodeOutput(patched)
