"""Learning and transferring motion in the toy world, and scoring it (demo and benchmark).

Everything runs on the CPU through the diffusers adapter: learn an embedding from a
reference clip with the frozen toy model, animate new first frames with it (Euler on a
Karras schedule), and score the result against the reference with the metrics of
:mod:`motion_core.metrics`.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from .. import metrics
from ..augment import AugmentSettings
from ..debias import debias
from ..diffusers_svd import init_embedding, install_motion, learn_motion, temporal_layer_layout
from ..embedding import MotionEmbedding
from ..inversion import blend_noise, euler_inversion_step, inversion_sigmas
from ..layers import PRESET_ALL, select_layers
from ..objectives import LOSS_APPEARANCE_DEBIASED, LOSS_EDM
from ..resample import downscale_frames
from ..training import TrainSettings
from . import readings, toyclips
from .denseflow import classify_motion_dense
from .toyworld import SVD_LATENT_SCALE, ToyWorld


@dataclasses.dataclass
class Variant:
    """One way of learning motion (a row of the benchmark)."""
    name: str
    tokens_per_frame: int = 0          # motion-text tokens N (0: none)
    per_frame_tokens: bool = True      # F' = F + 1 (True) or F' = 1: one token set shared by all
    temporal: bool = False             # Motion Embeddings in the temporal self-attention
    values: bool = True                # with value embeddings
    debias: str = "none"               # value debias at inference ("drop": values dropped, camera motion)
    learn: bool = True                 # False: no motion input (the target's own image embedding)
    layers: str = "all"                # temporal layers: a preset of ``layers.select_layers`` or "lowest", the
    #                                    lowest-resolution levels (where SVD's widest, 1280-channel, ones sit; the
    #                                    toy models' levels are all 64 wide, so there "widest" is "all")
    reference_noise: float = 0.0       # > 0: sample from Reference Noise with this prior (Motion Inversion: 0.5)
    loss: str = LOSS_EDM               # the learning objective (Motion Inversion: appearance_debiased, as the
    #                                    shipped Motion Embeddings workflow)


def _mi(name: str, **changes) -> "Variant":
    """A row of Motion Inversion as its code runs: query-key + value Motion Embeddings on the
    widest temporal layers, learned with MotionDirector's appearance-debiased loss, sampled
    from Reference Noise (prior 0.5); ``changes`` override."""
    settings = dict(temporal=True, layers="widest", loss=LOSS_APPEARANCE_DEBIASED, reference_noise=0.5)
    return Variant(name, **{**settings, **changes})


VARIANTS = {
    "no_motion": Variant("no motion input (target's own embedding)", learn=False),
    "text_F1_N1": Variant("motion-text F'=1, N=1", 1, per_frame_tokens=False),
    "text_F1_N15": Variant("motion-text F'=1, N=15", 15, per_frame_tokens=False),
    "text_FF_N1": Variant("motion-text F'=F+1, N=1", 1),
    "text_FF_N5": Variant("motion-text F'=F+1, N=5 (default)", 5),
    "qk_only": Variant("temporal query-key only", temporal=True, values=False),
    "qkv_none": Variant("query-key + value, no debias", temporal=True),
    "qkv_difference": Variant("query-key + value, difference", temporal=True, debias="difference"),
    "qkv_normalize": Variant("query-key + value, normalize", temporal=True, debias="normalize"),
    "both": Variant("both representations", 5, temporal=True, debias="difference"),
    # Motion Inversion as its code runs (``_mi``), and the control: Reference Noise without an embedding
    "reference_noise": Variant("Reference Noise alone (prior 0.5, no embedding)", learn=False, reference_noise=0.5),
    "mi_difference": _mi("MI: query-key + value, difference, Reference Noise", debias="difference"),
    "mi_none": _mi("MI: query-key + value, no debias, Reference Noise"),
    "mi_difference_fresh": _mi("MI: query-key + value, difference, fresh noise", debias="difference",
                               reference_noise=0.0),
    "mi_none_fresh": _mi("MI: query-key + value, no debias, fresh noise", reference_noise=0.0),
    "mi_lowest_difference": _mi("MI: query-key + value on the lowest-resolution levels, difference, Reference Noise",
                                debias="difference", layers="lowest"),
    "mi_lowest_none": _mi("MI: query-key + value on the lowest-resolution levels, no debias, Reference Noise",
                          layers="lowest"),
    "mi_qk_only": _mi("MI: query-key only, Reference Noise", values=False),
    "mi_values_dropped": _mi("MI: values dropped (camera motion), Reference Noise", debias="drop"),
}


@dataclasses.dataclass
class ToyLearnSettings:
    steps: int = 150
    learning_rate: float = 2e-2
    log_sigma_mean: float = 1.0
    log_sigma_std: float = 1.2
    seed: int = 0
    augment_crop: float = 0.9       # the augmentation's smallest crop (fraction of each side; 1: no crop)
    augment_colour: float = 0.05    # its per-channel latent gain / offset jitter (0: none)
    # where the motion-text tokens start: "image", the reference frames' image embeddings (the
    # paper's start; the Learn node with CLIP vision connected); "zero", noise around zero (the
    # Learn node without CLIP vision). Zero on the toy world: its image embeddings lie far from
    # every motion token and the learning from there misses zooms and spins (docs/research_log.md)
    token_start: str = "zero"
    # learn on the reference downscaled by this factor (sampling stays at full size): Learn's
    # learn_scale, measured in docs/quality.md
    learn_scale: float = 1.0


TOKEN_STARTS = ("image", "zero")


def _tie_tokens(embedding: MotionEmbedding) -> None:
    """F' = 1: one token set for every frame and the temporal cross-attention (projection)."""
    with torch.no_grad():
        shared = torch.cat([embedding.spatial_tokens, embedding.temporal_tokens[None]]).mean(0)
        embedding.spatial_tokens.copy_(shared.expand_as(embedding.spatial_tokens))
        embedding.temporal_tokens.copy_(shared)


