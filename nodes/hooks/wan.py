"""Motion Embeddings on ComfyUI's Wan models (``comfy.ldm.wan.model.WanModel``): the Wan family's hooks.

Motion Inversion's eq. 3 in a DiT: in each chosen ``WanAttentionBlock`` the query-key
embedding ``(1 f c)`` is added to the self-attention's input (after norm1's modulation)
before the ``q`` and ``k`` projections, the value embedding ``((h w) f c)`` before ``v``,
with the video's tokens frame-major. ``norm_q`` / ``norm_k``, RoPE and the attention run as
ComfyUI wrote them, on either host version, because the patches wrap only the three
projections' ``forward``s (object patches on the clone, undone with it); a
``DIFFUSION_MODEL`` wrapper reads the token grid and the noise level of each forward.
Reference tokens a variant prepends and frames it concatenates are left as they are.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

import comfy.ldm.wan.model
import comfy.patcher_extension
from comfy.ldm.wan.model import WanModel

from ...motion_core.attention import per_frame_token_attention, sequence_qk_input, sequence_value_input
from ...motion_core.embedding import MotionEmbedding, dit_layer_name
from ...motion_core.library import frame_weights
from ...motion_core.resample import resample_frames

log = logging.getLogger(__name__)

HOOK_KEY = "motion_inversion"
PROJECTIONS = ("q", "k", "v")
TOKENS_WITH_TEXT = "text"        # motion tokens join the prompt's softmax (T2V, TI2V 5B)
TOKENS_WITH_IMAGE = "image"      # ... the CLIP image tokens' softmax (Wan 2.1 I2V / first-last-frame)


def latent_frames(frames: int) -> int:
    """Wan's VAE keeps the first frame and compresses the rest by 4: ``F' = 1 + (F - 1) // 4``."""
    return 1 + (frames - 1) // 4


