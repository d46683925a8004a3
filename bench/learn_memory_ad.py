"""Learn Motion Embedding on AnimateDiff: measured memory and time, beside the plan Learn makes.

    COMFYUI_PATH=../shared/comfyui-0.33 ADE_PATH=../shared/animatediff-evolved-1.5.7 \
        python -m bench.learn_memory --families animatediff

Each row runs in a fresh process (its resident set measures that row alone): ComfyUI's SD1.5
model at its real config with random weights (inference tensors, as ComfyUI's loaders leave
them) and a motion model in ``mm_sd_v15_v2``'s layout (42 temporal self-attention layers, random
weights, written as float16 safetensors and loaded through ADE's own Gen2 nodes), then the Learn
node's own path: ``prepare_learning`` (its plan and refusal) and ``train_ad_in_host`` through
ComfyUI's guider, one warm-up step and one measured step. The VAE is a stand-in that returns a
latent of the right shape (the encode runs before learning). On the CPU: float32, PyTorch SDPA,
reduced sizes; on a GPU (``--device cuda``): float16 at 512x512x16, AnimateDiff's own size.
The CPU rows give the plan's AnimateDiff constants (``fit_ad_constants``,
``motion_core.memory_plan.AD_ACTIVATION_BYTES``), and a row they are not fitted on checks them.
"""
from __future__ import annotations

import json

import torch

from bench.learn_memory_rows import measure_steps, run_in_fresh_process

# CPU rows: float32 at reduced sizes (the plan is linear in the video's positions); (width, height, frames, layers,
# checkpointing)
CPU_ROWS = [
    dict(width=128, height=128, frames=16, layers="widest", checkpointing=True),
    dict(width=192, height=192, frames=16, layers="widest", checkpointing=True),
    dict(width=128, height=128, frames=16, layers="widest", checkpointing=False),
    dict(width=128, height=128, frames=16, layers="all", checkpointing=True),
    dict(width=256, height=256, frames=16, layers="all", checkpointing=True),     # not fitted on: a check
]
# GPU rows: float16 at AnimateDiff's own size, both presets, checkpointing on
CUDA_ROWS = [
    dict(width=512, height=512, frames=16, layers="widest", checkpointing=True, dtype="float16"),
    dict(width=512, height=512, frames=16, layers="all", checkpointing=True, dtype="float16"),
]


