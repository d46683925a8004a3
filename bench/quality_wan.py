"""Does the motion transfer on a DiT? The Wan toy through the pack's own nodes, inside ComfyUI.

    COMFYUI_PATH=../shared/comfyui python -m bench.quality_wan --weights toy_wan.safetensors
    # writes docs/quality_wan_toy.md and the rows of docs/quality.json

For each held-out reference (a toy clip of a known motion in the held-out palette, captioned
without its motion word) and each row (a way of learning and applying its motion), the row's
motion is learned with **Learn Motion Embedding** on **Load Toy Wan Model**'s MODEL, debiased,
applied with **Apply Motion**, optionally started from **Reference Noise**, and new scenes are
sampled: a held-out target scene's first frame kept as latent frame 0 (a noise mask, as
ComfyUI's latent inpainting: the toy is text-to-video), its caption without the motion word as
the prompt, classifier-free guidance against the empty prompt. Each clip is read as the toy
benchmark reads SVD's (``motion_core.toy.toyeval.score``): moving-points Motion Fidelity, the
motion class by dense flow, the nearest ideal animation of the target scene, appearance leakage.

The ceiling row puts the motion word in the prompt instead (no learning); the prompt row is
the floor (no motion input at all).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import statistics
import sys
import time

import numpy as np
import torch

log = logging.getLogger("bench.quality_wan")
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
DOC = os.path.join(DOCS, "quality_wan_toy.md")
JSON = os.path.join(DOCS, "quality.json")
PACK = "MotionInversion_"
MOTIONS = ("translate_E_2", "translate_N_1", "circle_cw", "zoom_in", "rotate_ccw", "pan_W", "bounce")


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    name: str
    representation: str = ""        # "" = nothing learned
    layers: str = "all"
    explicit_layers: str = ""
    debias: str = "difference"
    reference_noise: bool = False
    motion_word: bool = False       # the ceiling: the prompt names the motion


ROWS = {row.key: row for row in (
    Row("prompt", "no motion (the scene's prompt alone)"),
    Row("reference_noise", "Reference Noise alone (prior 0.5)", reference_noise=True),
    Row("me_difference_rn", "Motion Embeddings, all blocks, debias difference, + Reference Noise", "temporal",
        reference_noise=True),
    Row("me_difference", "Motion Embeddings, all blocks, debias difference", "temporal"),
    Row("me_none_rn", "Motion Embeddings, all blocks, debias none, + Reference Noise", "temporal", debias="none",
        reference_noise=True),
    Row("me_none", "Motion Embeddings, all blocks, debias none", "temporal", debias="none"),
    Row("me_spread_rn", "Motion Embeddings, spread (4 of 6 blocks), difference, + Reference Noise", "temporal",
        layers="spread", reference_noise=True),
    Row("tokens", "per-frame motion tokens", "motion_text"),
    Row("both_rn", "Motion Embeddings and motion tokens, difference, + Reference Noise", "both", reference_noise=True),
    Row("ceiling", "(ceiling) the motion word in the prompt", motion_word=True),
)}


def _mean(values):
    values = [float(v) for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


class Bench:
    """The host (ComfyUI with the pack), the toy's MODEL / CLIP / VAE, and the nodes, called as the executor does."""

    def __init__(self, weights: str, threads: int):
        from bench.learn_memory import start_host
        torch.set_num_threads(threads)
        self.hs = start_host("cpu")
        import nodes as comfy_nodes
        self.nodes = comfy_nodes.NODE_CLASS_MAPPINGS
        loader = self.nodes[PACK + "LoadToyWanModel"]
        with torch.inference_mode():
            self.model, self.text, self.vae = loader.execute(weights=weights).result
        self.learned = {}   # (reference, representation, layers, explicit layers) -> (Learn's embedding, seconds)

    def condition(self, prompt: str):
        return self.text.encode_from_tokens_scheduled(self.text.tokenize(prompt))

    def learn(self, reference, prompt: str, row: Row, args):
        """Learn's embedding for ``row`` (learned once per reference and way of learning: the rows that differ
        only in the debias or Reference Noise share it), then Debias Value Embedding with the row's mode."""
        key = (id(reference), row.representation, row.layers, row.explicit_layers)
        if key not in self.learned:
            started = time.time()
            self.learned[key] = self._learn(reference, prompt, row, args), time.time() - started
        embedding, seconds = self.learned[key]
        if embedding.has_temporal:
            with torch.inference_mode():
                embedding = self.nodes[PACK + "DebiasValueEmbedding"].execute(embedding, row.debias).result[0]
        return embedding, seconds

    def _learn(self, reference, prompt: str, row: Row, args):
        with torch.inference_mode():
            return self.nodes[PACK + "LearnMotionEmbedding"].execute(
                model=self.model, vae=self.vae, reference_frames=reference, representation=row.representation,
                tokens_per_frame=args.tokens_per_frame, steps=args.steps, learning_rate=args.learning_rate,
                seed=0, noise_mean=0.5, noise_std=1.0, loss="appearance_debiased", augmentation=True, flip=False,
                fps=6, motion_bucket_id=127, augmentation_level=0.0, layers=row.layers,
                explicit_layers=row.explicit_layers, positive=self.condition(prompt)).result[0]

    def sample(self, model, target_frame: torch.Tensor, prompt: str, noise, seed: int, args) -> torch.Tensor:
        """A 13-frame clip whose latent frame 0 is the target's (kept by the noise mask); ``(f h w c)``."""
        import comfy.sample
        from motion_core.toy import wanworld
        start = self.nodes[PACK + "ToyWanFirstFrameLatent"].execute(self.vae, target_frame[None],
                                                                    wanworld.FRAMES).result[0]
        latent, mask = start["samples"], start["noise_mask"]
        if noise is None:
            noise = comfy.sample.prepare_noise(latent, seed)
        sampled = comfy.sample.sample(model, noise, args.sample_steps, args.cfg, "euler", "simple",
                                      self.condition(prompt), self.condition(""), latent, noise_mask=mask, seed=seed,
                                      disable_pbar=True)
        return self.vae.decode(sampled).reshape(-1, *target_frame.shape)

    def reference_noise(self, model, reference, prompt: str, embedding, seed: int, args):
        import comfy.samplers
        sigmas = comfy.samplers.calculate_sigmas(self.model.get_model_object("model_sampling"), "simple",
                                                 args.sample_steps)
        noise = self.nodes[PACK + "ReferenceNoise"].execute(
            self.model, self.vae, reference, sigmas, 0.5, 8, seed, motion_embedding=embedding,
            positive=self.condition(prompt)).result[0]
        return noise.generate_noise({"samples": torch.zeros(1, 16, 4, 16, 16)})


