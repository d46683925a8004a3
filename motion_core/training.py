"""The training loop, written against a plain denoiser callable.

A *denoiser* is ``denoiser(noisy, sigma, first_frame) -> denoised`` with
``noisy (f c h w)`` the noised clip, ``sigma (f)`` its noise level per frame (one value
for all frames), ``first_frame (1 c h w)`` the (augmented) clean latent of frame 0 that
SVD takes as its image conditioning, and ``denoised (f c h w)`` the model's estimate of
the clean clip. The learned tensors are *not* arguments: the caller has wired the
embedding's tensors into its model (conditioning, attention processors or patches), and
this loop only optimises them. So the same loop trains through ComfyUI's sampler
machinery and through a diffusers UNet.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Optional

import torch

from .augment import AugmentSettings, augment_clip
from .embedding import MotionEmbedding
from .objectives import (DEFAULT_LOG_SIGMA_MEAN, DEFAULT_LOG_SIGMA_STD, LOSS_EDM, LOSSES,
                         sample_sigma, training_loss)

log = logging.getLogger(__name__)

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int, float], None]


@dataclasses.dataclass
class TrainSettings:
    steps: int = 1000
    learning_rate: float = 1e-2
    seed: int = 0
    log_sigma_mean: float = DEFAULT_LOG_SIGMA_MEAN
    log_sigma_std: float = DEFAULT_LOG_SIGMA_STD
    loss: str = LOSS_EDM
    sigma_data: float = 1.0
    augment: AugmentSettings = dataclasses.field(default_factory=AugmentSettings)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {LOSSES}")

    def as_metadata(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainResult:
    embedding: MotionEmbedding          # float32 snapshot on the CPU, the last good values
    loss_history: list[float]
    steps_done: int
    stopped_reason: Optional[str] = None   # None: all steps ran

    @property
    def completed(self) -> bool:
        return self.stopped_reason is None


class TrainingInterrupted(Exception):
    """Raised when the step callback raised (Cancel); carries the last good result."""

    def __init__(self, result: TrainResult, cause: BaseException):
        super().__init__(f"training stopped at step {result.steps_done}: {cause!r}")
        self.result = result
        self.cause = cause


def _finish(snapshot: MotionEmbedding, history: list[float], steps_done: int, settings: TrainSettings,
            reason: Optional[str]) -> TrainResult:
    embedding = snapshot.detached_copy("cpu")
    embedding.metadata["training"] = settings.as_metadata()
    embedding.metadata["training"]["steps_done"] = steps_done
    if reason:
        embedding.metadata["training"]["stopped_reason"] = reason
    embedding.metadata["loss_history"] = [round(v, 6) for v in history]
    return TrainResult(embedding, history, steps_done, reason)


def train_motion_embedding(denoiser: Denoiser, clean: torch.Tensor, embedding: MotionEmbedding,
                           settings: TrainSettings, callback: Optional[StepCallback] = None) -> TrainResult:
    """Optimise ``embedding``'s tensors (in place) so ``denoiser`` reproduces ``clean``.

    ``clean`` ``(f c h w)``: the reference clip's latents in the model's latent space,
    encoded once by the caller. Each step: one augmentation draw for the whole clip, one
    sigma for all frames, fresh noise, the objective, one Adam step. Random numbers come
    from one CPU generator seeded with ``settings.seed``: same seed, same run.

    A non-finite loss stops the run and returns the last embedding whose loss was finite
    (``stopped_reason`` names the step). If ``callback(step, total, loss)`` raises (a
    Cancel), :class:`TrainingInterrupted` carries the last good result.
    """
    params = embedding.parameters()
    if not params or not all(p.requires_grad for p in params):
        raise ValueError("the embedding has no trainable tensors: build it with trainable_copy()")
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    optimizer = torch.optim.Adam(params, lr=settings.learning_rate)
    snapshot = embedding.detached_copy(device=None)   # last values whose loss was finite
    history: list[float] = []
    frames = clean.shape[0]

    for step in range(settings.steps):
        sample = augment_clip(clean, generator, settings.augment)
        sigma = sample_sigma(generator, settings.log_sigma_mean, settings.log_sigma_std)
        noise = torch.randn(sample.shape, generator=generator).to(sample)
        anchor = int(torch.randint(0, frames, (), generator=generator))
        sigmas = torch.full((frames,), sigma, device=sample.device, dtype=torch.float32)
        denoised = denoiser(sample + sigma * noise, sigmas, sample[:1])
        loss = training_loss(denoised, sample, sigma, settings.sigma_data, settings.loss, anchor)
        value = float(loss.detach())
        if not math.isfinite(value):
            reason = (f"non-finite loss ({value}) at step {step + 1}; kept the last embedding with a finite loss "
                      f"(after {max(step - 1, 0)} update(s))")
            log.warning("Motion embedding training stopped: %s", reason)
            return _finish(snapshot, history, step, settings, reason)
        snapshot.load_values_(embedding)
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)   # only the embedding: no grads pile up on frozen weights
        optimizer.step()
        history.append(value)
        if callback is not None:
            try:
                callback(step + 1, settings.steps, value)
            except Exception as exc:  # Cancel from the host: hand back what we have
                if embedding.all_finite():
                    snapshot.load_values_(embedding)
                raise TrainingInterrupted(_finish(snapshot, history, step + 1, settings, f"interrupted at step {step + 1}"), exc) from exc
    if embedding.all_finite():
        snapshot.load_values_(embedding)
    else:
        return _finish(snapshot, history, settings.steps, settings,
                       f"the last step made the embedding non-finite; kept the values from step {settings.steps - 1}")
    return _finish(snapshot, history, settings.steps, settings, None)


@torch.no_grad()
def fixed_noise_losses(denoiser: Denoiser, clean: torch.Tensor, sigmas=(0.5, 2.0, 8.0, 20.0), seed: int = 1234,
                       sigma_data: float = 1.0, loss: str = LOSS_EDM, anchor: int = 0) -> list[float]:
    """The learning objective (``loss``, one of ``objectives.LOSSES``) at each of ``sigmas``,
    one fixed noise per entry (drawn in order from ``seed``): comparable across embeddings.

    ``clean`` ``(f c h w)``; ``anchor``: the frame the appearance-debiased loss subtracts
    (the learning draws it per step; a measurement fixes it).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} is not one of {LOSSES}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    frames = clean.shape[0]
    values = []
    for sigma in sigmas:
        noise = torch.randn(clean.shape, generator=generator).to(clean)
        sigma_vec = torch.full((frames,), float(sigma), device=clean.device)
        denoised = denoiser(clean + sigma * noise, sigma_vec, clean[:1])
        values.append(float(training_loss(denoised, clean, sigma, sigma_data, loss, anchor)))
    return values


def fixed_noise_loss(denoiser: Denoiser, clean: torch.Tensor, sigmas=(0.5, 2.0, 8.0, 20.0), seed: int = 1234,
                     sigma_data: float = 1.0) -> float:
    """Mean EDM loss at fixed noise levels and fixed noise: comparable before/after training."""
    return sum(fixed_noise_losses(denoiser, clean, sigmas, seed, sigma_data)) / len(sigmas)
