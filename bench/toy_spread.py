"""How many motions does a toy model draw for one image on its own? (no motion input)

    python -m bench.toy_spread --model svd_like        # updates docs/quality_svd_like.md

For held-out first frames (palette the model never saw, 1-3 objects placed for no motion
in particular), sample clips over several seeds with no motion input (each image's own
embedding, motion bucket 127) and read each clip's motion class by dense flow and by
nearest ideal motion (``motion_core.toy.toyeval``). Prints, per reading: distinct classes
per image over the seeds, the share of clips read as still, the share of the most frequent
class per image, and the classes seen overall. A model that takes its motion from the
image alone must draw a spread (several classes per image) and must not be still.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
import statistics
import sys
import time

import torch

from bench.docfile import replace_section
from bench.quality import MODELS
from motion_core.toy import toyclips
from motion_core.toy.denseflow import classify_motion_dense
from motion_core.toy.toyeval import animate_batch, nearest_ideal_motion
from motion_core.toy.toyworld import FRAMES, load_world

log = logging.getLogger("bench.toy_spread")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spread(readings: list[list[str]]) -> dict:
    """``readings[image][seed]`` class names -> the table's figures."""
    distinct = [len(set(per_image)) for per_image in readings]
    top = [collections.Counter(per_image).most_common(1)[0][1] / len(per_image) for per_image in readings]
    every = [name for per_image in readings for name in per_image]
    return {"distinct": statistics.fmean(distinct), "still": every.count("static") / len(every),
            "top_share": statistics.fmean(top), "classes_seen": len(set(every)),
            "histogram": collections.Counter(every).most_common()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=tuple(MODELS), default="svd_like")
    parser.add_argument("--images", type=int, default=12, help="held-out first frames")
    parser.add_argument("--seeds", type=int, default=8, help="clips sampled per image")
    parser.add_argument("--sample-steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    started = time.time()
    weights, manifest, doc = MODELS[args.model]
    world = load_world(weights)
    specs = toyclips.make_target_specs(args.images, 2000, motion="static")
    targets = toyclips.first_frames(specs)
    dense = [[] for _ in specs]
    ideal = [[] for _ in specs]
    for seed in range(args.seeds):
        clips = animate_batch(world, targets, None, FRAMES, args.sample_steps, seed=seed)
        for i, (spec, clip) in enumerate(zip(specs, clips)):
            dense[i].append(classify_motion_dense(clip))
            ideal[i].append(nearest_ideal_motion(clip, spec)[0])
        log.info("seed %d done", seed)
    lines = ["| reading | distinct classes per image | clips read as still | most frequent class's share per image "
             "| classes seen overall |", "|---|---|---|---|---|"]
    tallies = []
    for reading, found in (("dense flow", dense), ("nearest ideal", ideal)):
        figures = spread(found)
        lines.append(f"| {reading} | {figures['distinct']:.1f} of {args.seeds} | {100 * figures['still']:.0f}% | "
                     f"{100 * figures['top_share']:.0f}% | {figures['classes_seen']} |")
        tallies.append(f"{reading}: " + ", ".join(f"{name} {count}" for name, count in figures["histogram"]))
    table = "\n".join(lines)
    print(table)
    print("\n".join(tallies))
    if not args.no_doc:
        command = ("python -m bench.toy_spread " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
        body = [f"Measured with `{command}` on {time.strftime('%Y-%m-%d')}, CPU ({args.threads} threads), "
                f"{time.time() - started:.0f} s; toy model per `{os.path.relpath(manifest, REPO_ROOT)}`; "
                f"{args.images} held-out first frames x {args.seeds} seeds, no motion input, "
                f"{args.sample_steps} Euler steps.", "", table, "", "Classes read over all clips:", ""]
        body += [f"- {line}" for line in tallies]
        replace_section(doc, "toy_spread", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
