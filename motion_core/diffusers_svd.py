"""The diffusers adapter: motion embeddings on a ``UNetSpatioTemporalConditionModel``.

The method lives in the rest of ``motion_core``; this module only wires a
:class:`~motion_core.embedding.MotionEmbedding` into diffusers' SVD UNet with attention
processors and wraps that UNet as the plain denoiser the training loop expects. It never
imports ComfyUI.

Where the learned tensors go (einops notation; b batch, f frames, s = h*w positions of a
layer's latent grid, c channels, n tokens, d token width):

- spatial cross-attention ``transformer_blocks.*.attn2``, rows ``(b f)``: row ``r`` attends
  to ``spatial_tokens[r % f]`` ``(n d)`` instead of the CLIP image embedding;
- temporal cross-attention ``temporal_transformer_blocks.*.attn2``, rows ``(b s)``: every
  row attends to ``temporal_tokens`` ``(n d)``;
- temporal self-attention ``temporal_transformer_blocks.*.attn1``, rows ``(b s)`` with the
  frames as the sequence: Q/K from ``x + m_qk``, V from ``x + m_v`` (Motion Inversion, eq. 3).
"""
from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as nnf
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import Attention
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

from .attention import motion_inputs
from .embedding import MotionEmbedding, base_metadata, init_motion_text, init_temporal, layer_name
from .training import StepCallback, TrainResult, TrainSettings, train_motion_embedding

log = logging.getLogger(__name__)

SVD_VAE_SCALING_FACTOR = 0.18215


# ---- model ---------------------------------------------------------------------------------
def tiny_unet_config() -> dict:
    """A small SVD UNet config with the real architecture and the real token width (1024).

    Two resolution levels; temporal self-attention layers: down 0 (32 ch, full grid),
    mid (64 ch, half grid), up 1 (2 x 32 ch, full grid).
    """
    return {
        "sample_size": 16,
        "in_channels": 8,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        "block_out_channels": (32, 64),
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 24,
        "layers_per_block": 1,
        "cross_attention_dim": 1024,
        "transformer_layers_per_block": 1,
        "num_attention_heads": (2, 4),
        "num_frames": 8,
    }


