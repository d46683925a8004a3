"""diffusers' Wan VAE weights in ComfyUI's (the original Wan release's) layout: a pure key mapping.

No ComfyUI import. Maps an ``AutoencoderKLWan`` (Wan 2.1's causal 3D VAE, any size) state dict
onto the keys of ComfyUI's ``comfy.ldm.wan.vae.WanVAE`` of the same config:

- ``encoder.conv_in`` / ``decoder.conv_in`` -> ``encoder.conv1`` / ``decoder.conv1``;
  ``quant_conv`` / ``post_quant_conv`` -> ``conv1`` / ``conv2``; ``norm_out`` / ``conv_out`` ->
  ``head.0`` / ``head.2``;
- ``encoder.down_blocks.N`` -> ``encoder.downsamples.N`` (one flat list of residual blocks
  and resamples in both);
- ``mid_block.resnets.0``, ``attentions.0``, ``resnets.1`` -> ``middle.0``, ``middle.1``, ``middle.2``;
- ``decoder.up_blocks.i.resnets.j`` and ``.upsamplers.0`` -> ``decoder.upsamples.k``, k counting
  them in order over the levels;
- inside a residual block ``norm1``, ``conv1``, ``norm2``, ``conv2``, ``conv_shortcut`` ->
  ``residual.0``, ``residual.2``, ``residual.3``, ``residual.6``, ``shortcut``.

Tensors are copied unchanged (a host test runs both on the same weights and compares).
"""
from __future__ import annotations

import re

import torch

_RESIDUAL = {"norm1.": "residual.0.", "conv1.": "residual.2.", "norm2.": "residual.3.", "conv2.": "residual.6.",
             "conv_shortcut.": "shortcut."}
_TOP = {"encoder.conv_in.": "encoder.conv1.", "decoder.conv_in.": "decoder.conv1.", "quant_conv.": "conv1.",
        "post_quant_conv.": "conv2.", "encoder.norm_out.": "encoder.head.0.", "encoder.conv_out.": "encoder.head.2.",
        "decoder.norm_out.": "decoder.head.0.", "decoder.conv_out.": "decoder.head.2."}
_MIDDLE = {"resnets.0.": "middle.0.", "attentions.0.": "middle.1.", "resnets.1.": "middle.2."}


def _residual(rest: str) -> str:
    for prefix, replacement in _RESIDUAL.items():
        if rest.startswith(prefix):
            return replacement + rest[len(prefix):]
    return rest                                    # a resample's own names (resample.1, time_conv) stay


def diffusers_wan_vae_to_comfy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``AutoencoderKLWan.state_dict()`` -> the state dict ComfyUI's ``WanVAE`` of the same config loads (strict)."""
    up_units = sorted({(int(m.group(1)), m.group(2), int(m.group(3)))
                       for m in (re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.", key)
                                 for key in state) if m},
                      key=lambda unit: (unit[0], unit[1] == "upsamplers", unit[2]))
    flat_up = {unit: index for index, unit in enumerate(up_units)}
    converted = {}
    for key, tensor in state.items():
        converted[_convert_key(key, flat_up)] = tensor
    return converted


def _convert_key(key: str, flat_up: dict) -> str:
    for prefix, replacement in _TOP.items():
        if key.startswith(prefix):
            return replacement + key[len(prefix):]
    down = re.match(r"encoder\.down_blocks\.(\d+)\.(.+)$", key)
    if down:
        return f"encoder.downsamples.{down.group(1)}.{_residual(down.group(2))}"
    middle = re.match(r"(encoder|decoder)\.mid_block\.((?:resnets|attentions)\.\d+\.)(.+)$", key)
    if middle and middle.group(2) in _MIDDLE:
        rest = middle.group(3) if middle.group(2).startswith("attentions") else _residual(middle.group(3))
        return f"{middle.group(1)}.{_MIDDLE[middle.group(2)]}{rest}"
    up = re.match(r"decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)$", key)
    if up:
        index = flat_up[(int(up.group(1)), up.group(2), int(up.group(3)))]
        return f"decoder.upsamples.{index}.{_residual(up.group(4))}"
    raise ValueError(f"no ComfyUI name for the diffusers Wan VAE weight {key!r}")
