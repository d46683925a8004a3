"""Which temporal self-attention layers get Motion Embeddings, and what they cost."""
from __future__ import annotations

PRESET_ALL = "all"
PRESET_WIDEST = "widest"        # SVD: the 1280-channel levels, as the paper's code does
PRESET_EXPLICIT = "explicit"
LAYER_PRESETS = (PRESET_ALL, PRESET_WIDEST, PRESET_EXPLICIT)


def select_layers(layout: dict[str, dict], preset: str, explicit: str = "") -> dict[str, dict]:
    """Subset of ``layout`` (``{name: {"channels", "height", "width", ...}}``) for a preset.

    ``explicit``: comma-separated layer numbers (``"0, 3, 12"``, counted in ``layout``'s
    forward order) or names.
    """
    if preset == PRESET_ALL:
        return dict(layout)
    if preset == PRESET_WIDEST:
        widest = max(layer["channels"] for layer in layout.values())
        return {name: layer for name, layer in layout.items() if layer["channels"] == widest}
    if preset != PRESET_EXPLICIT:
        raise ValueError(f"layer preset {preset!r} is not one of {LAYER_PRESETS}")
    chosen = {}
    for item in (part.strip() for part in explicit.split(",")):
        if not item:
            continue
        names = list(layout)      # forward order: layer i is the i-th
        name = names[int(item)] if item.isdigit() and int(item) < len(names) else item
        if name not in layout:
            raise ValueError(f"layer {item!r} does not exist: this model has {len(layout)} attention layers that can "
                             f"carry Motion Embeddings, numbered 0..{len(layout) - 1}")
        chosen[name] = layout[name]
    if not chosen:
        raise ValueError("layer preset 'explicit' needs a list of layer numbers, e.g. '0, 1, 14, 15'")
    return chosen


def embedding_cost(layers: dict[str, dict], frames: int, with_values: bool = True) -> dict[str, int]:
    """Parameter counts and float32 bytes of the Motion Embeddings for ``layers``."""
    qk = sum(frames * layer["channels"] for layer in layers.values())
    values = sum(layer["height"] * layer["width"] * frames * layer["channels"] for layer in layers.values()) if with_values else 0
    return {"query_key_parameters": qk, "value_parameters": values, "parameters": qk + values,
            "bytes_fp32": 4 * (qk + values)}
