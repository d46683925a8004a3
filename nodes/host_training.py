"""Running ``motion_core``'s training loop inside ComfyUI.

ComfyUI's sampling machinery (``CFGGuider``) loads the model onto its device, builds
SVD's ``c_concat``, ``y`` and ``num_video_frames`` from the conditioning, and applies
every patch. So the loop runs as a custom ``comfy.samplers.Sampler`` (the pattern of
``comfy_extras/nodes_train.py``): the "sampler" receives the guider as ``model_wrap``,
which is exactly a denoiser ``D(x; sigma)``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Callable, Iterator, Optional, Sequence

import torch

import comfy.model_management
import comfy.samplers
import comfy.utils

from ..motion_core.embedding import MotionEmbedding
from ..motion_core.training import GradientCallback, TrainResult, TrainSettings, train_motion_embedding
from ..motion_core.objectives import OBJECTIVE_EPS, OBJECTIVE_FLOW
from .hooks import animatediff as ad_hooks
from .hooks import wan as wan_hooks
from .hooks.common import end_recompute, recompute, trainable_clone, trainable_weights
from .hooks.svd import (MotionAttentionPatch, TrainingFrame, recompute_units, with_recompute, with_temporal_marks,
                        with_training_frame)

log = logging.getLogger(__name__)


class _LoopSampler(comfy.samplers.Sampler):
    """The training loop as a ``comfy.samplers.Sampler``: the guider hands ``sample`` itself as ``model_wrap``, a
    denoiser; each family's subclass shapes the clip and picks the objective, then :meth:`train` runs the loop."""

    def __init__(self, embedding: MotionEmbedding, settings: TrainSettings,
                 on_step: Optional[Callable[[int, int, float], None]], on_gradients: Optional[GradientCallback] = None,
                 more_latents: Sequence[torch.Tensor] = ()):
        self.embedding = embedding
        self.settings = settings
        self.on_step = on_step
        self.on_gradients = on_gradients
        self.more_latents = list(more_latents)   # more clips of the motion, raw latents laid out as the reference
        self.result: Optional[TrainResult] = None

    @staticmethod
    def to_clip(latent: torch.Tensor) -> torch.Tensor:
        """The guider's latent as the loop's clip ``(f c h w)`` (SVD and SD1.5: the frames are the batch)."""
        return latent.float()

    def clips(self, model_wrap, latent_image: torch.Tensor) -> list[torch.Tensor]:
        """The reference (``latent_image``, already through ``process_latent_in``) and the other clips, put through
        the model's ``process_latent_in`` here, each as the loop's clip."""
        process_in = model_wrap.inner_model.process_latent_in
        return [self.to_clip(latent_image)] + [self.to_clip(process_in(latent.to(latent_image)))
                                               for latent in self.more_latents]

    def train(self, denoiser, clips: list[torch.Tensor], settings: TrainSettings) -> None:
        self.result = train_motion_embedding(denoiser, clips, self.embedding, settings,
                                             _step_callback(settings.steps, self.on_step), self.on_gradients)


def _run_guider(patched, positive: list, reference_latents: torch.Tensor, sampler: _LoopSampler,
                seed: int) -> TrainResult:
    """Sample ``patched`` with ``sampler`` through ComfyUI's ``CFGGuider`` (positive only, CFG 1), so every
    wrapper and patch of the MODEL runs as when sampling; the sampler's result, or an error if none ran."""
    guider = comfy.samplers.CFGGuider(patched)
    guider.set_conds(positive, [])
    guider.set_cfg(1.0)
    latents = reference_latents.detach().clone()
    guider.sample(torch.zeros_like(latents), latents, sampler, torch.tensor([1.0, 0.0]), seed=seed, disable_pbar=True)
    if sampler.result is None:
        raise RuntimeError("the training sampler did not run; ComfyUI's guider skipped sampling")
    return sampler.result


