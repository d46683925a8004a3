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
from typing import Callable, Optional, Sequence

import torch

from .augment import AugmentSettings, augment_clip
from .embedding import MotionEmbedding
from .objectives import (DEFAULT_LOG_SIGMA_MEAN, DEFAULT_LOG_SIGMA_STD, LOSS_EDM, LOSSES, OBJECTIVE_EDM,
                         OBJECTIVE_EPS, OBJECTIVE_FLOW, OBJECTIVES, noised, sample_discrete_sigma, sample_flow_sigma,
                         sample_sigma, training_loss)

log = logging.getLogger(__name__)

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, int, float], None]
GradientCallback = Callable[[int, list[torch.Tensor]], None]


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
    loss_scale: float = 0.0        # > 0: dynamic loss scaling from this scale (float16 models); 0: off
    max_bad_steps: int = 25        # this many non-finite steps in a row stop the run
    objective: str = OBJECTIVE_EDM  # "edm" (SVD: log-normal sigma), "flow" (Wan: shifted uniform sigma in (0, 1)) or
    #                                 "eps" (SD1.5 + AnimateDiff: a timestep of eps_schedule, uniform)
    flow_shift: float = 1.0        # the model's shift, for "flow"
    flow_sigma_range: tuple = (0.0, 1.0)   # "flow": the noise levels learned on (a Wan 2.2 A14B expert's)
    host_optimizer: bool = False   # Adam's state and a float32 master copy in CPU memory (see HostAdam)
    eps_schedule: tuple = ()       # "eps": the noise levels drawn uniformly: the model's sigma at each timestep

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {LOSSES}")
        if not (self.loss_scale >= 0 and math.isfinite(self.loss_scale)):
            raise ValueError(f"loss_scale must be 0 (off) or a positive number, got {self.loss_scale}")
        if self.max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {self.max_bad_steps}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r} is not one of {OBJECTIVES}")
        if not (self.flow_shift > 0 and math.isfinite(self.flow_shift)):
            raise ValueError(f"flow_shift must be a positive number, got {self.flow_shift}")
        low, high = self.flow_sigma_range
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"flow_sigma_range must be (low, high) with 0 <= low < high <= 1, got {self.flow_sigma_range}")
        if self.objective == OBJECTIVE_EPS and self.eps_schedule and not all(
                math.isfinite(sigma) and sigma > 0 for sigma in self.eps_schedule):
            raise ValueError("eps_schedule must hold positive noise levels (the model's model_sampling.sigmas)")

    def as_metadata(self) -> dict:
        record = dataclasses.asdict(self)
        schedule = record.pop("eps_schedule")       # 1000 numbers the model holds: recorded by their range
        if schedule:
            record["eps_schedule"] = {"timesteps": len(schedule), "sigma_min": min(schedule), "sigma_max": max(schedule)}
        return record


@dataclasses.dataclass
class TrainResult:
    embedding: MotionEmbedding          # float32 copy on the CPU, the last good values
    loss_history: list[float]           # the loss of every step that updated the embedding
    steps_done: int                     # steps run, skipped ones included
    stopped_reason: Optional[str] = None   # None: all steps ran
    skipped_steps: int = 0              # steps whose loss or gradients were not finite (no update)

    @property
    def completed(self) -> bool:
        return self.stopped_reason is None


class TrainingInterrupted(Exception):
    """Raised when the step callback raised (Cancel); carries the last good result."""

    def __init__(self, result: TrainResult, cause: BaseException):
        super().__init__(f"training stopped at step {result.steps_done}: {cause!r}")
        self.result = result
        self.cause = cause


class LossScale:
    """Dynamic loss scaling for float16 models (as ``torch.amp.GradScaler`` does it).

    The loss is multiplied by ``scale`` before the backward pass so that small gradients
    do not underflow in float16; gradients are divided by it again before the optimiser
    sees them. A step whose gradients overflow halves the scale; ``growth_interval`` good
    steps in a row double it. ``scale == 0`` turns it off (a factor of 1).
    """

    def __init__(self, scale: float, growth_interval: int = 200):
        self.enabled = scale > 0
        self.scale = scale if self.enabled else 1.0
        self.growth_interval = growth_interval
        self._good = 0

    def update(self, finite: bool) -> None:
        if not self.enabled:
            return
        if not finite:
            self.scale = max(self.scale / 2.0, 1.0)
            self._good = 0
            return
        self._good += 1
        if self._good >= self.growth_interval:
            self.scale = min(self.scale * 2.0, 2.0 ** 24)
            self._good = 0


