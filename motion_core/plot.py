"""A loss-curve picture drawn with opencv (no plotting dependency)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch


def loss_plot(history: list[float], width: int = 512, height: int = 256, smooth: int = 20) -> torch.Tensor:
    """Loss per step (grey) and its running mean (orange) on a log scale.

    Returns an IMAGE ``(1 h w 3)`` float32 in 0..1.
    """
    canvas = np.full((height, width, 3), 24, np.uint8)
    values = [v for v in history if math.isfinite(v) and v > 0]
    margin = 28
    cv2.rectangle(canvas, (margin, 8), (width - 8, height - margin), (80, 80, 80), 1)
    if len(values) >= 2:
        logs = np.log10(np.asarray(values, dtype=np.float64))
        kernel = max(1, min(smooth, len(logs) // 4 or 1))
        running = np.convolve(logs, np.ones(kernel) / kernel, mode="valid")
        low, high = float(logs.min()), float(logs.max())
        span = max(high - low, 1e-6)

        def points(series, offset):
            xs = margin + (np.arange(len(series)) + offset) / max(len(logs) - 1, 1) * (width - 8 - margin)
            ys = 8 + (high - series) / span * (height - margin - 8)
            return np.stack([xs, ys], 1).round().astype(np.int32).reshape(-1, 1, 2)

        cv2.polylines(canvas, [points(logs, 0)], False, (110, 110, 110), 1, cv2.LINE_AA)
        cv2.polylines(canvas, [points(running, kernel - 1)], False, (255, 160, 40), 2, cv2.LINE_AA)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(canvas, f"{10 ** high:.3g}", (2, 18), font, 0.35, (200, 200, 200), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{10 ** low:.3g}", (2, height - margin), font, 0.35, (200, 200, 200), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"step {len(values)}  last {values[-1]:.4g}  mean of last {kernel}: "
                    f"{10 ** running[-1]:.4g}", (margin, height - 8), font, 0.4, (220, 220, 220), 1, cv2.LINE_AA)
    else:
        cv2.putText(canvas, "no loss recorded", (margin + 8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (200, 200, 200), 1, cv2.LINE_AA)
    return torch.from_numpy(canvas.astype(np.float32) / 255.0)[None]