class _TrainingSampler(_LoopSampler):
    """SVD: frames are the batch ``(f c h w)``; EDM with the model's ``sigma_data``; the loop's augmented first
    frame becomes the image conditioning (``frame``)."""

    def __init__(self, embedding: MotionEmbedding, settings: TrainSettings, frame: TrainingFrame,
                 process_latent_out: Callable, on_step: Optional[Callable[[int, int, float], None]],
                 on_gradients: Optional[GradientCallback] = None, more_latents: Sequence[torch.Tensor] = ()):
        super().__init__(embedding, settings, on_step, on_gradients, more_latents)
        self.frame = frame
        self.process_latent_out = process_latent_out

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        sigma_data = float(model_wrap.inner_model.model_sampling.sigma_data)
        settings = dataclasses.replace(self.settings, sigma_data=sigma_data)

        def denoiser(noisy, sigma, first_frame):
            self.frame.latent = self.process_latent_out(first_frame.detach())
            return model_wrap(noisy.to(latent_image.dtype), sigma, **extra_args)

        self.train(denoiser, self.clips(model_wrap, latent_image), settings)
        return torch.zeros_like(latent_image)


@contextlib.contextmanager
def host_training_mode() -> Iterator[bool]:
    """Tell ComfyUI that a model is being trained, for the length of the ``with`` block.

    ComfyUI 0.33 has a flag, ``comfy.model_management.in_training``, that its own trainer
    sets: while it is False, RoPE and quantised linears run through comfy_kitchen kernels
    that have no backward. 0.3.64 has no flag and no such kernels. Yields whether the host
    has the flag; the old value comes back afterwards, also after an error or a Cancel.
    """
    if not hasattr(comfy.model_management, "in_training"):
        yield False
        return
    previous = comfy.model_management.in_training
    comfy.model_management.in_training = True
    try:
        yield True
    finally:
        comfy.model_management.in_training = previous


@contextlib.contextmanager
def frozen_weights(model) -> Iterator[int]:
    """The model's own parameters do not require grad for the length of the ``with`` block.

    ComfyUI builds models as ``nn.Module``s whose parameters require grad (it never needs to
    say otherwise: it samples under inference mode). While learning, autograd would then
    track every layer from the first, keeping inputs for backward even in the blocks before
    the first learned tensor. ComfyUI's own trainer turns the flag off the same way
    (``comfy_extras/nodes_train.py``); here it comes back afterwards, also after an error
    or a Cancel. Yields how many parameters were switched.
    """
    switched = [p for p in model.model.parameters() if p.requires_grad]
    for parameter in switched:
        parameter.requires_grad_(False)
    try:
        yield len(switched)
    finally:
        with torch.inference_mode():        # inference tensors (ComfyUI's loaded weights) take the flag only here
            for parameter in switched:
                parameter.requires_grad_(True)


class _WanTrainingSampler(_LoopSampler):
    """Wan: the latent is ``(1 c t h w)``, the loop's clip ``(t c h w)``; flow matching with the shift of the
    MODEL's own ``model_sampling`` (what ModelSamplingSD3 set, or the model's default)."""

    @staticmethod
    def to_clip(latent: torch.Tensor) -> torch.Tensor:
        return latent[0].float().transpose(0, 1)                 # (1 c t h w) -> (t c h w)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        shift = float(getattr(model_wrap.inner_model.model_sampling, "shift", 1.0))
        settings = dataclasses.replace(self.settings, objective=OBJECTIVE_FLOW, flow_shift=shift)

        def denoiser(noisy, sigma, _first_frame):
            video = noisy.transpose(0, 1)[None].to(latent_image.dtype)          # (t c h w) -> (1 c t h w)
            return model_wrap(video, sigma[:1], **extra_args)[0].transpose(0, 1)

        self.train(denoiser, self.clips(model_wrap, latent_image), settings)
        return torch.zeros_like(latent_image)


class _EpsTrainingSampler(_LoopSampler):
    """SD1.5 + AnimateDiff: frames are the batch ``(f c h w)``; epsilon prediction on the MODEL's own noise
    schedule (the beta schedule ADE's Use Evolved Sampling set), unless the settings name noise levels of their
    own (``eps_schedule``; tests)."""

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        schedule = self.settings.eps_schedule or tuple(float(sigma)
                                                       for sigma in model_wrap.inner_model.model_sampling.sigmas)
        settings = dataclasses.replace(self.settings, objective=OBJECTIVE_EPS, eps_schedule=schedule)

        def denoiser(noisy, sigma, _first_frame):
            return model_wrap(noisy.to(latent_image.dtype), sigma, **extra_args)

        self.train(denoiser, self.clips(model_wrap, latent_image), settings)
        return torch.zeros_like(latent_image)


