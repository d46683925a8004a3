"""Reference Noise, host-free: the schedule of the inversion and the blend with fresh noise.

Motion Inversion's code starts sampling from the reference clip inverted along the model's
ODE, blended with fresh noise: ``sqrt(prior) * inverted + sqrt(1 - prior) * fresh`` (prior
0.5). The node (``nodes/reference_noise.py``) and the toy benchmark both use these.
"""
from __future__ import annotations

import math

import torch


def inversion_sigmas(sigma_target: float, steps: int, sigma_start: float = 0.05) -> torch.Tensor:
    """Ascending noise levels ``(steps + 1)`` from ``sigma_start`` to ``sigma_target``, log-spaced."""
    if steps < 1 or not sigma_target > sigma_start:
        raise ValueError(f"an inversion needs steps >= 1 and a target sigma above {sigma_start}; "
                         f"got steps={steps}, sigma_target={sigma_target}")
    return torch.logspace(math.log10(sigma_start), math.log10(sigma_target), steps + 1)


def euler_inversion_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, next_sigma: float) -> torch.Tensor:
    """One Euler step of the probability-flow ODE from ``sigma`` up to ``next_sigma`` (same shapes)."""
    return x + (x - denoised) / sigma * (next_sigma - sigma)


def blend_noise(inverted: torch.Tensor, fresh: torch.Tensor, prior: float) -> torch.Tensor:
    """``sqrt(prior) * inverted + sqrt(1 - prior) * fresh``: unit-variance noise (both inputs unit variance)."""
    if not 0.0 <= prior <= 1.0:
        raise ValueError(f"prior is the share of inverted noise, 0..1; got {prior}")
    return math.sqrt(prior) * inverted.to(fresh) + math.sqrt(1.0 - prior) * fresh
