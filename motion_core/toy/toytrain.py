"""Training the toy world's model (``python -m motion_core train-toy``), seeded, on the CPU.

1. Render clips of every motion class (train palette) with :mod:`motion_core.toyclips`.
2. Train the tiny VAE on their frames (reconstruction + a small KL; ``vae_colour_jitter``
   recolours a share of them, so the codec also passes colours the palette lacks), then
   rescale its latent so that SVD's scale factor 0.18215 brings it to unit variance.
3. Encode every clip once and train the SVD-architecture UNet on the latents the way SVD
   is conditioned (first frame's latent concatenated; EDM v-prediction, sigma_data 1) with
   the motion class as the cross-attention token (a learned token per class), replaced by
   the first frame's image embedding 15 % of the time (``image_token_share``); clips of the
   motions the model draws worst can be drawn more often (``hard_class_weight``). The loss
   also weighs the frame-to-frame changes of the error (``temporal_loss_weight``).
   ``conditioning="image"`` trains the SVD-like model instead (``toy_svd_like``): no motion
   token at all, the cross-attention always sees the first frame's image embedding, the
   motion of each clip is drawn by its scene (``toyclips.make_scene_dataset``) and only the
   motion bucket says whether it moves (0 still, 127 moving), so the model draws a spread of
   motions for one image, as SVD does.
4. Average the last checkpoints' UNet weights and tokens (``average_last``), then write the
   weights and a manifest (sha256, command, steps, final loss, date).

A second stage (``init_weights``) starts from a trained file instead: it keeps that file's
VAE, image encoder and latent scale (no VAE phase), and goes on training its UNet and
motion tokens, e.g. with rotations drawn far more often; the manifest records the stage it
started from. Either stage can first move the image embeddings onto the centre of the motion
tokens (``centre_image_embeddings``), so that the learning, which starts from them, starts
among the tokens; the UNet's image-token draws are then trained there. ``token_noise`` adds
noise to the tokens during training (a trial: it did not change the learning).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import time
from typing import Callable, Optional

import torch

from ..fileio import sha256
from . import toyclips
from .toyworld import (COND_FPS, COND_MOTION_BUCKET, FRAMES, IMAGE_SIZE, MANIFEST_PATH, STILL_MOTION_BUCKET,
                       SVD_LATENT_SCALE, TOKEN_WIDTH, WEIGHTS_PATH, ToyWorld, build_models, save_world)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ToyTrainSettings:
    seed: int = 0
    clips: int = 6000             # ~230 clips per class; 2600 (100 per class) covered each class thinly
    vae_steps: int = 1000         # 400 at a flat 1e-3 (the first shipped weights) left colours wrong
    vae_batch: int = 16
    vae_crop: int = 32
    vae_lr: float = 1e-3
    vae_colour_jitter: float = 0.0   # share of VAE training crops recoloured (any hue, saturation x0.5-1.5), so
                                    # the codec passes colours the palette lacks; 0: the shipped recipe
    unet_steps: int = 2000        # ~1.5 s/step on 2 idle cores: the whole run fits in about an hour
    unet_batch: int = 8
    unet_lr: float = 8e-4         # peak; 3e-4 flat learned no motion in 1953 steps
    warmup_steps: int = 100       # both phases: linear warm-up, then cosine decay to 10 % of the peak
    log_sigma_mean: float = 0.5
    log_sigma_std: float = 1.4
    image_token_share: float = 0.15
    tokens_per_class: int = 1     # cross-attention tokens per motion class; above 1 the attention's query and key
                                  # learn to route tokens to places (one token: a uniform bias), as SD's text
                                  # pre-training taught SVD's; 1: the shipped recipe (and its random stream)
    temporal_loss_weight: float = 2.0   # also weigh frame-to-frame changes of the error (0: plain EDM loss);
                                        # 2.0 lifted dense-flow readings of class-token clips 35% -> 48%
    hard_class_weight: float = 3.0      # draw clips of ``hard_classes`` this many times as often (a curriculum);
                                        # 1: uniform draws, as the earlier toy models were trained
    # comma-separated, ``name`` (weighs hard_class_weight) or ``name:weight``; the default: every moving
    # kind but translation, whose 16 classes take 62% of uniform draws (weight 3 gives each of circle,
    # zoom, rotate and pan 14% instead of 8%)
    hard_classes: str = "circle_cw,circle_ccw,rotate_cw,rotate_ccw,zoom_in,zoom_out,pan_E,pan_W,bounce"
    threads: int = 2
    minutes: float = 0.0          # > 0: stop the UNet phase after this many minutes (steps done are recorded)
    checkpoint_every: int = 200   # write the weights every N UNet steps, so a stopped run keeps its progress
    probe_clips: int = 16         # clips the token probe denoises at each checkpoint (0: no probe; tests use few)
    average_last: int = 3         # ship the mean of the last N checkpoints' UNet and tokens (1: the last alone)
    lr_final_share: float = 0.1   # the cosine decay ends at this share of the peak (1.0: constant after warm-up)
    init_weights: str = ""        # a trained toy file to go on from (a second stage): keeps its VAE, image
    #                               encoder and latent scale, skips the VAE phase, trains its UNet and tokens
    centre_image_embeddings: int = 0   # 1: before the UNet phase, shift the image encoder's output so the mean
    #                                    image embedding of the clips' first frames is the centre of the motion
    #                                    tokens it starts from (random tokens: zero); the learning starts from image
    #                                    embeddings, which otherwise lie ~32 from that centre, ~43 from any token;
    #                                    0: the shipped recipe
    autocast_bf16: int = 0        # 1: the UNet phase's forward and backward in bfloat16 (torch.autocast; weights,
    #                               optimiser and loss stay float32): 1.1-1.4x faster a step on these CPUs with
    #                               AVX512-BF16, 1.19x over a whole run (`python -m bench.train_step`); 0: float32,
    #                               the shipped recipe
    conditioning: str = "class_token"   # what the cross-attention sees in training: "class_token", a learned token
    #                                     per motion class (image embedding ``image_token_share`` of the time; the
    #                                     shipped toy_svd); "image", SVD's: always the first frame's image embedding,
    #                                     motions drawn by the scene (``toyclips.make_scene_dataset``), still clips
    #                                     at motion bucket 0 and moving ones at 127 (toy_svd_like)
    token_noise: float = 0.0      # > 0: add Gaussian noise of this standard deviation per channel (the tokens'
    #                               own is about 1) to every clip's cross-attention tokens, class or image, meant
    #                               to make the UNet ignore directions the tokens do not differ in, which an
    #                               inversion could use to fit one clip's look (a 300-step stage at 0.5 changed
    #                               neither the UNet's answer to random directions nor the learning:
    #                               docs/research_log.md); 0: the shipped recipe (and its random stream)


def _progress(label: str, step: int, total: int, start: float, loss: float) -> None:
    if step == 1 or step % max(1, total // 40) == 0 or step == total:
        elapsed = time.time() - start
        log.info("%s %d/%d  loss %.4f  %.0fs elapsed, ~%.0fs left", label, step, total, loss, elapsed,
                 elapsed / step * (total - step))


def lr_schedule(optimizer: torch.optim.Optimizer, steps: int, warmup: int,
                final_share: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``final_share`` of the peak at ``steps``."""
    if not 0.0 <= final_share <= 1.0:
        raise ValueError(f"lr_final_share is a share of the peak learning rate, 0..1; got {final_share}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return final_share + (1 - final_share) / 2 * (1 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def render_dataset(settings: ToyTrainSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n f h w c)`` clips and ``(n)`` class indices, balanced over classes."""
    clips, labels = [], []
    source = toyclips.make_scene_dataset if settings.conditioning == "image" else toyclips.make_dataset
    for frames, label in source(settings.clips, settings.seed, frames=FRAMES, size=IMAGE_SIZE):
        clips.append(frames)
        labels.append(label)
    return torch.stack(clips), torch.tensor(labels)


def train_vae(vae, clips: torch.Tensor, settings: ToyTrainSettings, generator: torch.Generator) -> list[float]:
    if not 0.0 <= settings.vae_colour_jitter <= 1.0:
        raise ValueError(f"vae_colour_jitter is a share of the VAE's training crops, 0..1; got {settings.vae_colour_jitter}")
    frames = clips.flatten(0, 1).permute(0, 3, 1, 2) * 2 - 1          # (n*f c h w) in -1..1
    optimizer = torch.optim.Adam(vae.parameters(), lr=settings.vae_lr)
    schedule = lr_schedule(optimizer, settings.vae_steps, settings.warmup_steps)
    history, start = [], time.time()
    for step in range(1, settings.vae_steps + 1):
        batch = frames[torch.randint(0, frames.shape[0], (settings.vae_batch,), generator=generator)]
        top, left = (int(v) for v in torch.randint(0, IMAGE_SIZE - settings.vae_crop + 1, (2,), generator=generator))
        batch = batch[:, :, top:top + settings.vae_crop, left:left + settings.vae_crop]   # convs: crops suffice
        if settings.vae_colour_jitter > 0:             # drawn only when on: the shipped recipe's stream stays
            batch = recolour(batch, settings.vae_colour_jitter, generator)
        posterior = vae.encode(batch).latent_dist
        latent = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(latent).sample
        loss = (recon - batch).abs().mean() + 0.5 * ((recon - batch) ** 2).mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append(float(loss.detach()))
        _progress("vae", step, settings.vae_steps, start, history[-1])
    return history


def recolour(pixels: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Random colour transforms of a ``(b 3 h w)`` batch in -1..1 for the VAE phase.

    A ``share`` of the images (drawn per image) is rotated about the grey axis by a random
    angle (any hue) and its saturation scaled by 0.5-1.5; grey stays grey and values are
    clipped to -1..1. Only the VAE sees these: it stands in for SVD's generic image codec,
    which passes any colour, while the UNet and its tokens see the training palette alone.
    Trained on the palette alone, the toy VAE turns held-out orange towards red and fades
    brown and purple objects into the background (docs/research_log.md).
    """
    count = pixels.shape[0]
    chosen = torch.rand(count, generator=generator) < share
    angle = torch.rand(count, generator=generator) * 2 * math.pi
    saturation = 0.5 + torch.rand(count, generator=generator)
    grey = torch.full((3, 1), 1 / math.sqrt(3))
    project = grey @ grey.T                                             # onto the grey axis
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3)
    rotation = (torch.eye(3) * angle.cos()[:, None, None] + cross * angle.sin()[:, None, None]
                + project * (1 - angle.cos())[:, None, None])           # Rodrigues, (b 3 3)
    transform = project + saturation[:, None, None] * (rotation - project)
    transform = torch.where(chosen[:, None, None], transform, torch.eye(3).expand(count, 3, 3))
    return torch.einsum("bij,bjhw->bihw", transform, pixels).clamp(-1, 1)


@torch.no_grad()
def rescale_latent(vae, clips: torch.Tensor) -> float:
    """Fold a scale into the VAE so raw latents have std ``1 / 0.18215`` (SVD's convention)."""
    sample = clips[:256].flatten(0, 1).permute(0, 3, 1, 2) * 2 - 1
    std = float(vae.encode(sample).latent_dist.mean.std())
    scale = (1.0 / SVD_LATENT_SCALE) / std
    channels = vae.config.latent_channels
    vae.quant_conv.weight[:channels] *= scale
    vae.quant_conv.bias[:channels] *= scale
    vae.quant_conv.bias[channels:] += 2 * math.log(scale)          # log-variance of the scaled latent
    vae.post_quant_conv.weight /= scale
    return scale


@torch.no_grad()
def encode_clips(vae, clips: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Raw latents ``(n f 4 h/4 w/4)``."""
    frames = clips.flatten(0, 1).permute(0, 3, 1, 2) * 2 - 1
    latents = torch.cat([vae.encode(frames[i:i + batch]).latent_dist.mode() for i in range(0, len(frames), batch)])
    return latents.reshape(clips.shape[0], clips.shape[1], *latents.shape[1:])


def image_embeddings(image_encoder, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``(b h w c)`` images -> ``(b d)`` embeddings, ``batch`` at a time."""
    return torch.cat([image_encoder(images[i:i + batch]) for i in range(0, len(images), batch)])


def batched_denoise(unet, noisy: torch.Tensor, sigma: torch.Tensor, first_raw: torch.Tensor,
                    context: torch.Tensor, motion_bucket: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SVD's EDM preconditioning for a batch of clips.

    ``noisy`` ``(b f c h w)`` scaled latents, ``sigma`` ``(b)``, ``first_raw`` ``(b c h w)``
    unscaled first-frame latents, ``context`` ``(b n d)``, ``motion_bucket`` ``(b)`` (default:
    ``COND_MOTION_BUCKET`` for every clip). Returns ``(b f c h w)``.
    """
    s = sigma[:, None, None, None, None]
    model_in = noisy / (s ** 2 + 1).sqrt()
    condition = first_raw[:, None].expand(-1, noisy.shape[1], -1, -1, -1)
    added = torch.tensor([[COND_FPS - 1, COND_MOTION_BUCKET, 0.0]]).expand(noisy.shape[0], -1)
    if motion_bucket is not None:
        added = torch.cat([added[:, :1], motion_bucket.float()[:, None], added[:, 2:]], dim=1)
    out = unet(torch.cat([model_in, condition], dim=2), 0.25 * sigma.log(), encoder_hidden_states=context,
               added_time_ids=added, return_dict=False)[0]
    return noisy / (s ** 2 + 1) - out * s / (s ** 2 + 1).sqrt()


def clip_weights(labels: torch.Tensor, settings: ToyTrainSettings) -> Optional[torch.Tensor]:
    """Per-clip sampling weights ``(n)`` of the UNet phase, or None for uniform draws
    (every weight 1, e.g. ``hard_class_weight`` 1: the earlier models' recipe, whose random
    stream stays as it was).

    Clips of ``settings.hard_classes`` weigh ``hard_class_weight``, the rest 1: motions the
    toy model draws poorly (circles, rotations) get more of its fixed step budget. An entry
    ``name:weight`` (e.g. ``rotate_cw:6``) gives that class its own weight.
    """
    weights = torch.ones(labels.shape[0])
    entries = [entry.strip() for entry in settings.hard_classes.split(",") if entry.strip()]
    if not entries:
        raise ValueError("hard_classes is empty; name the motion classes to weigh, e.g. 'circle_cw,rotate_cw'")
    for entry in entries:
        name, _, own = entry.partition(":")
        try:
            weight = float(own) if own.strip() else settings.hard_class_weight
        except ValueError:
            raise ValueError(f"hard_classes entry {entry!r}: the weight after ':' must be a number, "
                             "e.g. 'rotate_cw:6'") from None
        if not (weight > 0 and math.isfinite(weight)):
            what = f"hard_classes entry {entry!r}" if own.strip() else "hard_class_weight"
            raise ValueError(f"{what} must be a positive number, got {weight}")
        weights[labels == toyclips.class_index(name.strip())] = weight    # raises on an unknown name
    return None if bool((weights == 1.0).all()) else weights


def train_unet(unet, image_encoder, latents: torch.Tensor, labels: torch.Tensor, first_images: torch.Tensor,
               settings: ToyTrainSettings, generator: torch.Generator,
               checkpoint: Callable[[torch.Tensor, list[float]], None],
               initial_tokens: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, list[float], list[int]]:
    """Returns the learned motion-class tokens ``(classes n d)``, the loss history and the
    checkpoint steps averaged into the final weights (empty: the last step's weights).

    ``initial_tokens`` ``(classes n d)``: a trained model's tokens to go on from (default: random).
    """
    per_class = settings.tokens_per_class
    if initial_tokens is None:
        initial_tokens = torch.randn(len(toyclips.MOTION_CLASSES), per_class, TOKEN_WIDTH, generator=generator)
    tokens = torch.nn.Parameter(initial_tokens.detach().clone().float())
    with torch.no_grad():
        image_tokens = image_embeddings(image_encoder, first_images)
    optimizer = torch.optim.AdamW(list(unet.parameters()) + [tokens], lr=settings.unet_lr, weight_decay=0.01)
    schedule = lr_schedule(optimizer, settings.unet_steps, settings.warmup_steps, settings.lr_final_share)
    probe = torch.Generator().manual_seed(settings.seed + 1)
    probe_index = torch.randint(0, latents.shape[0], (settings.probe_clips,), generator=probe)
    unet.train()
    history, start = [], time.time()
    average = CheckpointAverage(settings.unet_steps - (settings.average_last - 1) * settings.checkpoint_every)
    weights = clip_weights(labels, settings)
    image_only, still = settings.conditioning == "image", toyclips.class_index("static")
    for step in range(1, settings.unet_steps + 1):
        if weights is None:
            index = torch.randint(0, latents.shape[0], (settings.unet_batch,), generator=generator)
        else:
            index = torch.multinomial(weights, settings.unet_batch, replacement=True, generator=generator)
        raw = latents[index]                                                # (b f c h w)
        clean = raw * SVD_LATENT_SCALE
        sigma = torch.exp(settings.log_sigma_mean + settings.log_sigma_std * torch.randn(len(index), generator=generator))
        noisy = clean + sigma[:, None, None, None, None] * torch.randn(clean.shape, generator=generator)
        image_context = image_tokens[index][:, None].expand(-1, per_class, -1)    # repeated: as one token
        if image_only:                                   # SVD's conditioning: the image, and the bucket
            context = image_context
            bucket = torch.where(labels[index] == still, STILL_MOTION_BUCKET, COND_MOTION_BUCKET)
        else:
            use_image = torch.rand(len(index), generator=generator) < settings.image_token_share
            context = torch.where(use_image[:, None, None], image_context, tokens[labels[index]])   # (b n d)
            bucket = None
        if settings.token_noise > 0:
            context = context + settings.token_noise * torch.randn(context.shape, generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(settings.autocast_bf16)):
            denoised = batched_denoise(unet, noisy, sigma, raw[:, 0], context, bucket).float()
        weight = ((sigma ** 2 + 1) / sigma ** 2)[:, None, None, None, None]
        loss = denoising_loss(denoised, clean, weight, settings.temporal_loss_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + [tokens], 1.0)
        optimizer.step()
        schedule.step()
        history.append(float(loss.detach()))
        _progress("unet", step, settings.unet_steps, start, history[-1])
        if step % settings.checkpoint_every == 0:
            if not image_only and settings.probe_clips:     # the token probe: only where tokens are trained
                unet.eval()
                right, wrong = token_gap(unet, latents[probe_index], labels[probe_index], tokens.detach(), probe)
                log.info("unet step %d: probe loss with the clip's own motion token %.4f, with another class's %.4f",
                         step, right, wrong)
                unet.train()
            checkpoint(tokens.detach(), history)
            average.add(step, unet, tokens.detach())
        if settings.minutes and time.time() - start > 60 * settings.minutes:
            log.info("time budget of %.1f min reached after %d UNet steps", settings.minutes, step)
            break
    unet.eval()
    tokens = average.apply(unet, tokens.detach())
    if image_only:                                     # no token was trained: the file holds none
        tokens = tokens[:0]
    return tokens, history, (average.steps if len(average.steps) > 1 else [])


def denoising_loss(denoised: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor,
                   temporal_weight: float = 0.0) -> torch.Tensor:
    """EDM-weighted MSE of ``(b f c h w)`` clips, plus ``temporal_weight`` times the same
    MSE of their frame-to-frame differences.

    The second term is minimised by the same denoiser (the differences are a linear map of
    the clip), so it does not bias the model; with finite capacity it makes errors that
    change from frame to frame (shimmer, objects that dissolve and reappear) cost more than
    errors that persist over the clip: an error uncorrelated over time costs
    ``1 + 2 * temporal_weight`` times one that is constant.
    """
    error = denoised - clean
    loss = (weight * error ** 2).mean()
    if temporal_weight:
        step_error = error[:, 1:] - error[:, :-1]                    # (b f-1 c h w)
        loss = loss + temporal_weight * (weight * step_error ** 2).mean()
    return loss


class CheckpointAverage:
    """Running mean of the UNet weights and tokens at checkpoints from step ``first`` on.

    A cheap stand-in for an EMA of the weights: a single late checkpoint still carries the
    optimiser's step-to-step noise, which shows as flicker in sampled clips.
    """

    def __init__(self, first: int):
        self.first, self.steps = first, []
        self.state: dict[str, torch.Tensor] = {}
        self.tokens: Optional[torch.Tensor] = None

    def add(self, step: int, unet, tokens: torch.Tensor) -> None:
        if step < self.first:
            return
        self.steps.append(step)
        weight = 1.0 / len(self.steps)                      # running mean: m += (x - m) / n
        for name, value in unet.state_dict().items():
            current = self.state.setdefault(name, value.detach().clone().float())
            current += (value.detach().float() - current) * weight
        self.tokens = tokens.clone() if self.tokens is None else self.tokens + (tokens - self.tokens) * weight

    @torch.no_grad()
    def apply(self, unet, tokens: torch.Tensor) -> torch.Tensor:
        """Load the mean into ``unet`` and return the mean tokens (a no-op below two checkpoints)."""
        if len(self.steps) < 2:
            return tokens
        current = unet.state_dict()
        unet.load_state_dict({k: v.to(current[k].dtype) for k, v in self.state.items()})
        log.info("UNet and tokens: mean of the checkpoints at steps %s", self.steps)
        return self.tokens


@torch.no_grad()
def token_gap(unet, latents: torch.Tensor, labels: torch.Tensor, tokens: torch.Tensor,
              generator: torch.Generator, sigma: float = 2.0) -> tuple[float, float]:
    """Denoising loss at ``sigma`` with each clip's own motion tokens ``(classes n d)`` vs. another class's.

    The model uses the motion token exactly when the first is clearly lower: a cheap check,
    during training, that motion is being carried by the cross-attention.
    """
    clean = latents * SVD_LATENT_SCALE
    sigmas = torch.full((latents.shape[0],), sigma)
    noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
    other = (labels + torch.randint(1, tokens.shape[0], labels.shape, generator=generator)) % tokens.shape[0]
    losses = []
    for chosen in (labels, other):
        denoised = batched_denoise(unet, noisy, sigmas, latents[:, 0], tokens[chosen])
        losses.append(float(((denoised - clean) ** 2).mean()))
    return losses[0], losses[1]


def _previous_stage(settings: ToyTrainSettings) -> dict:
    """The trained file ``settings.init_weights`` names, loaded (``world``), with what the
    manifest records of it: its sha256, and its own manifest's command, steps and minutes when a
    ``manifest.json`` of the same sha256 lies beside it (else no command, and the minutes and the
    command that reproduces it that its metadata records)."""
    from .toyworld import load_world

    path = settings.init_weights
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_weights: no toy weights file at {path!r}; give a file that "
                                "`python -m motion_core train-toy` wrote (the shipped one is "
                                f"{WEIGHTS_PATH})")
    world = load_world(path)
    if world.motion_tokens.shape[1] != settings.tokens_per_class:
        raise ValueError(f"init_weights {path!r} has {world.motion_tokens.shape[1]} token(s) per class, the "
                         f"settings {settings.tokens_per_class}; pass --tokens-per-class "
                         f"{world.motion_tokens.shape[1]}")
    image_stage = settings.conditioning == "image" and world.motion_tokens.shape[0] == 0   # an SVD-like file
    if not image_stage and world.motion_tokens.shape[0] != len(toyclips.MOTION_CLASSES):
        raise ValueError(f"init_weights {path!r} has tokens for {world.motion_tokens.shape[0]} motion classes, "
                         f"the clip generator {len(toyclips.MOTION_CLASSES)}; it was trained on other classes")
    stage = {"file": os.path.basename(path), "sha256": sha256(path), "minutes": world.metadata.get("minutes"),
             "command": None}
    for key in ("minutes_all_stages", "reproduce"):   # the file itself knows, whatever its manifest is called
        if key in world.metadata:
            stage[key] = world.metadata[key]
    beside = os.path.join(os.path.dirname(os.path.abspath(path)), "manifest.json")
    if os.path.isfile(beside):
        with open(beside, encoding="utf-8") as fh:
            recorded = json.load(fh)
        if recorded.get("sha256") == stage["sha256"]:
            stage.update({key: recorded[key] for key in ("command", "minutes", "minutes_all_stages", "unet_steps",
                                                         "date", "starts_from") if key in recorded})
    stage["world"] = world
    return stage


def shift_image_embeddings(image_encoder, first_images: torch.Tensor, centre: torch.Tensor) -> float:
    """Shift the image encoder's output so the mean embedding of ``first_images`` ``(b h w c)``
    is ``centre`` ``(d)``: its last layer is a LayerNorm, whose bias moves every embedding
    alike. Returns the length of the shift."""
    with torch.no_grad():
        mean = image_embeddings(image_encoder, first_images).mean(0)
        shift = centre.to(mean) - mean
        image_encoder.norm.bias += shift
    return float(shift.norm())


def _command(settings: ToyTrainSettings) -> str:
    """The ``train-toy`` command line of ``settings``: the main settings always, the others
    where they differ from the defaults (``minutes`` and ``threads`` do not change the recipe)."""
    always = ("unet_steps", "vae_steps", "unet_lr", "clips", "seed", "average_last", "hard_class_weight")
    default = ToyTrainSettings()
    flags = list(always) + [
        field.name for field in dataclasses.fields(settings)
        if field.name not in always + ("minutes", "threads") and getattr(settings, field.name) != getattr(default, field.name)]
    return "python -m motion_core train-toy" + "".join(f" --{name.replace('_', '-')} {getattr(settings, name)}"
                                                       for name in flags)


def train_toy(settings: ToyTrainSettings, path: str = WEIGHTS_PATH, manifest: str = MANIFEST_PATH,
              command: Optional[str] = None) -> dict:
    """Train, then write the weights to ``path`` and their manifest to ``manifest``.

    ``command``: the command line to record (the CLI passes its own); default, the
    equivalent ``train-toy`` command of ``settings``.
    """
    if settings.conditioning not in ("class_token", "image"):
        raise ValueError(f"conditioning must be 'class_token' (the shipped toy_svd) or 'image' (SVD's: the "
                         f"image embedding only, toy_svd_like); got {settings.conditioning!r}")
    if settings.tokens_per_class < 1:        # checked before the minutes of rendering and VAE training
        raise ValueError(f"tokens_per_class must be 1 or more (1: the shipped recipe); got {settings.tokens_per_class}")
    if not (settings.token_noise >= 0 and math.isfinite(settings.token_noise)):
        raise ValueError(f"token_noise is a standard deviation, 0 or more (0: the shipped recipe); got {settings.token_noise}")
    previous = _previous_stage(settings) if settings.init_weights else None    # checked before rendering
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    started = time.time()
    log.info("rendering %d clips", settings.clips)
    clips, labels = render_dataset(settings)
    if previous is None:
        unet, vae, image_encoder = build_models(settings.seed)       # seeded on its own: the order does not matter
        image_encoder.requires_grad_(False)
        vae_history = train_vae(vae, clips, settings, generator)
        vae_final_loss = sum(vae_history[-50:]) / 50
        vae.requires_grad_(False).eval()
        scale = rescale_latent(vae, clips)
        initial_tokens = None
    else:
        world = previous.pop("world")
        unet, vae, image_encoder = world.unet, world.vae, world.image_encoder
        unet.requires_grad_(True)
        vae_final_loss = world.metadata.get("vae_final_loss", float("nan"))      # that stage's VAE, unchanged
        scale = world.metadata.get("latent_rescale", 1.0)
        initial_tokens = world.motion_tokens if len(world.motion_tokens) else None   # an SVD-like file has none
    image_shift = 0.0
    if settings.centre_image_embeddings:
        centre = initial_tokens.mean(dim=(0, 1)) if initial_tokens is not None else torch.zeros(TOKEN_WIDTH)
        image_shift = shift_image_embeddings(image_encoder, clips[:, 0], centre)
        log.info("image embeddings moved by %.2f onto the motion tokens' centre", image_shift)
    latents = encode_clips(vae, clips)
    log.info("latents %s, std after scaling %.3f", tuple(latents.shape), float(latents.std() * SVD_LATENT_SCALE))
    earlier_minutes = 0.0 if previous is None else previous.get("minutes_all_stages", previous.get("minutes")) or 0.0

    def write(tokens, unet_history, averaged=()):
        """Weights and manifest as of now (also the checkpoints: a stopped run keeps its progress)."""
        minutes = (time.time() - started) / 60
        tail = unet_history[-100:]
        reproduce = _command(settings) + ("" if len(unet_history) == settings.unet_steps else
                                          f" --minutes {settings.minutes}  (stopped at UNet step {len(unet_history)})")
        metadata = {"reproduce": reproduce, "settings": dataclasses.asdict(settings),
                    "classes": list(toyclips.MOTION_CLASSES),
                    "latent_rescale": scale, "vae_final_loss": vae_final_loss, "image_embedding_shift": image_shift,
                    "unet_steps_done": len(unet_history), "unet_final_loss": sum(tail) / len(tail),
                    "minutes": round(minutes, 1), "averaged_checkpoint_steps": list(averaged)}
        if previous is not None:
            metadata["minutes_all_stages"] = round(minutes + earlier_minutes, 1)
        save_world(ToyWorld(unet, vae, image_encoder, tokens, metadata), path)
        record = {"file": os.path.basename(path), "sha256": sha256(path), "bytes": os.path.getsize(path),
                  "command": command or _command(settings),
                  "reproduce": reproduce,
                  "unet_steps": len(unet_history), "unet_steps_planned": settings.unet_steps,
                  "vae_steps": 0 if previous else settings.vae_steps, "clips": settings.clips,
                  "seed": settings.seed, "averaged_checkpoint_steps": list(averaged),
                  "final_unet_loss_mean_last_100": round(metadata["unet_final_loss"], 5),
                  "final_vae_loss_mean_last_50": round(metadata["vae_final_loss"], 5), "minutes": round(minutes, 1),
                  "date": datetime.date.today().isoformat(), "torch": torch.__version__, "threads": settings.threads}
        if previous is not None:
            record["starts_from"] = previous
            record["minutes_all_stages"] = metadata["minutes_all_stages"]
        partial = manifest + ".partial"                    # atomic: a stopped run never leaves half a manifest
        with open(partial, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)
            fh.write("\n")
        os.replace(partial, manifest)
        return record, minutes

    tokens, unet_history, averaged = train_unet(unet, image_encoder, latents, labels, clips[:, 0], settings,
                                                generator, write, initial_tokens)
    unet.requires_grad_(False)
    record, minutes = write(tokens, unet_history, averaged)
    log.info("wrote %s (%d bytes) in %.1f min", path, record["bytes"], minutes)
    return record
