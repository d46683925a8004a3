"""Learn Motion Embedding: the reference clip's motion, with the video model frozen."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os

import torch

import comfy.model_management
import folder_paths
from comfy_api.v0_0_2 import io, ui

from ..motion_core.augment import AugmentSettings
from ..motion_core.embedding import MotionEmbedding, base_metadata, init_motion_text, init_temporal
from ..motion_core.fileio import save_numbered
from ..motion_core.library import conform_clip
from ..motion_core.library import resume_from as resume_from_embedding
from ..motion_core.layers import LAYER_PRESETS, PRESET_WIDEST, embedding_cost, select_layers
from ..motion_core.objectives import LOSSES, LOSS_EDM
from ..motion_core.plot import loss_plot
from ..motion_core.resample import downscale_frames
from ..motion_core.training import TrainingInterrupted, TrainSettings
from .conditioning import reference_conditioning
from .common import (CATEGORY, FOLDER_NAME, LOSS_EVENT, NODE_PREFIX, MotionEmbeddingSocket, ReferenceClipsSocket,
                     send_event)
from .hooks import MODEL_FAMILY_ANIMATEDIFF, MODEL_FAMILY_WAN, require_family
from .host_training import train_ad_in_host, train_in_host, train_wan_in_host
from .learn_animatediff import prepare_animatediff
from .learn_wan import NOISE_RANGES, WHOLE_RANGE, prepare_wan
from .memory import check_learn_memory, learn_shape
from .hooks.svd import context_width, require_svd, temporal_layout

log = logging.getLogger(__name__)

REPRESENTATIONS = ("motion_text", "temporal", "both")
LEARN_SCALE_TOOLTIP = ("Learn on the reference downscaled by this factor (0.5: half the width and height, about 4x less "
                       "activation memory); sampling stays at the size you choose there. It costs motion: on the toy "
                       "world, 0.75 moved 67% of new targets like the reference and 0.5 33%, against 82% at 1.0 "
                       "(docs/quality.md). A last resort for memory: try fewer frames or the widest layers first. "
                       "On Wan 2.1 1.3B at 832x480x81 in bfloat16 the plan is 11.0 GiB at 1.0 (6.7 on an 8 GB card, "
                       "keeping the blocks' inputs and Adam's state in CPU memory) and 4.8 GiB at 0.5; Wan 2.2 5B at "
                       "1280x704x121 22.9 GiB at 1.0 (18.2 on a 24 GB card), 16.9 at 0.75 (docs/benchmarks.md).")


def _image_embeds(clip_vision, frames: torch.Tensor, width: int) -> torch.Tensor:
    """CLIP image embedding of every frame ``(f d)``; the width must match the model's."""
    embeds = clip_vision.encode_image(frames).image_embeds.float().cpu()
    if embeds.shape[-1] != width:
        raise ValueError(f"the CLIP vision model gives {embeds.shape[-1]}-wide image embeddings, the SVD model's "
                         f"cross-attention takes {width}: use the CLIP-H vision model SVD was trained with "
                         "(clip_vision_h / the one inside the SVD checkpoint)")
    return embeds


def _build_embedding(representation, frames, latents, image_embeds, tokens_per_frame, model, layer_preset,
                     explicit_layers, seed, width, height) -> MotionEmbedding:
    embedding = MotionEmbedding(metadata=base_metadata(frames.shape[0], width, height, 0))
    if representation in ("motion_text", "both"):
        generator = torch.Generator().manual_seed(seed)
        spatial, temporal = init_motion_text(frames.shape[0], tokens_per_frame, image_embeds, 0.1, generator,
                                             context_width(model))
        embedding.spatial_tokens, embedding.temporal_tokens = spatial, temporal
        embedding.metadata["tokens_per_frame"] = tokens_per_frame
    if representation in ("temporal", "both"):
        layout = temporal_layout(model, latents.shape[-2], latents.shape[-1])
        layers = select_layers(layout, layer_preset, explicit_layers)
        cost = embedding_cost(layers, frames.shape[0])
        log.info("Motion Embeddings on %d temporal layers (%s): %s parameters, %.1f MiB in float32 "
                 "(plus Adam state: about 3x that while learning)", len(layers), layer_preset,
                 f"{cost['parameters']:,}", cost["bytes_fp32"] / 2 ** 20)
        embedding.temporal_qk, embedding.value_embedding = init_temporal(layers, frames.shape[0])
        embedding.metadata["layers"] = layers
        embedding.metadata["layer_preset"] = layer_preset
    embedding.metadata["representation"] = representation
    embedding.metadata["init"] = "clip_image_embeds" if image_embeds is not None else "noise (no CLIP vision given)"
    return embedding


class LearnMotionEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "LearnMotionEmbedding",
            display_name="Learn Motion Embedding",
            category=CATEGORY,
            description="Learns the motion of the reference frames with the video model frozen: motion-text tokens "
                        "(Reenact Anything: N tokens per frame for the spatial cross-attention plus N for the "
                        "temporal one) and/or Motion Embeddings in the temporal self-attention (Motion Inversion). "
                        "On Wan 2.1 / 2.2: Motion Embeddings in the blocks' self-attention, learned by flow matching "
                        "with the model's shift, explained by the prompt given as positive. On AnimateDiff (the SD1.5 "
                        "MODEL from AnimateDiff-Evolved's Use Evolved Sampling): Motion Embeddings in the motion "
                        "model's temporal attention, learned by epsilon prediction on the schedule ADE set. "
                        "Takes minutes to hours on a GPU (1000 steps by default); shows progress and honours Cancel, "
                        "which saves what was learned so far to output/motion_embeddings/. Plans its memory before "
                        "the first step and refuses, naming settings that fit, when the plan exceeds the device.",
            inputs=[
                io.Model.Input("model", tooltip="The video model, frozen: SVD / SVD-XT (ImageOnlyCheckpointLoader), "
                                                "Wan 2.1 / 2.2 (UNETLoader), or AnimateDiff: the SD1.5 MODEL out of "
                                                "AnimateDiff-Evolved's Use Evolved Sampling with one motion model "
                                                "(needs ComfyUI-AnimateDiff-Evolved)."),
                io.Vae.Input("vae", tooltip="The model's VAE (SVD's; Wan's: wan_2.1_vae, wan2.2_vae for TI2V 5B; the SD1.5 "
                                            "checkpoint's for AnimateDiff); "
                                            "encodes the reference once before training."),
                io.Image.Input("reference_frames", tooltip="The reference clip, e.g. from Load Reference Video."),
                io.Combo.Input("representation", options=list(REPRESENTATIONS), default="motion_text",
                               tooltip="motion_text: per-frame cross-attention tokens; temporal: query-key and value "
                                       "embeddings in the temporal self-attention (use Debias, Apply Motion and "
                                       "Reference Noise, as motion_embeddings_svd.json and the Wan workflows do); both: learned jointly. "
                                       "On the SVD-like toy model (image embedding only, as SVD) motion_text moved "
                                       "73% of targets by nearest ideal, temporal 40-67%, both 60% "
                                       "(docs/quality_svd_like.md). On Wan the same three: motion_text puts the "
                                       "tokens in every block's cross-attention, beside the prompt's (beside the "
                                       "CLIP image tokens on Wan 2.1 I2V), and Apply Motion carries them; temporal "
                                       "uses the blocks' self-attention. On the toy Wan model "
                                       "(docs/quality_wan_toy.md) temporal moved the most (nearest ideal 13-20%, moving-points Motion Fidelity "
                                       "0.33-0.37 against 0.32 with the prompt alone), motion_text less than no motion "
                                       "(0.26, and it leaked the most appearance), both 0.27. On AnimateDiff only "
                                       "temporal (the motion model's temporal attention)."),
                io.Int.Input("tokens_per_frame", default=5, min=1, max=77,
                             tooltip="Motion-text tokens per frame (N). The paper uses 5. On Wan: per latent "
                                     "frame (81 video frames are 21 latent frames)."),
                io.Int.Input("steps", default=1000, min=1, max=100000,
                             tooltip="Optimisation steps (paper: 1000). The toy Wan model's rows used 400 at learning "
                                     "rate 0.05 (docs/quality_wan_toy.md); the Wan workflows keep the paper's."),
                io.Float.Input("learning_rate", default=1e-2, min=1e-6, max=1.0, step=1e-4,
                               tooltip="Adam learning rate (paper: 0.01). On the toy Wan model 0.05 for 400 steps "
                                       "moved more than 0.1 or 0.3 for 200 (a check on 4 clips, "
                                       "docs/quality_wan_toy.md)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seeds init noise, noise levels, noise and augmentation: same seed, same result."),
                io.Float.Input("noise_mean", default=2.8, min=-5.0, max=8.0, step=0.1,
                               tooltip="Mean of ln(sigma) for training noise levels (paper: 2.8, mostly high noise)."),
                io.Float.Input("noise_std", default=1.6, min=0.1, max=5.0, step=0.1,
                               tooltip="Standard deviation of ln(sigma) (paper: 1.6)."),
                io.Combo.Input("loss", options=list(LOSSES), default=LOSS_EDM,
                               tooltip="edm: SVD's objective. appearance_debiased: adds the same loss with a random "
                                       "anchor frame subtracted from all frames (helps temporal embeddings ignore looks; "
                                       "Motion Inversion's recipe, with which the toy's temporal rows were measured)."),
                io.Boolean.Input("augmentation", default=True,
                                 tooltip="Same random crop/scale and colour jitter on all frames of each step."),
                io.Boolean.Input("flip", default=False,
                                 tooltip="Random horizontal flips. Leave off for horizontal camera motion."),
                io.Int.Input("fps", default=6, min=1, max=60, tooltip="SVD's fps conditioning during learning."),
                io.Int.Input("motion_bucket_id", default=127, min=1, max=1023,
                             tooltip="SVD's motion-amount conditioning during learning."),
                io.Float.Input("augmentation_level", default=0.0, min=0.0, max=10.0, step=0.01,
                               tooltip="SVD's noise-augmentation conditioning during learning."),
                io.Combo.Input("layers", options=list(LAYER_PRESETS), default=PRESET_WIDEST,
                               tooltip="Temporal layers that get embeddings: widest (default: the 1280-channel, "
                                       "lowest-resolution levels, as Motion Inversion's code), all (16 on SVD), or "
                                       "explicit (list below). On the SVD-like toy model the lowest-resolution levels "
                                       "alone moved targets at least as well as every level (with difference: nearest "
                                       "ideal 67% both, dense flow 60% vs 57%, moving-points Motion Fidelity 0.54 "
                                       "vs 0.49; docs/quality_svd_like.md), and they cost less memory. spread: 4 "
                                       "layers evenly spread over the depth. On Wan every block is as wide, so widest "
                                       "means spread (blocks 0, 10, 19, 29 of 30; 0, 13, 26, 39 of 40); all = every "
                                       "block. Each block's value embedding at 832x480x81 on Wan 1.3B costs about "
                                       "0.75 GiB while learning (0.19 GiB at learn_scale 0.5; 1.3 / 2.5 GiB a block "
                                       "on 5B / 14B at their sizes); Learn plans the memory first, refuses what cannot "
                                       "fit and names what would. On the toy Wan model spread (4 of 6 blocks) moved as "
                                       "well as all (with difference and Reference Noise: nearest ideal 17% vs 13%, "
                                       "moving-points Motion Fidelity 0.36 vs 0.33; docs/quality_wan_toy.md), so the Wan "
                                       "workflows use spread. On AnimateDiff, "
                                       "widest = the motion model's 1280-channel temporal attentions (the lowest-"
                                       "resolution levels), all = every one (42 on mm_sd_v15_v2)."),
                io.String.Input("explicit_layers", default="", optional=True,
                                tooltip="For layers = explicit: comma-separated layer numbers, e.g. 0, 1, 14, 15 "
                                        "(SVD's temporal layers, or Wan's blocks, counted from 0)."),
                io.Boolean.Input("activation_checkpointing", default=True, optional=True,
                                 tooltip="Recompute each UNet block (each Wan block) in the backward pass instead "
                                         "of keeping its activations: about 8x less memory above the weights "
                                         "(1024x576x14 motion-text in float16: 10.6 GiB planned instead of 70) for "
                                         "about 1.15x the step time on SVD; on Wan 1.3x at 832x480x33, 1.4-1.6x at "
                                         "toy sizes (docs/benchmarks.md). On Wan, when the plan does not fit the card, "
                                         "the blocks' kept inputs wait in CPU memory (and, if still needed, "
                                         "Adam's state): slower, but it fits. Leave on."),
                io.Float.Input("learn_scale", default=1.0, min=0.5, max=1.0, step=0.05, optional=True,
                               tooltip=LEARN_SCALE_TOOLTIP),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="CLIP-H vision model: initialises the tokens from the frames (paper). "
                                            "Without it the tokens start as small noise."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="Wan and AnimateDiff (required there): the prompt the reference is "
                                              "explained with, from CLIP Text Encode with the model's text encoder "
                                              "(Wan's; the SD1.5 checkpoint's CLIP for AnimateDiff; for Wan I2V, the "
                                              "positive of WanImageToVideo made from the reference's first frame). "
                                              "SVD ignores it."),
                ReferenceClipsSocket.Input("more_references", optional=True,
                                           tooltip="More clips of the same motion (from Gather Reference Clips), e.g. "
                                                   "on other scenes: each step learns from one clip of them all, the "
                                                   "reference included, so the embedding keeps what they share (the "
                                                   "motion) more than any one clip's look: on the SVD-like toy model, "
                                                   "three clips on three scenes against one, same steps: Motion "
                                                   "Fidelity on moving points 0.60 vs 0.49, nearest ideal 77% vs 67%, "
                                                   "less appearance leaked (docs/quality.md). Each is conformed to the "
                                                   "reference's frame count (frames picked evenly) and size (scaled "
                                                   "and centre-cropped). On SVD each clip's first frame is its image "
                                                   "conditioning; on Wan and AnimateDiff the positive prompt serves "
                                                   "them all, so describe what they share. Not on Wan I2V (its image "
                                                   "conditioning is the reference's)."),
                MotionEmbeddingSocket.Input("resume_from", optional=True,
                                            tooltip="Go on learning from this embedding (Learn's output, a saved one "
                                                    "or the file a Cancel wrote in output/motion_embeddings/) instead "
                                                    "of from the start: same model, representation, layers and "
                                                    "tokens_per_frame, not debiased. Its frames and grid are resampled "
                                                    "to this run's; steps are the steps to add; the loss curve goes "
                                                    "on from where it stopped."),
                io.Combo.Input("noise_range", options=list(NOISE_RANGES), default=WHOLE_RANGE, optional=True,
                               tooltip="Wan only: the noise levels to learn on. whole range for every model but a "
                                       "Wan 2.2 A14B expert; for an expert, the share of the schedule it samples "
                                       "(high-noise expert: sigma from 0.875 up, 0.9 for I2V; low-noise expert: "
                                       "below), since the weights cannot tell the two experts apart. Learn one "
                                       "embedding on each expert and apply each to its own model."),
            ],
            outputs=[
                MotionEmbeddingSocket.Output(display_name="motion_embedding", tooltip="The learned motion."),
                io.Image.Output(display_name="loss_plot", tooltip="Loss per step and its running mean."),
                io.String.Output(display_name="loss_history", tooltip="Loss per step as a JSON list."),
            ],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, vae, reference_frames, representation, tokens_per_frame, steps, learning_rate, seed,
                noise_mean, noise_std, loss, augmentation, flip, fps, motion_bucket_id, augmentation_level,
                layers, explicit_layers="", clip_vision=None, activation_checkpointing=True,
                learn_scale=1.0, positive=None, noise_range=WHOLE_RANGE, more_references=None,
                resume_from=None) -> io.NodeOutput:
        prepared = prepare_learning(model, vae, reference_frames, representation, tokens_per_frame, steps,
                                    learning_rate, seed, noise_mean, noise_std, loss, augmentation, flip, fps,
                                    motion_bucket_id, augmentation_level, layers, explicit_layers, clip_vision,
                                    activation_checkpointing, learn_scale, positive, noise_range, more_references,
                                    resume_from)
        return cls.learn(prepared)

    @classmethod
    def learn(cls, prepared: "PreparedLearning") -> io.NodeOutput:
        settings, initial, latents, make_positive = (prepared.settings, prepared.initial, prepared.latents,
                                                     prepared.make_positive)
        steps, representation = settings.steps, prepared.representation
        unique_id = cls.hidden.unique_id if cls.hidden is not None else None

        resumed = prepared.initial.metadata.get("resumed") or {}
        offset, earlier = int(resumed.get("steps", 0)), list(resumed.get("loss_history", []))

        def on_step(step, total, value):
            if math.isfinite(value) and (step == 1 or step == total or step % max(1, total // 100) == 0):
                event = {"node": unique_id, "step": offset + step, "total": offset + total, "loss": value}
                if step == 1 and earlier:          # a resumed run's live curve goes on from the earlier one
                    event["previous"] = earlier[::max(1, len(earlier) // 100)]
                send_event(LOSS_EVENT, event)

        log.info("Learning %s motion: %d latent frames at %dx%d, %d steps on %s", representation,
                 latents.shape[2] if latents.ndim == 5 else latents.shape[0],
                 prepared.width, prepared.height, steps,
                 comfy.model_management.get_torch_device_name(prepared.model.load_device))
        more = prepared.more_latents
        if more:
            log.info("Learning from %d clips of the motion (one per step)", len(more) + 1)
        try:
            if prepared.family == MODEL_FAMILY_ANIMATEDIFF:
                result = train_ad_in_host(prepared.model, prepared.wan_positive, latents, initial, settings, on_step,
                                          checkpointing=prepared.checkpointing, more_latents=more)
            elif prepared.wan_positive is not None:
                result = train_wan_in_host(prepared.model, prepared.wan_positive, latents, initial, settings, on_step,
                                           checkpointing=prepared.checkpointing, offload=prepared.offload,
                                           more_latents=more)
            else:
                result = train_in_host(prepared.model, make_positive, latents, initial, settings, on_step,
                                       checkpointing=prepared.checkpointing, more_latents=more)
        except TrainingInterrupted as stop:
            folder = os.path.join(folder_paths.get_output_directory(), FOLDER_NAME)
            continue_history(stop.result.embedding, stop.result.loss_history)
            path = save_numbered(stop.result.embedding, folder, "interrupted") if stop.result.steps_done else None
            if path:
                log.warning("Learning was cancelled after %d of %d steps; the embedding learned so far was saved "
                            "to %s", stop.result.steps_done, steps, path)
            raise stop.cause
        embedding = result.embedding
        history = continue_history(embedding, result.loss_history)
        status = (f"{embedding.summary()}; {result.steps_done} steps, loss {history[0]:.4f} -> {history[-1]:.4f}"
                  if history else embedding.summary())
        if "resumed" in embedding.metadata:
            status += f" (resumed after {embedding.metadata['resumed']['steps']} steps)"
        if more:
            status += f"; learned from {len(more) + 1} clips"
        if result.skipped_steps:
            status += f"; {result.skipped_steps} step(s) skipped for non-finite values"
        if result.stopped_reason:
            status += f"; STOPPED EARLY: {result.stopped_reason}"
            log.warning("Learn Motion Embedding: %s", result.stopped_reason)
        status += f"\n{prepared.memory_account}"
        log.info(status)
        plot = loss_plot(history)
        return io.NodeOutput(embedding, plot, json.dumps([round(v, 6) for v in history]),
                             ui=ui.PreviewText(status))


def continue_history(embedding: MotionEmbedding, history: list[float]) -> list[float]:
    """The whole loss curve of a run that resumed an earlier one: the earlier curve, then ``history``; written into
    ``embedding``'s metadata. A run that did not resume keeps ``history``."""
    resumed = embedding.metadata.get("resumed")
    if not resumed:
        return history
    whole = [float(value) for value in resumed.get("loss_history", [])] + list(history)
    embedding.metadata["loss_history"] = [round(value, 6) for value in whole]
    embedding.metadata["training"]["steps_done"] = int(resumed.get("steps", 0)) + int(
        embedding.metadata["training"].get("steps_done", 0))
    embedding.metadata["resumed"] = {"steps": int(resumed.get("steps", 0))}    # its curve is in loss_history now
    return whole


@dataclasses.dataclass
class PreparedLearning:
    """Everything one learning run needs, checked and planned, before the first step."""
    model: object
    settings: TrainSettings
    initial: MotionEmbedding
    latents: torch.Tensor                 # SVD (f c h w), Wan (1 c t h w): the reference, raw latent space
    make_positive: object                 # SVD: embedding -> positive conditioning
    representation: str
    width: int
    height: int
    checkpointing: bool
    memory_account: str
    wan_positive: object = None           # Wan, AnimateDiff: the positive conditioning as given
    offload: bool = False                 # Wan: the checkpointed blocks' inputs kept in CPU memory
    family: str = "svd"
    more_latents: list = dataclasses.field(default_factory=list)   # more clips of the motion, laid out as latents


def prepare_learning(model, vae, reference_frames, representation, tokens_per_frame, steps, learning_rate, seed,
                     noise_mean, noise_std, loss, augmentation, flip, fps, motion_bucket_id, augmentation_level,
                     layers, explicit_layers="", clip_vision=None, activation_checkpointing=True,
                     learn_scale=1.0, positive=None, noise_range=WHOLE_RANGE, more_references=None,
                     resume_from=None) -> PreparedLearning:
    """:func:`prepare_one` for the reference, then the other clips (``more_references``) conformed and encoded alike,
    and the embedding to resume from (``resume_from``) checked and loaded into the run's layout."""
    prepared = prepare_one(model, vae, reference_frames, representation, tokens_per_frame, steps, learning_rate,
                           seed, noise_mean, noise_std, loss, augmentation, flip, fps, motion_bucket_id,
                           augmentation_level, layers, explicit_layers, clip_vision, activation_checkpointing,
                           learn_scale, positive, noise_range)
    if more_references:
        prepared.more_latents = encode_more_references(prepared, vae, more_references, positive)
    if resume_from is not None:
        prepared.initial = resume_embedding(prepared.initial, resume_from)
    return prepared


def resume_embedding(initial: MotionEmbedding, previous) -> MotionEmbedding:
    if not isinstance(previous, MotionEmbedding):
        raise ValueError(f"resume_from must be a MOTION_EMBEDDING (from Learn or Load Motion Embedding), got "
                         f"{type(previous).__name__}")
    resumed = resume_from_embedding(initial, previous)
    log.info("Resuming from an embedding learned for %d steps (final loss %s)", resumed.metadata["resumed"]["steps"],
             (resumed.metadata["resumed"]["loss_history"] or ["?"])[-1])
    return resumed


def encode_more_references(prepared: "PreparedLearning", vae, clips, positive) -> list[torch.Tensor]:
    """Each clip of ``clips`` at the reference's frames and size (as learned: after Wan's 1 + 4k frames and
    learn_scale), VAE-encoded; a ValueError that names the clip when one does not fit."""
    if not isinstance(clips, (list, tuple)) or not all(isinstance(clip, torch.Tensor) for clip in clips):
        raise ValueError("more_references must come from Gather Reference Clips (a list of IMAGE clips)")
    if prepared.family == MODEL_FAMILY_WAN and any(
            isinstance(extra, dict) and extra.get("concat_latent_image") is not None for _tokens, extra in positive):
        raise ValueError("more_references on Wan I2V: the positive's image conditioning is made from the reference's "
                         "first frame and would not fit the other clips. Learn on Wan T2V, or from one clip")
    latents = prepared.latents
    frames = int(prepared.initial.metadata.get("video_frames") or latents.shape[0])
    encoded = []
    for index, clip in enumerate(clips, start=2):
        conformed_clip = conform_clip(clip, frames, prepared.height, prepared.width)
        latent = vae.encode(conformed_clip[..., :3])
        if tuple(latent.shape) != tuple(latents.shape):
            raise ValueError(f"reference clip {index} encodes to latents of shape {tuple(latent.shape)}, the "
                             f"reference to {tuple(latents.shape)}; use the same VAE for all clips")
        encoded.append(latent)
    return encoded


def prepare_one(model, vae, reference_frames, representation, tokens_per_frame, steps, learning_rate, seed,
                noise_mean, noise_std, loss, augmentation, flip, fps, motion_bucket_id, augmentation_level,
                layers, explicit_layers="", clip_vision=None, activation_checkpointing=True,
                learn_scale=1.0, positive=None, noise_range=WHOLE_RANGE) -> PreparedLearning:
    """Validates the inputs, plans the memory (refusing what cannot fit), encodes the reference once.

    ``learn_scale < 1``: the reference is downscaled (area average, sides to multiples of 8)
    and learned at that size; the embedding records it, and sampling at any size resizes
    the value embeddings (motion-text tokens do not depend on the size).
    """
    node = "Learn Motion Embedding"
    family = require_family(model, node)
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation {representation!r} is not one of {REPRESENTATIONS}")
    if not 0 < learn_scale <= 1:
        raise ValueError(f"learn_scale must be in (0, 1], got {learn_scale}; 0.5 learns at half the width and height")
    if family.family == MODEL_FAMILY_WAN:
        settings, initial, latents, width, height, account, offload = prepare_wan(
            model, family, vae, reference_frames, representation, positive, tokens_per_frame, steps, learning_rate,
            seed, loss, augmentation, flip, layers, explicit_layers, learn_scale, activation_checkpointing, noise_range)
        account += f"; activation checkpointing {'on' if activation_checkpointing else 'off'}" + (
            ", the blocks' inputs kept in CPU memory" if offload else "") + (
            "; Adam's state kept in CPU memory" if settings.host_optimizer else "")
        return PreparedLearning(model, settings, initial, latents, None, representation, width, height,
                                activation_checkpointing, account, wan_positive=positive, offload=offload,
                                family=MODEL_FAMILY_WAN)
    if family.family == MODEL_FAMILY_ANIMATEDIFF:
        settings, initial, latents, width, height, account = prepare_animatediff(
            model, family, vae, reference_frames, representation, positive, steps, learning_rate, seed, loss,
            augmentation, flip, layers, explicit_layers, learn_scale, activation_checkpointing)
        return PreparedLearning(model, settings, initial, latents, None, representation, width, height,
                                activation_checkpointing, account, wan_positive=positive,
                                family=MODEL_FAMILY_ANIMATEDIFF)
    require_svd(model, node)
    if reference_frames.ndim != 4 or reference_frames.shape[0] < 2:
        raise ValueError(f"{node} needs at least 2 reference frames, got IMAGE of shape "
                         f"{tuple(reference_frames.shape)}; load more frames")
    reference_frames = downscale_frames(reference_frames, learn_scale, 8)
    height, width = int(reference_frames.shape[1]), int(reference_frames.shape[2])
    if height % 8 or width % 8:
        raise ValueError(f"reference frames are {width}x{height}; SVD needs sides that are multiples of 8 "
                         "(64 recommended): set width/height in Load Reference Video")
    settings = TrainSettings(steps=steps, learning_rate=learning_rate, seed=seed, log_sigma_mean=noise_mean,
                             log_sigma_std=noise_std, loss=loss,
                             augment=AugmentSettings(enabled=augmentation, flip=flip))
    token_width = context_width(model)
    ratio = getattr(vae, "downscale_ratio", 8)
    ratio = ratio if isinstance(ratio, int) and ratio > 0 else 8     # some video VAEs give a function
    shape = learn_shape(model, reference_frames.shape[0], height // ratio, width // ratio, representation,
                        activation_checkpointing, layers, explicit_layers, tokens_per_frame, token_width)
    _memory, memory_account = check_learn_memory(model, shape, layers, explicit_layers, tokens_per_frame,
                                                 token_width)
    frames = reference_frames[..., :3]
    image_embeds = _image_embeds(clip_vision, frames, token_width) if clip_vision is not None else None
    latents = vae.encode(frames)                     # (f c h w), raw latent space; the only encode
    if augmentation_level > 0:                        # SVD's conditioning image is encoded with pixel noise
        noisy_first = frames[:1] + augmentation_level * torch.randn_like(frames[:1])
        first_latent = vae.encode(noisy_first)
    else:
        first_latent = latents[:1]
    device = model.load_device
    initial = _build_embedding(representation, frames, latents, image_embeds, tokens_per_frame, model, layers,
                               explicit_layers, seed, width, height)
    initial.metadata["learn_scale"] = learn_scale
    initial.metadata["svd_conditioning"] = {"fps": fps, "motion_bucket_id": motion_bucket_id,
                                            "augmentation_level": augmentation_level}

    def make_positive(trainable):
        return reference_conditioning(first_latent.clone().to(device), trainable, fps, motion_bucket_id,
                                      augmentation_level, token_width, image_embeds)
    return PreparedLearning(model, settings, initial, latents, make_positive, representation, width, height,
                            activation_checkpointing, memory_account)
