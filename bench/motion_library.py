"""The motion library on the toy world: one motion learned from several clips, and two motions blended.

    python -m bench.motion_library                 # both measurements, printed as tables
    python -m bench.motion_library --part clips    # only several clips vs one
    python -m bench.motion_library --part blend    # only the blend

Several clips: for each reference motion, three held-out clips of it on three different
scenes (shapes, colours, backgrounds). One embedding is learned from the first clip alone,
another from all three (each step draws one; the same number of steps), with the SVD-like
toy model's Motion Inversion recipe (``--variant``, default ``mi_difference``). Both animate
the same new targets and are scored against the first clip, as ``bench.quality`` scores:
moving-points Motion Fidelity (the headline), nearest ideal motion, dense flow, and
appearance leakage (towards the first clip, and towards the mean of the three).

Blend: two motions are learned (one clip each), blended (``--blend-weights``, 50 / 50 by default) with
``motion_core.library.blend``,
and the blend animates new targets; the table says what each reading makes of the result
(which motion class, by nearest ideal and by dense flow) beside each motion alone.
"""
from __future__ import annotations

import argparse
import collections
import logging
import statistics
import sys
import time

import torch

from motion_core import metrics
from motion_core.library import blend
from motion_core.toy import toyclips
from motion_core.toy.toyeval import (VARIANTS, animate_batch, heldout_reference, invert_reference, karras_sigmas,
                                     learn_variant, score)
from motion_core.toy.toyworld import FRAMES, SVD_LIKE_WEIGHTS_PATH, load_world
from bench.quality import add_learning_arguments, add_sampling_arguments, learn_settings

log = logging.getLogger("bench.motion_library")
DEFAULT_MOTIONS = ("translate_E_2", "circle_cw", "zoom_in", "rotate_ccw", "pan_W", "bounce")
DEFAULT_PAIRS = ("translate_E_2+translate_N_1", "pan_W+zoom_in")
SCENE_SEEDS = (0, 100, 200)        # the three clips of a motion: held-out scenes drawn from these seeds


def _mean(values) -> float:
    values = [float(value) for value in values if value is not None]
    return statistics.fmean(values) if values else float("nan")


def _animate(world, args, variant, embedding, reference, targets, seed):
    inverted = None
    if variant.reference_noise > 0:
        inverted = invert_reference(world, reference, karras_sigmas(args.sample_steps)[0], embedding)
    return animate_batch(world, targets, embedding, FRAMES, args.sample_steps, seed=seed, guidance=args.guidance,
                         min_guidance=args.min_guidance, reference_noise=inverted,
                         prior=variant.reference_noise if inverted is not None else 0.5)


def several_clips(world, args) -> str:
    variant, settings = VARIANTS[args.variant], learn_settings(args)
    rows = {"1 clip": [], f"{len(SCENE_SEEDS)} clips": []}
    for r, motion in enumerate(args.motions):
        clips = [heldout_reference(motion, args.seed + r + offset) for offset in SCENE_SEEDS]
        specs = toyclips.make_target_specs(args.targets_per_reference, 1000 + r, motion=motion)
        targets = toyclips.first_frames(specs)
        for name, more in (("1 clip", []), (f"{len(SCENE_SEEDS)} clips", clips[1:])):
            started = time.time()
            embedding, _took = learn_variant(world, clips[0], variant, settings, more_references=more)
            generated = _animate(world, args, variant, embedding, clips[0], targets, seed=r)
            for i, (target, clip) in enumerate(zip(targets, generated)):
                result = score(clips[0], motion, target, clip, specs[i])
                result["leakage_all"] = _mean(metrics.appearance_leakage(reference, target, clip)
                                              for reference in clips)
                rows[name].append(result)
            log.info("%s, %s: %.0f s", motion, name, time.time() - started)
    lines = [f"| {args.variant}, {settings.steps} steps | Motion Fidelity (moving points) | nearest ideal motion | "
             "motion class (dense flow) | appearance leakage (to clip 1) | appearance leakage (to the 3 clips) | "
             "clips |", "|---|---|---|---|---|---|---|"]
    for name, results in rows.items():
        lines.append(f"| learned from {name} | {_mean(r['motion_fidelity_moving'] for r in results):.3f} | "
                     f"{100 * _mean(r['ideal_correct'] for r in results):.0f}% | "
                     f"{100 * _mean(r['dense_correct'] for r in results):.0f}% | "
                     f"{_mean(r['appearance_leakage'] for r in results):+.3f} | "
                     f"{_mean(r['leakage_all'] for r in results):+.3f} | {len(results)} |")
    return "\n".join(lines)


def blends(world, args) -> str:
    from motion_core.toy.denseflow import classify_motion_dense
    from motion_core.toy.toyeval import nearest_ideal_motion

    variant, settings = VARIANTS[args.variant], learn_settings(args)
    lines = ["| motion | nearest ideal reads it as | dense flow reads it as |", "|---|---|---|"]
    for p, pair in enumerate(args.pairs):
        first, second = pair.split("+")
        references = [heldout_reference(motion, args.seed + 50 + p + i) for i, motion in enumerate((first, second))]
        learned = [learn_variant(world, reference, variant, settings)[0] for reference in references]
        mixed = blend(learned, list(args.blend_weights))
        specs = toyclips.make_target_specs(args.targets_per_reference, 2000 + p, motion="static")
        targets = toyclips.first_frames(specs)
        for name, embedding, reference in ((first, learned[0], references[0]), (second, learned[1], references[1]),
                                           (f"blend {args.blend_weights[0]:g} {first} + {args.blend_weights[1]:g} "
                                            f"{second}", mixed, references[0])):
            generated = _animate(world, args, variant, embedding, reference, targets, seed=p)
            ideal = collections.Counter(nearest_ideal_motion(clip, spec)[0] for clip, spec in zip(generated, specs))
            dense = collections.Counter(classify_motion_dense(clip) for clip in generated)
            lines.append(f"| {name} | {_counts(ideal)} | {_counts(dense)} |")
    return "\n".join(lines)


def _counts(counter: collections.Counter) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter.most_common())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("both", "clips", "blend"), default="both")
    parser.add_argument("--motions", nargs="+", default=list(DEFAULT_MOTIONS), choices=toyclips.MOTION_CLASSES)
    parser.add_argument("--pairs", nargs="+", default=list(DEFAULT_PAIRS),
                        help="motion pairs to blend, each FIRST+SECOND")
    parser.add_argument("--blend-weights", type=float, nargs=2, default=(0.5, 0.5), metavar=("FIRST", "SECOND"))
    parser.add_argument("--variant", default="mi_difference", choices=[k for k, v in VARIANTS.items() if v.learn])
    parser.add_argument("--targets-per-reference", type=int, default=5)
    parser.add_argument("--weights", default=SVD_LIKE_WEIGHTS_PATH, help="the toy model (default: the SVD-like one)")
    add_learning_arguments(parser)
    add_sampling_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    world = load_world(args.weights)
    started = time.time()
    if args.part in ("both", "clips"):
        print(several_clips(world, args) + "\n")
    if args.part in ("both", "blend"):
        print(blends(world, args) + "\n")
    print(f"python -m bench.motion_library {' '.join(sys.argv[1:] if argv is None else argv)}: "
          f"{time.time() - started:.0f} s on the CPU ({args.threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