def usable_frames(frames: int) -> int:
    """The video frames Wan's VAE encodes of ``frames``: ``1 + 4k`` (it drops the rest)."""
    return 1 + 4 * ((frames - 1) // 4)


def wan_layers(diffusion_model: WanModel) -> list[tuple[str, torch.nn.Module, int]]:
    """``(name, block, channels)`` of each block's self-attention, in forward order."""
    return [(dit_layer_name(index), block, int(block.self_attn.q.in_features))
            for index, block in enumerate(diffusion_model.blocks)]


def token_grid(diffusion_model: WanModel, latent_shape) -> tuple[int, int, int]:
    """``(frames, height, width)`` of the patchified grid of a latent ``(b c t h w)`` (padded up as Wan does)."""
    patch = diffusion_model.patch_size
    return tuple(-(-int(size) // int(step)) for size, step in zip(latent_shape[-3:], patch))


def wan_layout(model, latent_height: int, latent_width: int, names: Optional[list[str]] = None) -> dict:
    """``{name: {"channels", "height", "width"}}``: each layer's token grid at a latent size."""
    diffusion_model = model.model.diffusion_model
    _frames, height, width = token_grid(diffusion_model, (1, latent_height, latent_width))
    return {name: {"channels": channels, "height": height, "width": width}
            for name, _block, channels in wan_layers(diffusion_model) if names is None or name in names}


def recompute_units(diffusion_model: WanModel) -> list[str]:
    """Names (under ``diffusion_model``) of the blocks, each recomputed in the backward pass when learning."""
    return [f"blocks.{index}" for index in range(len(diffusion_model.blocks))]


def check_compatible(embedding: MotionEmbedding, model) -> None:
    """Every layer of ``embedding`` must be a block of ``model`` of the same width, its motion tokens as wide."""
    available = {name: channels for name, _block, channels in wan_layers(model.model.diffusion_model)}
    for name, qk in embedding.temporal_qk.items():
        if name not in available:
            raise ValueError(f"the motion embedding has layer {name} but this Wan model has {len(available)} blocks: "
                             "it was learned on another model; learn the motion again on this one")
        if available[name] != qk.shape[-1]:
            raise ValueError(f"layer {name} does not fit: the embedding is {qk.shape[-1]} wide, the model's blocks "
                             f"{available[name]}; it was learned on another model; learn the motion again on this one")
    check_tokens(embedding, model)


class WanGrid:
    """What the running forward looks like, for the projection patches: set by the wrapper.

    ``frames``, ``height``, ``width``: the video's token grid; ``first_token``: how many
    tokens a variant put before the video's (a reference image's); ``sigma``: the noise
    level; ``cond_rows``: which batch rows are a positive's (motion tokens go only there).
    ``__deepcopy__`` returns ``self`` (``ModelPatcher.clone()`` copies options).
    """

    def __init__(self):
        self.frames: Optional[int] = None
        self.height = self.width = self.first_token = 0
        self.sigma: Optional[float] = None
        self.cond_rows: Optional[list[bool]] = None     # per batch row: a positive's (None: all are)
        self.diffusion_model = None                     # the WanModel the patches were made for
        self.total_frames: Optional[int] = None         # the whole latent's frames (set before sampling)
        self.frame_index: Optional[list[int]] = None    # a context window's frames in the whole latent
        self.window_total: Optional[int] = None         # the whole latent's frames, as 0.33's window says

    def __deepcopy__(self, memo):
        return self


def _grid_wrapper(grid: WanGrid):
    def wrapper(executor, x, timestep, context, clip_fea=None, time_dim_concat=None, transformer_options={},
                **kwargs):
        diffusion_model = executor.class_obj
        grid.frames, grid.height, grid.width = token_grid(diffusion_model, x.shape)
        reference = kwargs.get("reference_latent")
        grid.first_token = 0
        if reference is not None and getattr(diffusion_model, "ref_conv", None) is not None:
            patch = diffusion_model.patch_size     # ref_conv: a strided Conv2d on the unpadded latent (floors)
            grid.first_token = (int(reference.shape[-2]) // patch[1]) * (int(reference.shape[-1]) // patch[2])
        sigmas = transformer_options.get("sigmas") if isinstance(transformer_options, dict) else None
        grid.sigma = None if sigmas is None else float(sigmas.max())
        grid.cond_rows = _cond_rows(transformer_options, int(x.shape[0]))
        window = transformer_options.get("context_window") if isinstance(transformer_options, dict) else None
        grid.frame_index = _window_frames(window, grid.frames)
        grid.window_total = int(getattr(window, "total_frames", 0) or 0) or None
        if diffusion_model is not grid.diffusion_model and grid.diffusion_model is not None:
            raise RuntimeError("Motion Embeddings on Wan ran on a copy of the model they were applied to (ComfyUI's "
                               "multi-GPU clones): they are not supported there yet; sample on one GPU")
        # the grid stays set after the forward: activation checkpointing recomputes the
        # blocks in the backward pass, after this returns, and must see the same grid
        return executor(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
    return wrapper


def _outer_sample_wrapper(grid: WanGrid):
    """Records the whole latent's length before sampling: a context window's forward sees only its frames."""
    def wrapper(executor, noise, latent_image, *args, **kwargs):
        grid.total_frames = int(latent_image.shape[2]) if latent_image is not None and latent_image.ndim == 5 else None
        return executor(noise, latent_image, *args, **kwargs)
    return wrapper


def _window_frames(window, frames: int) -> Optional[list[int]]:
    """The latent frames of the context window this forward runs on (ComfyUI's context windows on the frame
    axis, ``dim=2``), or None outside one (or where the window's frames are not all the latent's)."""
    index = getattr(window, "index_list", None)
    if index is None or getattr(window, "dim", 2) != 2:
        return None
    anchor = getattr(window, "causal_anchor_index", None)       # 0.33: the frame before the window, prepended
    index = ([anchor] if anchor is not None and anchor >= 0 else []) + [int(i) for i in index]
    return index if len(index) == frames else None    # frames a variant appends (guides): the window as a whole


def _cond_rows(transformer_options, batch: int) -> Optional[list[bool]]:
    """Which rows of a batch are positives: ComfyUI's ``cond_or_uncond`` names one entry (0 = positive) per
    equal chunk of the batch. None when it is absent (a direct call: every row is)."""
    chunks = transformer_options.get("cond_or_uncond") if isinstance(transformer_options, dict) else None
    if not chunks:
        return None
    if batch % len(chunks):          # not ComfyUI's layout: no row is known to be a positive's
        return [False] * batch
    per_chunk = batch // len(chunks)
    return [chunk == 0 for chunk in chunks for _row in range(per_chunk)]


class WanMotionEmbeddings:
    """The learned tensors as the projection patches use them: per layer, at the run's grid.

    Acts where the wrapper saw a forward whose noise level lies in ``[sigma_end,
    sigma_start]``. Frames are resampled to the run's latent frames and values resized to
    its token grid, cached per size while nothing is being learned.
    """

    def __init__(self, embedding: MotionEmbedding, grid: WanGrid, strength: float = 1.0,
                 sigma_start: float = float("inf"), sigma_end: float = 0.0):
        self.embedding = embedding
        self.grid = grid
        self.strength = strength
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.learning = any(t.requires_grad for t in embedding.tensors().values())
        self.calls = 0
        self.keys: list[str] = []      # the object patches that carry it (learning removes them when done)
        self._prepared = {}
        self._qk_inputs = {}           # layer -> (x, q's input), for k of the same call

    def __deepcopy__(self, memo):
        return self

    def active(self) -> bool:
        grid = self.grid
        if grid.frames is None:
            return False
        return grid.sigma is None or self.sigma_end <= grid.sigma <= self.sigma_start

    def tensors(self, name: str, like: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(temporal_qk (1 f c), value ((h w) f c) or None)`` at the run's grid, cast like ``like``."""
        grid = self.grid
        key = (name, grid.frames, grid.height, grid.width, self._window_key(), like.dtype, like.device)
        if not self.learning and key in self._prepared:
            return self._prepared[key]
        qk = self.embedding.temporal_qk[name]
        value = None
        if name in self.embedding.value_embedding:
            value = self.embedding.value_embedding_at(name, grid.height, grid.width)
        qk = self._frames_of_run(qk, dim=1)
        value = None if value is None else self._frames_of_run(value, dim=1)
        qk = qk.to(like) * self.strength
        value = None if value is None else value.to(like) * self.strength
        if not self.learning:
            self._prepared[key] = (qk, value)
        return qk, value

    def _window_key(self):
        grid = self.grid
        return None if grid.frame_index is None else (grid.total_frames, tuple(grid.frame_index))

    def _frames_of_run(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """``tensor`` resampled over its frame axis ``dim`` to the run's latent frames; in a context window,
        resampled to the whole latent's and the window's frames taken."""
        grid = self.grid
        if grid.frame_index is None:
            return tensor if tensor.shape[dim] == grid.frames else resample_frames(tensor, grid.frames, dim=dim)
        total = max(grid.window_total or grid.total_frames or 0, max(grid.frame_index) + 1)
        whole = tensor if tensor.shape[dim] == total else resample_frames(tensor, total, dim=dim)
        return whole.index_select(dim, torch.tensor(grid.frame_index, device=whole.device))

    def token_rows(self, batch: int) -> Optional[torch.Tensor]:
        """The batch rows whose video gets the motion tokens ``(b)`` (bool), or None where none does."""
        if not self.active() or self.strength <= 0:
            return None
        rows = self.grid.cond_rows
        if rows is None:
            return torch.ones(batch, dtype=torch.bool)
        if len(rows) != batch or not any(rows):
            return None
        return torch.tensor(rows)

    def token_weights(self, sequence: int) -> Optional[torch.Tensor]:
        """Each query token's weight of the motion tokens ``(L)`` from Apply Motion's frame strengths (at the run's
        latent frames; tokens outside the latent's frames weigh 1), or None when there are none."""
        strengths = self.embedding.metadata.get("frame_strengths")
        if not strengths:
            return None
        grid = self.grid
        per_frame = self._frames_of_run(frame_weights(strengths, self.embedding.frames)[None], dim=1)[0]   # (f)
        weights = torch.ones(sequence)
        positions = grid.height * grid.width
        weights[grid.first_token:grid.first_token + grid.frames * positions] = per_frame.repeat_interleave(positions)
        return weights

    def frame_tokens(self, like: torch.Tensor) -> torch.Tensor:
        """The motion tokens ``(f m c)`` at the run's latent frames, cast like ``like``.

        ``strength`` does not scale them (a token scaled down still draws attention): they
        act whenever it is above 0.
        """
        key = ("tokens", self.grid.frames, self._window_key(), like.dtype, like.device)
        if not self.learning and key in self._prepared:
            return self._prepared[key]
        tokens = self._frames_of_run(self.embedding.spatial_tokens, dim=0).to(like)
        if not self.learning:
            self._prepared[key] = tokens
        return tokens


class ProjectionForward:
    """A self-attention projection's ``forward`` (q, k or v of one block) fed eq. 3's input."""

    def __init__(self, forward, motion: WanMotionEmbeddings, name: str, projection: str):
        self.forward = forward
        self.motion = motion
        self.name = name
        self.projection = projection

    def __deepcopy__(self, memo):
        return self

    def __call__(self, x, *args, **kwargs):
        motion = self.motion
        if not motion.active():
            return self.forward(x, *args, **kwargs)
        grid = motion.grid
        qk, value = motion.tensors(self.name, x)
        if self.projection == "v" and value is None:
            return self.forward(x, *args, **kwargs)
        positions = grid.height * grid.width
        if x.shape[1] < grid.first_token + grid.frames * positions:
            raise ValueError(f"Wan block {self.name}: the self-attention sees {x.shape[1]} tokens, fewer than the "
                             f"{grid.frames} x {positions} of the latent; this Wan variant is not supported by "
                             "Motion Embeddings")
        if self.projection == "v":
            return self.forward(sequence_value_input(x, value, grid.frames, positions, grid.first_token),
                                *args, **kwargs)
        if self.projection == "k":      # q and k take the same input: k reuses the one q just built
            seen, qk_input = motion._qk_inputs.pop(self.name, (None, None))
            if seen is x:
                return self.forward(qk_input, *args, **kwargs)
        qk_input = sequence_qk_input(x, qk, grid.frames, positions, grid.first_token)
        if self.projection == "q":
            motion._qk_inputs[self.name] = (x, qk_input)
            motion.calls += 1
        return self.forward(qk_input, *args, **kwargs)


class CrossAttentionForward:
    """A block's cross-attention ``forward`` in which each frame's queries also see that frame's motion tokens.

    The tokens ``(f m c)`` live where the prompt's do after ``text_embedding`` (or, with
    ``TOKENS_WITH_IMAGE``, the CLIP image tokens after ``img_emb``) and go through the
    same ``k`` / ``v`` (``k_img`` / ``v_img``) and norms; one softmax over the prompt's
    tokens and the frame's (:func:`per_frame_token_attention`). Only a positive's rows get
    them; a negative's and every row outside the motion's noise range run ComfyUI's forward.
    """

    def __init__(self, forward, module, motion: WanMotionEmbeddings, with_image: bool):
        self.forward = forward
        self.module = module
        self.motion = motion
        self.with_image = with_image

    def __deepcopy__(self, memo):
        return self

    def __call__(self, x, context, *args, **kwargs):
        rows = self.motion.token_rows(int(x.shape[0]))
        if rows is None:
            return self.forward(x, context, *args, **kwargs)
        rows = rows.to(x.device)
        weights = self.motion.token_weights(int(x.shape[1]))
        if weights is not None:          # Apply Motion's frame_strengths: each frame's output mixed by its weight
            plain = self.forward(x, context, *args, **kwargs)
            chosen = rows.nonzero()[:, 0]
            with_tokens = self._with_tokens(x[rows], context[rows], args, kwargs)
            mixed = plain[chosen] + weights.to(plain)[None, :, None] * (with_tokens - plain[chosen])
            return plain.index_put((chosen,), mixed)
        if bool(rows.all()):
            return self._with_tokens(x, context, args, kwargs)
        # ComfyUI's forward on the whole batch, as it would run: the other rows stay bit for bit what they
        # are unpatched (a forward on fewer rows can round differently)
        plain = self.forward(x, context, *args, **kwargs)
        return plain.index_put((rows.nonzero()[:, 0],), self._with_tokens(x[rows], context[rows], args, kwargs))

    def _with_tokens(self, x, context, args, kwargs):
        module, grid = self.module, self.motion.grid
        options = kwargs.get("transformer_options", {})
        image_tokens = kwargs.get("context_img_len", args[0] if args else None)
        # an I2V cross-attention splits the context as ComfyUI's does: with no CLIP image output
        # (context_img_len None) both its attentions see the whole context
        image = hasattr(module, "k_img")

        def attend(queries, keys, values, **extra):
            return comfy.ldm.wan.model.optimized_attention(queries, keys, values, heads=module.num_heads,
                                                           transformer_options=options, **extra)

        def attend_image(queries, keys, values):      # 0.33 keeps its image attention out of low precision
            return attend(queries, keys, values, low_precision_attention=False)

        tokens = self.motion.frame_tokens(x)
        positions = grid.height * grid.width
        queries = module.norm_q(module.q(x))
        text = context[:, image_tokens:] if image else context
        keys, values = module.norm_k(module.k(text)), module.v(text)
        if image and self.with_image:
            picture = context[:, :image_tokens]
            out = attend(queries, keys, values) + per_frame_token_attention(
                queries, module.norm_k_img(module.k_img(picture)), module.v_img(picture),
                module.norm_k_img(module.k_img(tokens)), module.v_img(tokens), grid.frames, positions, attend_image,
                grid.first_token)
        else:
            out = per_frame_token_attention(queries, keys, values, module.norm_k(module.k(tokens)), module.v(tokens),
                                            grid.frames, positions, attend, grid.first_token)
            if image:
                picture = context[:, :image_tokens]
                out = out + attend_image(queries, module.norm_k_img(module.k_img(picture)), module.v_img(picture))
        return module.o(out)


def token_context(diffusion_model: WanModel) -> str:
    """Where a Wan model's motion tokens go: beside the CLIP image tokens when it has them (2.1 I2V), else the prompt's."""
    return TOKENS_WITH_IMAGE if getattr(diffusion_model, "img_emb", None) is not None else TOKENS_WITH_TEXT


def initial_tokens(model, positive: list, frames: int, tokens_per_frame: int, noise_std: float = 0.1,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Motion tokens ``(f m c)`` to start learning from, in the blocks' cross-attention space (float32, CPU).

    Every token starts at the mean of the positive's prompt tokens after ``text_embedding``
    (padding left out), or for a model with CLIP image tokens the mean of those after
    ``img_emb``, plus Gaussian noise of ``noise_std`` times that mean's spread so the tokens
    differ (Reenact Anything, sec. 3.4, with the prompt in place of SVD's image embedding).
    """
    diffusion_model = model.model.diffusion_model
    prompt, extra = positive[0][0], positive[0][1]
    with torch.no_grad():
        if token_context(diffusion_model) == TOKENS_WITH_IMAGE:
            clip = extra.get("clip_vision_output") if isinstance(extra, dict) else None
            if clip is None:
                raise ValueError("this Wan I2V model reads CLIP image tokens; motion tokens start from them: connect "
                                 "the positive of WanImageToVideo with a clip_vision_output (CLIP Vision Encode of "
                                 "the reference's first frame)")
            features = clip.penultimate_hidden_states[0]
            layer = diffusion_model.img_emb
        else:
            rows = prompt[0]
            features = rows[rows.abs().amax(dim=-1) > 0]          # T5's padding is zeros
            features = rows[:1] if features.shape[0] == 0 else features
            layer = diffusion_model.text_embedding
        weight = next(module.weight for module in layer.modules() if isinstance(module, torch.nn.Linear))
        dtype = getattr(model.model, "manual_cast_dtype", None) or weight.dtype
        dtype = dtype if dtype.is_floating_point and dtype.itemsize >= 2 else torch.float32
        projected = layer(features[None].to(device=weight.device, dtype=dtype))[0].float().cpu()
    mean = projected.mean(dim=0)
    spread = float(projected.std()) if projected.numel() > 1 else 1.0
    tokens = mean.expand(frames, tokens_per_frame, -1).clone()
    return tokens + noise_std * spread * torch.randn(tokens.shape, generator=generator)


def check_tokens(embedding: MotionEmbedding, model) -> None:
    """An embedding's motion tokens must be as wide as the model's blocks and go where it reads them."""
    if not embedding.has_motion_text:
        return
    diffusion_model = model.model.diffusion_model
    width = int(embedding.spatial_tokens.shape[-1])
    if width != int(diffusion_model.dim):
        raise ValueError(f"the motion tokens are {width} wide, this Wan model's blocks {diffusion_model.dim}: they "
                         "were learned on another model; learn the motion again on this one")
    learned = embedding.metadata.get("token_context", TOKENS_WITH_TEXT)
    if learned != token_context(diffusion_model):
        raise ValueError(f"the motion tokens were learned beside the {learned} tokens, this Wan model reads them "
                         f"beside the {token_context(diffusion_model)} tokens: learn the motion again on this model")


def with_wan_motion(model, embedding: MotionEmbedding, strength: float = 1.0,
                    sigma_start: float = float("inf"), sigma_end: float = 0.0):
    """A clone of the Wan ``model`` whose chosen blocks compute eq. 3 and, when the embedding has motion
    tokens, whose every block's cross-attention routes them per frame; returns ``(clone, motion)``.

    The caller checks that the embedding fits the model first.
    """
    patched = model.clone()
    grid = WanGrid()
    grid.diffusion_model = model.model.diffusion_model
    motion = WanMotionEmbeddings(embedding, grid, strength, sigma_start, sigma_end)
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, HOOK_KEY, _grid_wrapper(grid))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, HOOK_KEY, _outer_sample_wrapper(grid))
    index = {name: i for i, (name, _block, _c) in enumerate(wan_layers(model.model.diffusion_model))}
    for name in embedding.temporal_qk:
        for projection in PROJECTIONS:
            key = f"diffusion_model.blocks.{index[name]}.self_attn.{projection}.forward"
            patched.add_object_patch(key, ProjectionForward(patched.get_model_object(key), motion, name, projection))
            motion.keys.append(key)
    if embedding.has_motion_text:
        with_image = embedding.metadata.get("token_context", TOKENS_WITH_TEXT) == TOKENS_WITH_IMAGE
        for block in range(len(model.model.diffusion_model.blocks)):
            key = f"diffusion_model.blocks.{block}.cross_attn.forward"
            module = patched.get_model_object(f"diffusion_model.blocks.{block}.cross_attn")
            patched.add_object_patch(key, CrossAttentionForward(patched.get_model_object(key), module, motion,
                                                                with_image))
            motion.keys.append(key)
    return patched, motion


def has_motion(model) -> bool:
    """Whether ``model`` already carries Motion Embeddings (it is Apply Motion's output)."""
    wrappers = model.wrappers    # where add_wrapper_with_key puts them, on both ComfyUI versions
    return HOOK_KEY in wrappers.get(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, {})
