"""Training the Wan toy world (``python -m motion_core train-toy-wan``), seeded, on the CPU.

1. Render clips of every motion class, 13 frames at 64x64, scenes drawn from both palettes
   (the captions name colours and shapes, so the text encoder has to have met every word).
2. Train the Wan VAE on spatial crops of whole clips (it is convolutional; the causal
   temporal compression sees all 13 frames), then calibrate its latent to ComfyUI's Wan21
   latent format (:func:`wanworld.calibrate_latent`).
3. Encode every clip once and train the transformer and the text encoder the way Wan is
   trained: flow matching, ``x_t = (1 - s) x0 + s eps``, the velocity ``eps - x0`` as the
   target, ``s`` drawn uniformly and shifted by ``SAMPLING_SHIFT``, the timestep ``1000 s``.
   Captions keep their motion word ``motion_word_share`` of the time; ``caption_drop`` of
   the time the whole caption is dropped (classifier-free guidance's unconditional prompt).
4. Keep an exponential moving average of the transformer and the text encoder and ship it;
   write the weights and a manifest (sha256, command, steps, final loss, date) as it goes,
   so a stopped run keeps its progress.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import logging
import math
import os
import time
from typing import Optional

import numpy as np
import torch

from . import toyclips
from .toytrain import _progress, lr_schedule, sha256
from .wanworld import (FRAMES, MANIFEST_PATH, SAMPLING_SHIFT, WEIGHTS_PATH, WanToyWorld, build_models,
                       calibrate_latent, caption_ids, caption_words, latent_to_model, sample_caption_spec, save_world)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class WanToyTrainSettings:
    seed: int = 0
    clips: int = 3000
    vae_steps: int = 600
    vae_batch: int = 4
    vae_crop: int = 32
    vae_lr: float = 1e-3
    vae_sample_noise: float = 0.0   # share of the posterior's std added to the latent in VAE training (0: its mean,
    #                                 which is what ComfyUI's WanVAE.encode returns; 1 with a 600-step budget left
    #                                 the posterior std above the means' spread and a 17.6 dB blur: docs/wan_toy.md)
    steps: int = 4000             # transformer steps
    batch: int = 16
    lr: float = 5e-4              # peak; linear warm-up then cosine decay to 10 %
    warmup_steps: int = 100
    motion_word_share: float = 0.8
    caption_drop: float = 0.1
    ema_decay: float = 0.999
    threads: int = 2
    minutes: float = 0.0          # > 0: stop the transformer phase after this many minutes (steps done are recorded)
    checkpoint_every: int = 250


def render_dataset(settings: WanToyTrainSettings) -> tuple[torch.Tensor, list[toyclips.ClipSpec]]:
    """``(n f h w c)`` clips with their specs, motion classes in turn, palettes alternating."""
    rng = np.random.default_rng(settings.seed)
    specs = [sample_caption_spec(rng, toyclips.MOTION_CLASSES[i % len(toyclips.MOTION_CLASSES)],
                                 palette=("train", "heldout")[(i // len(toyclips.MOTION_CLASSES)) % 2])
             for i in range(settings.clips)]
    return torch.stack([toyclips.render_clip(spec) for spec in specs]), specs


def train_vae(vae, clips: torch.Tensor, settings: WanToyTrainSettings, generator: torch.Generator) -> list[float]:
    """Reconstruction (L1 + MSE) and a small KL on ``vae_crop``-pixel crops of whole clips; the latent is the
    posterior's mean plus ``vae_sample_noise`` of its std."""
    optimizer = torch.optim.Adam(vae.parameters(), lr=settings.vae_lr)
    schedule = lr_schedule(optimizer, settings.vae_steps, settings.warmup_steps)
    size = clips.shape[2]
    history, start = [], time.time()
    for step in range(1, settings.vae_steps + 1):
        chosen = torch.randint(0, clips.shape[0], (settings.vae_batch,), generator=generator)
        top, left = (int(v) for v in torch.randint(0, size - settings.vae_crop + 1, (2,), generator=generator))
        batch = clips[chosen, :, top:top + settings.vae_crop, left:left + settings.vae_crop]
        pixels = batch.permute(0, 4, 1, 2, 3) * 2 - 1                    # (b c f h w) in -1..1
        posterior = vae.encode(pixels).latent_dist
        latent = posterior.mean
        if settings.vae_sample_noise > 0:
            latent = latent + settings.vae_sample_noise * posterior.std * torch.randn(latent.shape, generator=generator)
        recon = vae.decode(latent).sample
        loss = (recon - pixels).abs().mean() + 0.5 * ((recon - pixels) ** 2).mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append(float(loss.detach()))
        _progress("vae", step, settings.vae_steps, start, history[-1])
    return history


