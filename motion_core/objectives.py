"""SVD's EDM training objective and noise-level sampling.

EDM (Karras et al. 2022) as SVD uses it: ``x_t = x0 + sigma * eps``, the model returns
the denoised estimate ``D(x_t; sigma)``, and the loss weight is
``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2``. One sigma is drawn
per sample and shared by all its frames, ``ln sigma ~ N(mean, std^2)``; the Reenact
Anything paper shifts the mean to 2.8 (std 1.6) so training sees mostly high noise,
where motion is decided.
"""
from __future__ import annotations

import math

import torch

DEFAULT_LOG_SIGMA_MEAN = 2.8
DEFAULT_LOG_SIGMA_STD = 1.6
LOSS_EDM = "edm"
LOSS_APPEARANCE_DEBIASED = "appearance_debiased"
LOSSES = (LOSS_EDM, LOSS_APPEARANCE_DEBIASED)


def sample_sigma(generator: torch.Generator, mean: float = DEFAULT_LOG_SIGMA_MEAN,
                 std: float = DEFAULT_LOG_SIGMA_STD) -> float:
    """One noise level, ``ln sigma ~ N(mean, std^2)``, drawn on the CPU generator."""
    return math.exp(mean + std * float(torch.randn((), generator=generator)))


def edm_weight(sigma: float | torch.Tensor, sigma_data: float = 1.0):
    """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2``."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def edm_loss(denoised: torch.Tensor, clean: torch.Tensor, sigma: float | torch.Tensor,
             sigma_data: float = 1.0) -> torch.Tensor:
    """Weighted denoising loss, ``mean(lambda(sigma) * (D - x0)^2)``, computed in float32.

    ``denoised``, ``clean``: ``(f c h w)``; ``sigma`` a float or a tensor broadcastable to them.
    """
    return (edm_weight(sigma, sigma_data) * (denoised.float() - clean.float()) ** 2).mean()


def anchor_debiased(frames: torch.Tensor, anchor: int, beta: float = 1.0) -> torch.Tensor:
    """``alpha * x - beta * x[anchor]`` over the frame axis 0, ``alpha = sqrt(1 + beta^2)``.

    Subtracting one frame from all removes what the frames share (appearance) and keeps
    how they differ (motion); ``alpha`` keeps the noise scale of the difference
    comparable (MotionDirector's appearance-debiased temporal loss). ``(f ...) -> (f ...)``.
    """
    alpha = math.sqrt(1.0 + beta * beta)
    return alpha * frames - beta * frames[anchor:anchor + 1]


def training_loss(denoised: torch.Tensor, clean: torch.Tensor, sigma: float, sigma_data: float,
                  kind: str = LOSS_EDM, anchor: int = 0) -> torch.Tensor:
    """The Learn node's objective: EDM, or EDM plus its appearance-debiased twin.

    ``kind == "appearance_debiased"``: the same weighted loss also computed after the
    ``anchor`` frame is subtracted from every frame of target and prediction (Motion
    Inversion, sec. 3.3, after MotionDirector), the two added.
    """
    loss = edm_loss(denoised, clean, sigma, sigma_data)
    if kind == LOSS_EDM:
        return loss
    if kind != LOSS_APPEARANCE_DEBIASED:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
    return loss + edm_loss(anchor_debiased(denoised.float(), anchor), anchor_debiased(clean.float(), anchor),
                           sigma, sigma_data)
