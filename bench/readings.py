"""Where is the gap, in the readings or in the model? Every motion reading on clips of known motion.

    python -m bench.readings                  # 26 classes x 2 held-out scenes, updates docs/quality.md
    python -m bench.readings --weights run/toy_svd.safetensors --no-doc   # gate a candidate toy model

``bench.quality`` scores generated clips with three readings of "which motion is this"
(KLT flow, dense flow, nearest ideal) and with Motion Fidelity. When a method scores low,
either the motion did not transfer or the reading cannot see it in a sampled clip. This
benchmark separates the two: it reads clips whose motion is known, from the cleanest to
the toy model's own output, with no learning involved (rows):

- ``render``: the ideal render of a held-out scene, what the readings were built on;
- ``vae``: the same clip through the toy VAE (encode, decode), the sharpest clip the toy
  model could ever output;
- ``class_token``: the toy model animating the scene's first frame with its own motion-class
  token (the quality bench's upper-bound row), sampled as the quality bench samples;
- ``class_token_train``: the same on scenes in the *training* palette, whose shapes, colours
  and backgrounds the model saw: how much of the rest is held-out appearance.

Columns as in ``bench.quality`` (Motion Fidelity against a second held-out clip of the same
class), plus the first-frame PSNR to the scene's own frame 0.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import torch

from bench.docfile import replace_section
from bench.quality import DOC, _mean, _percent, add_sampling_arguments
from motion_core.toy import toyclips
from motion_core.toy.toyeval import animate_batch, heldout_reference, score
from motion_core.toy.toyworld import FRAMES, MANIFEST_PATH, WEIGHTS_PATH, load_world

log = logging.getLogger("bench.readings")
SOURCES = {
    "render": "ideal render (held-out scene)",
    "vae": "ideal render through the toy VAE",
    "class_token": "toy model, own class token (held-out scene)",
    "class_token_train": "toy model, own class token (training-palette scene)",
}


def scenes(motions, per_motion: int, seed: int, palette: str) -> list[toyclips.ClipSpec]:
    """``per_motion`` scenes per motion, objects placed so that the motion keeps them in frame."""
    return [spec for i, motion in enumerate(motions)
            for spec in toyclips.make_target_specs(per_motion, seed + 100 * i, palette=palette, motion=motion,
                                                   frames=FRAMES)]


def clips_of(source: str, world, specs, rendered: torch.Tensor, args) -> torch.Tensor:
    """``(n f h w c)`` clips of ``specs``' motions from ``source``; ``rendered``: their ideal renders."""
    if source == "render":
        return rendered
    if source == "vae":
        return torch.stack([world.decode(world.encode(clip)) for clip in rendered])
    context = world.motion_tokens[[toyclips.class_index(spec.motion) for spec in specs]]   # (b n d)
    return animate_batch(world, rendered[:, 0], None, FRAMES, args.sample_steps, seed=args.seed,
                         context=context, guidance=args.guidance, min_guidance=args.min_guidance)


