"""What does a toy Wan file draw, asked for a motion and not? Host-free sampling, read by dense flow.

    python -m bench.wan_toy_sample bench/out/wan_toy_run/toy_wan.safetensors

Samples one clip per motion of ``MOTIONS`` from the file's transformer (Euler steps on the
flow with the shift ComfyUI samples it with, classifier-free guidance against the empty
prompt), captions in the training palette with and without the motion word, decodes them
with the file's VAE and reads each with ``denseflow.classify_motion_dense``. Prints, per
kind of prompt, how many read as the motion asked for, what they read as, and the clips'
mean pixel std (near 0: flat clips). Nothing is written. It is the quick look before the
rows of ``bench.quality_wan``, which run through ComfyUI.

``--word-probe``: instead, how far the transformer's prediction moves (relative norm) when a
training clip's caption has its motion word replaced by ``static``, its first colour word
changed, or is emptied, at three noise levels: does the motion word reach the model at all?

``--sampler-probe``: training-palette clips of the motions asked for, read as asked after the
codec alone (the ceiling), after one denoising step from three noise levels, and sampled from
noise at three guidance / step settings.
"""
from __future__ import annotations

import argparse
import collections

import numpy as np
import torch

from motion_core.toy import toyclips
from motion_core.toy.denseflow import classify_motion_dense
from motion_core.toy.wanworld import (IMAGE_SIZE, LATENT_CHANNELS, SAMPLING_SHIFT, caption, latent_to_model, load_world,
                                      model_to_latent, sample_caption_spec)

MOTIONS = ("translate_E_2", "circle_cw", "zoom_in", "rotate_ccw", "pan_W", "bounce", "static", "translate_N_1")


@torch.no_grad()
def sample(world, prompts: list[str], steps: int = 20, guidance: float = 4.0, seed: int = 0,
           latent_frames: int = 4) -> torch.Tensor:
    """Raw latents ``(b 16 t h w)`` for ``prompts``: Euler on the flow from ``sigma`` 1 to 0, shifted."""
    generator = torch.Generator().manual_seed(seed)
    size = IMAGE_SIZE // 4
    latents = torch.randn(len(prompts), LATENT_CHANNELS, latent_frames, size, size, generator=generator)
    conditioned, empty = world.text_encoder.encode(prompts), world.text_encoder.encode([""] * len(prompts))
    sigmas = torch.linspace(1, 0, steps + 1)
    sigmas = SAMPLING_SHIFT * sigmas / (1 + (SAMPLING_SHIFT - 1) * sigmas)
    for index in range(steps):
        timestep = sigmas[index].repeat(len(prompts)) * 1000
        with_prompt = world.transformer(latents, timestep, conditioned, return_dict=False)[0]
        without = world.transformer(latents, timestep, empty, return_dict=False)[0]
        latents = latents + (sigmas[index + 1] - sigmas[index]) * (without + guidance * (with_prompt - without))
    return model_to_latent(latents)


def read(world, motions=MOTIONS, with_motion: bool = True, steps: int = 20, seed: int = 11) -> dict:
    rng = np.random.default_rng(seed)
    specs = [sample_caption_spec(rng, motion, palette="train") for motion in motions]
    latents = sample(world, [caption(spec, with_motion) for spec in specs], steps=steps)
    readings, stds = [], []
    for latent in latents:
        clip = world.decode(latent[None])
        readings.append(classify_motion_dense(clip.numpy()))
        stds.append(float(clip.std()))
    hits = sum(reading == motion for reading, motion in zip(readings, motions))
    return {"hits": hits, "of": len(motions), "readings": dict(collections.Counter(readings)),
            "pixel_std": float(np.mean(stds))}


