"""Does the motion transfer? Both papers' methods measured in the toy world.

    python -m bench.quality                       # held-out toy references, updates docs/quality.md
    python -m bench.quality --reference clip.mp4 --targets a.png b.png ...   # your own clips

For each reference clip (held-out palette: shapes, colours and backgrounds the toy model
never saw) and each way of learning its motion (the rows, as in the papers' tables),
learn the motion from the reference, animate every target image with it (classifier-free
guidance against the plain model rising from 1 at frame 0 to 5 at the last frame, as SVD is
sampled; ``--min-guidance`` / ``--guidance``) and score:

- motion-class accuracy: two flow-based classifiers of the generated clip vs the reference's class,
  KLT tracks (``readings.classify_motion``) and dense flow (``denseflow.classify_motion_dense``,
  robust to the texture shimmer of sampled clips);
- nearest ideal motion: the class whose ideal animation of the target scene (rendered, every
  class) is closest to the generated clip after a blur, vs the reference's class (toy targets only);
- Motion Fidelity Score (Motion Inversion, eq. 6): KLT tracklets, both directions; also over
  moving points only (the toy scenes' still backgrounds agree with anything that keeps them still);
  and with an object-sized 21-px KLT window, which follows objects through texture shimmer;
- first-frame PSNR to the target image (does the output keep the target's content);
- appearance leakage: colour-histogram distance of later frames to the target minus to the
  reference (positive = looks like the reference);
- learning time (seconds per reference, CPU).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

import torch

from bench.docfile import replace_section
from motion_core.toy import toyclips
from motion_core.toy.toyeval import (TOKEN_STARTS, VARIANTS, ToyLearnSettings, add_sampling_options, animate_batch,
                                     heldout_reference, invert_reference, karras_sigmas, learn_variant, score)
from motion_core.toy.toyworld import (FRAMES, IMAGE_SIZE, MANIFEST_PATH, SVD_LIKE_MANIFEST_PATH, SVD_LIKE_WEIGHTS_PATH,
                                      WEIGHTS_PATH, load_world)
from motion_core.toy.toytrain import sha256

log = logging.getLogger("bench.quality")
START_WORDS = {"image": "the reference frames' image embeddings", "zero": "zero"}
# Not a method: the motion-class token the toy model was trained with, an upper bound for the
# learned rows (only for toy references, whose class is known).
CLASS_TOKEN_ROW = "class_token"
DEFAULT_MOTIONS = ("translate_E_2", "translate_N_1", "circle_cw", "zoom_in", "rotate_ccw", "pan_W", "bounce")
DOCS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
DOC = os.path.join(DOCS_DIR, "quality.md")
JSON = os.path.join(DOCS_DIR, "quality.json")
# --model -> (weights, manifest, the doc its measured block goes to)
MODELS = {"class_token": (WEIGHTS_PATH, MANIFEST_PATH, DOC),
          "svd_like": (SVD_LIKE_WEIGHTS_PATH, SVD_LIKE_MANIFEST_PATH, os.path.join(DOCS_DIR, "quality_svd_like.md"))}


def _mean(values):
    values = [float(v) for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def run(args) -> str:
    torch.set_num_threads(args.threads)
    world = load_world(args.weights or MODELS[args.model][0])
    if args.reference:
        from motion_core.toy.demo import _load_targets
        from motion_core.video import read_reference_video

        references = [(None, read_reference_video(args.reference, frames=FRAMES, width=IMAGE_SIZE,
                                                  height=IMAGE_SIZE).frames)]
        fixed_targets = _load_targets(args.targets) if args.targets else None
    else:
        references = [(motion, heldout_reference(motion, args.seed + i)) for i, motion in enumerate(args.motions)]
        fixed_targets = None
    rows = []
    settings = learn_settings(args)
    for key in args.variants:
        if key == CLASS_TOKEN_ROW and args.reference:
            log.info("skipping the class-token row: an outside reference has no known motion class")
            continue
        if key == CLASS_TOKEN_ROW and world.motion_tokens.shape[0] == 0:
            log.info("skipping the class-token row: this model was trained without motion tokens")
            continue
        variant = VARIANTS.get(key)
        results, seconds, ideal_by_motion, dense_by_motion, mfs_by_motion = [], [], {}, {}, {}
        for r, (motion, reference) in enumerate(references):
            specs = None if fixed_targets is not None else toyclips.make_target_specs(
                args.targets_per_reference, 1000 + r, motion=motion or "static")
            targets = fixed_targets if specs is None else toyclips.first_frames(specs)
            context = None
            if variant is None:                                   # the class-token upper bound
                embedding, took = None, 0.0
                context = world.motion_tokens[toyclips.class_index(motion)][None].expand(len(targets), -1, -1)
            else:
                embedding, took = learn_variant(world, reference, variant, settings)
            inverted = None
            if variant is not None and variant.reference_noise > 0:     # as the Reference Noise node: conditioned
                started = time.time()                                   # like the Learn run, up to the first sigma
                inverted = invert_reference(world, reference, karras_sigmas(args.sample_steps)[0], embedding)
                took += time.time() - started
            seconds.append(took)
            generated = animate_batch(world, targets, embedding, FRAMES, args.sample_steps, seed=r, context=context,
                                      guidance=args.guidance, min_guidance=args.min_guidance, reference_noise=inverted,
                                      prior=variant.reference_noise if inverted is not None else 0.5)
            for i, (target, clip) in enumerate(zip(targets, generated)):
                results.append(score(reference, motion, target, clip, None if specs is None else specs[i]))
                ideal_by_motion.setdefault(motion, []).append(results[-1]["ideal_correct"])
                dense_by_motion.setdefault(motion, []).append(results[-1]["dense_correct"])
                mfs_by_motion.setdefault(motion, []).append(results[-1]["motion_fidelity_moving"])
        name = variant.name if variant is not None else "(upper bound) the model's own motion-class token"
        row = {"key": key, "name": name, "accuracy": _mean(r["class_correct"] for r in results),
               "dense_accuracy": _mean(r["dense_correct"] for r in results),
               "ideal_accuracy": _mean(r["ideal_correct"] for r in results),
               "mfs": _mean(r["motion_fidelity"] for r in results),
               "mfs_moving": _mean(r["motion_fidelity_moving"] for r in results),
               "mfs_wide": _mean(r["motion_fidelity_wide"] for r in results),
               "psnr": _mean(r["first_frame_psnr"] for r in results),
               "leakage": _mean(r["appearance_leakage"] for r in results),
               "seconds": _mean(seconds), "clips": len(results),
               "ideal_by_motion": {motion: _mean(hits) for motion, hits in ideal_by_motion.items()},
               "dense_by_motion": {motion: _mean(hits) for motion, hits in dense_by_motion.items()},
               "mfs_by_motion": {motion: _mean(values) for motion, values in mfs_by_motion.items()}}
        log.info("%s", row)
        rows.append(row)
    lines = ["| method | motion class (dense flow) | nearest ideal motion | motion class (KLT flow) | "
             "Motion Fidelity (moving points) | MFS, all points | MFS, 21-px window | first-frame PSNR (dB) | "
             "appearance leakage | learning time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {_percent(row['dense_accuracy'])} | {_percent(row['ideal_accuracy'])} | "
                     f"{_percent(row['accuracy'])} | {row['mfs_moving']:.3f} | {row['mfs']:.3f} | "
                     f"{row['mfs_wide']:.3f} | {row['psnr']:.1f} | "
                     f"{row['leakage']:+.3f} | {row['seconds']:.0f} |")
    return "\n".join(lines), rows, references


def json_rows(rows: list[dict], model: str, command: str, args, weights_sha256: str) -> list[dict]:
    """The rows as ``docs/quality.json`` records them (fractions 0..1; NaN as null), each with
    the sha256 of the model file they were measured on."""
    def number(value):
        return None if value != value else round(float(value), 4)

    return [{"name": row["name"], "key": row["key"], "model": model, "weights_sha256": weights_sha256,
             "dense_flow_accuracy": number(row["dense_accuracy"]), "nearest_ideal_accuracy": number(row["ideal_accuracy"]),
             "klt_accuracy": number(row["accuracy"]), "mfs_moving": number(row["mfs_moving"]),
             "mfs_all": number(row["mfs"]), "mfs_wide_window": number(row["mfs_wide"]),
             "first_frame_psnr_db": number(row["psnr"]), "appearance_leakage": number(row["leakage"]),
             "learning_seconds": number(row["seconds"]), "clips": row["clips"],
             "targets_per_reference": args.targets_per_reference, "learning_steps": args.steps,
             "dense_flow_by_motion": {m: number(v) for m, v in row["dense_by_motion"].items()},
             "nearest_ideal_by_motion": {m: number(v) for m, v in row["ideal_by_motion"].items()},
             "command": command, "date": time.strftime("%Y-%m-%d")} for row in rows]


def merge_json(path: str, records: list[dict]) -> list[dict]:
    """Replace the records of the same model, row and learning steps in ``path`` (others kept),
    written atomically. Records of the same model measured on another file of it (another
    ``weights_sha256``: the model was retrained) are dropped: they no longer describe it."""
    def identity(record):
        return record["model"], record["key"], record.get("learning_steps")

    kept = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            kept = json.load(fh)["rows"]
    fresh = {identity(record) for record in records}
    current = {record["model"]: record.get("weights_sha256") for record in records}
    stale = [record for record in kept if record["model"] in current
             and record.get("weights_sha256") != current[record["model"]]]
    for record in stale:
        log.info("dropping %s / %s from %s: measured on another file of that model", record["model"],
                 record["key"], os.path.basename(path))
    merged = [record for record in kept if identity(record) not in fresh and record not in stale] + records
    merged.sort(key=lambda record: (record["model"], record["name"], record.get("learning_steps") or 0))
    partial = path + ".partial"
    with open(partial, "w", encoding="utf-8") as fh:
        json.dump({"about": "bench.quality rows: accuracies and MFS as fractions; MFS on moving points is the "
                            "headline; see docs/quality.md", "rows": merged}, fh, indent=1)
        fh.write("\n")
    os.replace(partial, path)
    return merged


def learn_settings(args) -> ToyLearnSettings:
    """The learning settings of the command line (the defaults are ``ToyLearnSettings``'s)."""
    return ToyLearnSettings(steps=args.steps, seed=args.seed, learning_rate=args.learning_rate,
                            log_sigma_mean=args.log_sigma_mean, log_sigma_std=args.log_sigma_std,
                            augment_crop=args.augment_crop, augment_colour=args.augment_colour,
                            token_start=args.token_start, learn_scale=args.learn_scale)


def add_learning_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ToyLearnSettings()
    parser.add_argument("--steps", type=int, default=defaults.steps, help="learning steps per reference")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="Adam learning rate")
    parser.add_argument("--log-sigma-mean", type=float, default=defaults.log_sigma_mean,
                        help="mean of log(sigma), the noise levels the learning samples (higher: more weight "
                             "on the noisy steps, where motion is decided)")
    parser.add_argument("--log-sigma-std", type=float, default=defaults.log_sigma_std, help="spread of log(sigma)")
    parser.add_argument("--augment-crop", type=float, default=defaults.augment_crop,
                        help="smallest random crop of the reference, as a fraction of each side (1: no crop); "
                             "one crop per step, the same for every frame")
    parser.add_argument("--augment-colour", type=float, default=defaults.augment_colour,
                        help="per-channel latent gain / offset jitter of the reference (0: none)")
    parser.add_argument("--token-start", choices=TOKEN_STARTS, default=defaults.token_start,
                        help="where the motion-text tokens start: image, the reference frames' image embeddings "
                             "(the paper; the Learn node with CLIP vision connected); zero, noise around zero "
                             "(the Learn node without CLIP vision)")
    parser.add_argument("--learn-scale", type=float, default=defaults.learn_scale,
                        help="learn on the reference downscaled by this factor (e.g. 0.5); sampling stays at full "
                             "size (Learn's learn_scale)")


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.0f}%"