def run(args) -> tuple[str, list[dict]]:
    from motion_core.toy import toyclips, wanworld
    from motion_core.toy.toyeval import score
    bench = Bench(args.weights, args.threads)
    references = []
    for index, motion in enumerate(args.motions):
        spec = wanworld.sample_caption_spec(np.random.default_rng(500 + args.seed + index), motion, palette="heldout")
        references.append((motion, spec, toyclips.render_clip(spec)))
    rows = []
    for key in args.rows:
        row = ROWS[key]
        results, seconds = [], []
        for r, (motion, spec, reference) in enumerate(references):
            embedding, learn_seconds = bench.learn(reference, wanworld.caption(spec, with_motion=False), row, args) \
                if row.representation else (None, 0.0)
            started = time.time()
            model = bench.model
            if embedding is not None:
                model = bench.nodes[PACK + "ApplyMotion"].execute(bench.model, embedding, 1.0, 0.0, 1.0, 0).result[0]
            noise = bench.reference_noise(model, reference, wanworld.caption(spec, with_motion=False), embedding,
                                          r, args) if row.reference_noise else None
            seconds.append(learn_seconds + time.time() - started)        # learning and Reference Noise
            targets = toyclips.make_target_specs(args.targets_per_reference, 2000 + r, size=wanworld.IMAGE_SIZE,
                                                 motion=motion)
            for t, target_spec in enumerate(targets):
                target_spec = dataclasses.replace(target_spec, frames=wanworld.FRAMES)
                target_frame = toyclips.render_clip(dataclasses.replace(target_spec, motion="static"))[0]
                prompt = wanworld.caption(target_spec, with_motion=row.motion_word)
                clip = bench.sample(model, target_frame, prompt, noise, seed=100 * r + t, args=args)
                results.append(score(reference, motion, target_frame, clip, target_spec))
        record = {"key": key, "name": row.name, "clips": len(results),
                  "dense_accuracy": _mean(x["dense_correct"] for x in results),
                  "ideal_accuracy": _mean(x["ideal_correct"] for x in results),
                  "mfs_moving": _mean(x["motion_fidelity_moving"] for x in results),
                  "mfs": _mean(x["motion_fidelity"] for x in results),
                  "psnr": _mean(x["first_frame_psnr"] for x in results),
                  "leakage": _mean(x["appearance_leakage"] for x in results), "seconds": _mean(seconds)}
        log.info("%s", record)
        rows.append(record)
    lines = ["| row | Motion Fidelity (moving points) | motion class (dense flow) | nearest ideal motion | "
             "MFS, all points | first-frame PSNR (dB) | appearance leakage | learning time (s) | clips |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['mfs_moving']:.3f} | {row['dense_accuracy']:.0%} | "
                     f"{row['ideal_accuracy']:.0%} | {row['mfs']:.3f} | {row['psnr']:.1f} | {row['leakage']:+.3f} | "
                     f"{row['seconds']:.0f} | {row['clips']} |")
    return "\n".join(lines), rows