def _finish(embedding: MotionEmbedding, history: list[float], steps_done: int, skipped: int,
            settings: TrainSettings, reason: Optional[str]) -> TrainResult:
    copy = embedding.detached_copy("cpu")
    copy.metadata["training"] = settings.as_metadata()
    copy.metadata["training"]["steps_done"] = steps_done
    copy.metadata["training"]["skipped_steps"] = skipped
    if reason:
        copy.metadata["training"]["stopped_reason"] = reason
    copy.metadata["loss_history"] = [round(v, 6) for v in history]
    return TrainResult(copy, history, steps_done, reason, skipped)


class HostAdam:
    """Adam whose state lives in CPU memory, for learned tensors on an accelerator.

    Keeps a float32 master copy of each learned tensor and Adam's two moments on the CPU;
    each step copies the gradients there, steps, and copies the new values back. The device
    then holds only the learned tensors and their gradients (8 bytes a value instead of 16).
    The arithmetic is ``torch.optim.Adam``'s on the same float32 values, so the result
    equals a plain Adam's up to the CPU's and the device's rounding.
    """

    def __init__(self, params: list[torch.Tensor], lr: float):
        self.params = params
        self.masters = [p.detach().to("cpu", copy=True) for p in params]
        self.optimizer = torch.optim.Adam(self.masters, lr=lr)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            param.grad = None
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for master, param in zip(self.masters, self.params):
            master.grad = torch.zeros_like(master) if param.grad is None else param.grad.to("cpu", copy=True)
        self.optimizer.step()
        for master, param in zip(self.masters, self.params):
            param.copy_(master)
            master.grad = None


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """One device sync for the lot."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def check_clips(clean: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The reference clips as a list, checked to be of one shape ``(f c h w)`` (one clip or several)."""
    clips = [clean] if isinstance(clean, torch.Tensor) else list(clean)
    if not clips:
        raise ValueError("no reference clip to learn from")
    shapes = {tuple(clip.shape) for clip in clips}
    if len(shapes) != 1:
        raise ValueError(f"the reference clips differ in shape ({sorted(shapes)}); conform them to the first "
                         "(same frames and size) before learning")
    return clips