def learn_variant(world: ToyWorld, reference: torch.Tensor, variant: Variant, settings: ToyLearnSettings,
                  progress: Optional[Callable[[int, int, float], None]] = None,
                  more_references: Sequence[torch.Tensor] = ()) -> tuple[Optional[MotionEmbedding], float]:
    """Learn ``variant`` from ``reference`` ``(f h w c)`` (and ``more_references``, clips of the same motion and
    shape: each step learns from one); returns the embedding and seconds taken."""
    if not variant.learn:
        return None, 0.0
    if settings.token_start not in TOKEN_STARTS:
        raise ValueError(f"token_start must be one of {TOKEN_STARTS}; got {settings.token_start!r}")
    started = time.time()
    frames = reference.shape[0]
    image_embeds = world.image_embeds(reference)       # of the full-size frames, as CLIP sees a resized image anyway
    reference = downscale_frames(reference, settings.learn_scale)
    more_references = [downscale_frames(clip, settings.learn_scale) for clip in more_references]
    latent_h, latent_w = reference.shape[1] // 4, reference.shape[2] // 4
    embedding = init_embedding(world.unet, frames, latent_h, latent_w, tokens_per_frame=variant.tokens_per_frame,
                               temporal=variant.temporal, with_values=variant.values,
                               image_embeds=image_embeds if settings.token_start == "image" else None,
                               seed=settings.seed, vae_factor=4,
                               layers=variant_layers(world, variant, latent_h, latent_w)).trainable_copy("cpu")
    if variant.tokens_per_frame:
        embedding.metadata["init"] = "clip_image_embeds" if settings.token_start == "image" else "zero"
    if variant.tokens_per_frame and not variant.per_frame_tokens:
        _tie_tokens(embedding)

    def callback(step, total, loss):
        if variant.tokens_per_frame and not variant.per_frame_tokens:
            _tie_tokens(embedding)
        if progress is not None:
            progress(step, total, loss)

    train = TrainSettings(steps=settings.steps, learning_rate=settings.learning_rate, seed=settings.seed,
                          log_sigma_mean=settings.log_sigma_mean, log_sigma_std=settings.log_sigma_std, loss=variant.loss,
                          augment=AugmentSettings(min_crop_scale=settings.augment_crop,
                                                  color_jitter=settings.augment_colour))
    result = learn_motion(world.unet, lambda clip: world.encode(clip) * SVD_LATENT_SCALE, reference, embedding, train,
                          denoiser_kwargs={"image_embeds": image_embeds[:1]}, callback=callback,
                          more_frames=more_references,
                          image_embeds_per_clip=[image_embeds[:1]] + [world.image_embeds(clip)[:1]
                                                                      for clip in more_references]
                          if more_references else ())
    learned = result.embedding
    if variant.debias != "none" and learned.value_embedding:
        learned = debias(learned, variant.debias)
    return learned, time.time() - started


