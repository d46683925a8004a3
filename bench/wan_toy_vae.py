"""Does the Wan toy's VAE keep the motion? Train it in stages and read held-out round trips.

    python -m bench.wan_toy_vae                                  # the shipped recipe's VAE stages
    python -m bench.wan_toy_vae --clip-steps 600 --clips 520     # other budgets

Trains ``motion_core.toy.wantrain.train_vae`` (Wan's causal VAE, 4x temporal and 4x spatial
compression) on rendered toy clips and, after the single-frame stages and after the clip
stage, encodes and decodes two held-out clips (held-out palette) of every motion class and
prints a table: PSNR of the whole clip and of frame 0, and how many round trips dense flow
(``denseflow.classify_motion_dense``) reads as the same motion class as the original. The
linear codec the encoder starts from (``LatentBasis``) is read the same way, as the bar the
VAE is measured against. Nothing is written; the figures go in docs/wan_toy.md by hand.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time

import numpy as np
import torch

from motion_core.toy import toyclips
from motion_core.toy.denseflow import classify_motion_dense
from motion_core.toy.wanworld import build_models, sample_caption_spec
from motion_core.toy.wantrain import (WanToyTrainSettings, fit_latent_basis, render_dataset, start_temporal_as_copies,
                                      train_vae)

def held_out_clips(per_class: int = 2, seed: int = 3) -> list[tuple[str, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    return [(motion, toyclips.render_clip(sample_caption_spec(rng, motion, palette="heldout")))
            for motion in toyclips.MOTION_CLASSES for _ in range(per_class)]


def read_round_trips(round_trip, clips: list[tuple[str, torch.Tensor]]) -> dict:
    """``round_trip(pixels (1 c f h w) in -1..1) -> same`` read on ``clips``: PSNRs and motion classes kept."""
    whole, first, kept = [], [], 0
    for _motion, clip in clips:
        with torch.no_grad():
            pixels = clip.permute(3, 0, 1, 2)[None] * 2 - 1
            decoded = ((round_trip(pixels)[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
        whole.append(float(10 * torch.log10(1 / ((decoded - clip) ** 2).mean())))
        first.append(float(10 * torch.log10(1 / ((decoded[0] - clip[0]) ** 2).mean())))
        kept += classify_motion_dense(clip.numpy()) == classify_motion_dense(decoded.numpy())
    return {"psnr": float(np.mean(whole)), "psnr_frame0": float(np.mean(first)), "kept": kept, "of": len(clips)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wan_toy_vae", description=__doc__.split("\n")[0])
    default = WanToyTrainSettings()
    parser.add_argument("--clips", type=int, default=520)
    for flag, name in (("--encoder-steps", "vae_encoder_steps"), ("--decoder-steps", "vae_decoder_steps"),
                       ("--image-steps", "vae_image_steps"), ("--clip-steps", "vae_steps")):
        parser.add_argument(flag, dest=name, type=int, default=getattr(default, name))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    stages = {name: getattr(args, name) for name in ("vae_encoder_steps", "vae_decoder_steps", "vae_image_steps")}
    settings = WanToyTrainSettings(clips=args.clips, vae_steps=0, **stages)
    clips, _ = render_dataset(settings)
    held = held_out_clips()
    basis = fit_latent_basis(clips, seed=settings.seed)
    rows = [("linear codec (LatentBasis, the encoder's first target)",
             read_round_trips(lambda pixels: basis.decode(basis.encode(pixels)), held), 0.0)]
    _, vae, _ = build_models(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)

    def vae_round_trip(pixels):
        return vae.decode(vae.encode(pixels).latent_dist.mean).sample

    start = time.time()
    train_vae(vae, clips, settings, generator)
    start_temporal_as_copies(vae)
    steps = sum(stages.values())
    rows.append((f"VAE after the single-frame stages ({steps} steps)", read_round_trips(vae_round_trip, held),
                 time.time() - start))
    start = time.time()
    train_vae(vae, clips, dataclasses.replace(settings, vae_encoder_steps=0, vae_decoder_steps=0, vae_image_steps=0,
                                              vae_steps=args.vae_steps), generator)
    rows.append((f"VAE after the clip stage (+{args.vae_steps} steps)", read_round_trips(vae_round_trip, held),
                 time.time() - start))
    print("| codec | PSNR (13 frames) | PSNR frame 0 | motion class kept | minutes |")
    print("|---|---|---|---|---|")
    for name, reading, seconds in rows:
        print(f"| {name} | {reading['psnr']:.1f} dB | {reading['psnr_frame0']:.1f} dB | "
              f"{reading['kept']} / {reading['of']} | {seconds / 60:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