def train_ad_in_host(model, positive: list, reference_latents: torch.Tensor, initial: MotionEmbedding,
                     settings: TrainSettings, on_step: Optional[Callable[[int, int, float], None]] = None,
                     checkpointing: bool = True, on_gradients: Optional[GradientCallback] = None,
                     more_latents: Sequence[torch.Tensor] = ()) -> TrainResult:
    """Learn ``initial``'s Motion Embeddings through the frozen SD1.5 UNet and its ADE motion model.

    ``model``: the MODEL from ADE's Use Evolved Sampling (one motion model attached);
    ``positive``: the prompt's conditioning; ``reference_latents`` ``(f c h w)``: the reference,
    VAE-encoded once, raw latent space (``more_latents``: other clips of the motion, laid out alike; each step
    learns from one of them all). It runs through ComfyUI's guider, so ADE's own
    sampling wrapper injects the motion model and sets its video length to the frames, as
    when sampling. Checkpointing recomputes the UNet's blocks and each motion module; the
    patches come off when learning ends, also after an error or a Cancel, which raises
    ``TrainingInterrupted`` with the last good embedding.
    """
    if settings.loss_scale == 0 and compute_dtype(model) == torch.float16:
        settings = dataclasses.replace(settings, loss_scale=FLOAT16_LOSS_SCALE)
    motion_model = ad_hooks.single_motion_model(model, "Learn Motion Embedding")
    with torch.inference_mode(False), torch.enable_grad(), host_training_mode(), frozen_weights(model), \
            frozen_weights(motion_model):
        if ad_hooks.has_motion(model):
            raise ValueError("Learn Motion Embedding got an AnimateDiff model that already has Motion Embeddings "
                             "applied (Apply Motion's output): connect the MODEL from Use Evolved Sampling instead")
        embedding = initial.trainable_copy(model.load_device)
        patched, motion = ad_hooks.with_ad_motion(trainable_clone(model), embedding, node="Learn Motion Embedding")
        patched_motion_model = ad_hooks.motion_models(patched)[0]
        trainable_weights(patched_motion_model, patched_motion_model.model)
        recomputed = recompute(patched, recompute_units(patched.model.diffusion_model)) if checkpointing else []
        recomputed_modules = recompute(patched_motion_model, ad_hooks.recompute_units(patched_motion_model),
                                       prefix="") if checkpointing else []
        try:
            return _run_guider(patched, positive, reference_latents,
                               _EpsTrainingSampler(embedding, settings, on_step, on_gradients, more_latents), settings.seed)
        finally:
            end_recompute(patched, recomputed)
            end_recompute(patched_motion_model, recomputed_modules + motion.keys)
            for tensor in embedding.tensors().values():
                tensor.grad = None


def _step_callback(total: int, on_step):
    progress = comfy.utils.ProgressBar(total)

    def step_callback(step, steps, loss):
        progress.update_absolute(step, steps)
        if on_step is not None:
            on_step(step, steps, loss)
        comfy.model_management.throw_exception_if_processing_interrupted()
    return step_callback


