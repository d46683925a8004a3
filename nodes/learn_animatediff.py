"""Learn Motion Embedding on AnimateDiff (SD1.5 + an ADE motion model): inputs checked, memory planned,
the reference encoded, the embedding laid out."""
from __future__ import annotations

import logging

import torch

from ..motion_core.augment import AugmentSettings
from ..motion_core.embedding import MotionEmbedding, base_metadata, init_temporal
from ..motion_core.layers import embedding_cost, select_layers
from ..motion_core.objectives import OBJECTIVE_EPS
from ..motion_core.resample import downscale_frames
from ..motion_core.training import TrainSettings
from .hooks import MODEL_FAMILY_ANIMATEDIFF, ModelFamily
from .hooks import animatediff as ad_hooks
from .memory import check_ad_learn_memory

log = logging.getLogger(__name__)

NODE = "Learn Motion Embedding"


def prepare_animatediff(model, family: ModelFamily, vae, reference_frames: torch.Tensor, representation: str,
                        positive, steps: int, learning_rate: float, seed: int, loss: str, augmentation: bool,
                        flip: bool, layers: str, explicit_layers: str, learn_scale: float, checkpointing: bool = True):
    """``(settings, initial, latents (f c h w), width, height, memory account)`` for learning on ``model`` (SD1.5
    with one ADE motion model), or a ValueError (MemoryError) that says what is wrong and how to fix it."""
    if positive is None:
        raise ValueError(f"{NODE} on AnimateDiff needs the prompt the reference is explained with: connect the "
                         "positive CONDITIONING of a CLIP Text Encode (with the SD1.5 checkpoint's CLIP) to Learn's "
                         "positive input")
    if representation != "temporal":
        raise ValueError(f"{NODE} on AnimateDiff learns Motion Embeddings in the motion model's temporal attention: "
                         f"set representation to 'temporal' (it is {representation!r}; motion-text tokens are for "
                         "SVD and Wan)")
    motion_model = ad_hooks.single_motion_model(model, NODE)
    frames = int(reference_frames.shape[0])
    limit = ad_hooks.frame_limit(motion_model)
    if reference_frames.ndim != 4 or frames < 2:
        raise ValueError(f"{NODE} needs at least 2 reference frames, got IMAGE of shape "
                         f"{tuple(reference_frames.shape)}; load more frames")
    if limit is not None and frames > limit:
        raise ValueError(f"the motion model {ad_hooks.describe_motion_model(motion_model)} attends over at most "
                         f"{limit} frames at once and the reference has {frames}: set Load Reference Video's "
                         f"frames to {min(limit, 16)} (AnimateDiff's own length is 16); sampling longer videos "
                         "works through ADE's context options")
    reference_frames = downscale_frames(reference_frames, learn_scale, 8)
    height, width = int(reference_frames.shape[1]), int(reference_frames.shape[2])
    if height % 8 or width % 8:
        raise ValueError(f"reference frames are {width}x{height}; SD1.5 needs sides that are multiples of 8 (512x512 "
                         "is AnimateDiff's size): set width/height in Load Reference Video")
    layout = ad_hooks.motion_layout(motion_model, height // 8, width // 8)
    chosen = select_layers(layout, layers, explicit_layers)
    account, _plan = check_ad_learn_memory(model, motion_model, chosen, frames, height // 8, width // 8, checkpointing,
                                           layers, explicit_layers)
    latents = vae.encode(reference_frames[..., :3])          # (f c h w), raw latent space; the only encode
    expected = (frames, int(model.model.diffusion_model.in_channels), height // 8, width // 8)
    if tuple(latents.shape) != expected:
        raise ValueError(f"the VAE gives latents of shape {tuple(latents.shape)}, SD1.5 works on {expected} for "
                         "these frames: connect the VAE of the SD1.5 checkpoint")
    cost = embedding_cost(chosen, frames)
    log.info("Motion Embeddings on %d of %d AnimateDiff temporal attention layers (%s): %s parameters, %.1f MiB in "
             "float32 (plus Adam state: about 3x that while learning)", len(chosen), len(layout), layers,
             f"{cost['parameters']:,}", cost["bytes_fp32"] / 2 ** 20)
    initial = MotionEmbedding(metadata=base_metadata(frames, width, height, 0, model_family=MODEL_FAMILY_ANIMATEDIFF))
    initial.temporal_qk, initial.value_embedding = init_temporal(chosen, frames)
    initial.metadata.update(layers=chosen, layer_preset=layers, representation=representation,
                            model_widths=dict(family.widths), model_variant=family.variant,
                            motion_model=ad_hooks.describe_motion_model(motion_model), learn_scale=learn_scale,
                            init="Motion Embeddings zeros")
    settings = TrainSettings(steps=steps, learning_rate=learning_rate, seed=seed, loss=loss, objective=OBJECTIVE_EPS,
                             augment=AugmentSettings(enabled=augmentation, flip=flip))
    return settings, initial, latents, width, height, account