@torch.no_grad()
def encode_clips(vae, clips: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """What the transformer sees: latents ``(n 16 t h/4 w/4)`` in ComfyUI's normalised Wan21 space."""
    pixels = clips.permute(0, 4, 1, 2, 3) * 2 - 1
    return torch.cat([latent_to_model(vae.encode(pixels[i:i + batch]).latent_dist.mode())
                      for i in range(0, len(pixels), batch)])


def flow_batch(latents: torch.Tensor, generator: torch.Generator, shift: float = SAMPLING_SHIFT):
    """``(noisy, timestep, target)`` for a batch of clean latents: shifted uniform noise levels."""
    u = torch.rand(latents.shape[0], generator=generator)
    sigma = shift * u / (1 + (shift - 1) * u)
    noise = torch.randn(latents.shape, generator=generator)
    s = sigma.view(-1, 1, 1, 1, 1)
    return (1 - s) * latents + s * noise, sigma * 1000, noise - latents


def caption_table(specs: list[toyclips.ClipSpec]) -> torch.Tensor:
    """Every clip's caption as word indices, once: ``(n 2 CAPTION_TOKENS)``, without and with the motion word."""
    return torch.stack([torch.stack([caption_ids(" ".join(caption_words(spec, with_motion)))
                                     for with_motion in (False, True)]) for spec in specs])


def caption_batch(captions: torch.Tensor, chosen: torch.Tensor, settings: WanToyTrainSettings,
                  generator: torch.Generator) -> torch.Tensor:
    """Word indices ``(b CAPTION_TOKENS)`` of the ``chosen`` clips (``captions``: :func:`caption_table`): the motion
    word kept ``motion_word_share`` of the time, the whole caption dropped (all padding) ``caption_drop`` of the time."""
    keep = torch.rand(len(chosen), generator=generator) < settings.motion_word_share
    drop = torch.rand(len(chosen), generator=generator) < settings.caption_drop
    return captions[chosen, keep.long()] * (~drop)[:, None]


def train_transformer(transformer, text_encoder, latents: torch.Tensor, specs: list[toyclips.ClipSpec],
                      settings: WanToyTrainSettings, generator: torch.Generator, write) -> tuple[list[float], dict]:
    """Flow matching on the encoded clips; returns the loss history and the EMA modules (``write(ema, history)``
    saves a checkpoint)."""
    parameters = list(transformer.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=0.0)
    schedule = lr_schedule(optimizer, settings.steps, settings.warmup_steps)
    captions = caption_table(specs)
    ema = {"transformer": copy.deepcopy(transformer).requires_grad_(False),
           "text": copy.deepcopy(text_encoder).requires_grad_(False)}
    history, start = [], time.time()
    for step in range(1, settings.steps + 1):
        chosen = torch.randint(0, latents.shape[0], (settings.batch,), generator=generator)
        noisy, timestep, target = flow_batch(latents[chosen], generator)
        context = text_encoder(caption_batch(captions, chosen, settings, generator))
        velocity = transformer(noisy, timestep, context, return_dict=False)[0]
        loss = ((velocity - target) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            decay = min(settings.ema_decay, (1 + step) / (10 + step))
            for averaged, module in ((ema["transformer"], transformer), (ema["text"], text_encoder)):
                for kept, current in zip(averaged.parameters(), module.parameters()):
                    kept.lerp_(current, 1 - decay)
        history.append(float(loss.detach()))
        _progress("transformer", step, settings.steps, start, history[-1])
        if step % settings.checkpoint_every == 0:
            write(ema, history)
        if settings.minutes and time.time() - start > settings.minutes * 60:
            log.info("stopping the transformer phase after %.1f min at step %d", settings.minutes, step)
            break
    return history, ema


def _command(settings: WanToyTrainSettings) -> str:
    default = WanToyTrainSettings()
    flags = [f.name for f in dataclasses.fields(settings) if f.name not in ("threads",)
             and (f.name in ("steps", "clips", "seed") or getattr(settings, f.name) != getattr(default, f.name))]
    return "python -m motion_core train-toy-wan" + "".join(f" --{n.replace('_', '-')} {getattr(settings, n)}"
                                                           for n in flags)


def train_toy_wan(settings: WanToyTrainSettings, path: str = WEIGHTS_PATH, manifest: str = MANIFEST_PATH,
                  command: Optional[str] = None) -> dict:
    """Train, then write the weights to ``path`` and their manifest to ``manifest``."""
    for name in ("motion_word_share", "caption_drop"):
        if not 0.0 <= getattr(settings, name) <= 1.0:
            raise ValueError(f"{name} is a share, 0..1; got {getattr(settings, name)}")
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    started = time.time()
    log.info("rendering %d clips of %d frames", settings.clips, FRAMES)
    clips, specs = render_dataset(settings)
    transformer, vae, text_encoder = build_models(settings.seed)
    vae_history = train_vae(vae, clips, settings, generator)
    vae.requires_grad_(False).eval()
    measured = calibrate_latent(vae, clips[:256])
    latents = encode_clips(vae, clips)
    log.info("latents %s, std %.3f", tuple(latents.shape), float(latents.std()))
    vae_loss = sum(vae_history[-50:]) / max(1, len(vae_history[-50:]))

    def write(ema, history):
        minutes = (time.time() - started) / 60
        tail = history[-100:]
        reproduce = (command or _command(settings)) + ("" if len(history) == settings.steps else
                                                       f"  (stopped at transformer step {len(history)})")
        metadata = {"reproduce": reproduce, "settings": dataclasses.asdict(settings), "frames": FRAMES,
                    "latent_calibration": measured, "vae_final_loss": vae_loss,
                    "transformer_steps_done": len(history), "transformer_final_loss": sum(tail) / len(tail),
                    "minutes": round(minutes, 1)}
        save_world(WanToyWorld(ema["transformer"], vae, ema["text"], metadata), path)
        record = {"file": os.path.basename(path), "sha256": sha256(path), "bytes": os.path.getsize(path),
                  "command": command or _command(settings), "reproduce": reproduce,
                  "transformer_steps": len(history), "transformer_steps_planned": settings.steps,
                  "vae_steps": settings.vae_steps, "clips": settings.clips, "seed": settings.seed,
                  "final_transformer_loss_mean_last_100": round(metadata["transformer_final_loss"], 5),
                  "final_vae_loss_mean_last_50": round(vae_loss, 5), "minutes": round(minutes, 1),
                  "date": datetime.date.today().isoformat(), "torch": torch.__version__, "threads": settings.threads}
        partial = manifest + ".partial"
        with open(partial, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)
            fh.write("\n")
        os.replace(partial, manifest)
        return record, minutes

    history, ema = train_transformer(transformer, text_encoder, latents, specs, settings, generator, write)
    record, minutes = write(ema, history)
    if not math.isfinite(record["final_transformer_loss_mean_last_100"]):
        raise RuntimeError("the transformer's loss is not finite; lower --lr")
    log.info("wrote %s (%d bytes) in %.1f min", path, record["bytes"], minutes)
    return record
