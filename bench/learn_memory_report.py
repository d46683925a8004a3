"""Tables and JSON rows of ``bench.learn_memory``: measured rows against the plan, and the extrapolation."""
from __future__ import annotations

import dataclasses

GIB = 2 ** 30
EXTRAPOLATED = [(576, 320, 14), (1024, 576, 14), (576, 320, 25), (1024, 576, 25)]
PRESETS = [("motion_text", None), ("temporal", "all"), ("temporal", "widest")]


def _shapes(hs, model):
    memory = hs.pack_module("nodes.memory")

    def shape(width, height, frames, representation, preset, checkpointing, dtype=None):
        made = memory.learn_shape(model, frames, height // 8, width // 8, representation, checkpointing,
                                  preset or "all", "", 5, 1024)
        if dtype is not None:
            params = sum(p.numel() for p in model.model.parameters())
            made = dataclasses.replace(made, dtype=dtype, weight_bytes=float(params * (4 if dtype == "float32" else 2)))
        return made
    return shape


def report(rows, hs, model, device, command, seconds, fit_constants):
    """Markdown text and the JSON payload."""
    memory_plan = hs.pack_module("motion_core.memory_plan")
    shape = _shapes(hs, model)

    def row_shape(row):
        return shape(row["width"], row["height"], row["frames"], row["representation"], row["layer_preset"],
                     row["checkpointing"])

    def learned_gib(row):
        """The plan's parts that are not fitted: learned tensors with Adam state, kept weight copies."""
        planned = memory_plan.plan(row_shape(row), {k: (0.0, 0.0) for k in memory_plan.ACTIVATION_BYTES})
        return (planned.learned + planned.weight_copies) / GIB

    constants = fit_constants(rows, learned_gib) if device == "cpu" else dict(memory_plan.ACTIVATION_BYTES)
    if device == "cpu" and len(constants) < len(memory_plan.ACTIVATION_BYTES):
        constants = {**memory_plan.ACTIVATION_BYTES, **constants}
    lines = ["| size | representation | checkpointing | saved for backward GiB | peak rise GiB | planned rise GiB "
             "| plan / measured peak | step s | loop / model | grad rel. diff |", "|" + "---|" * 10]
    for row in rows:
        planned = memory_plan.plan(row_shape(row), constants)
        rise = planned.total - planned.weights
        row["planned_peak_gib"] = planned.total / GIB
        row["activation_gib"] = row["peak_rise_gib"] - planned.learned / GIB          # measured, kept copies included
        row["planned_activation_gib"] = (planned.activations + planned.attention + planned.weight_copies) / GIB
        ratio = planned.total / (row["weights_gib"] * GIB + row["peak_rise_gib"] * GIB)
        row["plan_over_measured"] = ratio
        lines.append(f"| {row['width']}x{row['height']}x{row['frames']} | {row['representation']} | "
                     f"{'on' if row['checkpointing'] else 'off'} | {row['saved_gib']:.2f} | {row['peak_rise_gib']:.2f} "
                     f"| {rise / GIB:.2f} | {ratio:.2f} | {row['step_seconds']:.1f} | {row['loop_overhead']:.3f} | "
                     f"{row.get('gradient_rel_diff', float('nan')):.1e} |")
    time_ratios = []          # each "on" row against the "off" row measured just before it, same size
    for before, after in zip(rows, rows[1:]):
        if not before["checkpointing"] and after["checkpointing"] and all(
                before[k] == after[k] for k in ("width", "height", "frames", "representation")):
            time_ratios.append(after["step_seconds"] / before["step_seconds"])
    text = [f"Measured on {device}, {rows[0]['dtype'] if rows else '?'}, weights {rows[0]['weights_gib']:.2f} GiB "
            f"(full-size SVD UNet, random weights), {seconds:.0f} s in all.", "", *lines, ""]
    if time_ratios:
        text.append(f"Checkpointing costs {min(time_ratios):.2f}x-{max(time_ratios):.2f}x the step time without it "
                    "(target <= 1.4x).")
    diffs = [r["gradient_rel_diff"] for r in rows if "gradient_rel_diff" in r]
    if diffs:
        text.append(f"Gradients of the learned tensors, checkpointing off vs on: largest relative difference "
                    f"{max(diffs):.1e} (target < 1e-5).")
    text.append("Activation constants (fixed GiB + bytes per latent position, float32): " + "; ".join(
        f"{k[0]} checkpointing {'on' if k[1] else 'off'}: {v[0] / GIB:.3f} + {v[1]:.0f}" for k, v in
        sorted(constants.items())))
    extrapolated = []
    table = ["", "Planned peak at full size in float16 (weights "
             f"{shape(64, 64, 2, 'motion_text', None, True, 'float16').weight_bytes / GIB:.2f} GiB included), "
             "extrapolated from the constants above:", "",
             "| size | representation | layers | checkpointing | activations GiB | weight copies GiB | learned + Adam GiB "
             "| planned peak GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for width, height, frames in EXTRAPOLATED:
        for representation, preset in PRESETS:
            for checkpointing in (True, False):
                planned = memory_plan.plan(shape(width, height, frames, representation, preset, checkpointing,
                                                 "float16"), constants)
                extrapolated.append({"width": width, "height": height, "frames": frames,
                                     "representation": representation, "layer_preset": preset,
                                     "checkpointing": checkpointing, "dtype": "float16", "kind": "extrapolated",
                                     "activation_gib": (planned.activations + planned.attention) / GIB,
                                     "planned_peak_gib": planned.total / GIB, "step_seconds": None})
                table.append(f"| {width}x{height}x{frames} | {representation} | {preset or '-'} | "
                             f"{'on' if checkpointing else 'off'} | {planned.activations / GIB:.1f} | "
                             f"{planned.weight_copies / GIB:.1f} | {planned.learned / GIB:.2f} | "
                             f"{planned.total / GIB:.1f} |")
    text += table
    text += ["", "Motion Embedding size for full-size SVD (float32; while learning, 4x: gradients and Adam's two "
             "moments):", "", "| size | layers | parameters | MiB | MiB while learning |", "|---|---|---|---|---|"]
    for width, height, frames in EXTRAPOLATED:
        for preset in ("all", "widest"):
            values = memory_plan.learned_values(shape(width, height, frames, "temporal", preset, True, "float16"))
            text.append(f"| {width}x{height}x{frames} | {preset} | {values:,} | {4 * values / 2 ** 20:.0f} | "
                        f"{16 * values / 2 ** 20:.0f} |")
    payload = {"command": command, "device": device, "seconds": round(seconds),
               "checkpointing_time_ratio": time_ratios, "gradient_rel_diff": max(diffs) if diffs else None,
               "activation_constants": {f"{k[0]}/{'on' if k[1] else 'off'}": list(v) for k, v in constants.items()},
               "rows": [{k: v for k, v in r.items() if k != "memory_account"} for r in rows] + extrapolated}
    return "\n".join(text), payload
