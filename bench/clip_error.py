"""Is the reference closer to the model's own rendering of its motion than to a still clip?

    python -m bench.clip_error                          # the quality bench's references, shipped toy model
    python -m bench.clip_error --weights run/toy_svd.safetensors   # gate a candidate toy model

Motion-text inversion lowers a pixel-wise objective (the EDM denoising loss: squared error of
the model's estimate of the reference clip). It can only find a motion whose rendering by the
model is *closer* to the reference, pixel for pixel, than what the model draws without it.
This benchmark asks that question after sampling, where the answer is plain to see: from the
reference's own first frame, ``--noises`` clips are sampled (the same noises for every row,
no guidance) with

- the model's own token for the reference's class (what the inversion should find),
- the static class token and the plain model (the reference's frame-0 image embedding, where the
  learning starts from the frames' own): no motion,
- the tokens the default inversion learns from the reference (``--steps``; 0 skips the row),

and each clip's frames 1.. are compared with the reference's: mean squared error in pixels
(0..1), plain and after the nearest-ideal reading's blur (``toyeval.IDEAL_BLUR_PX``), and
the dense-flow class of each clip. A reference whose own class token renders *further* from
it than a still clip does is one no pixel-wise objective can lead the inversion to, however
it is tuned: the model's rendering of that motion (its speed, its shape under the motion,
its texture) is what has to get closer to the reference first.

Prints a markdown table; writes nothing (quote it in docs/quality.md with this command).
"""
from __future__ import annotations

import argparse
import logging
import time
from statistics import fmean

import torch

from bench.quality import DEFAULT_MOTIONS, add_learning_arguments, learn_settings
from motion_core.toy import toyclips
from motion_core.toy.denseflow import classify_motion_dense
from motion_core.toy.toyeval import (IDEAL_BLUR_PX, VARIANTS, animate_batch, blurred_frames, heldout_reference,
                                 learn_variant)
from motion_core.toy.toyworld import FRAMES, WEIGHTS_PATH, load_world

log = logging.getLogger("bench.clip_error")
ROWS = ("own class token", "static token", "image embedding", "learned")


def clip_errors(reference: torch.Tensor, clips: torch.Tensor, blur_px: float = IDEAL_BLUR_PX) -> tuple[float, float]:
    """Mean squared error of frames 1.. of ``clips`` ``(n f h w c)`` to ``reference`` ``(f h w c)``,
    pixels in 0..1: plain and after a Gaussian blur of ``blur_px`` (at 64 px). Frame 0 is left
    out: every sampled clip starts from the reference's own first frame."""
    if clips.shape[1:] != reference.shape:
        raise ValueError(f"clips {tuple(clips.shape)} do not match the reference {tuple(reference.shape)}")
    sigma = blur_px * reference.shape[1] / 64.0
    ref = reference.float()[1:]
    ref_blurred = blurred_frames(ref, sigma)
    plain = float(((clips.float()[:, 1:] - ref[None]) ** 2).mean())
    blurred = fmean(float(((blurred_frames(clip[1:].float(), sigma) - ref_blurred) ** 2).mean()) for clip in clips)
    return plain, blurred


def reference_rows(world, motion: str, reference: torch.Tensor, args) -> list[dict]:
    """Sample ``args.noises`` clips from the reference's first frame per row; error and dense class each."""
    first = reference[:1].expand(args.noises, -1, -1, -1).contiguous()
    class_tokens = world.motion_tokens                                               # (classes n d)
    contexts = {ROWS[0]: class_tokens[toyclips.class_index(motion)], ROWS[1]: class_tokens[toyclips.class_index("static")]}
    learned = None
    if args.steps > 0:
        learned, _ = learn_variant(world, reference, VARIANTS["text_FF_N5"], learn_settings(args))
    rows = []
    for name in ROWS:
        if name == ROWS[3] and learned is None:
            continue
        context = contexts[name][None].expand(args.noises, -1, -1) if name in contexts else None
        clips = animate_batch(world, first, learned if name == ROWS[3] else None, FRAMES, args.sample_steps,
                              seed=args.seed, context=context)                       # no guidance: the model as is
        plain, blurred = clip_errors(reference, clips)
        classes = [classify_motion_dense(clip) for clip in clips]
        log.info("%s, %s: dense flow reads %s", motion, name, classes)
        rows.append({"motion": motion, "row": name, "error": plain, "blurred": blurred,
                     "hits": sum(c == motion for c in classes)})
    return rows


def table(rows: list[dict], noises: int) -> str:
    lines = ["| reference | sampled with | squared error | blurred | dense flow: reference's class | "
             "own token closer than a still clip (blurred) |", "|---|---|---|---|---|---|"]
    for motion in dict.fromkeys(row["motion"] for row in rows):
        mine = [row for row in rows if row["motion"] == motion]
        still = min(row["blurred"] for row in mine if row["row"] in ROWS[1:3])
        for row in mine:
            verdict = ("yes" if row["blurred"] < still else "**no**") if row["row"] == ROWS[0] else ""
            lines.append(f"| {motion} | {row['row']} | {row['error']:.4f} | {row['blurred']:.4f} | "
                         f"{row['hits']} of {noises} | {verdict} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--motions", nargs="+", default=list(DEFAULT_MOTIONS), choices=toyclips.MOTION_CLASSES,
                        help="reference motions, in bench.quality's order (a reference's seed is its position)")
    parser.add_argument("--noises", type=int, default=6, help="clips sampled per row (the same noises for every row)")
    parser.add_argument("--sample-steps", type=int, default=16, help="Euler steps per clip")
    add_learning_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", default=WEIGHTS_PATH, help="toy model file to measure (default: the shipped one)")
    args = parser.parse_args(argv)
    if args.noises < 1 or args.steps < 0 or args.sample_steps < 1:
        parser.error("--noises and --sample-steps must be at least 1, --steps at least 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    world = load_world(args.weights)
    rows = []
    for i, motion in enumerate(args.motions):
        started = time.time()
        rows += reference_rows(world, motion, heldout_reference(motion, args.seed + i), args)
        log.info("%s: %.0f s", motion, time.time() - started)
    print(table(rows, args.noises))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
