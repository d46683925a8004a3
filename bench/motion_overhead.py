"""Apply Motion's cost: sampling step time with/without the patch, and embedding sizes.

    python -m bench.motion_overhead              # size table only (diffusers, meta device)
    COMFYUI_PATH=/path/to/ComfyUI python -m bench.motion_overhead   # + step timing in ComfyUI

Part 1 (needs ComfyUI): a tiny SVD of the real architecture on the CPU, Euler steps with
CFG (cond and uncond batched), median step time with Apply Motion over without; target
at most 1.05. Part 2: parameters and float32 bytes of the Motion Embeddings per layer
preset for full-size SVD, from the real layer layout (diffusers' SVD UNet config, built
on the meta device: no weights, no download).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from motion_core.diffusers_svd import temporal_layer_layout
from motion_core.layers import embedding_cost, select_layers


def size_table() -> str:
    from diffusers import UNetSpatioTemporalConditionModel

    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel()      # the default config is SVD's
    rows = ["| size | frames | preset | layers | query-key params | value params | fp32 total |",
            "|---|---|---|---|---|---|---|"]
    for width, height in ((576, 320), (1024, 576)):
        layout = temporal_layer_layout(unet, height // 8, width // 8)
        for frames in (14, 25):
            for preset in ("all", "widest"):
                layers = select_layers(layout, preset)
                cost = embedding_cost(layers, frames)
                rows.append(f"| {width}x{height} | {frames} | {preset} | {len(layers)} | "
                            f"{cost['query_key_parameters']:,} | {cost['value_parameters']:,} | "
                            f"{cost['bytes_fp32'] / 2 ** 20:,.1f} MiB |")
    per_layer = ["| layer | channels | grid at 1024x576 | value params (14 frames) |", "|---|---|---|---|"]
    for name, layer in temporal_layer_layout(unet, 72, 128).items():
        per_layer.append(f"| {name} | {layer['channels']} | {layer['height']}x{layer['width']} | "
                         f"{layer['height'] * layer['width'] * 14 * layer['channels']:,} |")
    return "\n".join(rows) + "\n\n" + "\n".join(per_layer)


def step_timing(frames: int, height: int, width: int, steps: int, repeats: int) -> str:
    from tests.host_support import build_tiny_svd, comfy_path, pack_module, start_comfy, svd_conditioning

    if comfy_path() is None:
        return "(step timing skipped: set COMFYUI_PATH to a ComfyUI checkout)"
    start_comfy()
    import comfy.sample

    hooks = pack_module("nodes.hooks.svd")
    core = pack_module("motion_core.embedding")
    model = build_tiny_svd()
    layout = hooks.temporal_layout(model, height, width)
    qk, values = core.init_temporal(layout, frames)
    for tensor in list(qk.values()) + list(values.values()):
        tensor.normal_(0, 0.1)
    metadata = core.base_metadata(frames, width * 8, height * 8)
    metadata["layers"] = layout
    embedding = core.MotionEmbedding(temporal_qk=qk, value_embedding=values, metadata=metadata)
    patched, _patch = hooks.with_motion(model, embedding)
    latent = torch.zeros(frames, 4, height, width)
    positive, negative = svd_conditioning(torch.randn(1, 4, height, width))

    def run(m):
        start = time.perf_counter()
        comfy.sample.sample(m, comfy.sample.prepare_noise(latent, 0), steps, 3.0, "euler", "karras", positive,
                            negative, latent, seed=0, disable_pbar=True)
        return (time.perf_counter() - start) / steps

    run(model), run(patched)                              # warm-up
    plain, motion = [], []
    for _ in range(repeats):                              # interleaved, so drift hits both
        plain.append(run(model))
        motion.append(run(patched))
    base, with_motion = statistics.median(plain), statistics.median(motion)
    return ("| run | median s/step |\n|---|---|\n"
            f"| tiny SVD, {frames} frames, latent {height}x{width}, CFG batched | {base:.4f} |\n"
            f"| same + Apply Motion (all {len(layout)} layers, q/k + values) | {with_motion:.4f} |\n"
            f"| ratio (target <= 1.05) | {with_motion / base:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--latent", type=int, nargs=2, default=(32, 32), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("## Sampling step time, Apply Motion vs plain (CPU)\n")
    print(step_timing(args.frames, args.latent[0], args.latent[1], args.steps, args.repeats))
    print("\n## Motion Embedding size for full-size SVD\n")
    print(size_table())


if __name__ == "__main__":
    main()