def variant_layers(world: ToyWorld, variant: Variant, latent_h: int, latent_w: int) -> Optional[dict[str, dict]]:
    """The temporal layers ``variant`` learns on (None: every one; also for motion text alone)."""
    if not variant.temporal or variant.layers == PRESET_ALL:
        return None
    layout = temporal_layer_layout(world.unet, latent_h, latent_w)
    if variant.layers == "lowest":
        lowest = min(layer["height"] * layer["width"] for layer in layout.values())
        return {name: layer for name, layer in layout.items() if layer["height"] * layer["width"] == lowest}
    return select_layers(layout, variant.layers)


@torch.no_grad()
def invert_reference(world: ToyWorld, reference: torch.Tensor, sigma_target: float,
                     embedding: Optional[MotionEmbedding] = None, steps: int = 8) -> torch.Tensor:
    """Reference Noise's inverted noise ``(f c h w)``, unit variance: ``reference`` ``(f h w c)``
    encoded and carried along the toy model's ODE (Euler, ``steps``, conditioned on its own
    first frame and image embedding, with ``embedding`` installed when given, as the Learn run
    was) from sigma 0.05 up to ``sigma_target``, as the Reference Noise node does."""
    from .toytrain import batched_denoise

    raw = world.encode(reference)                                           # (f c h w), raw
    x = (raw * SVD_LATENT_SCALE)[None]                                      # (1 f c h w)
    context = world.image_embeds(reference[:1])[:, None]                    # (1 1 d)
    sigmas = inversion_sigmas(sigma_target, steps).tolist()
    install = install_motion(world.unet, embedding, raw.shape[-2], raw.shape[-1], frames=raw.shape[0]) \
        if embedding is not None else None
    try:
        for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:]):
            denoised = batched_denoise(world.unet, x, torch.full((1,), sigma), raw[:1], context)
            x = euler_inversion_step(x, denoised, sigma, next_sigma)
    finally:
        if install is not None:
            install.remove()
    return x[0] / sigmas[-1]


# Sampling defaults of the demo and the benchmark: guidance rising over the frames, as SVD is
# sampled; measured in docs/quality.md (constant 5 saturates colours until KLT finds no corners).
DEFAULT_GUIDANCE = 5.0
DEFAULT_MIN_GUIDANCE = 1.0


def add_sampling_options(parser) -> None:
    """The sampler's command-line options (``argparse`` parser), shared by the demo and the benchmarks."""
    parser.add_argument("--sample-steps", type=int, default=16, help="Euler steps per clip")
    parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                        help="classifier-free guidance of the last frame against the plain model (1: none)")
    parser.add_argument("--min-guidance", type=float, default=DEFAULT_MIN_GUIDANCE,
                        help="guidance of frame 0, rising linearly to --guidance at the last frame")


