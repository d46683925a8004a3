"""Learn's memory plan for AnimateDiff at full size: SD1.5's UNet and a full motion model, on the meta device.

    COMFYUI_PATH=../shared/comfyui-0.33 ADE_PATH=../shared/animatediff-evolved-1.5.7 python -m bench.ad_memory_plan

Builds ComfyUI's SD1.5 model (its real config, float16 weights as ComfyUI loads them on a GPU)
and ADE's ``AnimateDiffModel`` in the layout of ``mm_sd_v15_v2`` (down, mid and up blocks, two
temporal self-attentions per module, positional encoding of 32 frames) without allocating any
weights, then prints the plan Learn Motion Embedding makes (``nodes.memory.ad_learn_shape`` and
``motion_core.memory_plan.plan``) for AnimateDiff's sizes, with a memory-efficient attention
kernel (PyTorch SDPA, ComfyUI's default on NVIDIA). A plan at users' sizes: its activation
constants were measured on the CPU at smaller sizes in float32 (``python -m bench.learn_memory
--families animatediff``, docs/benchmarks.md) and are halved for float16.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from host_support import SD15_UNET, ade_module, motion_model_layout, pack_module, start_comfy  # noqa: E402

GIB = 2 ** 30
SIZES = ((512, 512, 16), (512, 512, 24), (768, 512, 16), (512, 512, 32))


class MetaPatcher:
    """What the plan reads of a ``ModelPatcher``: ``model`` and ``model_size()`` (no weights allocated)."""

    def __init__(self, model):
        self.model = model

    def model_size(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())

    def model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def full_motion_model():
    motion_module_ad = ade_module("animatediff.motion_module_ad")
    info = motion_module_ad.AnimateDiffInfo(sd_type="SD1.5", mm_format="AnimateDiff", mm_version="v2",
                                            mm_name="mm_sd_v15_v2.ckpt")
    with torch.device("meta"):
        model = motion_module_ad.AnimateDiffModel(mm_state_dict=motion_model_layout(32, full=True),
                                                  mm_info=info).to(torch.float16)
    return MetaPatcher(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", default="attention_pytorch", help="the attention kernel planned for")
    args = parser.parse_args()
    start_comfy()
    import comfy.supported_models

    memory = pack_module("nodes.memory")
    memory_plan = pack_module("motion_core.memory_plan")
    ad = pack_module("nodes.hooks.animatediff")
    select = pack_module("motion_core.layers").select_layers
    config = comfy.supported_models.SD15(dict(SD15_UNET))
    config.set_inference_dtype(torch.float16, None)
    sd_model = MetaPatcher(config.get_model({}, "", device=torch.device("meta")))
    motion_model = full_motion_model()
    layers = ad.motion_layers(motion_model)
    print(f"SD1.5 UNet {sd_model.model_size() / GIB:.2f} GiB + motion model {motion_model.model_size() / GIB:.2f} GiB "
          f"(float16), {len(layers)} temporal self-attention layers; attention kernel {args.kernel}")
    print("| size (w x h x frames) | layers | checkpointing | planned | weights | activations | learned |")
    print("|---|---|---|---|---|---|---|")
    for width, height, frames in SIZES:
        layout = ad.motion_layout(motion_model, height // 8, width // 8)
        for preset in ("widest", "all"):
            chosen = select(layout, preset)
            for checkpointing in (True, False):
                shape = memory.ad_learn_shape(sd_model, motion_model, chosen, frames, height // 8, width // 8,
                                              checkpointing)
                shape = dataclasses.replace(shape, attention_kernel=args.kernel, dtype="float16", copies_weights=True)
                plan = memory_plan.plan(shape)
                print(f"| {width} x {height} x {frames} | {preset} ({len(chosen)}) | {'on' if checkpointing else 'off'} "
                      f"| **{plan.total / GIB:.1f} GiB** | {(plan.weights + plan.weight_copies) / GIB:.1f} | "
                      f"{plan.activations / GIB:.1f} | {plan.learned / GIB:.2f} |")


if __name__ == "__main__":
    main()
