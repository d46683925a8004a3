"""Learn Motion Embedding on Wan: memory and time of a learning step, measured on ComfyUI's own ``WanModel``.

Run through ``bench.learn_memory --families wan`` (CPU) or ``--device cuda`` (both families).

Wan's blocks are identical, so a model of a few full-width blocks says what every block
costs: each row builds ComfyUI's ``WanModel`` at a real model's width (1.3B, 5B, 14B) with
2 or 4 blocks and random weights (no download), under ``torch.inference_mode`` as ComfyUI's
loader does, and runs the Learn node's own path (``nodes.learn.prepare_learning``, then
``nodes.host_training.train_wan_in_host``) for two steps; the second is measured. The VAE is
a stand-in that returns a latent of the right shape: the encode happens before learning and
is not part of its peak. Per row: bytes saved for backward outside checkpointed regions
(weights excluded), the peak memory rise over the loaded model, and seconds per step.

The rows fit ``motion_core.memory_plan.WAN_ACTIVATION_BYTES`` (bytes per token and model
width, kept per block after the first learned one, and one block's recompute) and give the
planned full-size rows.
"""
from __future__ import annotations

import json

import torch

from bench.learn_memory_rows import measure_steps, run_in_fresh_process

# upstream configs (ComfyUI reads them from the checkpoint's keys: comfy/model_detection.py)
WAN_CONFIGS = {
    "1.3B": {"supported": "WAN21_T2V", "dim": 1536, "ffn_dim": 8960, "num_heads": 12, "num_layers": 30,
             "in_dim": 16, "out_dim": 16, "model_type": "t2v"},
    "5B": {"supported": "WAN22_T2V", "dim": 3072, "ffn_dim": 14336, "num_heads": 24, "num_layers": 30,
           "in_dim": 48, "out_dim": 48, "model_type": "t2v"},
    "14B": {"supported": "WAN21_T2V", "dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40,
            "in_dim": 16, "out_dim": 16, "model_type": "t2v"},
}
VAE_DOWNSCALE = {"1.3B": 8, "5B": 16, "14B": 8}
COMMON = {"image_model": "wan2.1", "patch_size": (1, 2, 2), "freq_dim": 256, "text_dim": 4096,
          "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
PROMPT_TOKENS = 512          # Wan's T5 prompt, padded


def build_wan(size: str, blocks: int, dtype: torch.dtype, device: str):
    """A ModelPatcher around ComfyUI's WanModel at ``size``'s width with ``blocks`` blocks, random weights."""
    import comfy.supported_models
    config = dict(WAN_CONFIGS[size])
    supported = config.pop("supported")
    config.update(COMMON, num_layers=blocks)
    model_config = getattr(comfy.supported_models, supported)(config)
    model_config.set_inference_dtype(dtype, None)
    with torch.inference_mode():
        model = model_config.get_model({}, "", device=torch.device(device))
    from bench.learn_memory import random_weights_patcher
    return random_weights_patcher(model, device)


class LatentVAE:
    """Stands in for Wan's VAE: ``encode`` gives a random latent ``(1 c t h w)`` of the right shape."""

    def __init__(self, channels: int, downscale: int):
        self.channels, self.downscale_ratio = channels, downscale

    def encode(self, frames):
        t = 1 + (frames.shape[0] - 1) // 4
        shape = (1, self.channels, t, frames.shape[1] // self.downscale_ratio, frames.shape[2] // self.downscale_ratio)
        return torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 0.5


def measure_wan_row(hs, size, blocks, width, height, frames, representation, layers, checkpointing, device,
                    steps=2, dtype="float32", learn_scale=1.0, card_gib=None) -> dict:
    """One row; ``card_gib``: plan for a card of that size (the node then keeps in CPU memory what does not fit
    it, and the peak measured on the bigger device shows what that card would hold)."""
    from bench.learn_memory import GIB
    learn = hs.pack_module("nodes.learn")
    host_training = hs.pack_module("nodes.host_training")
    model = build_wan(size, blocks, getattr(torch, dtype), device)
    vae = LatentVAE(WAN_CONFIGS[size]["out_dim"], VAE_DOWNSCALE[size])
    reference = torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(1))
    prompt = torch.randn(1, PROMPT_TOKENS, 4096, generator=torch.Generator().manual_seed(3))
    positive = [[prompt, {}]]
    explicit = ", ".join(str(i) for i in layers) if isinstance(layers, list) else ""
    import comfy.model_management
    real_total = comfy.model_management.get_total_memory
    if card_gib:
        comfy.model_management.get_total_memory = lambda *args, **kwargs: card_gib * GIB
    try:
        prepared = learn.prepare_learning(
            model, vae, reference, representation, 5, steps, 1e-2, 0, 0.0, 1.0, "appearance_debiased", False, False,
            6, 127, 0.0, "explicit" if explicit else layers if layers in ("spread", "widest") else "all", explicit,
            None, checkpointing, learn_scale, positive)
    finally:
        comfy.model_management.get_total_memory = real_total
    measured = measure_steps(model, device, steps, lambda on_step: host_training.train_wan_in_host(
        model, prepared.wan_positive, prepared.latents, prepared.initial, prepared.settings, on_step,
        checkpointing=checkpointing, offload=prepared.offload))
    grid = prepared.latents.shape
    return {"family": "wan", "size": size, "blocks": blocks, "width": width, "height": height, "frames": frames,
            "tokens": int(grid[2] * (grid[3] // 2) * (grid[4] // 2)), "representation": representation,
            "layers": layers, "learn_scale": learn_scale, "card_gib": card_gib, "offload": prepared.offload,
            "host_optimizer": prepared.settings.host_optimizer,
            "checkpointing": checkpointing, "dtype": dtype, "kind": "measured",
            **measured, "weights_gib": model.model_size() / GIB,
            "learned_gib": 16 * prepared.initial.num_parameters() / GIB, "memory_account": prepared.memory_account}


def run_wan_row(spec: dict, device: str, threads: int, folder: str) -> dict | None:
    """One row in a fresh process (its resident set measures this row alone); None when it failed."""
    return run_in_fresh_process("--wan-row", spec, device, threads, folder)


def wan_row_main(spec_json: str, device: str, out: str) -> None:
    from bench.learn_memory import start_host
    spec = json.loads(spec_json)
    hs = start_host(device)
    row = measure_wan_row(hs, device=device, **spec)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(row, fh)


# CPU rows: float32, a few blocks at Wan 1.3B's and 5B's widths; (spec, purpose)
CPU_ROWS = [
    dict(size="1.3B", blocks=2, width=256, height=160, frames=17, representation="temporal", layers="all",
         checkpointing=True),
    dict(size="1.3B", blocks=2, width=480, height=272, frames=17, representation="temporal", layers="all",
         checkpointing=True),
    dict(size="1.3B", blocks=4, width=480, height=272, frames=17, representation="temporal", layers=[0],
         checkpointing=True),
    dict(size="1.3B", blocks=2, width=256, height=160, frames=17, representation="temporal", layers="all",
         checkpointing=False),
    dict(size="1.3B", blocks=2, width=480, height=272, frames=17, representation="temporal", layers="all",
         checkpointing=False),
    dict(size="1.3B", blocks=4, width=480, height=272, frames=17, representation="both", layers=[0],
         checkpointing=True),
    dict(size="5B", blocks=2, width=512, height=288, frames=17, representation="temporal", layers="all",
         checkpointing=True),
]
TIMING_ROW = dict(size="1.3B", blocks=4, width=256, height=160, frames=17, representation="temporal", layers="all")
# GPU: the whole 1.3B in bfloat16 at 832x480, 33 frames (14,040 tokens, where attention is about half a block's
# work, as it is more at 81 frames; without checkpointing it keeps about 27 GB)
CUDA_TIMING_ROW = dict(size="1.3B", blocks=30, width=832, height=480, frames=33, representation="temporal",
                       layers="widest", dtype="bfloat16")
# GPU rows: the whole models in bfloat16 at their users' sizes, default preset, checkpointing on
CUDA_ROWS = [
    dict(size="1.3B", blocks=30, width=832, height=480, frames=81, representation="temporal", layers="widest",
         checkpointing=True, dtype="bfloat16", learn_scale=0.5),
    dict(size="1.3B", blocks=30, width=832, height=480, frames=81, representation="temporal", layers="widest",
         checkpointing=True, dtype="bfloat16", learn_scale=1.0, card_gib=8),
    dict(size="5B", blocks=30, width=1280, height=704, frames=121, representation="temporal", layers="widest",
         checkpointing=True, dtype="bfloat16", learn_scale=1.0, card_gib=24),
]


def predicted_gib(row: dict) -> float:
    """The plan's total for a measured row's shape, to set beside its measured peak (GiB)."""
    from motion_core.memory_plan import WanLearnShape, plan_wan
    config = WAN_CONFIGS[row["size"]]
    stride = VAE_DOWNSCALE[row["size"]] * 2
    height, width = int(row["height"] * row["learn_scale"]), int(row["width"] * row["learn_scale"])
    shape = WanLearnShape(frames=1 + (row["frames"] - 1) // 4, token_height=height // stride,
                          token_width=width // stride, dim=config["dim"], ffn_dim=config["ffn_dim"],
                          blocks=row["blocks"], learned=int(row["learned_gib"] * GIB / 16),
                          checkpointing=row["checkpointing"], dtype=row["dtype"], weight_bytes=row["weights_gib"] * GIB,
                          offload=row.get("offload", False), host_optimizer=row.get("host_optimizer", False))
    memory = plan_wan(shape)
    return (memory.total - memory.weights) / GIB


GIB = 2 ** 30


def fit_wan_constants(rows: list[dict]) -> dict | None:
    """``WAN_ACTIVATION_BYTES`` from the 1.3B-width rows (float32): two sizes with 2 blocks, checkpointing on and
    off, and 4 blocks at the larger size; None when a row is missing. Bytes are the peak rise less the learned
    state (and, checkpointing off, the kept weight copies)."""
    def find(blocks, tokens_rank, checkpointing):
        mine = sorted((r for r in rows if r["size"] == "1.3B" and r["blocks"] == blocks and r["dtype"] == "float32"
                       and r["checkpointing"] == checkpointing and r["representation"] == "temporal"),
                      key=lambda r: r["tokens"])
        return mine[tokens_rank] if mine and len(mine) > tokens_rank else None
    small, large, four = find(2, 0, True), find(2, -1, True), find(4, -1, True)
    small_off, large_off = find(2, 0, False), find(2, -1, False)
    if None in (small, large, four, small_off, large_off) or small["tokens"] == large["tokens"]:
        return None

    def activations(row):
        copies = 0.0 if row["checkpointing"] else row["weights_gib"]
        return (row["peak_rise_gib"] - row["learned_gib"] - copies) * GIB

    span = large["tokens"] - small["tokens"]
    kept = (four["saved_gib"] - large["saved_gib"]) * GIB / (2 * large["tokens"])
    outside = (large["saved_gib"] - small["saved_gib"]) * GIB / span - 2 * kept
    slope = (activations(large) - activations(small)) / span
    slope_off = (activations(large_off) - activations(small_off)) / (large_off["tokens"] - small_off["tokens"])
    return {"kept_per_block": round(kept), "outside": round(outside), "recompute": round(slope - 2 * kept - outside),
            "block": round((slope_off - outside) / 2),
            "fixed": round(activations(small) - slope * small["tokens"])}


def _timing_line(timing: list[dict]) -> str:
    on = sorted(r["step_seconds"] for r in timing if r["checkpointing"])
    off = sorted(r["step_seconds"] for r in timing if not r["checkpointing"])
    ratio = on[len(on) // 2] / off[len(off) // 2]
    row = timing[0]
    return (f"Checkpointing's step time, {row['size']} width, {row['blocks']} block{'s' * (row['blocks'] != 1)}, "
            f"{row['width']}x{row['height']}x{row['frames']} ({row['tokens']:,} tokens), {row['dtype']}, {len(on)} "
            f"interleaved runs each: median {on[len(on) // 2]:.1f} s on vs {off[len(off) // 2]:.1f} s off, "
            f"**{ratio:.2f}x** (on: {', '.join(f'{v:.1f}' for v in on)} s; off: {', '.join(f'{v:.1f}' for v in off)} s).")


def wan_report(rows: list[dict], timing: list[dict], timing_large: list[dict] | None = None) -> str:
    """The measured rows beside the plan, the checkpointing time ratio, and the planned full-size rows."""
    lines = ["| model width | blocks | size x frames | tokens | representation | checkpointing | dtype | "
             "peak rise over the loaded weights (GiB) | plan less the weights (GiB) | saved for backward (GiB) | s/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['blocks']} | {r['width']}x{r['height']}x{r['frames']}"
                     f"{'' if r['learn_scale'] == 1 else ' (learn_scale %g)' % r['learn_scale']} | {r['tokens']} | "
                     f"{r['representation']} | {'on' if r['checkpointing'] else 'off'} | {r['dtype']} | "
                     f"{r['peak_rise_gib']:.2f} | {predicted_gib(r):.2f} | {r['saved_gib']:.3f} | "
                     f"{r['step_seconds']:.1f} |")
    text = "\n".join(lines)
    fitted = fit_wan_constants(rows)
    if fitted:
        text += ("\n\nFitted (bytes per video token at Wan 1.3B's width, float32; `fixed` in bytes), the values of "
                 "`motion_core.memory_plan.WAN_ACTIVATION_BYTES`: " + ", ".join(f"{k} {v:,}" for k, v in fitted.items()))
    for measured in (timing, timing_large):
        if measured:
            text += "\n\n" + _timing_line(measured)
    return text + "\n\n" + planned_table()


def planned_table() -> str:
    """Planned full-size rows (the Learn node's own plan), checkpointing on, the default preset (4 blocks), on the
    card each target names: what does not fit it goes to CPU memory as the node decides
    (``motion_core.memory_plan.keep_in_cpu_memory``)."""
    from motion_core.memory_plan import USABLE_FRACTION, WanLearnShape, keep_in_cpu_memory, plan_wan
    rows = [("Wan 2.1 T2V 1.3B", "1.3B", 1.42e9, 832, 480, 81, "bfloat16", 2, 1.0, 8, "<= 8"),
            ("Wan 2.1 T2V 1.3B", "1.3B", 1.42e9, 832, 480, 81, "bfloat16", 2, 0.5, 8, "<= 8"),
            ("Wan 2.2 TI2V 5B", "5B", 5.0e9, 1280, 704, 121, "bfloat16", 2, 1.0, 24, "<= 24"),
            ("Wan 2.2 TI2V 5B, fp8 weights", "5B", 5.0e9, 1280, 704, 121, "bfloat16", 1, 1.0, 16, "<= 16"),
            ("Wan 2.1 I2V 14B, fp8 weights", "14B", 16.4e9, 832, 480, 81, "bfloat16", 1, 1.0, 24,
             "24 GB card: refused"),
            ("Wan 2.1 I2V 14B, fp8 weights", "14B", 16.4e9, 832, 480, 81, "bfloat16", 1, 0.5, 24,
             "24 GB card: refused"),
            ("Wan 2.1 I2V 14B, fp8 weights, 41 frames", "14B", 16.4e9, 832, 480, 41, "bfloat16", 1, 0.5, 24,
             "24 GB card: fits"),
            ]
    lines = ["| model | size x frames | learn_scale | weights | card (GiB) | planned peak on the card (GiB) | "
             "kept in CPU memory | target |", "|---|---|---|---|---|---|---|---|"]
    for name, size, params, width, height, frames, dtype, weight_bytes, scale, card, target in rows:
        config, stride = WAN_CONFIGS[size], VAE_DOWNSCALE[size] * 2
        latent = 1 + (frames - 1) // 4
        th, tw = int(height * scale) // stride, int(width * scale) // stride
        learned = 4 * latent * config["dim"] * (1 + th * tw)
        shape = keep_in_cpu_memory(WanLearnShape(latent, th, tw, config["dim"], config["ffn_dim"],
                                                 config["num_layers"], learned, True, dtype, params * weight_bytes),
                                   card * GIB * USABLE_FRACTION)
        memory = plan_wan(shape)
        if target.startswith("24 GB card"):
            target = "24 GB card: " + ("fits" if memory.total <= card * GIB * USABLE_FRACTION else "refused")
        moved = ", ".join(what for what, on in (("block inputs", shape.offload), ("Adam state", shape.host_optimizer))
                          if on) or "nothing"
        lines.append(f"| {name} | {width}x{height}x{frames} | {scale:g} | {'fp8' if weight_bytes == 1 else dtype} | "
                     f"{card} | **{memory.total / GIB:.1f}** ({memory.describe().split('(', 1)[1].rstrip(')')}) | "
                     f"{moved} | {target} |")
    return "\n".join(lines)