def build_unet(config: Optional[dict] = None, seed: int = 0) -> UNetSpatioTemporalConditionModel:
    """A frozen UNet in eval mode, initialised deterministically from ``seed``.

    The global RNG state is forked, so building does not disturb the caller's draws.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNetSpatioTemporalConditionModel(**(config or tiny_unet_config()))
    return unet.eval().requires_grad_(False)


def _blocks_in_forward_order(unet) -> list[tuple[str, torch.nn.Module, int]]:
    """``(dotted name, block, level)`` for down, mid, up (named_modules has mid last)."""
    levels = len(unet.down_blocks)
    out = [(f"down_blocks.{i}", b, i) for i, b in enumerate(unet.down_blocks)]
    out.append(("mid_block", unet.mid_block, levels - 1))
    out += [(f"up_blocks.{i}", b, levels - 1 - i) for i, b in enumerate(unet.up_blocks)]
    return out


def _level_grid(height: int, width: int, level: int) -> tuple[int, int]:
    """Latent grid after ``level`` stride-2 convolutions (k3, p1): ceil-halving."""
    for _ in range(level):
        height, width = (height + 1) // 2, (width + 1) // 2
    return height, width


def _transformers(unet) -> list[tuple[str, TransformerSpatioTemporalModel, int]]:
    found = []
    for prefix, block, level in _blocks_in_forward_order(unet):
        for name, module in block.named_modules(prefix=prefix):
            if isinstance(module, TransformerSpatioTemporalModel):
                found.append((name, module, level))
    return found


def temporal_layer_layout(unet, latent_height: int, latent_width: int) -> dict[str, dict]:
    """Every temporal self-attention (``temporal_transformer_blocks.*.attn1``) in forward order.

    ``{layer_name(i): {"channels": c, "height": h, "width": w, "downsample": 2**level,
    "module": dotted module name}}`` with ``h w`` the layer's latent grid when the UNet
    runs on a ``latent_height x latent_width`` latent (down block i: level i before its
    downsampler; mid: the lowest level; up blocks mirror the down blocks).
    """
    layout: dict[str, dict] = {}
    for name, transformer, level in _transformers(unet):
        height, width = _level_grid(latent_height, latent_width, level)
        for j, block in enumerate(transformer.temporal_transformer_blocks):
            layout[layer_name(len(layout))] = {
                "channels": int(block.attn1.to_q.in_features), "height": height, "width": width,
                "downsample": 2 ** level, "module": f"{name}.temporal_transformer_blocks.{j}.attn1"}
    return layout


def _cross_attentions(unet) -> tuple[list[tuple[str, Attention]], list[tuple[str, Attention]]]:
    """``(spatial attn2 modules, temporal attn2 modules)`` as ``(dotted name, module)``."""
    spatial, temporal = [], []
    for name, transformer, _ in _transformers(unet):
        spatial += [(f"{name}.transformer_blocks.{j}.attn2", b.attn2)
                    for j, b in enumerate(transformer.transformer_blocks) if b.attn2 is not None]
        temporal += [(f"{name}.temporal_transformer_blocks.{j}.attn2", b.attn2)
                     for j, b in enumerate(transformer.temporal_transformer_blocks) if b.attn2 is not None]
    return spatial, temporal


# ---- attention processors ------------------------------------------------------------------------
class _MotionProcessorBase:
    """AttnProcessor2_0's arithmetic with replaceable projections (see :meth:`_project`).

    Handles ``spatial_norm``, 4-d inputs, ``group_norm``, ``norm_q/norm_k``,
    ``residual_connection`` and ``rescale_output_factor`` exactly as AttnProcessor2_0.
    """

    def _project(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states):
        """``hidden_states`` ``(r l c)`` -> ``(query (r l i), key (r m i), value (r m i))``."""
        raise NotImplementedError

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query, key, value = self._project(attn, hidden_states, encoder_hidden_states)
        batch_size = query.shape[0]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key.shape[1], batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = nnf.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                         dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def _token_kv(attn: Attention, tokens: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project tokens ``(... n d)`` once: ``(key (... n i), value (... n i))``."""
    tokens = tokens.to(device=like.device, dtype=like.dtype)
    if attn.norm_cross:
        tokens = attn.norm_encoder_hidden_states(tokens)
    return attn.to_k(tokens), attn.to_v(tokens)