def run(args) -> tuple[str, list[dict]]:
    torch.set_num_threads(args.threads)
    world = load_world(args.weights)
    references = {motion: heldout_reference(motion, args.seed + 50 + i, frames=FRAMES)
                  for i, motion in enumerate(args.motions)}
    rows = []
    for source in args.sources:
        palette = "train" if source.endswith("_train") else "heldout"
        specs = scenes(args.motions, args.scenes_per_motion, args.seed + 7000, palette)
        started = time.time()
        rendered = torch.stack([toyclips.render_clip(spec) for spec in specs])            # (n f h w c)
        clips = clips_of(source, world, specs, rendered, args)
        results = [score(references[spec.motion], spec.motion, ideal[0], clip, spec)
                   for spec, ideal, clip in zip(specs, rendered, clips)]
        row = {"name": SOURCES[source], "accuracy": _mean(r["class_correct"] for r in results),
               "dense_accuracy": _mean(r["dense_correct"] for r in results),
               "ideal_accuracy": _mean(r["ideal_correct"] for r in results),
               "mfs": _mean(r["motion_fidelity"] for r in results),
               "mfs_wide": _mean(r["motion_fidelity_wide"] for r in results),
               "psnr": _mean(r["first_frame_psnr"] for r in results), "clips": len(results),
               "by_kind": by_kind(specs, results)}
        log.info("%s (%.0f s): %s", source, time.time() - started, row)
        rows.append(row)
    lines = ["| clips read | motion class (KLT flow) | motion class (dense flow) | nearest ideal motion | "
             "Motion Fidelity | MFS, 21-px window | first-frame PSNR (dB) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        psnr = "exact" if row["psnr"] == float("inf") else f"{row['psnr']:.1f}"
        lines.append(f"| {row['name']} | {_percent(row['accuracy'])} | {_percent(row['dense_accuracy'])} | "
                     f"{_percent(row['ideal_accuracy'])} | {row['mfs']:.3f} | {row['mfs_wide']:.3f} | {psnr} |")
    return "\n".join(lines), rows


def by_kind(specs, results) -> dict[str, tuple[float, float, int]]:
    """Per motion kind (translate, circle, zoom, ...): (dense-flow accuracy, nearest-ideal accuracy, clips)."""
    kinds: dict[str, list[dict]] = {}
    for spec, result in zip(specs, results):
        kinds.setdefault(toyclips.motion_spec(spec.motion).kind, []).append(result)
    return {kind: (_mean(r["dense_correct"] for r in rs), _mean(r["ideal_correct"] for r in rs), len(rs))
            for kind, rs in kinds.items()}


def kind_breakdown(rows: list[dict]) -> str:
    """Markdown table of ``by_kind``: which kinds of motion a source's clips get right."""
    kinds = list(rows[0]["by_kind"]) if rows else []
    lines = ["| clips read (dense flow / nearest ideal) | " + " | ".join(
        f"{kind} ({rows[0]['by_kind'][kind][2]})" for kind in kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row['name']} | " + " | ".join(
            f"{_percent(row['by_kind'][kind][0])} / {_percent(row['by_kind'][kind][1])}" for kind in kinds) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--motions", nargs="+", default=list(toyclips.MOTION_CLASSES), choices=toyclips.MOTION_CLASSES)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES),
                        help="which clips to read (rows); see the description above")
    parser.add_argument("--scenes-per-motion", type=int, default=2)
    add_sampling_arguments(parser)
    parser.add_argument("--weights", default=WEIGHTS_PATH,
                        help="toy model file to read (default: the shipped one); other files imply --no-doc")
    parser.add_argument("--no-doc", action="store_true", help="do not write the measured block of docs/quality.md")
    args = parser.parse_args(argv)
    if args.scenes_per_motion < 1 or args.sample_steps < 1:
        parser.error("--scenes-per-motion and --sample-steps must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.time()
    table, rows = run(args)
    table += "\n\nPer motion kind (clips):\n\n" + kind_breakdown(rows)
    print(table)
    if not args.no_doc and os.path.abspath(args.weights) == os.path.abspath(WEIGHTS_PATH):   # the doc is the shipped model's
        command = "python -m bench.readings " + " ".join(sys.argv[1:] if argv is None else argv)
        replace_section(DOC, "readings", "\n".join([
            f"Measured with `{command.strip()}` on {time.strftime('%Y-%m-%d')}, CPU ({args.threads} threads), "
            f"{time.time() - started:.0f} s in all; toy model per `{os.path.relpath(MANIFEST_PATH)}`.", "",
            f"{len(args.motions)} motion classes x {args.scenes_per_motion} scenes; sampled rows: "
            f"{args.sample_steps} Euler steps, guidance {args.min_guidance:g} (frame 0) to {args.guidance:g} "
            "(last frame) against the plain model.", "", table]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
