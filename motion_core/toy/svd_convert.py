"""diffusers' SVD UNet (and AutoencoderKL) weights in ComfyUI's layout (pure key mapping).

No ComfyUI import: plain dicts of tensors in, plain dicts out.

Maps a ``UNetSpatioTemporalConditionModel`` state dict onto the key layout of ComfyUI's
SVD ``UNetModel`` (``comfy.ldm.modules.diffusionmodules.openaimodel``; the LDM / generative-
models layout SVD checkpoints ship in). The mapping is derived from the diffusers config
(number of levels, blocks per level, which blocks have attention), so the toy world's UNet
and the full-size SVD / SVD-XT UNet come out of the same code.

Layout (k counts ComfyUI's ``input_blocks`` / ``output_blocks`` in forward order):

- ``conv_in`` -> ``input_blocks.0.0``; ``time_embedding.linear_{1,2}`` -> ``time_embed.{0,2}``;
  ``add_embedding.linear_{1,2}`` -> ``label_emb.0.{0,2}``; ``conv_norm_out`` / ``conv_out`` ->
  ``out.0`` / ``out.2``.
- ``down_blocks.i.resnets.j`` / ``.attentions.j`` -> ``input_blocks.k.0`` / ``input_blocks.k.1``
  (k = 1, 2, ... over levels and blocks); ``down_blocks.i.downsamplers.0.conv`` ->
  ``input_blocks.k.0.op`` (its own k, after level i's blocks, not after the last level).
- ``mid_block.resnets.j`` -> ``middle_block.{2j}``, ``mid_block.attentions.j`` -> ``middle_block.{2j+1}``.
- ``up_blocks.i.resnets.j`` / ``.attentions.j`` -> ``output_blocks.k.0`` / ``output_blocks.k.1``;
  ``up_blocks.i.upsamplers.0.conv`` -> ``output_blocks.k.{1 or 2}.conv`` on the level's last block
  (index 2 when that block has attention).
- Inside a resnet (``SpatioTemporalResBlock`` -> ``VideoResBlock``): ``spatial_res_block.`` is the
  block itself and ``temporal_res_block.`` its ``time_stack.``; ``norm1`` -> ``in_layers.0``,
  ``conv1`` -> ``in_layers.2``, ``time_emb_proj`` -> ``emb_layers.1``, ``norm2`` -> ``out_layers.0``,
  ``conv2`` -> ``out_layers.3``, ``conv_shortcut`` -> ``skip_connection``; ``time_mixer.mix_factor``
  keeps its name.
- Inside an attention (``TransformerSpatioTemporalModel`` -> ``SpatialVideoTransformer``):
  ``temporal_transformer_blocks.j`` -> ``time_stack.j``, ``time_pos_embed.linear_{1,2}`` ->
  ``time_pos_embed.{0,2}``; ``norm``, ``proj_in``, ``proj_out``, ``transformer_blocks.*`` (norms,
  attn1/attn2, ``ff``, and ``norm_in`` / ``ff_in`` of the temporal blocks) and
  ``time_mixer.mix_factor`` keep their names.

Tensors are copied unchanged: both frameworks store the same shapes (temporal convs
``(c c 3 1 1)``, linear ``proj_in``/``proj_out`` as SVD uses ``use_linear_in_transformer``), and
both blend ``alpha * spatial + (1 - alpha) * temporal`` with ``alpha = sigmoid(mix_factor)``
(diffusers' UNet never sets ``switch_spatial_to_temporal_mix``; only its temporal VAE does), so
the mix factors carry over as they are. Only for a ComfyUI UNet built with
``use_linear_in_transformer=False`` do ``proj_in``/``proj_out`` need ``(o i) -> (o i 1 1)``
(``linear_proj=False``).
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping

import torch

_TOP_LEVEL = {
    "conv_in.": "input_blocks.0.0.",
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_RESNET_LAYERS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                  "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_RESNET = re.compile(r"^(spatial_res_block|temporal_res_block)\.(\w+)\.(weight|bias)$")
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)$")
_MID = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$")


def _per_level(value, levels: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * levels
    value = list(value)
    if len(value) != levels:
        raise ValueError(f"diffusers config {name} has {len(value)} entries for {levels} levels")
    return value


def block_layout(unet_config: Mapping) -> dict[tuple[str, int, str, int], str]:
    """ComfyUI prefix of every diffusers block: ``(kind, i, part, j) -> "input_blocks.k.0."`` etc.

    ``kind`` is ``down_blocks`` / ``up_blocks`` / ``mid_block`` (``i`` = 0 for the mid block),
    ``part`` ``resnets`` / ``attentions`` / ``downsamplers`` / ``upsamplers``. Derived from the
    diffusers config's ``down_block_types``, ``up_block_types`` and ``layers_per_block``.
    """
    down_types = list(unet_config["down_block_types"])
    up_types = list(unet_config["up_block_types"])
    levels = len(down_types)
    if len(up_types) != levels:
        raise ValueError(f"diffusers config has {levels} down blocks but {len(up_types)} up blocks")
    layers = _per_level(unet_config.get("layers_per_block", 2), levels, "layers_per_block")
    layout: dict[tuple[str, int, str, int], str] = {}
    k = 1
    for i, block_type in enumerate(down_types):
        for j in range(layers[i]):
            layout[("down_blocks", i, "resnets", j)] = f"input_blocks.{k}.0."
            if block_type.startswith("CrossAttn"):
                layout[("down_blocks", i, "attentions", j)] = f"input_blocks.{k}.1."
            k += 1
        if i < levels - 1:
            layout[("down_blocks", i, "downsamplers", 0)] = f"input_blocks.{k}.0.op."
            k += 1
    mid_layers = 1   # UNetMidBlockSpatioTemporal(num_layers=1): resnet, attention, resnet
    for j in range(mid_layers + 1):
        layout[("mid_block", 0, "resnets", j)] = f"middle_block.{2 * j}."
    for j in range(mid_layers):
        layout[("mid_block", 0, "attentions", j)] = f"middle_block.{2 * j + 1}."
    k = 0
    for i, block_type in enumerate(up_types):
        has_attention = block_type.startswith("CrossAttn")
        blocks = layers[levels - 1 - i] + 1
        for j in range(blocks):
            layout[("up_blocks", i, "resnets", j)] = f"output_blocks.{k}.0."
            if has_attention:
                layout[("up_blocks", i, "attentions", j)] = f"output_blocks.{k}.1."
            if j == blocks - 1 and i < levels - 1:
                layout[("up_blocks", i, "upsamplers", 0)] = f"output_blocks.{k}.{2 if has_attention else 1}."
            k += 1
    return layout


def _resnet_suffix(suffix: str) -> str:
    if suffix == "time_mixer.mix_factor":
        return suffix
    match = _RESNET.match(suffix)
    if match is None or match.group(2) not in _RESNET_LAYERS:
        raise KeyError(suffix)
    part, layer, tensor = match.groups()
    prefix = "time_stack." if part == "temporal_res_block" else ""
    return f"{prefix}{_RESNET_LAYERS[layer]}.{tensor}"


def _attention_suffix(suffix: str) -> str:
    if suffix.startswith("temporal_transformer_blocks."):
        return "time_stack." + suffix[len("temporal_transformer_blocks."):]
    if suffix.startswith("time_pos_embed.linear_1."):
        return "time_pos_embed.0." + suffix[len("time_pos_embed.linear_1."):]
    if suffix.startswith("time_pos_embed.linear_2."):
        return "time_pos_embed.2." + suffix[len("time_pos_embed.linear_2."):]
    return suffix


def _sampler_suffix(suffix: str, part: str) -> str:
    """``downsamplers.0.conv.weight`` -> ``op.weight`` (prefix has it); ``upsamplers.0.conv.*`` keeps ``conv``."""
    if not suffix.startswith("conv."):
        raise KeyError(suffix)
    return suffix[len("conv."):] if part == "downsamplers" else suffix


def _map_key(key: str, layout: dict) -> str:
    for old, new in _TOP_LEVEL.items():
        if key.startswith(old):
            return new + key[len(old):]
    match = _BLOCK.match(key)
    if match is not None:
        kind, i, part, j, suffix = match.groups()
        place = (kind, int(i), part, int(j))
    else:
        match = _MID.match(key)
        if match is None:
            raise KeyError(key)
        part, j, suffix = match.groups()
        place = ("mid_block", 0, part, int(j))
    if place not in layout:
        raise KeyError(key)
    if part == "resnets":
        return layout[place] + _resnet_suffix(suffix)
    if part == "attentions":
        return layout[place] + _attention_suffix(suffix)
    return layout[place] + _sampler_suffix(suffix, part)


def diffusers_svd_unet_key_map(keys: Iterable[str], unet_config: Mapping) -> dict[str, str]:
    """``{diffusers key: ComfyUI UNetModel key}`` for every key; ValueError on unknown keys.

    ``keys`` of a ``UNetSpatioTemporalConditionModel`` state dict, ``unet_config`` its diffusers
    config (e.g. ``toyworld.UNET_CONFIG`` or ``dict(unet.config)``). Raises when a key has no
    counterpart or two keys would land on the same ComfyUI key.
    """
    layout = block_layout(unet_config)
    mapping: dict[str, str] = {}
    unknown = []
    for key in keys:
        try:
            mapping[key] = _map_key(key, layout)
        except KeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} diffusers SVD UNet keys have no ComfyUI counterpart for this config, "
                         f"e.g. {unknown[:5]}; is this a UNetSpatioTemporalConditionModel state dict matching "
                         f"the config (down_block_types, layers_per_block)?")
    targets: dict[str, str] = {}
    for source, target in mapping.items():
        if target in targets:
            raise ValueError(f"diffusers keys {targets[target]} and {source} both map to {target}")
        targets[target] = source
    return mapping


def diffusers_svd_unet_to_comfy(state_dict: Mapping[str, torch.Tensor], unet_config: Mapping,
                                linear_proj: bool = True) -> dict[str, torch.Tensor]:
    """A diffusers SVD UNet state dict with ComfyUI ``UNetModel`` keys (same tensors, not copied).

    ``state_dict``: ``UNetSpatioTemporalConditionModel.state_dict()`` (or its tensors from a
    file); ``unet_config``: its diffusers config. Shapes are kept (temporal convs
    ``(c_out c_in 3 1 1)``, linears ``(out in)``) except, with ``linear_proj=False``, the
    transformers' ``proj_in``/``proj_out`` weights ``(c c)`` become 1x1 convs ``(c c 1 1)``
    for a ComfyUI UNet built with ``use_linear_in_transformer=False``. Load the result with
    ``strict=True`` into ``model.diffusion_model``.
    """
    mapping = diffusers_svd_unet_key_map(state_dict.keys(), unet_config)
    out: dict[str, torch.Tensor] = {}
    for source, target in mapping.items():
        tensor = state_dict[source]
        if not linear_proj and re.search(r"\.proj_(in|out)\.weight$", target) and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[target] = tensor
    return out


# ---- VAE ---------------------------------------------------------------------------------------
# ComfyUI's own diffusers-VAE conversion (comfy.diffusers_convert.convert_vae_state_dict, used by
# comfy.sd.VAE when it sees diffusers keys) hard-codes SD's four levels (decoder up block i ->
# up.{3-i}); the toy VAE has three, so the mapping is derived from the config here instead.
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
                  "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}
_VAE_BLOCK = re.compile(r"^(encoder|decoder)\.(down_blocks|up_blocks)\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)$")
_VAE_MID = re.compile(r"^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)\.(weight|bias)$")


def _vae_key(key: str, levels: int) -> tuple[str, bool]:
    """``(ComfyUI key, is an attention projection that becomes a 1x1 conv)``; KeyError if unknown."""
    for side in ("encoder.", "decoder."):
        if key.startswith(side + "conv_norm_out."):
            return side + "norm_out." + key[len(side + "conv_norm_out."):], False
    if key.split(".")[0] in ("quant_conv", "post_quant_conv") or re.match(r"^(encoder|decoder)\.conv_(in|out)\.", key):
        return key, False
    match = _VAE_BLOCK.match(key)
    if match is not None:
        side, kind, i, part, j, suffix = match.groups()
        level = int(i) if kind == "down_blocks" else levels - 1 - int(i)
        stage = "down" if kind == "down_blocks" else "up"
        if part == "resnets":
            name, _, tensor = suffix.rpartition(".")
            return f"{side}.{stage}.{level}.block.{j}.{_VAE_RESNET.get(name, name)}.{tensor}", False
        if suffix.startswith("conv."):
            sampler = "downsample" if part == "downsamplers" else "upsample"
            return f"{side}.{stage}.{level}.{sampler}.{suffix}", False
        raise KeyError(key)
    match = _VAE_MID.match(key)
    if match is None:
        raise KeyError(key)
    side, part, j, name, tensor = match.groups()
    if part == "resnets":
        return f"{side}.mid.block_{int(j) + 1}.{_VAE_RESNET.get(name, name)}.{tensor}", False
    if name not in _VAE_ATTENTION:
        raise KeyError(key)
    comfy_name = _VAE_ATTENTION[name]
    return f"{side}.mid.attn_{int(j) + 1}.{comfy_name}.{tensor}", comfy_name != "norm" and tensor == "weight"


def diffusers_vae_to_comfy(state_dict: Mapping[str, torch.Tensor], vae_config: Mapping) -> dict[str, torch.Tensor]:
    """A diffusers ``AutoencoderKL`` state dict in ComfyUI's (LDM) ``AutoencoderKL`` layout.

    ``vae_config``: the diffusers config (its ``block_out_channels`` give the number of levels
    L). Encoder ``down_blocks.i`` -> ``down.i``, decoder ``up_blocks.i`` -> ``up.{L-1-i}``,
    ``resnets.j`` -> ``block.j`` (``conv_shortcut`` -> ``nin_shortcut``), ``mid_block.resnets.j``
    -> ``mid.block_{j+1}``, the mid attention's ``group_norm``/``to_q``/``to_k``/``to_v``/``to_out.0``
    -> ``mid.attn_1.norm``/``q``/``k``/``v``/``proj_out`` with linear weights ``(c c)`` reshaped to
    1x1 convs ``(c c 1 1)``; ``conv_norm_out`` -> ``norm_out``. Raises ValueError on unknown keys.
    """
    levels = len(vae_config["block_out_channels"])
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        try:
            target, to_conv = _vae_key(key, levels)
        except KeyError:
            unknown.append(key)
            continue
        if target in out:
            raise ValueError(f"two diffusers VAE keys map to {target}")
        out[target] = tensor[:, :, None, None] if to_conv and tensor.ndim == 2 else tensor
    if unknown:
        raise ValueError(f"{len(unknown)} diffusers VAE keys have no ComfyUI counterpart, e.g. {unknown[:5]}")
    return out
