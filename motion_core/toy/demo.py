"""``python -m motion_core demo``: learn a motion in the toy world and transfer it.

``--model wan_toy --server URL`` runs the toy Wan model's demo instead, in a running ComfyUI
(:mod:`motion_core.toy.wan_demo`); what follows is the SVD toy's, host-free.

Makes a reference clip with known motion (or reads yours), learns its motion with both
representations through the shipped toy model, animates new target images with it and,
for comparison, without it, and writes: ``reference.webp``, ``target_N.webp`` (with
motion) and ``target_N_no_motion.webp``, ``grid.png`` (labelled rows: the reference, then
each target with the learned motion and without, each clip's reading printed beside it),
``grid.webp`` (the same rows animated) and ``report.json`` (motion class, Motion Fidelity
Score, first-frame PSNR and appearance leakage per target). CPU only, a few minutes.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import cv2
import numpy as np
import torch

from ..video import read_reference_video, resize_center_crop
from . import demo_picture, toyclips
from .denseflow import classify_motion_dense
from .toyeval import (VARIANTS, ToyLearnSettings, add_sampling_options, animate_batch,
                      heldout_reference, learn_variant, score)
from .toyworld import FRAMES, IMAGE_SIZE, load_world

log = logging.getLogger(__name__)


class ProgressBar:
    """A one-line text progress bar on stderr."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.done, self.start = total, label, 0, time.time()

    def update(self, amount: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + amount)
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.time() - self.start
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"{elapsed:5.0f}s {note:<24}")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def save_animation(frames: torch.Tensor, path: str, fps: int = 6) -> None:
    """``(f h w c)`` in 0..1 -> animated WEBP (lossless), via Pillow."""
    from PIL import Image

    images = [Image.fromarray((f.numpy() * 255).round().astype(np.uint8)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0, lossless=True)


def _load_targets(paths: list[str]) -> torch.Tensor:
    images = []
    for path in paths:
        pixels = cv2.imread(path, cv2.IMREAD_COLOR)
        if pixels is None:
            raise SystemExit(f"cannot read target image {path!r}: give PNG or JPEG files")
        pixels = resize_center_crop(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB), IMAGE_SIZE, IMAGE_SIZE)
        images.append(torch.from_numpy(pixels.astype(np.float32) / 255.0))
    return torch.stack(images)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m motion_core demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="svd_toy", choices=("svd_toy", "wan_toy"),
                        help="svd_toy: the SVD-architecture toy, here in Python; wan_toy: the Wan-architecture toy, "
                             "through the shipped workflow toy_wan_motion.json on a running ComfyUI (--server)")
    parser.add_argument("--server", help="wan_toy: the address of a ComfyUI with this pack, e.g. http://127.0.0.1:8188")
    parser.add_argument("--out", default="demo_out", help="output folder (created)")
    parser.add_argument("--motion", default="translate_E_2", choices=toyclips.MOTION_CLASSES,
                        help="motion of the generated reference clip")
    parser.add_argument("--reference", help="a reference video file instead (its first 8 frames' span, 64x64)")
    parser.add_argument("--targets", nargs="*", help="target images instead of generated ones")
    parser.add_argument("--num-targets", type=int, default=4)
    parser.add_argument("--variant", default="both", choices=sorted(VARIANTS), help="how to learn the motion")
    parser.add_argument("--steps", type=int, help="learning steps (default: 150; wan_toy: the workflow's)")
    add_sampling_options(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="toy model weights (default: the shipped file)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.model == "wan_toy":
        from . import wan_demo

        if not any(a.startswith("--sample-steps") for a in argv):
            args.sample_steps = None            # the workflow's own
        return wan_demo.main(args)
    if args.steps is None:
        args.steps = 150
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    world = load_world(args.weights) if args.weights else load_world()
    if args.reference:
        reference = read_reference_video(args.reference, frames=FRAMES, width=IMAGE_SIZE, height=IMAGE_SIZE).frames
        reference_class = None
    else:
        reference, reference_class = heldout_reference(args.motion, args.seed), args.motion
    specs = None if args.targets else toyclips.make_target_specs(
        args.num_targets, args.seed + 1, motion=args.motion if reference_class else "static")
    targets = _load_targets(args.targets) if specs is None else toyclips.first_frames(specs)
    variant = VARIANTS[args.variant]
    settings = ToyLearnSettings(steps=args.steps, seed=args.seed)
    learn_bar = ProgressBar(settings.steps, "learning ")
    embedding, seconds = learn_variant(world, reference, variant, settings,
                                       lambda step, total, loss: learn_bar.update(1, f"loss {loss:.4f}"))
    sample_bar = ProgressBar(2 * args.sample_steps, "animating")
    moved_clips = animate_batch(world, targets, embedding, FRAMES, args.sample_steps, args.seed,
                                guidance=args.guidance, min_guidance=args.min_guidance,
                                progress=lambda step, total: sample_bar.update(1, "with motion"))
    baseline_clips = animate_batch(world, targets, None, FRAMES, args.sample_steps, args.seed,
                                   progress=lambda step, total: sample_bar.update(1, "no motion"))
    save_animation(reference, os.path.join(args.out, "reference.webp"))
    report_targets = []
    for index, (target, moved, baseline) in enumerate(zip(targets, moved_clips, baseline_clips)):
        save_animation(moved, os.path.join(args.out, f"target_{index + 1}.webp"))
        save_animation(baseline, os.path.join(args.out, f"target_{index + 1}_no_motion.webp"))
        spec = None if specs is None else specs[index]          # toy targets: also the nearest-ideal reading
        report_targets.append({"target": index + 1, "with_motion": score(reference, reference_class, target, moved, spec),
                               "no_motion": score(reference, reference_class, target, baseline, spec)})
    reference_lines = [demo_picture.Line(f"motion: {reference_class or 'your clip'}"),
                       demo_picture.Line(f"dense flow: {classify_motion_dense(reference)}")]
    still, animated = demo_picture.demo_rows(reference, reference_lines,
                                             list(zip(moved_clips, baseline_clips, report_targets)), reference_class)
    header = demo_picture.demo_header(reference_class, variant.name, settings.steps, args.sample_steps,
                                      (args.min_guidance, args.guidance))
    animated_path = demo_picture.write_demo_pictures(os.path.join(args.out, "grid.png"),
                                                     os.path.join(args.out, "grid.webp"), header, still, animated)

    def mean(key, which):
        values = [t[which][key] for t in report_targets if t[which][key] is not None]
        return None if not values else float(np.mean([float(v) for v in values]))

    report = {"reference": args.reference or f"generated: {reference_class} (held-out palette, seed {args.seed})",
              "reference_class": reference_class, "variant": variant.name, "learning_steps": settings.steps,
              "learning_seconds": round(seconds, 1), "sample_steps": args.sample_steps,
              "guidance": {"first_frame": args.min_guidance, "last_frame": args.guidance},
              "summary": {which: {"class_accuracy": mean("class_correct", which),
                                  "dense_class_accuracy": mean("dense_correct", which),
                                  "nearest_ideal_accuracy": mean("ideal_correct", which),
                                  "motion_fidelity": mean("motion_fidelity", which),
                                  "motion_fidelity_moving": mean("motion_fidelity_moving", which),
                                  "motion_fidelity_wide": mean("motion_fidelity_wide", which),
                                  "first_frame_psnr": mean("first_frame_psnr", which),
                                  "appearance_leakage": mean("appearance_leakage", which)}
                          for which in ("with_motion", "no_motion")},
              "targets": report_targets}
    with open(os.path.join(args.out, "report.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, default=float)
    log.info("wrote %s: reference.webp, %d target videos (+ no-motion baselines), grid.png%s, report.json",
             args.out, len(targets), ", grid.webp" if animated_path else "")
    log.info("with motion: %s", report["summary"]["with_motion"])
    log.info("no motion:   %s", report["summary"]["no_motion"])
    return 0
