"""Training the Wan toy world (``python -m motion_core train-toy-wan``), seeded, on the CPU.

1. Render clips of every motion class, 13 frames at 64x64, scenes drawn from both palettes
   (the captions name colours and shapes, so the text encoder has to have met every word).
2. Train the Wan VAE on spatial crops in stages, because trained end to end from scratch its
   decoder sits at the clips' mean colour for hundreds of steps (docs/wan_toy.md): on single
   frames (cheap, and Wan's VAE encodes frame 0 alone), the encoder first learns a linear
   codec's coefficients (:func:`fit_latent_basis`, a PCA of the patches one latent position
   covers), the decoder then learns to reconstruct from them, then both train together (as a
   per-frame codec, :func:`start_per_frame`); the temporal convolutions then start as averages
   and copies (:func:`start_temporal_as_copies`),
   and the whole VAE trains on whole clips, learning the 4x temporal compression. Its latent
   is then calibrated to ComfyUI's Wan21 latent format (:func:`wanworld.calibrate_latent`).
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
from .wanworld import (FRAMES, LATENT_CHANNELS, MANIFEST_PATH, SAMPLING_SHIFT, WEIGHTS_PATH, WanToyWorld, build_models,
                       calibrate_latent, caption_ids, caption_words, latent_to_model, load_world, sample_caption_spec,
                       save_world)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class WanToyTrainSettings:
    seed: int = 0
    clips: int = 3000
    # The VAE, in stages (trained end to end from scratch it sits at the mean colour; docs/wan_toy.md):
    vae_encoder_steps: int = 150  # 1. images: the encoder regresses a linear codec's coefficients (LatentBasis)
    vae_decoder_steps: int = 250  # 2. images: the decoder reconstructs from those coefficients
    vae_image_steps: int = 150    # 3. images: both, end to end; then the temporal convolutions start as averages
    vae_steps: int = 300          # 4. whole clips: both, end to end, learning the 4x temporal compression
    vae_image_batch: int = 16
    vae_batch: int = 4
    vae_crop: int = 32
    vae_encoder_lr: float = 1e-3
    vae_decoder_lr: float = 3e-4  # the Wan decoder falls to the mean colour at 1e-3 (docs/wan_toy.md)
    vae_lr: float = 1e-4
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
    motions: str = ""             # comma-separated motion classes to render (default: all of toyclips.MOTION_CLASSES)
    init_weights: str = ""        # a trained toy Wan file to go on from: keeps its VAE and latent calibration (no VAE
    #                               stages), its transformer and text encoder train on (and their averages restart)


def render_dataset(settings: WanToyTrainSettings) -> tuple[torch.Tensor, list[toyclips.ClipSpec]]:
    """``(n f h w c)`` clips with their specs, motion classes in turn, palettes alternating."""
    rng = np.random.default_rng(settings.seed)
    classes = motion_classes(settings.motions)
    specs = [sample_caption_spec(rng, classes[i % len(classes)], palette=("train", "heldout")[(i // len(classes)) % 2])
             for i in range(settings.clips)]
    return torch.stack([toyclips.render_clip(spec) for spec in specs]), specs


def motion_classes(motions: str) -> tuple[str, ...]:
    """The motion classes named in ``motions`` (comma-separated; empty: all of the toy world's), or a ValueError
    naming the unknown ones."""
    if not motions.strip():
        return toyclips.MOTION_CLASSES
    named = tuple(name.strip() for name in motions.split(",") if name.strip())
    unknown = [name for name in named if name not in toyclips.MOTION_CLASSES]
    if unknown:
        raise ValueError(f"motions: {', '.join(unknown)} not among the toy world's classes "
                         f"({', '.join(toyclips.MOTION_CLASSES)})")
    return named


@dataclasses.dataclass
class LatentBasis:
    """A linear video codec with the Wan VAE's geometry, the target the encoder starts from.

    Latent frame 0 holds frame 0, latent frame ``i >= 1`` frames ``4i-3 .. 4i`` (Wan's causal
    compression); each latent position covers a ``SPATIAL x SPATIAL`` pixel patch. The
    patches' principal components (``first``: ``(16 3*S*S)`` for frame 0, ``chunk``: ``(16
    4*3*S*S)`` for the later frames) give the ``LATENT_CHANNELS`` coefficients.
    """
    first_mean: torch.Tensor
    first_basis: torch.Tensor
    chunk_mean: torch.Tensor
    chunk_basis: torch.Tensor

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels (b c f h w)``, ``f = 1 + 4k`` -> coefficients ``(b 16 1+k h/S w/S)``."""
        first, chunks = latent_patches(pixels)
        first = torch.einsum("bhwp,kp->bkhw", first - self.first_mean, self.first_basis)[:, :, None]
        chunks = torch.einsum("bthwp,kp->bkthw", chunks - self.chunk_mean, self.chunk_basis)
        return torch.cat([first, chunks], dim=2)

    def decode(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The codec's own reconstruction: ``(b 16 1+k h' w')`` -> ``pixels (b 3 1+4k h'*S w'*S)``."""
        first = torch.einsum("bkhw,kp->bphw", coefficients[:, :, 0], self.first_basis) + self.first_mean[:, None, None]
        chunks = torch.einsum("bkthw,kp->bthwp", coefficients[:, :, 1:], self.chunk_basis) + self.chunk_mean
        b, t, h, w, _ = chunks.shape
        chunks = chunks.view(b, t, h, w, TEMPORAL, -1).permute(0, 1, 4, 5, 2, 3).reshape(b * t * TEMPORAL, -1, h, w)
        shuffle = torch.nn.functional.pixel_shuffle
        rest = shuffle(chunks, SPATIAL).view(b, t * TEMPORAL, 3, h * SPATIAL, w * SPATIAL).permute(0, 2, 1, 3, 4)
        return torch.cat([shuffle(first, SPATIAL)[:, :, None], rest], dim=2)


SPATIAL, TEMPORAL = 4, 4            # the toy VAE's compression (two spatial, two temporal downsamplings)


def latent_patches(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixels (b c f h w)`` -> frame 0 ``(b h' w' 3*S*S)`` and the chunks ``(b t-1 h' w' 4*3*S*S)`` (none for f = 1)."""
    first = torch.nn.functional.pixel_unshuffle(pixels[:, :, 0], SPATIAL).permute(0, 2, 3, 1)
    rest = pixels[:, :, 1:]
    b, c, f, h, w = rest.shape
    if f == 0:
        return first, first.new_zeros(b, 0, h // SPATIAL, w // SPATIAL, TEMPORAL * c * SPATIAL * SPATIAL)
    chunks = torch.nn.functional.pixel_unshuffle(rest.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), SPATIAL)
    chunks = chunks.view(b, f // TEMPORAL, TEMPORAL, -1, h // SPATIAL, w // SPATIAL)
    return first, chunks.permute(0, 1, 4, 5, 2, 3).flatten(-2)


def fit_latent_basis(clips: torch.Tensor, samples: int = 20000, seed: int = 0) -> LatentBasis:
    """Principal components of the patches a latent position covers, from ``clips (n f h w c)`` in 0..1."""
    first, chunks = latent_patches(clips.permute(0, 4, 1, 2, 3) * 2 - 1)
    generator = torch.Generator().manual_seed(seed)
    fitted = []
    for patches in (first.reshape(-1, first.shape[-1]), chunks.reshape(-1, chunks.shape[-1])):
        patches = patches[torch.randperm(len(patches), generator=generator)[:samples]]
        mean = patches.mean(0)
        basis = torch.linalg.svd(patches - mean, full_matrices=False).Vh[:LATENT_CHANNELS]
        fitted += [mean, basis]
    return LatentBasis(*fitted)


def _crops(clips: torch.Tensor, count: int, crop: int, generator: torch.Generator, single_frames: bool) -> torch.Tensor:
    """``count`` crops of ``crop`` pixels, ``(b c f h w)`` in -1..1: of whole clips, or of single frames (f = 1)."""
    chosen = torch.randint(0, clips.shape[0], (count,), generator=generator)
    top, left = (int(v) for v in torch.randint(0, clips.shape[2] - crop + 1, (2,), generator=generator))
    if single_frames:
        frame = torch.randint(0, clips.shape[1], (count,), generator=generator)
        batch = clips[chosen, frame, top:top + crop, left:left + crop][:, None]
    else:
        batch = clips[chosen, :, top:top + crop, left:left + crop]
    return batch.permute(0, 4, 1, 2, 3) * 2 - 1


@torch.no_grad()
def start_per_frame(vae) -> None:
    """Zero the causal 3D convolutions' taps on past frames, so the VAE starts as a per-frame (2D) codec.

    Single frames see only zero padding there, so those taps get no gradient in the image
    stages: left random, they would mix noise into every later frame of a clip.
    """
    for name, module in vae.named_modules():
        if isinstance(module, torch.nn.Conv3d) and module.weight.shape[2] > 1 and not name.endswith("time_conv"):
            module.weight[:, :, :-1] = 0


@torch.no_grad()
def start_temporal_as_copies(vae) -> None:
    """The encoder's temporal downsamplings average their two frames, the decoder's upsamplings copy theirs.

    Single-frame training never runs them (Wan's VAE encodes and decodes frame 0 alone); started
    this way, a clip decodes as its frames' averages, four at a time, and training on clips
    goes on from there rather than from random temporal mixing.
    """
    for module in vae.modules():
        convolution = getattr(module, "time_conv", None)
        if convolution is None:
            continue
        outputs, inputs = convolution.weight.shape[:2]
        identity = torch.eye(inputs).view(inputs, inputs, 1, 1)
        convolution.weight.zero_()
        convolution.bias.zero_()
        if outputs == inputs:                                   # downsample: taps (previous, first, second)
            convolution.weight[:, :, 1] = 0.5 * identity
            convolution.weight[:, :, 2] = 0.5 * identity
        else:                                                   # upsample: two frames from the current one
            convolution.weight[:inputs, :, 2] = identity
            convolution.weight[inputs:, :, 2] = identity


def train_vae(vae, clips: torch.Tensor, settings: WanToyTrainSettings, generator: torch.Generator) -> list[float]:
    """The four stages (see the settings); returns the loss history of all of them, in order."""
    basis = (fit_latent_basis(clips, seed=settings.seed)
             if settings.vae_encoder_steps > 0 or settings.vae_decoder_steps > 0 else None)
    encoder = list(vae.encoder.parameters()) + list(vae.quant_conv.parameters())
    decoder = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    history = []

    def reconstruction(recon, pixels):
        return (recon - pixels).abs().mean() + 0.5 * ((recon - pixels) ** 2).mean()

    def stage_loss(stage, pixels):
        if stage == "vae encoder":
            return ((vae.encode(pixels).latent_dist.mean - basis.encode(pixels)) ** 2).mean()
        if stage == "vae decoder":
            return reconstruction(vae.decode(basis.encode(pixels)).sample, pixels)
        posterior = vae.encode(pixels).latent_dist
        latent = posterior.mean
        if settings.vae_sample_noise > 0:
            latent = latent + settings.vae_sample_noise * posterior.std * torch.randn(latent.shape, generator=generator)
        return reconstruction(vae.decode(latent).sample, pixels) + 1e-6 * posterior.kl().mean()

    stages = (("vae encoder", encoder, settings.vae_encoder_steps, settings.vae_encoder_lr, True),
              ("vae decoder", decoder, settings.vae_decoder_steps, settings.vae_decoder_lr, True),
              ("vae images", encoder + decoder, settings.vae_image_steps, settings.vae_lr, True),
              ("vae", encoder + decoder, settings.vae_steps, settings.vae_lr, False))
    if any(steps > 0 for _, _, steps, _, single_frames in stages if single_frames):
        start_per_frame(vae)
    for stage, parameters, steps, lr, single_frames in stages:
        if steps <= 0:
            continue
        if not single_frames:
            start_temporal_as_copies(vae)
        optimizer = torch.optim.Adam(parameters, lr=lr)
        schedule = lr_schedule(optimizer, steps, min(settings.warmup_steps, steps // 10))
        start = time.time()
        count = settings.vae_image_batch if single_frames else settings.vae_batch
        for step in range(1, steps + 1):
            loss = stage_loss(stage, _crops(clips, count, settings.vae_crop, generator, single_frames))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(float(loss.detach()))
            _progress(stage, step, steps, start, history[-1])
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
    if settings.init_weights and not os.path.isfile(settings.init_weights):          # before minutes of rendering
        raise FileNotFoundError(f"init_weights: no toy Wan weights file at {settings.init_weights!r}; give a file "
                                "that `python -m motion_core train-toy-wan` wrote")
    motion_classes(settings.motions)                   # unknown names refused before minutes of rendering
    for name in ("motion_word_share", "caption_drop"):
        if not 0.0 <= getattr(settings, name) <= 1.0:
            raise ValueError(f"{name} is a share, 0..1; got {getattr(settings, name)}")
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    started = time.time()
    log.info("rendering %d clips of %d frames", settings.clips, FRAMES)
    clips, specs = render_dataset(settings)
    if settings.init_weights:
        world = load_world(settings.init_weights)
        transformer, vae, text_encoder = world.transformer, world.vae, world.text_encoder
        transformer.train().requires_grad_(True)
        text_encoder.train().requires_grad_(True)
        measured = world.metadata.get("latent_calibration", {})
        vae_loss = float(world.metadata.get("vae_final_loss", 0.0))
        log.info("going on from %s (its VAE and latent calibration kept)", settings.init_weights)
    else:
        transformer, vae, text_encoder = build_models(settings.seed)
        vae_history = train_vae(vae, clips, settings, generator)
        vae.requires_grad_(False).eval()
        measured = calibrate_latent(vae, clips[:256])
        vae_loss = sum(vae_history[-50:]) / max(1, len(vae_history[-50:]))
    vae_steps = [0, 0, 0, 0] if settings.init_weights else [settings.vae_encoder_steps, settings.vae_decoder_steps,
                                                            settings.vae_image_steps, settings.vae_steps]
    latents = encode_clips(vae, clips)
    log.info("latents %s, std %.3f", tuple(latents.shape), float(latents.std()))

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
                  "vae_steps": vae_steps, "clips": settings.clips, "seed": settings.seed,
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