def main(argv=None) -> int:
    from motion_core.toy import wanworld
    parser = argparse.ArgumentParser(prog="python -m bench.quality_wan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=wanworld.WEIGHTS_PATH)
    parser.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=list(ROWS))
    parser.add_argument("--motions", nargs="+", choices=toyclips_classes(), default=list(MOTIONS[:6]))
    parser.add_argument("--targets-per-reference", type=int, default=5)
    parser.add_argument("--steps", type=int, default=400, help="learning steps per reference")
    parser.add_argument("--learning-rate", type=float, default=5e-2)
    parser.add_argument("--tokens-per-frame", type=int, default=3)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.time()
    table, rows = run(args)
    print(table)
    if args.no_doc:
        return 0
    from bench.docfile import replace_section, write_json
    from motion_core.toy.toytrain import sha256
    command = "python -m bench.quality_wan " + " ".join(argv if argv is not None else sys.argv[1:])
    digest = sha256(args.weights)
    replace_section(DOC, "quality_wan", f"Measured {datetime.date.today()}, `{command.strip()}`, "
                    f"{(time.time() - started) / 60:.0f} min, model sha256 `{digest[:12]}...`.\n\n{table}")
    with open(JSON, encoding="utf-8") as fh:
        payload = json.load(fh)
    records = payload if isinstance(payload, list) else payload.setdefault("rows", [])
    records[:] = [r for r in records if r.get("model") != "wan_toy"] + [
        {"name": r["name"], "key": r["key"], "model": "wan_toy", "weights_sha256": digest,
         "dense_flow_accuracy": r["dense_accuracy"], "nearest_ideal_accuracy": r["ideal_accuracy"],
         "mfs_moving": r["mfs_moving"], "mfs_all": r["mfs"], "first_frame_psnr_db": r["psnr"],
         "appearance_leakage": r["leakage"], "learning_seconds": r["seconds"], "clips": r["clips"],
         "targets_per_reference": args.targets_per_reference, "learning_steps": args.steps,
         "command": command.strip(), "date": str(datetime.date.today())} for r in rows]
    write_json(JSON, payload)
    return 0


def toyclips_classes():
    from motion_core.toy import toyclips
    return toyclips.MOTION_CLASSES


if __name__ == "__main__":
    sys.exit(main())
