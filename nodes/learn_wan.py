"""Learn Motion Embedding on a Wan model: the inputs checked, the reference encoded, the embedding laid out."""
from __future__ import annotations

import logging

import torch

from ..motion_core.augment import AugmentSettings
from ..motion_core.embedding import MotionEmbedding, base_metadata, init_temporal
from ..motion_core.layers import embedding_cost, select_layers
from ..motion_core.objectives import OBJECTIVE_FLOW
from ..motion_core.resample import downscale_frames
from ..motion_core.training import TrainSettings
from .hooks import MODEL_FAMILY_WAN, ModelFamily
from .hooks import wan as wan_hooks
from .memory import check_wan_learn_memory

log = logging.getLogger(__name__)

MIN_FRAMES = 5     # Wan's VAE keeps frame 1 and packs each 4 after it into one latent frame
WHOLE_RANGE = "whole range"
HIGH_NOISE_EXPERT = "A14B high-noise expert"
LOW_NOISE_EXPERT = "A14B low-noise expert"
NOISE_RANGES = (WHOLE_RANGE, HIGH_NOISE_EXPERT, LOW_NOISE_EXPERT)
# Wan 2.2 A14B hands a video from the high-noise expert to the low-noise one at this noise level
# (Wan 2.2's configs: boundary 0.875 for T2V, 0.900 for I2V)
EXPERT_BOUNDARY = {"t2v": 0.875, "i2v": 0.9}


def noise_range(model, family: ModelFamily, choice: str) -> tuple[float, float]:
    """The flow noise levels to learn on: all of them, or a Wan 2.2 A14B expert's share.

    A14B's experts have Wan 2.1 14B's shapes (dim 5120, 40 blocks), so the weights cannot say
    which expert a MODEL is: the user says it, and Learn refuses an expert range on a model
    of another size.
    """
    if choice not in NOISE_RANGES:
        raise ValueError(f"noise_range {choice!r} is not one of {NOISE_RANGES}")
    if choice == WHOLE_RANGE:
        return 0.0, 1.0
    if family.widths != {"dim": 5120, "blocks": 40}:
        raise ValueError(f"noise_range {choice!r} is for a Wan 2.2 A14B expert (dim 5120, 40 blocks); the MODEL is "
                         f"{family.describe()}: set noise_range to {WHOLE_RANGE!r}")
    boundary = EXPERT_BOUNDARY["i2v" if int(model.model.diffusion_model.patch_embedding.weight.shape[1]) > 16
                               else "t2v"]
    return (boundary, 1.0) if choice == HIGH_NOISE_EXPERT else (0.0, boundary)


def _vae_downscale(vae) -> int:
    """The VAE's spatial downscale: 8 for Wan 2.1's, 16 for Wan 2.2's."""
    ratio = getattr(vae, "downscale_ratio", 8)
    spatial = ratio[-1] if isinstance(ratio, (tuple, list)) else ratio
    return spatial if isinstance(spatial, int) and spatial > 0 else 8