def train_wan_in_host(model, positive: list, reference_latents: torch.Tensor, initial: MotionEmbedding,
                      settings: TrainSettings, on_step: Optional[Callable[[int, int, float], None]] = None,
                      checkpointing: bool = True, on_gradients: Optional[GradientCallback] = None,
                      offload: bool = False, more_latents: Sequence[torch.Tensor] = ()) -> TrainResult:
    """Learn ``initial``'s Motion Embeddings through the frozen Wan ``model``; returns the result.

    ``positive``: the conditioning the reference is explained with (the prompt, and for
    I2V the image conditioning); ``reference_latents`` ``(1 c t h w)``: the reference,
    VAE-encoded once, raw latent space (``more_latents``: other clips, laid out alike). As :func:`train_in_host`: float32 learned tensors,
    checkpointed blocks, ``host_training_mode``, loss scaling for float16, Cancel raises
    ``TrainingInterrupted`` with the last good embedding. ``offload``: the checkpointed blocks'
    inputs wait in CPU memory for the backward pass (on an accelerator; the same gradients).
    """
    if settings.loss_scale == 0 and compute_dtype(model) == torch.float16:
        settings = dataclasses.replace(settings, loss_scale=FLOAT16_LOSS_SCALE)
    with torch.inference_mode(False), torch.enable_grad(), host_training_mode(), frozen_weights(model):
        if wan_hooks.has_motion(model):
            raise ValueError("Learn Motion Embedding got a Wan model that already has Motion Embeddings applied "
                             "(Apply Motion's output): connect the model from its loader instead")
        embedding = initial.trainable_copy(model.load_device)
        patched, motion = wan_hooks.with_wan_motion(trainable_clone(model), embedding)
        recomputed = recompute(patched, wan_hooks.recompute_units(patched.model.diffusion_model), offload=offload) \
            if checkpointing else []
        try:
            return _run_guider(patched, positive, reference_latents,
                               _WanTrainingSampler(embedding, settings, on_step, on_gradients, more_latents), settings.seed)
        finally:
            # the projection patches sit on the shared modules until ComfyUI next unpatches; they
            # hold the learned tensors (and their gradients) on the device: take them off now
            end_recompute(patched, recomputed + motion.keys)
            for tensor in embedding.tensors().values():
                tensor.grad = None


def compute_dtype(model) -> torch.dtype:
    """The dtype the UNet computes in (its weight dtype, or the manual-cast dtype ComfyUI chose)."""
    return getattr(model.model, "manual_cast_dtype", None) or model.model_dtype()


FLOAT16_LOSS_SCALE = 2.0 ** 16


def train_in_host(model, make_positive: Callable[[MotionEmbedding], list], reference_latents: torch.Tensor,
                  initial: MotionEmbedding, settings: TrainSettings,
                  on_step: Optional[Callable[[int, int, float], None]] = None, checkpointing: bool = True,
                  on_gradients: Optional[GradientCallback] = None,
                  more_latents: Sequence[torch.Tensor] = ()) -> TrainResult:
    """Learn ``initial``'s tensors through the frozen ``model``; returns the result.

    ``make_positive(embedding)``: SVD conditioning built around the trainable tensors
    (the motion-text tokens, or the plain image token when only temporal embeddings
    are learned). ``reference_latents`` ``(f c h w)``: the reference, VAE-encoded once,
    raw latent space; ``more_latents``: other clips of the motion, laid out alike (each step learns from one
    clip, its first frame as the image conditioning). Everything trainable is made here, outside ComfyUI's inference
    mode, on the model's load device in float32; the model computes in the dtype
    ComfyUI loaded it in, with dynamic loss scaling when that is float16.
    ``checkpointing``: recompute each UNet block in the backward pass instead of keeping
    its activations (:func:`hooks.svd.with_recompute`), undone when learning ends,
    also after an error or a Cancel, as is :func:`host_training_mode`. Raises
    ``TrainingInterrupted`` (with the last good embedding) on Cancel.
    """
    if settings.loss_scale == 0 and compute_dtype(model) == torch.float16:
        settings = dataclasses.replace(settings, loss_scale=FLOAT16_LOSS_SCALE)
    with torch.inference_mode(False), torch.enable_grad(), host_training_mode(), frozen_weights(model):
        embedding = initial.trainable_copy(model.load_device)
        positive = make_positive(embedding)
        patched = trainable_clone(model)
        recomputed = with_recompute(patched) if checkpointing else []
        frame = TrainingFrame()
        with_training_frame(patched, frame)
        if embedding.has_temporal:
            with_temporal_marks(patched)
            patched.set_model_attn1_patch(MotionAttentionPatch(embedding))
        sampler = _TrainingSampler(embedding, settings, frame, patched.model.process_latent_out, on_step,
                                   on_gradients, more_latents)
        try:
            return _run_guider(patched, positive, reference_latents, sampler, settings.seed)
        finally:
            end_recompute(patched, recomputed)