def karras_sigmas(steps: int, sigma_min: float = 0.02, sigma_max: float = 40.0, rho: float = 7.0) -> list[float]:
    ramp = torch.linspace(0, 1, steps)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return sigmas.tolist() + [0.0]


@torch.no_grad()
def animate_batch(world: ToyWorld, first_images: torch.Tensor, embedding: Optional[MotionEmbedding], frames: int,
                  steps: int = 16, seed: int = 0, context: Optional[torch.Tensor] = None,
                  guidance: float = 1.0, min_guidance: Optional[float] = None,
                  progress: Optional[Callable[[int, int], None]] = None,
                  reference_noise: Optional[torch.Tensor] = None, prior: float = 0.5) -> torch.Tensor:
    """Animate first images ``(n h w c)`` into ``(n f h w c)`` with the learned motion (or none).

    One UNet call per step for all clips (CPU throughput); the learned tensors are shared
    by every clip of the batch, exactly as they are by the cond rows of a CFG batch.
    ``context`` ``(n k d)``: cross-attention tokens to use without an embedding (default:
    each target's own image embedding; a motion-class token gives the "oracle" clip).
    ``guidance`` > 1: classifier-free guidance against the plain model with each target's
    own image embedding (the "no motion input" the toy model was trained with).
    ``min_guidance``: the scale rises linearly over the frames from ``min_guidance`` (frame 0)
    to ``guidance`` (last frame), as SVD is sampled (ComfyUI's VideoLinearCFGGuidance): the
    first frame, which the conditioning image already fixes, is not pushed; None: constant.
    ``progress(step, steps)`` is called after each sampling step.
    ``reference_noise`` ``(f c h w)``: start every clip from it blended with the seeded fresh
    noise (``blend_noise``, ``prior``), as the Reference Noise node does.
    """
    from .toytrain import batched_denoise

    first_raw = world.encode(first_images)                                          # (n c h w), raw
    plain_context = world.image_embeds(first_images)[:, None]                       # (n 1 d)
    first_scale = guidance if min_guidance is None else min_guidance
    scale = torch.linspace(first_scale, guidance, frames)[None, :, None, None, None]          # (1 f 1 1 1)
    guided = bool((scale != 1.0).any()) and (embedding is not None or context is not None)
    context = plain_context if context is None else context
    generator = torch.Generator().manual_seed(seed)
    sigmas = karras_sigmas(steps)
    x = torch.randn((first_images.shape[0], frames, *first_raw.shape[1:]), generator=generator)
    if reference_noise is not None:
        x = blend_noise(reference_noise[None], x, prior)
    x = x * sigmas[0]
    install = install_motion(world.unet, embedding, first_raw.shape[-2], first_raw.shape[-1], frames=frames) \
        if embedding is not None else None     # once per run; guided runs lift it for each plain pass (~15 ms)
    try:
        for step, (sigma, next_sigma) in enumerate(zip(sigmas[:-1], sigmas[1:]), start=1):
            sigma_batch = torch.full((x.shape[0],), sigma)
            denoised = batched_denoise(world.unet, x, sigma_batch, first_raw, context)
            if guided:
                if install is not None:
                    install.remove()                       # the guidance reference is the plain model
                plain = batched_denoise(world.unet, x, sigma_batch, first_raw, plain_context)
                if embedding is not None:
                    install = install_motion(world.unet, embedding, first_raw.shape[-2], first_raw.shape[-1],
                                             frames=frames)
                denoised = plain + scale * (denoised - plain)
            x = x + (x - denoised) / sigma * (next_sigma - sigma)
            if progress is not None:
                progress(step, steps)
    finally:
        if install is not None:
            install.remove()
    return torch.stack([world.decode(clip / SVD_LATENT_SCALE) for clip in x])


WIDE_KLT_WINDOW = (21, 21)
IDEAL_BLUR_PX = 2.0     # at 64 px: wider than texture detail and sampling flicker, narrower than an object


