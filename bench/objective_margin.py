"""Can the learning objective tell a reference's motion from the others? Loss per class token.

    python -m bench.objective_margin                # the quality bench's references, updates docs/quality.md
    python -m bench.objective_margin --weights run/toy_svd.safetensors --no-doc   # gate a candidate toy model

Motion-text inversion finds its tokens by lowering one objective: the EDM denoising loss of
the reference clip under the frozen model. So it can only learn a motion that the objective
prefers. The toy model's own motion-class tokens span the motions it was trained on; this
benchmark puts each class's token into every motion-text slot (F' = F + 1, the model's own
tokens per class) and measures the loss the learning step minimises, on each reference of
``bench.quality`` (same seeds), at fixed noise: noise levels at five quantiles of the
learning's ``ln sigma ~ N(mean, std^2)`` and ``--noises`` fixed draws each, identical for every
token. Columns:

- the rank of the reference's own class among all classes (1: the objective prefers it);
- the nearest rival class and its margin, ``rival loss / own loss - 1`` (how much the
  objective gains by choosing the right motion over the runner-up);
- the loss at the learning's start (the reference's own image embedding) and after the default
  learning (``--steps``; 0 skips it), to compare with what any class token reaches.

``--by-sigma`` adds a table of the margin at each noise level alone (against that level's
nearest rival): a motion the objective prefers at some noise level could be found by
learning at that level; one it never prefers cannot be found by any noise schedule.
``--loss appearance_debiased`` measures the Learn node's other objective (EDM plus its twin
with frame 0 subtracted) instead of plain EDM. ``--palette train`` draws the references from
the training palette instead: a motion the objective tells apart there but not on held-out
clips is one the model learned and does not carry to new shapes and textures.

No sampling, no classifier: a motion whose margin is a few percent is one the inversion
cannot be expected to find from one clip, however it is tuned.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from statistics import fmean

import torch

from bench.docfile import replace_section
from bench.quality import DEFAULT_MOTIONS, DOC, add_learning_arguments, learn_settings
from motion_core.toy import toyclips
from motion_core.diffusers_svd import SVDDenoiser, init_embedding, install_motion
from motion_core.embedding import MotionEmbedding
from motion_core.toy.toyeval import VARIANTS, learn_variant
from motion_core.toy.toyworld import FRAMES, MANIFEST_PATH, SVD_LATENT_SCALE, WEIGHTS_PATH, ToyWorld, load_world
from motion_core.objectives import LOSS_EDM, LOSSES
from motion_core.training import fixed_noise_losses

log = logging.getLogger("bench.objective_margin")
SIGMA_QUANTILES = (-1.5, -0.75, 0.0, 0.75, 1.5)      # standard-normal quantiles of ln sigma
LEVELS = {5: SIGMA_QUANTILES, 3: (-1.5, 0.0, 1.5), 1: (0.0,)}     # --levels: all five, or fewer (quick checks)
DEFAULT_VARIANT = "text_FF_N5"


def objective_sigmas(mean: float, std: float, noises: int, quantiles=SIGMA_QUANTILES) -> list[float]:
    """Noise levels at the ``quantiles`` of ``ln sigma ~ N(mean, std^2)``, each repeated ``noises`` times
    (``fixed_noise_loss`` draws a fresh fixed noise per entry)."""
    return [math.exp(mean + std * q) for q in quantiles for _ in range(noises)]


def class_losses(world: ToyWorld, reference: torch.Tensor, sigmas: list[float],
                 learned: MotionEmbedding | None = None,
                 loss: str = LOSS_EDM) -> tuple[list[list[float]], list[float], list[float] | None]:
    """The learning objective (``loss``) on ``reference`` ``(f h w c)`` at fixed noise, per
    entry of ``sigmas``.

    Returns (losses with each class's tokens in every motion-text slot, in ``MOTION_CLASSES``
    order, ``(classes len(sigmas))``; losses with the learning's start, the reference's image
    embedding; losses with ``learned`` or None).
    """
    with torch.no_grad():
        clean = world.encode(reference) * SVD_LATENT_SCALE                        # (f c h w)
        image_embeds = world.image_embeds(reference)                              # (f d)
    frames, _, height, width = clean.shape
    denoiser = SVDDenoiser(world.unet, image_embeds=image_embeds[:1])
    tokens = world.motion_tokens                                                  # (classes n d)
    slots = init_embedding(world.unet, frames, height, width, tokens_per_frame=tokens.shape[1],
                           image_embeds=image_embeds, vae_factor=4)              # spatial (f n d), temporal (n d)
    per_class = []
    with install_motion(world.unet, slots, height, width, frames=frames):
        start = fixed_noise_losses(denoiser, clean, sigmas, loss=loss)
        for class_tokens in tokens:                                               # (n d)
            with torch.no_grad():
                slots.spatial_tokens.copy_(class_tokens.expand_as(slots.spatial_tokens))
                slots.temporal_tokens.copy_(class_tokens)
            per_class.append(fixed_noise_losses(denoiser, clean, sigmas, loss=loss))
    learned_loss = None
    if learned is not None:
        with install_motion(world.unet, learned, height, width, frames=frames):
            learned_loss = fixed_noise_losses(denoiser, clean, sigmas, loss=loss)
    return per_class, start, learned_loss


def margin_row(motion: str, per_class: list[float], start: float, learned: float | None) -> dict:
    """Rank of ``motion``'s own class (1 = lowest loss), its nearest rival and the rival's margin."""
    order = sorted(range(len(per_class)), key=per_class.__getitem__)
    own = toyclips.class_index(motion)
    rival = next(c for c in order if c != own)
    return {"motion": motion, "rank": order.index(own) + 1, "own": per_class[own],
            "rival": toyclips.MOTION_CLASSES[rival], "margin": per_class[rival] / per_class[own] - 1.0,
            "start": start, "learned": learned}


def margins_by_level(motion: str, per_class: list[list[float]], levels: int) -> list[dict]:
    """``margin_row`` at each noise level alone: ``per_class`` ``(classes levels*noises)``, the
    entries of one level adjacent (as ``objective_sigmas`` orders them)."""
    noises = len(per_class[0]) // levels
    return [margin_row(motion, [fmean(row[k * noises:(k + 1) * noises]) for row in per_class], float("nan"), None)
            for k in range(levels)]


def by_level_table(rows: list[dict], sigmas: list[float]) -> str:
    """Markdown: per reference, the own class's rank and margin over that level's nearest rival."""
    lines = ["| reference | " + " | ".join(f"sigma {s:.2g}" for s in sigmas) + " |",
             "|---|" + "---|" * len(sigmas)]
    for row in rows:
        cells = [f"{100 * level['margin']:+.1f}% ({level['rival']})" if level["rank"] == 1
                 else f"rank {level['rank']}, {100 * level['margin']:+.1f}% ({level['rival']})"
                 for level in row["by_level"]]
        lines.append(f"| {row['motion']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args) -> tuple[str, list[dict]]:
    torch.set_num_threads(args.threads)
    world = load_world(args.weights)
    quantiles = LEVELS[args.levels]
    sigmas = objective_sigmas(args.log_sigma_mean, args.log_sigma_std, args.noises, quantiles)
    rows = []
    for i, motion in enumerate(args.motions):
        started = time.time()
        # bench.quality's seeds; in the held-out palette, bench.quality's references
        reference = toyclips.make_clip(motion, args.seed + i, frames=FRAMES, palette=args.palette)[0]
        learned = None
        if args.steps > 0:
            learned, _ = learn_variant(world, reference, VARIANTS[DEFAULT_VARIANT], learn_settings(args))
        per_class, start, learned_loss = class_losses(world, reference, sigmas, learned, args.loss)
        rows.append(margin_row(motion, [fmean(row) for row in per_class], fmean(start),
                               None if learned_loss is None else fmean(learned_loss)))
        rows[-1]["by_level"] = margins_by_level(motion, per_class, len(quantiles))
        log.info("%s (%.0f s): %s", motion, time.time() - started,
                 {key: value for key, value in rows[-1].items() if key != "by_level"})
    classes = len(toyclips.MOTION_CLASSES)
    learned_head = f"after {args.steps} learning steps" if args.steps > 0 else "learned (skipped)"
    lines = [f"| reference | own class: rank of {classes} | own class's loss | nearest rival | rival's margin | "
             f"learning's start | {learned_head} |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        learned = "n/a" if row["learned"] is None else f"{row['learned']:.4f}"
        lines.append(f"| {row['motion']} | {row['rank']} | {row['own']:.4f} | {row['rival']} | "
                     f"{100 * row['margin']:+.1f}% | {row['start']:.4f} | {learned} |")
    table = "\n".join(lines)
    if args.by_sigma:
        table += ("\n\nThe own class's margin over the nearest rival at each noise level alone "
                  "(rank when it is not first):\n\n" + by_level_table(rows, sigmas[::args.noises]))
    return table, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--motions", nargs="+", default=list(DEFAULT_MOTIONS), choices=toyclips.MOTION_CLASSES,
                        help="reference motions, in bench.quality's order (a reference's seed is its position)")
    parser.add_argument("--noises", type=int, default=3, help="fixed noise draws per noise level")
    parser.add_argument("--loss", choices=LOSSES, default=LOSS_EDM,
                        help="the objective to measure, as the Learn node names it (appearance_debiased: "
                             "frame 0 is the subtracted anchor); --steps still learn with EDM, the default")
    parser.add_argument("--levels", type=int, choices=sorted(LEVELS), default=5,
                        help="noise levels: the five quantiles (default), or 3 / 1 of them for a quick check")
    parser.add_argument("--by-sigma", action="store_true",
                        help="also print the margin at each noise level alone")
    parser.add_argument("--palette", choices=toyclips.PALETTES, default="heldout",
                        help="draw the references from this palette: heldout (bench.quality's references) or "
                             "train (what the model was trained on: a motion it tells apart there but not on "
                             "held-out clips was learned and does not generalise); train implies --no-doc")
    add_learning_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", default=WEIGHTS_PATH,
                        help="toy model file to measure (default: the shipped one); other files imply --no-doc")
    parser.add_argument("--no-doc", action="store_true", help="do not write the measured block of docs/quality.md")
    args = parser.parse_args(argv)
    if args.noises < 1 or args.steps < 0:
        parser.error("--noises must be at least 1 and --steps at least 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.time()
    table, _ = run(args)
    print(table)
    shipped = os.path.abspath(args.weights) == os.path.abspath(WEIGHTS_PATH)
    if not args.no_doc and shipped and args.palette == "heldout":   # the doc is the shipped model's, on the bench's clips
        command = "python -m bench.objective_margin " + " ".join(sys.argv[1:] if argv is None else argv)
        replace_section(DOC, "objective_margin", "\n".join([
            f"Measured with `{command.strip()}` on {time.strftime('%Y-%m-%d')}, CPU ({args.threads} threads), "
            f"{time.time() - started:.0f} s in all; toy model per `{os.path.relpath(MANIFEST_PATH)}`.", "",
            f"Loss: {'EDM' if args.loss == LOSS_EDM else args.loss} at ln sigma = "
            f"{args.log_sigma_mean:g} + {args.log_sigma_std:g} x "
            f"({', '.join(f'{q:g}' for q in LEVELS[args.levels])}), {args.noises} fixed noises each; learning: "
            f"{args.steps} steps of the default motion-text inversion (F'=F+1, N=5), learning rate "
            f"{args.learning_rate:g}.", "", table]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