def prepare_wan(model, family: ModelFamily, vae, reference_frames: torch.Tensor, representation: str, positive,
                tokens_per_frame: int, steps: int, learning_rate: float, seed: int, loss: str, augmentation: bool, flip: bool,
                layers: str, explicit_layers: str, learn_scale: float, checkpointing: bool = True,
                expert: str = WHOLE_RANGE):
    """``(settings, initial, latents (1 c t h w), width, height, memory account, offload)`` for learning on
    ``model`` (``offload``: keep the checkpointed blocks' inputs in CPU memory, when the plan needs it), or a
    ValueError (MemoryError) that says what is wrong and how to fix it."""
    node = "Learn Motion Embedding"
    if positive is None:
        raise ValueError(f"{node} on Wan needs the prompt the reference is explained with: connect the positive "
                         "CONDITIONING of a CLIP Text Encode (with Wan's text encoder) to Learn's positive input "
                         "(for I2V, the positive of WanImageToVideo made from the reference's first frame).")
    sigma_range = noise_range(model, family, expert)
    frames = int(reference_frames.shape[0])
    if reference_frames.ndim != 4 or frames < MIN_FRAMES:
        raise ValueError(f"{node} on Wan needs at least {MIN_FRAMES} reference frames (its VAE packs 4 frames into "
                         f"one latent frame after the first), got IMAGE of shape {tuple(reference_frames.shape)}; "
                         "load more frames (Wan's own length is 81)")
    usable = wan_hooks.usable_frames(frames)
    if usable != frames:
        log.info("Wan's VAE takes 1 + 4k frames: learning on the first %d of %d reference frames", usable, frames)
        reference_frames = reference_frames[:usable]
    downscale = _vae_downscale(vae)
    stride = downscale * int(model.model.diffusion_model.patch_size[-1])    # pixels per token side
    reference_frames = downscale_frames(reference_frames, learn_scale, stride)
    height, width = int(reference_frames.shape[1]), int(reference_frames.shape[2])
    if height % stride or width % stride:
        raise ValueError(f"reference frames are {width}x{height}; this Wan model needs sides that are multiples of "
                         f"{stride} (its VAE's downscale times the patch size, e.g. 832x480): set width/height in "
                         "Load Reference Video")
    latent_frames = wan_hooks.latent_frames(usable)
    for _tokens, extra in positive:
        image = extra.get("concat_latent_image") if isinstance(extra, dict) else None
        if image is not None and image.ndim == 5 and image.shape[2] != latent_frames:
            raise ValueError(f"the positive's image conditioning has {image.shape[2]} latent frames, the reference "
                             f"{latent_frames} ({usable} frames): set WanImageToVideo's length to {usable}")
    layout = wan_hooks.wan_layout(model, height // downscale, width // downscale)
    temporal = representation in ("temporal", "both")
    chosen = select_layers(layout, layers, explicit_layers) if temporal else {}
    tokens = None
    if representation in ("motion_text", "both"):
        tokens = wan_hooks.initial_tokens(model, positive, latent_frames, tokens_per_frame,
                                          generator=torch.Generator().manual_seed(seed))
    _frames, token_height, token_width = wan_hooks.token_grid(model.model.diffusion_model,
                                                             (latent_frames, height // downscale, width // downscale))
    account, planned = check_wan_learn_memory(model, chosen, latent_frames, token_height, token_width,   # before the encode
                                     0 if tokens is None else tokens.numel(), checkpointing, usable, learn_scale)
    latents = vae.encode(reference_frames[..., :3])
    channels = int(model.model.diffusion_model.out_dim)
    expected = (channels, latent_frames, height // downscale, width // downscale)
    if latents.ndim != 5 or tuple(latents.shape[1:]) != expected:
        raise ValueError(f"the VAE gives latents of shape {tuple(latents.shape)}, this Wan model works on video "
                         f"latents of shape (1, {', '.join(map(str, expected))}) for these frames: connect the Wan "
                         "VAE that goes with it (wan_2.1_vae for Wan 2.1, wan2.2_vae for Wan 2.2 TI2V 5B)")
    initial = MotionEmbedding(metadata=base_metadata(latent_frames, width, height, 0, model_family=MODEL_FAMILY_WAN))
    if temporal:
        cost = embedding_cost(chosen, latent_frames)
        log.info("Motion Embeddings on %d of %d Wan blocks (%s): %s parameters, %.1f MiB in float32 (plus Adam "
                 "state: about 3x that while learning)", len(chosen), len(layout), layers, f"{cost['parameters']:,}",
                 cost["bytes_fp32"] / 2 ** 20)
        initial.temporal_qk, initial.value_embedding = init_temporal(chosen, latent_frames)
        initial.metadata.update(layers=chosen, layer_preset=layers)
    if tokens is not None:
        initial.spatial_tokens = tokens
        initial.metadata.update(tokens_per_frame=tokens_per_frame,
                                token_context=wan_hooks.token_context(model.model.diffusion_model))
    initial.metadata.update(representation=representation, model_widths=dict(family.widths),
                            model_variant=family.variant, video_frames=usable, learn_scale=learn_scale,
                            init=", ".join(([] if not temporal else ["Motion Embeddings zeros"])
                                           + ([] if tokens is None else [f"tokens from the "
                                                                         f"{initial.metadata['token_context']} tokens"])))
    settings = TrainSettings(steps=steps, learning_rate=learning_rate, seed=seed, loss=loss, objective=OBJECTIVE_FLOW,
                             augment=AugmentSettings(enabled=augmentation, flip=flip), flow_sigma_range=sigma_range,
                             host_optimizer=planned.host_optimizer)
    return settings, initial, latents, width, height, account, planned.offload