def train_motion_embedding(denoiser: Denoiser, clean: torch.Tensor | Sequence[torch.Tensor], embedding: MotionEmbedding,
                           settings: TrainSettings, callback: Optional[StepCallback] = None,
                           on_gradients: Optional[GradientCallback] = None,
                           select_clip: Optional[Callable[[int], None]] = None) -> TrainResult:
    """Optimise ``embedding``'s tensors (in place) so ``denoiser`` reproduces ``clean``.

    ``clean`` ``(f c h w)``: the reference clip's latents in the model's latent space,
    encoded once by the caller; or a sequence of such clips of one motion, all of one
    shape, of which each step draws one (uniformly; with one clip nothing is drawn, so a
    one-clip run is the same whichever way it is passed). Each step: one augmentation draw for the whole clip, one
    sigma for all frames, fresh noise, the objective, one Adam step. Random numbers come
    from one CPU generator seeded with ``settings.seed``: same seed, same run.

    The learned tensors and Adam's state stay float32 whatever the model computes in.
    A step whose loss or gradients are not finite is skipped (no update) and counted;
    ``settings.max_bad_steps`` of them in a row stop the run. No copy of the embedding is
    kept per step, and none is needed: the tensors change only through Adam steps on
    finite gradients, and an Adam step moves each value by a bounded amount (about the
    learning rate), so the tensors are always the last good values. With
    ``settings.host_optimizer`` Adam's state waits in CPU memory (:class:`HostAdam`). With
    ``settings.loss_scale`` the loss is scaled for float16 (see :class:`LossScale`).
    If ``callback(step, total, loss)`` raises (a Cancel), :class:`TrainingInterrupted`
    carries the result so far. ``on_gradients(step, grads)`` sees each good step's
    unscaled gradients, in the order of ``embedding.parameters()`` (benchmarks, tests).
    ``select_clip(index)`` hears which of several clips a step learns from, before its
    denoiser call (a conditioning of each clip's own, such as SVD's image embedding).
    """
    params = embedding.parameters()
    if not params or not all(p.requires_grad for p in params):
        raise ValueError("the embedding has no trainable tensors: build it with trainable_copy()")
    if any(p.dtype != torch.float32 for p in params):
        raise ValueError("the learned tensors must be float32 (the model may compute in half precision)")
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    optimizer = HostAdam(params, settings.learning_rate) if settings.host_optimizer else \
        torch.optim.Adam(params, lr=settings.learning_rate)
    scaler = LossScale(settings.loss_scale)
    history: list[float] = []
    clips = check_clips(clean)
    frames = clips[0].shape[0]
    skipped = bad_in_a_row = 0

    for step in range(settings.steps):
        index = int(torch.randint(0, len(clips), (), generator=generator)) if len(clips) > 1 else 0
        if select_clip is not None:
            select_clip(index)
        clip = clips[index]
        sample = augment_clip(clip, generator, settings.augment)
        if settings.objective == OBJECTIVE_FLOW:
            sigma = sample_flow_sigma(generator, settings.flow_shift, *settings.flow_sigma_range)
        elif settings.objective == OBJECTIVE_EPS:
            sigma = sample_discrete_sigma(generator, settings.eps_schedule)
        else:
            sigma = sample_sigma(generator, settings.log_sigma_mean, settings.log_sigma_std)
        noise = torch.randn(sample.shape, generator=generator).to(sample)
        anchor = int(torch.randint(0, frames, (), generator=generator))
        sigmas = torch.full((frames,), sigma, device=sample.device, dtype=torch.float32)
        denoised = denoiser(noised(sample, noise, sigma, settings.objective), sigmas, sample[:1])
        loss = training_loss(denoised, sample, sigma, settings.sigma_data, settings.loss, anchor, settings.objective)
        value = float(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        finite = math.isfinite(value)
        if finite:
            (loss * scaler.scale if scaler.enabled else loss).backward(inputs=params)   # no grads on frozen weights
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            finite = _all_finite(grads)
        del loss, denoised
        if finite:
            if scaler.enabled:
                for grad in grads:
                    grad.div_(scaler.scale)
            if on_gradients is not None:
                on_gradients(step + 1, grads)
            optimizer.step()
            bad_in_a_row = 0
            history.append(value)
            scaler.update(True)
        else:
            skipped += 1
            bad_in_a_row += 1
            optimizer.zero_grad(set_to_none=True)
            scaler.update(False)
            log.warning("step %d: non-finite %s, skipped (%d in a row)%s", step + 1,
                        "loss" if not math.isfinite(value) else "gradients", bad_in_a_row,
                        f"; loss scale now {scaler.scale:g}" if scaler.enabled else "")
            if bad_in_a_row >= settings.max_bad_steps:
                reason = (f"{bad_in_a_row} non-finite steps in a row (last at step {step + 1}); kept the last "
                          f"embedding with a finite loss; try a lower learning rate or a float32/bfloat16 model")
                log.warning("Motion embedding training stopped: %s", reason)
                return _finish(embedding, history, step + 1, skipped, settings, reason)
        try:
            if callback is not None:
                callback(step + 1, settings.steps, value)
        # Cancel from the host: hand back what we have. ComfyUI 0.33's interrupt derives from
        # BaseException (0.3.64's from Exception), so that nothing catches it by accident.
        except BaseException as exc:
            raise TrainingInterrupted(_finish(embedding, history, step + 1, skipped, settings,
                                              f"interrupted at step {step + 1}"), exc) from exc
    return _finish(embedding, history, settings.steps, skipped, settings, None)


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