class SpatialTokensProcessor(_MotionProcessorBase):
    """Spatial cross-attention on per-frame motion-text tokens (Reenact Anything).

    ``hidden_states`` ``((b f) s c)``, batch-major and frame-minor: row ``r`` attends to
    ``spatial_tokens[r % f]`` ``(n d)``. The incoming ``encoder_hidden_states`` (and any
    mask for it) is ignored. K/V are projected once per frame and repeated over the batch,
    which equals attending to the per-row context ``repeat(spatial_tokens, 'f n d -> (b f) n d')``.
    """

    def __init__(self, embedding: MotionEmbedding):
        self.embedding = embedding

    def context(self, rows: int) -> torch.Tensor:
        """The per-row context this processor attends to: ``((b f) n d)`` for ``rows = b*f``."""
        tokens = self.embedding.spatial_tokens
        frames = tokens.shape[0]
        if rows % frames:
            raise ValueError(f"{rows} spatial rows are not a whole number of {frames}-frame clips; "
                             f"use embedding.resampled(frames) to match the run's frame count")
        return tokens.repeat(rows // frames, 1, 1)

    def _project(self, attn, hidden_states, encoder_hidden_states):
        tokens = self.embedding.spatial_tokens
        rows, frames = hidden_states.shape[0], tokens.shape[0]
        if rows % frames:
            self.context(rows)  # raises with the explanation
        key, value = _token_kv(attn, tokens, hidden_states)
        return attn.to_q(hidden_states), key.repeat(rows // frames, 1, 1), value.repeat(rows // frames, 1, 1)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        return super().__call__(attn, hidden_states, None, None, temb)


class TemporalTokensProcessor(_MotionProcessorBase):
    """Temporal cross-attention on the shared motion-text tokens.

    ``hidden_states`` ``((b s) f c)``; every row attends to ``temporal_tokens`` ``(n d)``,
    projected once and broadcast over the rows (no per-row copy of the tokens).
    """

    def __init__(self, embedding: MotionEmbedding):
        self.embedding = embedding

    def context(self, rows: int) -> torch.Tensor:
        """The per-row context: ``repeat(temporal_tokens, 'n d -> r n d', r=rows)`` (a view)."""
        tokens = self.embedding.temporal_tokens
        return tokens.expand(rows, *tokens.shape)

    def _project(self, attn, hidden_states, encoder_hidden_states):
        key, value = _token_kv(attn, self.embedding.temporal_tokens, hidden_states)
        rows = hidden_states.shape[0]
        return attn.to_q(hidden_states), key.expand(rows, *key.shape), value.expand(rows, *value.shape)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        return super().__call__(attn, hidden_states, None, None, temb)


class TemporalMotionProcessor(_MotionProcessorBase):
    """Temporal self-attention with Motion Embeddings (Motion Inversion, eq. 3).

    ``hidden_states`` ``((b s) f c)`` with ``s = height*width`` of this layer's grid at the
    current latent size. Q and K are projected from ``x + strength * m_qk``, V from
    ``x + strength * m_v``; ``m_qk`` ``(1 f c)``, ``m_v`` the layer's value embedding
    resized to ``(height width) f c`` (bilinear), or nothing when the values were dropped.
    """

    def __init__(self, embedding: MotionEmbedding, name: str, height: int, width: int, strength: float = 1.0):
        self.embedding, self.name = embedding, name
        self.height, self.width, self.strength = height, width, strength

    def _project(self, attn, hidden_states, encoder_hidden_states):
        qk = self.embedding.temporal_qk[self.name]
        if hidden_states.shape[1] != qk.shape[1]:
            raise ValueError(f"layer {self.name}: the run has {hidden_states.shape[1]} frames, the motion embedding "
                             f"{qk.shape[1]}; use embedding.resampled({hidden_states.shape[1]}) first")
        value = None
        if self.name in self.embedding.value_embedding:
            value = self.embedding.value_embedding_at(self.name, self.height, self.width)
        qk_input, value_input = motion_inputs(hidden_states, qk, value, self.strength)
        return attn.to_q(qk_input), attn.to_k(qk_input), attn.to_v(value_input)


# ---- installing ----------------------------------------------------------------------------------
def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


def _check_fit(embedding: MotionEmbedding, layout: dict[str, dict], spatial, temporal) -> None:
    """Raise ValueError naming the first tensor that does not fit this UNet, with both shapes."""
    frames = embedding.frames
    known = ", ".join(layout) or "none"
    for name in sorted(set(embedding.temporal_qk) | set(embedding.value_embedding)):
        qk, value = embedding.temporal_qk.get(name), embedding.value_embedding.get(name)
        mine = f"temporal_qk {None if qk is None else _shape(qk)}, value_embedding {None if value is None else _shape(value)}"
        if name not in layout:
            raise ValueError(f"motion embedding layer {name} does not fit: the embedding has {mine}, this UNet has no "
                             f"such temporal attention layer (it has {len(layout)}: {known})")
        if qk is None:
            raise ValueError(f"motion embedding layer {name} has a value embedding {_shape(value)} but no temporal_qk")
        channels = layout[name]["channels"]
        if qk.shape != (1, frames, channels):
            raise ValueError(f"motion embedding layer {name} does not fit: embedding temporal_qk {_shape(qk)}, "
                             f"the model's {layout[name]['module']} needs (1, {frames}, {channels})")
        if value is not None:
            grid = embedding.metadata.get("layers", {}).get(name)
            if not grid or "height" not in grid or "width" not in grid:
                raise ValueError(f"motion embedding layer {name} has a value embedding but metadata['layers'] "
                                 f"gives no grid (height, width) for it")
            want = (grid["height"] * grid["width"], frames, channels)
            if value.shape != want:
                raise ValueError(f"motion embedding layer {name} does not fit: embedding value_embedding "
                                 f"{_shape(value)}, the model's {layout[name]['module']} needs {want}")
    for tokens, kind, modules in ((embedding.spatial_tokens, "spatial_tokens", spatial),
                                  (embedding.temporal_tokens, "temporal_tokens", temporal)):
        if tokens is None:
            continue
        if not modules:
            raise ValueError(f"the embedding has {kind} {_shape(tokens)} but this UNet has no such cross-attention")
        module_name, attn = modules[0]
        width = attn.to_k.in_features
        if tokens.shape[-1] != width or tokens.ndim != (3 if kind == "spatial_tokens" else 2):
            need = f"({frames}, n, {width})" if kind == "spatial_tokens" else f"(n, {width})"
            raise ValueError(f"motion embedding {kind} does not fit: embedding {_shape(tokens)}, "
                             f"the model's {module_name} needs {need}")


class MotionInstall:
    """Processors of one embedding installed on a UNet; undo with :meth:`remove` or ``with``.

    Built by :func:`install_motion`. ``layout`` is the temporal layout at the install's
    latent size; ``processors`` maps dotted module names to the processors set.
    """

    def __init__(self, unet, embedding: MotionEmbedding, latent_height: int, latent_width: int,
                 strength: float = 1.0, frames: Optional[int] = None):
        if frames is not None and embedding.frames != frames:
            raise ValueError(self._frames_message(embedding.frames, frames))
        self.unet, self.embedding = unet, embedding
        self.layout = temporal_layer_layout(unet, latent_height, latent_width)
        spatial, temporal = _cross_attentions(unet)
        _check_fit(embedding, self.layout, spatial, temporal)
        modules = dict(unet.named_modules())
        plan: dict[str, object] = {}
        if embedding.spatial_tokens is not None:
            shared = SpatialTokensProcessor(embedding)
            plan.update({name: shared for name, _ in spatial})
        if embedding.temporal_tokens is not None:
            shared = TemporalTokensProcessor(embedding)
            plan.update({name: shared for name, _ in temporal})
        for name in embedding.temporal_qk:
            layer = self.layout[name]
            plan[layer["module"]] = TemporalMotionProcessor(embedding, name, layer["height"], layer["width"], strength)
        self._saved = dict(unet.attn_processors)
        for module_name, processor in plan.items():
            modules[module_name].set_processor(processor)
        self.processors = plan
        self._hook = unet.register_forward_pre_hook(self._check_frames, with_kwargs=True)
        self._removed = False
        log.debug("installed motion on %d attention modules (%s)", len(plan), embedding.summary())

    @staticmethod
    def _frames_message(have: int, run: int) -> str:
        return (f"the motion embedding has {have} frames but the run has {run}; "
                f"use embedding.resampled({run}) to adapt it")

    def _check_frames(self, module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        if sample is not None and sample.ndim == 5 and sample.shape[1] != self.embedding.frames:
            raise ValueError(self._frames_message(self.embedding.frames, sample.shape[1]))

    def remove(self) -> None:
        """Restore the processors saved at install time (idempotent)."""
        if self._removed:
            return
        self._hook.remove()
        self.unet.set_attn_processor(dict(self._saved))
        self._removed = True

    def __enter__(self) -> "MotionInstall":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def install_motion(unet, embedding: MotionEmbedding, latent_height: int, latent_width: int,
                   strength: float = 1.0, frames: Optional[int] = None) -> MotionInstall:
    """Install ``embedding`` on ``unet`` for a ``latent_height x latent_width`` latent.

    Sets :class:`SpatialTokensProcessor` / :class:`TemporalTokensProcessor` on the spatial /
    temporal cross-attentions when the embedding has motion text, and
    :class:`TemporalMotionProcessor` on every temporal self-attention it has an embedding
    for; everything else keeps its processor. ``strength`` scales the Motion Embeddings.
    The embedding's frame count must equal the run's (checked against ``frames`` now, and
    against every UNet call's ``sample (b f c h w)``). Raises ValueError naming the first
    tensor that does not fit the model. Use as a context manager or call ``.remove()``.
    """
    return MotionInstall(unet, embedding, latent_height, latent_width, strength, frames)


def init_embedding(unet, frames: int, latent_height: int, latent_width: int, tokens_per_frame: int = 0,
                   temporal: bool = True, with_values: bool = True, image_embeds: Optional[torch.Tensor] = None,
                   noise_std: float = 0.1, seed: int = 0, vae_factor: int = 8,
                   layers: Optional[dict[str, dict]] = None) -> MotionEmbedding:
    """A fresh embedding laid out for ``unet`` at this latent size (float32, CPU, no grad).

    Motion text when ``tokens_per_frame > 0`` (``init_motion_text``; ``image_embeds (f d)``
    optional); zero Motion Embeddings when ``temporal``, on ``layers`` (a subset of
    :func:`temporal_layer_layout` at this size, e.g. from ``layers.select_layers``) or on
    every temporal self-attention. ``metadata["layers"]`` holds their layout entries.
    """
    layout = layers if layers is not None else temporal_layer_layout(unet, latent_height, latent_width)
    metadata = base_metadata(frames, latent_width * vae_factor, latent_height * vae_factor, tokens_per_frame)
    embedding = MotionEmbedding(metadata=metadata)
    if tokens_per_frame > 0:
        width = unet.config.cross_attention_dim
        width = width if isinstance(width, int) else width[0]
        generator = torch.Generator().manual_seed(seed)
        embedding.spatial_tokens, embedding.temporal_tokens = init_motion_text(
            frames, tokens_per_frame, image_embeds, noise_std, generator, token_width=width)
    if temporal:
        metadata["layers"] = layout
        embedding.temporal_qk, embedding.value_embedding = init_temporal(layout, frames, with_values)
    return embedding


# ---- denoiser --------------------------------------------------------------------------------------
class SVDDenoiser:
    """SVD's UNet as ``denoiser(noisy (f c h w), sigma (f), first_frame (1 c h w)) -> (f c h w)``.

    EDM preconditioning of SVD's v-prediction (sigma_data = 1), as diffusers'
    EulerDiscreteScheduler with ``timestep_type="continuous"``:
    ``c_in = 1/sqrt(s^2+1)``, ``c_noise = 0.25 ln s``, ``c_skip = 1/(s^2+1)``,
    ``c_out = -s/sqrt(s^2+1)``, ``denoised = c_skip * x + c_out * F(c_in * x; c_noise)``.

    Latents (``noisy``, ``first_frame``) are in the UNet's latent space (VAE latents times
    ``vae_scaling_factor``). SVD's image conditioning is the *unscaled* VAE latent (diffusers'
    pipeline and ComfyUI both concatenate ``vae.encode(image)`` as is), so ``first_frame`` is
    divided by ``vae_scaling_factor`` and repeated over frames before the channel concat.
    ``fps`` is the clip's frame rate as ComfyUI's SVD conditioning takes it: the UNet is
    conditioned on ``fps - 1`` (diffusers' pipeline also subtracts 1). ``image_embeds``
    ``(1 d)`` or ``(1 1 d)``: the CLIP image embedding the cross-attentions see when no motion
    text is installed (zeros, i.e. SVD's unconditional embedding, when None). Runs the UNet
    in its own dtype on its own device with batch 1; returns float32.
    """

    def __init__(self, unet, fps: int = 6, motion_bucket_id: int = 127, noise_aug_strength: float = 0.0,
                 image_embeds: Optional[torch.Tensor] = None, vae_scaling_factor: float = SVD_VAE_SCALING_FACTOR):
        self.unet, self.fps, self.motion_bucket_id = unet, fps, motion_bucket_id
        self.noise_aug_strength, self.vae_scaling_factor = noise_aug_strength, vae_scaling_factor
        width = unet.config.cross_attention_dim
        width = width if isinstance(width, int) else width[0]
        if image_embeds is None:
            image_embeds = torch.zeros(1, 1, width)
        self.image_embeds = image_embeds.reshape(1, 1, -1)

    def __call__(self, noisy: torch.Tensor, sigma: torch.Tensor, first_frame: torch.Tensor) -> torch.Tensor:
        device, dtype = self.unet.device, self.unet.dtype
        frames = noisy.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=device).reshape(-1)
        if sigma.numel() not in (1, frames):
            raise ValueError(f"sigma has {sigma.numel()} values for {frames} frames")
        if sigma.numel() > 1 and not bool((sigma == sigma[0]).all()):
            raise ValueError("SVD's UNet takes one noise level per clip; got different sigmas per frame")
        s = sigma.expand(frames)[:, None, None, None]                               # (f 1 1 1)
        x = noisy.to(device=device, dtype=torch.float32)
        model_in = (x / (s ** 2 + 1).sqrt()).to(dtype)
        condition = (first_frame.to(device=device, dtype=torch.float32) / self.vae_scaling_factor).to(dtype)
        sample = torch.cat([model_in, condition.expand(frames, -1, -1, -1)], dim=1)[None]   # (1 f 2c h w)
        timestep = (0.25 * sigma[:1].log()).to(device)
        added_time_ids = torch.tensor([[self.fps - 1, self.motion_bucket_id, self.noise_aug_strength]],
                                      dtype=dtype, device=device)
        out = self.unet(sample, timestep, encoder_hidden_states=self.image_embeds.to(device=device, dtype=dtype),
                        added_time_ids=added_time_ids, return_dict=False)[0][0].float()    # (f c h w)
        return x / (s ** 2 + 1) - out * s / (s ** 2 + 1).sqrt()


# ---- the Learn node, in diffusers -------------------------------------------------------------------
def learn_motion(unet, encode: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor,
                 embedding: MotionEmbedding, settings: TrainSettings, denoiser_kwargs: Optional[dict] = None,
                 callback: Optional[StepCallback] = None, strength: float = 1.0,
                 more_frames: Sequence[torch.Tensor] = (),
                 image_embeds_per_clip: Sequence[torch.Tensor] = ()) -> TrainResult:
    """Learn ``embedding`` from a reference clip (and ``more_frames``, other clips of the motion conformed to it:
    each step learns from one of them all) with the frozen ``unet``.

    ``frames`` ``(f h w 3)`` in 0..1; ``encode(frames) -> latents (f c h' w')`` in the UNet's
    latent space, called exactly once per clip. ``embedding`` is trained in place when it already is
    a trainable copy (``trainable_copy``) on the UNet's device, otherwise a trainable copy
    is; either way :class:`TrainResult` carries the result. ``denoiser_kwargs`` go to
    :class:`SVDDenoiser`; ``image_embeds_per_clip`` (one per clip, the reference first): the image embedding
    each step's clip is conditioned on. The processors are removed afterwards, also on errors.
    """
    with torch.no_grad():
        clean = encode(frames)
        more = [encode(clip) for clip in more_frames]
    device = unet.device
    clean = clean.detach().to(device=device, dtype=torch.float32)
    clips = [clean] + [latent.detach().to(device=device, dtype=torch.float32) for latent in more]
    count, _, latent_height, latent_width = clean.shape
    params = embedding.parameters()
    if not params or not all(p.requires_grad and p.is_leaf and p.device == device for p in params):
        embedding = embedding.trainable_copy(device)
    denoiser = SVDDenoiser(unet, **(denoiser_kwargs or {}))
    log.info("learning motion on %d frames at latent %dx%d: %s", count, latent_width, latent_height, embedding.summary())
    with install_motion(unet, embedding, latent_height, latent_width, strength, frames=count):
        if image_embeds_per_clip and len(image_embeds_per_clip) != len(clips):
            raise ValueError(f"{len(image_embeds_per_clip)} image embeddings for {len(clips)} clips")

        def select_clip(index):
            if image_embeds_per_clip:
                denoiser.image_embeds = image_embeds_per_clip[index].reshape(1, 1, -1)
        return train_motion_embedding(denoiser, clips if more else clean, embedding, settings, callback,
                                      select_clip=select_clip)