class LatentVAE:
    """Stands in for SD1.5's VAE: ``encode`` gives a random latent ``(f 4 h/8 w/8)``."""

    downscale_ratio = 8

    def encode(self, frames):
        shape = (frames.shape[0], 4, frames.shape[1] // 8, frames.shape[2] // 8)
        return torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 0.5


def measure_ad_row(hs, width, height, frames, layers, checkpointing, device, steps=2, dtype="float32") -> dict:
    """One row through the Learn node's path; the first step is a warm-up, the second is timed."""
    from bench.learn_memory import GIB
    learn = hs.pack_module("nodes.learn")
    host_training = hs.pack_module("nodes.host_training")
    memory = hs.pack_module("nodes.memory")
    memory_plan = hs.pack_module("motion_core.memory_plan")
    ad = hs.pack_module("nodes.hooks.animatediff")
    select = hs.pack_module("motion_core.layers").select_layers
    model_width = memory_plan.model_width
    sd_model = hs.build_sd15(dtype=getattr(torch, dtype), inference=True)
    model, motion_model = hs.ade_model(sd_model, hs.write_motion_model(full=True))
    reference = torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(1))
    positive = [[torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(3)), {}]]
    prepared = learn.prepare_learning(model, LatentVAE(), reference, "temporal", 5, steps, 1e-2, 0, 0.0, 1.0,
                                      "appearance_debiased", False, False, 6, 127, 0.0, layers, "", None,
                                      checkpointing, 1.0, positive)
    chosen = select(ad.motion_layout(motion_model, height // 8, width // 8), layers)
    shape = memory.ad_learn_shape(model, motion_model, chosen, frames, height // 8, width // 8, checkpointing)
    planned = memory_plan.plan(shape)
    measured = measure_steps(model, device, steps, lambda on_step: host_training.train_ad_in_host(
        model, prepared.wan_positive, prepared.latents, prepared.initial, prepared.settings, on_step,
        checkpointing=checkpointing))
    weights = float(sd_model.model_size()) + float(ad.motion_models(model)[0].model_size())
    if device == "cuda":    # ADE injects the motion model while sampling: both models reach the card inside the step
        measured["peak_rise_gib"] -= weights / GIB
    return {"family": "animatediff", "width": width, "height": height, "frames": frames, "layers": layers,
            "learned_layers": len(chosen), "checkpointing": checkpointing, "dtype": dtype, "kind": "measured",
            "attention_kernel": shape.attention_kernel, "weights_gib": weights / GIB,
            "tracked_width": shape.tracked_width, "model_width": model_width(shape.model_layout),
            **measured, "planned_gib": planned.total / GIB,
            "planned_less_weights_gib": (planned.total - planned.weights) / GIB,
            "planned_activations_gib": planned.activations / GIB, "planned_learned_gib": planned.learned / GIB,
            "memory_account": prepared.memory_account}


def run_ad_row(spec: dict, device: str, threads: int, folder: str) -> dict | None:
    """One row in a fresh process; None when it failed (its output says why)."""
    return run_in_fresh_process("--ad-row", spec, device, threads, folder)


def ad_row_main(spec_json: str, device: str, out: str) -> None:
    from bench.learn_memory import start_host
    hs = start_host(device)
    if not hs.ade_loaded():
        raise SystemExit("AnimateDiff-Evolved is not loaded: put its source beside the ComfyUI tree "
                         "(../shared/animatediff-evolved-1.5.x) or set ADE_PATH")
    row = measure_ad_row(hs, device=device, **json.loads(spec_json))
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(row, fh)


def positions(row: dict) -> int:
    """Latent positions of a row's video: frames x (h/8) x (w/8)."""
    return row["frames"] * (row["height"] // 8) * (row["width"] // 8)


def activations_gib(row: dict) -> float:
    """What the row's step kept beyond the loaded weights, less the learned state (tensors, gradients, Adam) and,
    without checkpointing, the weight copies the plan counts apart (GiB, float32)."""
    copies = 0.0 if row["checkpointing"] else row["weights_gib"]
    return row["peak_rise_gib"] - row["planned_learned_gib"] - copies


def fit_ad_constants(rows: list[dict]) -> dict:
    """``motion_core.memory_plan.AD_ACTIVATION_BYTES`` from float32 rows of mm_sd_v15_v2's layout. Checkpointing
    on: a line in the positions through the two ``widest`` sizes (fixed bytes and bytes a position), and the
    smallest ``all`` row for how the bytes a position grow with the tracked width; off: proportional to the
    positions and the tracked width, from the ``widest`` row. An empty dict where rows are missing."""
    from motion_core.memory_plan import GIB
    rows = [r for r in rows if r["dtype"] == "float32"]
    constants = {}
    on = sorted((r for r in rows if r["checkpointing"] and r["layers"] == "widest"), key=positions)
    wider = sorted((r for r in rows if r["checkpointing"] and r["layers"] == "all"), key=positions)
    if len(on) >= 2 and wider:
        small, large, every = on[0], on[-1], wider[0]
        slope = (activations_gib(large) - activations_gib(small)) * GIB / (positions(large) - positions(small))
        fixed = activations_gib(small) * GIB - slope * positions(small)
        slope_every = (activations_gib(every) * GIB - fixed) / positions(every)
        per_width = (slope_every - slope) / (every["tracked_width"] - small["tracked_width"])
        constants[True] = (round(fixed), round(slope - per_width * small["tracked_width"]), round(per_width, 3))
    off = [r for r in rows if not r["checkpointing"] and r["layers"] == "widest"]
    if off:
        constants[False] = (0, 0, round(activations_gib(off[0]) * GIB / positions(off[0]) / off[0]["tracked_width"],
                                        3))
    return constants


def fitted_on(rows: list[dict], row: dict):
    """``row`` if :func:`fit_ad_constants` uses it, else None."""
    used = [r for r in rows if r["dtype"] == "float32" and r["layers"] == "widest"]
    wider = sorted((r for r in rows if r["dtype"] == "float32" and r["checkpointing"] and r["layers"] == "all"),
                   key=positions)
    return row if any(row is r for r in used + wider[:1]) else None


def planned_gib(row: dict, constants: dict | None) -> float:
    """The plan for a row, less the weights (GiB, float32): with AnimateDiff's ``constants``, or (None) with SVD's
    scaled by the whole motion model's width, what Learn planned before AnimateDiff was measured."""
    from motion_core.memory_plan import ACTIVATION_BYTES, GIB, SVD_WIDTH
    if constants is None:
        fixed, per_position = ACTIVATION_BYTES[("temporal", row["checkpointing"])]
        scale = row["model_width"] / SVD_WIDTH
        activations = (fixed + per_position * positions(row)) * scale
    else:
        fixed, per_position, per_width = constants[row["checkpointing"]]
        activations = fixed + (per_position + per_width * row["tracked_width"]) * positions(row)
    copies = 0.0 if row["checkpointing"] else row["weights_gib"]
    return activations / GIB + row["planned_learned_gib"] + copies


def ad_report(rows: list[dict]) -> str:
    """The measured rows beside the plan (both less the loaded weights): with SVD's constants scaled by the
    layout, and with AnimateDiff's own, fitted on these rows."""
    constants = fit_ad_constants(rows)
    lines = ["| size (w x h x frames) | layers | checkpointing | dtype | peak rise over the loaded weights (GiB) | "
             "plan with SVD's constants | plan with AnimateDiff's | saved for backward (GiB) | s/step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fitted = f"{planned_gib(r, constants):.2f}" if r["checkpointing"] in constants else "-"
        mark = " (a check)" if r is not fitted_on(rows, r) else ""
        lines.append(f"| {r['width']} x {r['height']} x {r['frames']}{mark} | {r['layers']} ({r['learned_layers']}) | "
                     f"{'on' if r['checkpointing'] else 'off'} | {r['dtype']} | {r['peak_rise_gib']:.2f} | "
                     f"{planned_gib(r, None):.2f} | {fitted} | {r['saved_gib']:.3f} | {r['step_seconds']:.1f} |")
    if rows:
        lines += ["", f"Loaded weights: {rows[0]['weights_gib']:.2f} GiB (SD1.5 and the motion model, "
                      f"{rows[0]['dtype']}); attention kernel {rows[0]['attention_kernel']}. Fitted (bytes in float32; "
                      f"checkpointing -> (fixed, per latent position, per latent position and unit of tracked "
                      f"width)), the values of "
                      f"`motion_core.memory_plan.AD_ACTIVATION_BYTES`: {constants}"]
        lines += [f"The {r['width']} x {r['height']} x {r['frames']} row was {r['note']}." for r in rows if r.get("note")]
    return "\n".join(lines)