def motion_breakdown(rows: list[dict]) -> str:
    """Accuracy per reference motion, nearest ideal / dense flow, and its moving-points MFS (toy
    references only; "" otherwise): which motions a method transfers, not only how many."""
    motions = [m for m in (rows[0]["ideal_by_motion"] if rows else {}) if m is not None]
    if not motions:
        return ""
    lines = ["| method (nearest ideal / dense flow, MFS on moving points) | " + " | ".join(motions) + " |", "|---" * (len(motions) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row['name']} | " + " | ".join(
            f"{_percent(row['ideal_by_motion'][m])} / {_percent(row['dense_by_motion'][m])}, "
            f"{row['mfs_by_motion'][m]:.3f}" for m in motions) + " |")
    return "\n".join(lines)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """The sampler, seed and thread options both toy benchmarks share."""
    add_sampling_options(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--motions", nargs="+", default=list(DEFAULT_MOTIONS), choices=toyclips.MOTION_CLASSES)
    rows = [CLASS_TOKEN_ROW, *VARIANTS]
    parser.add_argument("--variants", nargs="+", default=rows, choices=rows,
                        help=f"rows to measure; {CLASS_TOKEN_ROW}: the toy model's own motion-class token")
    parser.add_argument("--targets-per-reference", type=int, default=10)
    add_learning_arguments(parser)
    add_sampling_arguments(parser)
    parser.add_argument("--reference", help="your own reference video instead of the toy ones")
    parser.add_argument("--targets", nargs="*", help="your own target images (with --reference)")
    parser.add_argument("--model", choices=tuple(MODELS), default="class_token",
                        help="which shipped toy model: class_token (toy_svd, docs/quality.md) or svd_like "
                             "(toy_svd_like, docs/quality_svd_like.md)")
    parser.add_argument("--weights", default="",
                        help="another toy model file to measure (implies --no-doc and --no-json)")
    parser.add_argument("--no-doc", action="store_true", help="do not write the model's measured block in docs/")
    parser.add_argument("--no-json", action="store_true", help="do not merge the rows into docs/quality.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.time()
    table, rows, references = run(args)
    breakdown = motion_breakdown(rows)
    print(table)
    if breakdown:
        print("\n" + breakdown)
    shipped = not args.weights                                   # the docs are the shipped models'
    command = ("python -m bench.quality " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    if not args.no_json and not args.reference and shipped:
        merge_json(JSON, json_rows(rows, args.model, command, args, sha256(MODELS[args.model][0])))
    _weights, manifest, doc = MODELS[args.model]
    if not args.no_doc and not args.reference and shipped:
        lines = [f"Measured with `{command}` on {time.strftime('%Y-%m-%d')}, CPU ({args.threads} threads), "
                 f"{time.time() - started:.0f} s in all; toy model per `{os.path.relpath(manifest)}`.", "",
                 f"References: held-out palette clips of {', '.join(m for m, _ in references)}; "
                 f"{args.targets_per_reference} held-out target images each; {args.steps} learning steps "
                 f"(learning rate {args.learning_rate:g}, log sigma ~ N({args.log_sigma_mean:g}, "
                 f"{args.log_sigma_std:g}^2), crops down to {args.augment_crop:g}, colour jitter "
                 f"{args.augment_colour:g}, tokens starting at {START_WORDS[args.token_start]}); "
                 f"{args.sample_steps} Euler steps; guidance {args.min_guidance:g} "
                 f"(frame 0) to {args.guidance:g} (last frame) against the plain model.", "", table]
        if breakdown:
            lines += ["", "Per reference motion:", "", breakdown]
        replace_section(doc, "quality", "\n".join(lines))      # the hand-written analysis around it stays
    return 0


if __name__ == "__main__":
    sys.exit(main())
