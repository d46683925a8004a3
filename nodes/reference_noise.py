"""Reference Noise: the reference clip inverted along the model's ODE, blended with fresh noise.

Motion Inversion's code starts sampling from the reference's inverted noise blended with
fresh noise (prior 0.5); its author reports the embeddings work poorly without it. The
inverted noise carries the reference's coarse motion layout; fresh noise keeps the
target free to differ in appearance.
"""
from __future__ import annotations

import logging

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
from comfy_api.v0_0_2 import io

from ..motion_core.inversion import blend_noise, euler_inversion_step, inversion_sigmas
from ..motion_core.resample import resample_frames
from .common import CATEGORY, NODE_PREFIX, MotionEmbeddingSocket
from .conditioning import reference_conditioning
from .hooks import MODEL_FAMILY_ANIMATEDIFF, MODEL_FAMILY_WAN, check_family, require_family
from .hooks import animatediff as ad_hooks
from .hooks import wan as wan_hooks
from .hooks.svd import context_width, require_svd, with_motion

log = logging.getLogger(__name__)


class _InversionSampler(comfy.samplers.Sampler):
    """Euler steps of the probability-flow ODE from a clean clip up to the last sigma."""

    def __init__(self):
        self.noise = None

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        x = latent_image.float()
        frames = x.shape[0]
        progress = comfy.utils.ProgressBar(len(sigmas) - 1)
        for i in range(len(sigmas) - 1):
            comfy.model_management.throw_exception_if_processing_interrupted()
            sigma, next_sigma = float(sigmas[i]), float(sigmas[i + 1])
            denoised = model_wrap(x.to(latent_image.dtype), torch.full((frames,), sigma, device=x.device),
                                  **extra_args).float()
            x = euler_inversion_step(x, denoised, sigma, next_sigma)
            progress.update(1)
        self.noise = (x / float(sigmas[-1])).cpu()    # unit-variance noise that the sampler scales by sigma
        return torch.zeros_like(latent_image)


class BlendedNoise:
    """A NOISE for SamplerCustomAdvanced: ``sqrt(prior) * inverted + sqrt(1 - prior) * fresh``."""

    def __init__(self, inverted: torch.Tensor, prior: float, seed: int):
        self.inverted = inverted   # (f c h w)
        self.prior = prior
        self.seed = seed

    def generate_noise(self, input_latent):
        latent = input_latent["samples"]
        fresh = comfy.sample.prepare_noise(latent, self.seed, input_latent.get("batch_index"))
        if self.inverted.ndim == 5:    # Wan: (1 c t h w), frames on axis 2
            inverted = resample_frames(self.inverted, latent.shape[2], dim=2)
            if inverted.shape[-2:] != latent.shape[-2:]:
                batch, channels, frames = inverted.shape[:3]
                flat = inverted.transpose(1, 2).reshape(batch * frames, channels, *inverted.shape[-2:])
                flat = comfy.utils.common_upscale(flat, latent.shape[-1], latent.shape[-2], "bilinear", "center")
                inverted = flat.reshape(batch, frames, channels, *flat.shape[-2:]).transpose(1, 2)
            if inverted.shape != self.inverted.shape:    # interpolated noise is smoother: unit variance per frame
                inverted = inverted / inverted.std(dim=(1, 3, 4), keepdim=True).clamp_min(1e-6)
            return blend_noise(inverted, fresh, self.prior)
        inverted = resample_frames(self.inverted, latent.shape[0], dim=0)
        if inverted.shape[-2:] != latent.shape[-2:]:
            inverted = comfy.utils.common_upscale(inverted, latent.shape[-1], latent.shape[-2], "bilinear", "center")
            inverted = inverted / inverted.std().clamp_min(1e-6)
        return blend_noise(inverted, fresh, self.prior)


@torch.no_grad()                   # an inversion, not training: no autograd graph kept over its steps
def invert_reference(model, vae, frames, sigma_target, steps, embedding=None, fps=6, motion_bucket_id=127):
    """Inverted noise ``(f c h w)`` of ``frames`` at ``sigma_target``, conditioned like the Learn run."""
    latents = vae.encode(frames[..., :3])
    device = model.load_device
    if embedding is not None:
        embedding = embedding.resampled(latents.shape[0])
    positive = reference_conditioning(latents[:1].to(device), embedding, fps, motion_bucket_id, 0.0,
                                      context_width(model))
    run_model = model
    if embedding is not None and embedding.has_temporal:
        run_model, _patch = with_motion(model, embedding)
    return _invert(run_model, positive, latents, sigma_target, steps)


def _invert(model, positive, latents, sigma_target, steps):
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, [])
    guider.set_cfg(1.0)
    sampler = _InversionSampler()
    guider.sample(torch.zeros_like(latents), latents, sampler, inversion_sigmas(sigma_target, steps), seed=0,
                  disable_pbar=True)
    return sampler.noise