def blurred_frames(frames: torch.Tensor, sigma: float) -> np.ndarray:
    """``(f h w c)`` -> the same frames, each Gaussian-blurred by ``sigma`` px (opencv), as numpy."""
    return np.stack([cv2.GaussianBlur(np.ascontiguousarray(f), (0, 0), sigma) for f in frames.numpy()])


def nearest_ideal_motion(generated: torch.Tensor, target_spec: toyclips.ClipSpec,
                         blur_px: float = IDEAL_BLUR_PX) -> tuple[str, dict[str, float]]:
    """Analysis by synthesis: the motion class whose *ideal* animation of the target scene is
    closest to the generated clip. Returns the class and every class's error.

    generated: ``(f h w c)`` in [0, 1], frame 0 from the target image; target_spec: the
    target's ``ClipSpec`` (its frame 0 is the target image), so only toy targets qualify.
    Each class is rendered on the scene (``render_clip`` with the spec's motion replaced);
    frames 1.. of both clips are blurred (Gaussian, ``blur_px`` at 64 px, which keeps where
    things are and drops texture and flicker) and compared by mean squared error. A second
    reading of motion next to ``readings.classify_motion``: KLT needs corners that survive
    from frame to frame, which a small sampled model's shimmering textures do not give.
    """
    if generated.shape[0] != target_spec.frames or generated.shape[1] != target_spec.size:
        raise ValueError(f"generated clip {tuple(generated.shape)} does not match the target scene "
                         f"({target_spec.frames} frames of {target_spec.size} px)")
    sigma = blur_px * target_spec.size / 64.0
    seen = blurred_frames(generated.float().cpu(), sigma)[1:]
    errors = {}
    for motion in toyclips.MOTION_CLASSES:
        ideal = toyclips.render_clip(dataclasses.replace(target_spec, motion=motion))
        errors[motion] = float(((blurred_frames(ideal, sigma)[1:] - seen) ** 2).mean())
    return min(errors, key=errors.get), errors


def score(reference: torch.Tensor, reference_class: Optional[str], target: torch.Tensor,
          generated: torch.Tensor, target_spec: Optional[toyclips.ClipSpec] = None) -> dict:
    """The benchmark's columns for one generated clip (``target_spec``: the toy target's scene,
    for the nearest-ideal reading; None for outside targets)."""
    predicted = readings.classify_motion(generated)
    dense = classify_motion_dense(generated)
    ideal = nearest_ideal_motion(generated, target_spec)[0] if target_spec is not None else None
    return {"predicted_class": predicted,
            "class_correct": None if reference_class is None else predicted == reference_class,
            "dense_class": dense,
            "dense_correct": None if reference_class is None else dense == reference_class,
            "ideal_class": ideal,
            "ideal_correct": None if reference_class is None or ideal is None else ideal == reference_class,
            "motion_fidelity": metrics.motion_fidelity_score(reference, generated),
            # the still background agrees with itself in toy scenes; moving points alone separate motions better
            "motion_fidelity_moving": metrics.motion_fidelity_score(reference, generated, moving_only=True),
            # an object-sized KLT window (21 px at the 128-px tracking scale, ~10 px at 64) follows
            # objects through the texture shimmer of sampled clips, where a 9-px one follows the shimmer
            "motion_fidelity_wide": metrics.motion_fidelity_score(reference, generated, win_size=WIDE_KLT_WINDOW),
            "first_frame_psnr": metrics.first_frame_psnr(target, generated),
            "appearance_leakage": metrics.appearance_leakage(reference, target, generated)}


def heldout_reference(motion: str, seed: int, frames: int = 8) -> torch.Tensor:
    """A reference clip in the held-out palette (shapes, colours, backgrounds unseen in training)."""
    return toyclips.make_clip(motion, seed, frames=frames, palette="heldout")[0]
