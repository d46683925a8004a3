"""The toy model's training step time, float32 against bfloat16 autocast (`train-toy --autocast-bf16 1`).

    python -m bench.train_step                   # 2 threads, 10 timed steps each, batch 8
    python -m bench.train_step --steps 20 --threads 2

Runs ``toytrain.train_unet`` itself (the loop ``train-toy`` runs: EDM loss with its
temporal term, AdamW, gradient clipping) on random latents of the toy model's shape, from
the same untrained UNet each time, and prints a markdown table: seconds a step, the speed-up
over float32, and the first steps' mean loss (bfloat16 should be close to float32, not equal).
A 2-step run first warms the kernels up; the timed run includes the loop's once-per-run
work (image embeddings of the 64 first frames), a few percent of 10 steps.
"""
from __future__ import annotations

import argparse
import time

import torch

from motion_core.toy import toyclips, toyworld
from motion_core.toy.toytrain import ToyTrainSettings, train_unet


def time_steps(autocast_bf16: int, steps: int, batch: int, clips: int = 64) -> tuple[float, float]:
    """Seconds a step over ``steps`` steps of ``train_unet`` (after a 2-step warm-up run), and their mean loss."""
    generator = torch.Generator().manual_seed(0)
    shape = (clips, toyworld.FRAMES, 4, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE)
    latents = torch.randn(shape, generator=generator) / toyworld.SVD_LATENT_SCALE
    labels = torch.arange(clips) % len(toyclips.MOTION_CLASSES)
    first_images = torch.rand(clips, toyworld.IMAGE_SIZE, toyworld.IMAGE_SIZE, 3, generator=generator) * 2 - 1
    _, _, image_encoder = toyworld.build_models(0)

    def run(count: int) -> tuple[float, list[float]]:
        unet = toyworld.build_models(0)[0]                 # the same untrained UNet every run
        settings = ToyTrainSettings(unet_steps=count, unet_batch=batch, warmup_steps=1, checkpoint_every=10 ** 9,
                                    average_last=1, autocast_bf16=autocast_bf16)
        started = time.perf_counter()
        _, history, _ = train_unet(unet, image_encoder, latents, labels, first_images, settings,
                                   torch.Generator().manual_seed(1), checkpoint=lambda tokens, history: None)
        return time.perf_counter() - started, history

    run(2)                                                 # warm-up: kernel selection, allocator
    seconds, history = run(steps)
    return seconds / steps, sum(history) / len(history)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per precision (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=ToyTrainSettings.unet_batch, help="clips a step")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (CI and the issue's budget: 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = ["| precision | s/step | speed-up | mean loss of the timed steps |", "|---|---|---|---|"]
    base = None
    for autocast_bf16, name in ((0, "float32 (the shipped recipe)"), (1, "bfloat16 autocast")):
        per_step, loss = time_steps(autocast_bf16, args.steps, args.batch)
        base = base or per_step
        rows.append(f"| {name} | {per_step:.2f} | {base / per_step:.2f}x | {loss:.4f} |")
    print(f"Toy UNet training step, batch {args.batch}, {args.threads} threads, torch {torch.__version__}\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