@torch.no_grad()
def word_probe(world, motions=MOTIONS[:6], sigmas=(0.9, 0.6, 0.3), seed: int = 5) -> dict:
    """``{sigma: {"motion word": r, "colour word": r, "empty prompt": r}}``: the mean relative change of the
    prediction on a noised training-palette clip of each motion when its caption changes so."""
    rng = np.random.default_rng(seed)
    changes = {sigma: collections.defaultdict(list) for sigma in sigmas}
    for motion in motions:
        spec = sample_caption_spec(rng, motion, palette="train")
        clean = latent_to_model(world.encode(toyclips.render_clip(spec)))
        asked = caption(spec)
        words = asked.split()            # [motion, colour, texture, shape, ...]
        recoloured = " ".join((("red" if word != "red" else "blue") if i == 1 else word)
                              for i, word in enumerate(words))
        prompts = {"asked": asked, "motion word": asked.replace(motion, "static", 1), "colour word": recoloured,
                   "empty prompt": ""}
        encoded = {name: world.text_encoder.encode([prompt]) for name, prompt in prompts.items()}
        for sigma in sigmas:
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
            noisy, timestep = (1 - sigma) * clean + sigma * noise, torch.tensor([sigma * 1000.0])
            predicted = {name: world.transformer(noisy, timestep, text, return_dict=False)[0]
                         for name, text in encoded.items()}
            for name in ("motion word", "colour word", "empty prompt"):
                changes[sigma][name].append(float((predicted[name] - predicted["asked"]).norm()
                                                  / predicted["asked"].norm()))
    return {sigma: {name: float(np.mean(values)) for name, values in by_name.items()}
            for sigma, by_name in changes.items()}


@torch.no_grad()
def sampler_probe(world, motions=MOTIONS[:7], repeats: int = 2, seed: int = 7,
                  sampling=((1.0, 20), (8.0, 20), (4.0, 50))) -> dict:
    """``{setting: (read as asked, of)}`` for training-palette clips of ``motions``: through the codec alone, one
    denoising step (``x0 = x_t - sigma v``) from sigma 0.3 / 0.6 / 0.9, and sampling at each ``(guidance,
    steps)`` of ``sampling``."""
    rng = np.random.default_rng(seed)
    specs = [sample_caption_spec(rng, motion, palette="train") for motion in motions for _ in range(repeats)]
    asked = [spec.motion for spec in specs]
    raw = torch.cat([world.encode(toyclips.render_clip(spec)) for spec in specs])
    clean = latent_to_model(raw)
    prompts = [caption(spec) for spec in specs]
    text = world.text_encoder.encode(prompts)

    def hits(raw_latents):
        readings = [classify_motion_dense(world.decode(raw_latents[i:i + 1]).numpy()) for i in range(len(specs))]
        return sum(reading == motion for reading, motion in zip(readings, asked)), len(specs)

    found = {"codec alone": hits(raw)}
    for sigma in (0.3, 0.6, 0.9):
        noisy = (1 - sigma) * clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
        velocity = world.transformer(noisy, torch.full((len(specs),), sigma * 1000.0), text, return_dict=False)[0]
        found[f"one step from sigma {sigma}"] = hits(model_to_latent(noisy - sigma * velocity))
    for guidance, steps in sampling:
        found[f"sampled, guidance {guidance:g}, {steps} steps"] = hits(sample(world, prompts, steps=steps,
                                                                              guidance=guidance))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wan_toy_sample", description=__doc__.split("\n")[0])
    parser.add_argument("weights")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--motions", nargs="+", default=list(MOTIONS), help="the motions asked for, one clip each")
    parser.add_argument("--repeats", type=int, default=1, help="clips per motion (each with its own scene)")
    parser.add_argument("--word-probe", action="store_true", help="how far the prediction moves with the caption")
    parser.add_argument("--sampler-probe", action="store_true",
                        help="clips read as asked: through the codec, one denoising step, sampled")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    world = load_world(args.weights)
    if args.sampler_probe:
        print("| clips read as asked | hits |")
        print("|---|---|")
        for setting, (hit, of) in sampler_probe(world).items():
            print(f"| {setting} | {hit} / {of} |")
        return 0
    if args.word_probe:
        print("| sigma | motion word -> static | first colour word changed | empty prompt |")
        print("|---|---|---|---|")
        for sigma, change in word_probe(world).items():
            print(f"| {sigma} | {change['motion word']:.3f} | {change['colour word']:.3f} | "
                  f"{change['empty prompt']:.3f} |")
        return 0
    print(f"transformer steps {world.metadata.get('transformer_steps_done')}, "
          f"loss {world.metadata.get('transformer_final_loss')}")
    print("| prompt | read as asked | readings | pixel std |")
    print("|---|---|---|---|")
    for with_motion in (True, False):
        result = read(world, tuple(args.motions) * args.repeats, with_motion=with_motion, steps=args.steps)
        print(f"| {'with' if with_motion else 'without'} the motion word | {result['hits']} / {result['of']} | "
              f"{result['readings']} | {result['pixel_std']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