@torch.no_grad()
def invert_wan_reference(model, family, vae, frames, positive, sigma_target, steps, embedding=None):
    """Wan: the reference ``(1 c t h w)`` along the flow ODE, ``dx/dsigma = (x - D) / sigma``, the same
    Euler step as EDM's; the result divided by sigma is the unit noise the sampler scales back."""
    latents = vae.encode(frames[:wan_hooks.usable_frames(frames.shape[0]), ..., :3])
    run_model = model
    if embedding is not None and embedding.has_temporal and not wan_hooks.has_motion(model):
        check_family(embedding, family)
        wan_hooks.check_compatible(embedding, model)
        run_model, _motion = wan_hooks.with_wan_motion(model, embedding)
    return _invert(run_model, positive, latents, sigma_target, steps)


@torch.no_grad()
def invert_ad_reference(model, family, vae, frames, positive, sigma_target, steps, embedding=None):
    """AnimateDiff: the reference ``(f c h w)`` along SD1.5's probability-flow ODE in ComfyUI's form
    (``x = x0 + sigma * eps``), whose Euler steps are DDIM's inversion, with the motion model injected by ADE's
    sampling wrapper as when sampling, and the embedding installed unless the MODEL already carries it."""
    latents = vae.encode(frames[..., :3])
    run_model = model
    if embedding is not None and embedding.has_temporal and not ad_hooks.has_motion(model):
        check_family(embedding, family)
        run_model, _motion = ad_hooks.with_ad_motion(model, embedding, node="Reference Noise")
    return _invert(run_model, positive, latents, sigma_target, steps)


class ReferenceNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "ReferenceNoise",
            display_name="Reference Noise",
            category=CATEGORY,
            description="Inverts the reference clip along the model's own ODE (Euler; SVD's EDM, Wan's flow, or SD1.5's "
                        "for AnimateDiff, where Euler is DDIM's inversion) up "
                        "to the first sampling sigma and blends it with seeded fresh noise. Connect to "
                        "SamplerCustomAdvanced's noise input: "
                        "Motion Embeddings work much better starting from it (Motion Inversion's code, prior 0.5).",
            inputs=[
                io.Model.Input("model", tooltip="The SVD or Wan model, or AnimateDiff's MODEL from Use Evolved "
                                                "Sampling (plain; Apply Motion's output also works)."),
                io.Vae.Input("vae", tooltip="The model's VAE, to encode the reference."),
                io.Image.Input("reference_frames", tooltip="The reference clip the motion was learned from."),
                io.Sigmas.Input("sigmas", tooltip="The sampling schedule; the inversion goes up to its first sigma."),
                io.Float.Input("prior", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of inverted noise: 0 = fresh noise only, 1 = inverted only (paper: "
                                       "0.5). Measured at 0.5 on the SVD-like toy model with Motion Embeddings "
                                       "(docs/quality_svd_like.md): 57% / 67% of targets in the reference's motion "
                                       "(dense flow / nearest ideal) against 43% / 57% from fresh noise; the noise "
                                       "alone, without an embedding, 23% / 23%. On the toy Wan model "
                                       "(docs/quality_wan_toy.md) it added little: with Motion Embeddings (difference) "
                                       "nearest ideal 13% vs 3% from fresh noise, moving-points Motion Fidelity 0.33 "
                                       "vs 0.34; alone 0.32, as the prompt alone."),
                io.Int.Input("inversion_steps", default=8, min=1, max=100,
                             tooltip="Euler steps of the inversion; more is closer to the true ODE, and slower."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the fresh noise."),
                MotionEmbeddingSocket.Input("motion_embedding", optional=True,
                                            tooltip="Condition the inversion like the Learn run (recommended)."),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="Wan and AnimateDiff (required there): the prompt the reference "
                                              "was learned with, as given to Learn Motion Embedding. SVD ignores it."),
            ],
            outputs=[io.Noise.Output(display_name="noise", tooltip="For SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, vae, reference_frames, sigmas, prior, inversion_steps, seed,
                motion_embedding=None, positive=None) -> io.NodeOutput:
        family = require_family(model, "Reference Noise")
        if sigmas.numel() < 2 or float(sigmas[0]) <= 0:
            raise ValueError(f"sigmas must start with a positive noise level, got {sigmas.tolist()[:3]}...; connect "
                             "the SIGMAS of a scheduler node (e.g. KarrasScheduler or BasicScheduler)")
        prompted = {MODEL_FAMILY_ANIMATEDIFF: ("AnimateDiff", invert_ad_reference),
                    MODEL_FAMILY_WAN: ("Wan", invert_wan_reference)}
        if family.family in prompted:                 # inverted with the prompt the reference was learned with
            name, invert = prompted[family.family]
            if positive is None:
                raise ValueError(f"Reference Noise on {name} needs the prompt: connect the same positive "
                                 "CONDITIONING that Learn Motion Embedding was given")
            inverted = invert(model, family, vae, reference_frames, positive, float(sigmas[0]), inversion_steps,
                              motion_embedding)
            return io.NodeOutput(BlendedNoise(inverted, prior, seed))
        require_svd(model, "Reference Noise")
        inverted = invert_reference(model, vae, reference_frames, float(sigmas[0]), inversion_steps, motion_embedding)
        log.info("Reference Noise: inverted %d frames to sigma %.3g (std %.3f), prior %.2f", inverted.shape[0],
                 float(sigmas[0]), float(inverted.std()), prior)
        return io.NodeOutput(BlendedNoise(inverted, prior, seed))
