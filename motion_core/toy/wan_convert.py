"""diffusers' Wan transformer weights in ComfyUI's (and the original Wan release's) layout: a pure key mapping.

No ComfyUI import: plain dicts of tensors in, plain dicts out. Maps a
``diffusers.WanTransformer3DModel`` (text-to-video: no image embedder) state dict onto the
keys of ComfyUI's ``comfy.ldm.wan.model.WanModel``:

- ``condition_embedder.text_embedder.linear_{1,2}`` -> ``text_embedding.{0,2}``;
  ``condition_embedder.time_embedder.linear_{1,2}`` -> ``time_embedding.{0,2}``;
  ``condition_embedder.time_proj`` -> ``time_projection.1``;
- ``blocks.N.attn1`` / ``attn2`` -> ``blocks.N.self_attn`` / ``cross_attn`` with ``to_q``, ``to_k``,
  ``to_v``, ``to_out.0`` -> ``q``, ``k``, ``v``, ``o`` (``norm_q`` / ``norm_k`` keep their names);
  ``blocks.N.norm2`` (the cross-attention's LayerNorm) -> ``blocks.N.norm3``;
  ``blocks.N.ffn.net.0.proj`` / ``ffn.net.2`` -> ``blocks.N.ffn.0`` / ``ffn.2``;
  ``blocks.N.scale_shift_table`` -> ``blocks.N.modulation``;
- ``proj_out`` -> ``head.head``, ``scale_shift_table`` -> ``head.modulation``;
  ``patch_embedding`` keeps its name.

Tensors are copied unchanged: both store the same shapes, split the head dimension into the
same (t, h, w) rotary parts, embed the timestep as ``[cos, sin]`` and unpatchify in the same
order (a host test runs both on the same weights and compares).
"""
from __future__ import annotations

import re

import torch

_TOP = {
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "proj_out.": "head.head.",
    "patch_embedding.": "patch_embedding.",
}
_BLOCK = {
    "attn1.to_q.": "self_attn.q.", "attn1.to_k.": "self_attn.k.", "attn1.to_v.": "self_attn.v.",
    "attn1.to_out.0.": "self_attn.o.", "attn1.norm_q.": "self_attn.norm_q.", "attn1.norm_k.": "self_attn.norm_k.",
    "attn2.to_q.": "cross_attn.q.", "attn2.to_k.": "cross_attn.k.", "attn2.to_v.": "cross_attn.v.",
    "attn2.to_out.0.": "cross_attn.o.", "attn2.norm_q.": "cross_attn.norm_q.", "attn2.norm_k.": "cross_attn.norm_k.",
    "norm2.": "norm3.", "ffn.net.0.proj.": "ffn.0.", "ffn.net.2.": "ffn.2.",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def diffusers_wan_to_comfy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``WanTransformer3DModel.state_dict()`` -> the state dict ComfyUI's ``WanModel`` loads (strict)."""
    converted = {}
    for key, tensor in state.items():
        converted[_convert_key(key)] = tensor
    return converted


def _convert_key(key: str) -> str:
    if key == "scale_shift_table":
        return "head.modulation"
    match = _BLOCK_KEY.match(key)
    if match:
        index, rest = match.groups()
        if rest == "scale_shift_table":
            return f"blocks.{index}.modulation"
        for prefix, replacement in _BLOCK.items():
            if rest.startswith(prefix):
                return f"blocks.{index}.{replacement}{rest[len(prefix):]}"
    else:
        for prefix, replacement in _TOP.items():
            if key.startswith(prefix):
                return replacement + key[len(prefix):]
    raise ValueError(f"no ComfyUI name for the diffusers Wan weight {key!r}: only text-to-video Wan "
                     "transformers (no image embedder) are converted")
