"""The training objectives and noise-level sampling: SVD's EDM, Wan's flow matching.

EDM (Karras et al. 2022) as SVD uses it: ``x_t = x0 + sigma * eps``, the model returns
the denoised estimate ``D(x_t; sigma)``, and the loss weight is
``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2``. One sigma is drawn
per sample and shared by all its frames, ``ln sigma ~ N(mean, std^2)``; the Reenact
Anything paper shifts the mean to 2.8 (std 1.6) so training sees mostly high noise,
where motion is decided.

Flow matching as Wan is trained: ``x_t = (1 - sigma) * x0 + sigma * eps`` with sigma in
(0, 1), the model predicts the velocity ``eps - x0``; through ComfyUI's ``model_sampling``
it returns ``D = x_t - sigma * v``, so the velocity loss is ``mean(((D - x0) / sigma)^2)``.
Training noise levels are uniform, shifted towards high noise by the model's shift
(``sigma = shift * u / (1 + (shift - 1) * u)``, SD3's and Wan's timestep shift).

Epsilon prediction as SD1.5 (and AnimateDiff on it) is trained: a DDPM beta schedule of
1000 steps; in ComfyUI's form ``x_t = x0 + sigma_t * eps`` with ``sigma_t`` the schedule's
``sqrt((1 - alphabar_t) / alphabar_t)`` (the model's ``model_sampling.sigmas``), the timestep
``t`` uniform over the schedule, and the loss the noise's MSE, ``mean(((D - x0) / sigma)^2)``
(the denoised estimate is ``D = x_t - sigma * eps_hat``).
"""
from __future__ import annotations

import math

import torch

DEFAULT_LOG_SIGMA_MEAN = 2.8
DEFAULT_LOG_SIGMA_STD = 1.6
LOSS_EDM = "edm"
LOSS_APPEARANCE_DEBIASED = "appearance_debiased"
LOSSES = (LOSS_EDM, LOSS_APPEARANCE_DEBIASED)
OBJECTIVE_EDM = "edm"      # SVD
OBJECTIVE_FLOW = "flow"    # Wan
OBJECTIVE_EPS = "eps"      # SD1.5 + AnimateDiff: epsilon prediction on a discrete DDPM schedule
OBJECTIVES = (OBJECTIVE_EDM, OBJECTIVE_FLOW, OBJECTIVE_EPS)
FLOW_SIGMA_MIN = 1e-3      # keeps 1 / sigma finite


def sample_sigma(generator: torch.Generator, mean: float = DEFAULT_LOG_SIGMA_MEAN,
                 std: float = DEFAULT_LOG_SIGMA_STD) -> float:
    """One noise level, ``ln sigma ~ N(mean, std^2)``, drawn on the CPU generator."""
    return math.exp(mean + std * float(torch.randn((), generator=generator)))


def sample_flow_sigma(generator: torch.Generator, shift: float = 1.0, low: float = 0.0, high: float = 1.0) -> float:
    """One flow-matching noise level: ``u ~ U(0, 1)`` shifted, clamped to ``[FLOW_SIGMA_MIN, 1]``.

    ``low`` / ``high``: only noise levels in that range (a Wan 2.2 A14B expert's share of the
    schedule): ``u`` is drawn between the two bounds' unshifted values, so the shifted
    distribution is the same one, restricted to the range.
    """
    def unshift(sigma):
        return sigma / (shift - (shift - 1.0) * sigma)
    u = unshift(low) + (unshift(high) - unshift(low)) * float(torch.rand((), generator=generator))
    sigma = shift * u / (1.0 + (shift - 1.0) * u)
    return min(1.0, max(FLOW_SIGMA_MIN, sigma))


def sample_discrete_sigma(generator: torch.Generator, schedule: tuple) -> float:
    """One epsilon-prediction noise level: the schedule's sigma at a timestep drawn uniformly from all of them."""
    if not schedule:
        raise ValueError("epsilon prediction needs the model's noise schedule (its model_sampling.sigmas)")
    return float(schedule[int(torch.randint(0, len(schedule), (), generator=generator))])


def noised(clean: torch.Tensor, noise: torch.Tensor, sigma: float, objective: str = OBJECTIVE_EDM) -> torch.Tensor:
    """``x_t``: EDM and epsilon prediction ``x0 + sigma * eps``; flow ``(1 - sigma) * x0 + sigma * eps``."""
    if objective == OBJECTIVE_FLOW:
        return (1.0 - sigma) * clean + sigma * noise
    return clean + sigma * noise


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


def flow_loss(denoised: torch.Tensor, clean: torch.Tensor, sigma: float) -> torch.Tensor:
    """Velocity loss of flow matching, ``mean(((D - x0) / sigma)^2)``, computed in float32.

    The same expression is epsilon prediction's noise MSE (``D - x0 = sigma * (eps - eps_hat)``).
    """
    return ((denoised.float() - clean.float()) ** 2).mean() / sigma ** 2


def training_loss(denoised: torch.Tensor, clean: torch.Tensor, sigma: float, sigma_data: float,
                  kind: str = LOSS_EDM, anchor: int = 0, objective: str = OBJECTIVE_EDM) -> torch.Tensor:
    """The Learn node's loss: the model's objective, or it plus its appearance-debiased twin.

    ``objective``: ``"edm"`` (SVD, weighted by ``lambda(sigma)``), ``"flow"`` (Wan's
    velocity loss) or ``"eps"`` (SD1.5 / AnimateDiff's noise MSE). ``kind == "appearance_debiased"``: the same loss also computed after
    the ``anchor`` frame is subtracted from every frame of target and prediction (Motion
    Inversion, sec. 3.3, after MotionDirector), the two added. Frames on axis 0.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; expected one of {OBJECTIVES}")

    def one(prediction, target):
        if objective in (OBJECTIVE_FLOW, OBJECTIVE_EPS):
            return flow_loss(prediction, target, sigma)
        return edm_loss(prediction, target, sigma, sigma_data)

    loss = one(denoised, clean)
    if kind == LOSS_EDM:
        return loss
    if kind != LOSS_APPEARANCE_DEBIASED:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
    return loss + one(anchor_debiased(denoised.float(), anchor), anchor_debiased(clean.float(), anchor))
