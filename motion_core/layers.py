"""Which temporal self-attention layers get Motion Embeddings, and what they cost."""
from __future__ import annotations

PRESET_ALL = "all"
PRESET_WIDEST = "widest"        # SVD: the 1280-channel levels, as the paper's code does
PRESET_EXPLICIT = "explicit"
PRESET_SPREAD = "spread"        # a few layers evenly spread over the depth: for DiTs' identical blocks
LAYER_PRESETS = (PRESET_ALL, PRESET_WIDEST, PRESET_SPREAD, PRESET_EXPLICIT)
SPREAD_LAYERS = 4


def spread(names: list[str], count: int = SPREAD_LAYERS) -> list[str]:
    """``count`` of ``names`` evenly spread, first and last included (all of them when there are fewer; the
    middle one when ``count`` is 1)."""
    if len(names) <= count:
        return list(names)
    if count == 1:
        return [names[len(names) // 2]]
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)]


def select_layers(layout: dict[str, dict], preset: str, explicit: str = "") -> dict[str, dict]:
    """Subset of ``layout`` (``{name: {"channels", "height", "width", ...}}``) for a preset.

    ``spread``: :data:`SPREAD_LAYERS` layers evenly spread over the depth. ``widest``: the
    widest layers (SVD's 1280-channel levels); where every layer is the same (as wide, on the
    same grid: a DiT such as Wan, whose blocks are identical) that would be all of them, and
    it means ``spread``.
    ``explicit``: comma-separated layer numbers (``"0, 3, 12"``, counted in ``layout``'s
    forward order) or names.
    """
    if preset == PRESET_ALL:
        return dict(layout)
    if preset == PRESET_SPREAD:
        return {name: layout[name] for name in spread(list(layout))}
    if preset == PRESET_WIDEST:
        widest = max(layer["channels"] for layer in layout.values())
        chosen = {name: layer for name, layer in layout.items() if layer["channels"] == widest}
        identical = len({(layer["channels"], layer.get("height"), layer.get("width")) for layer in layout.values()}) == 1
        if identical and len(layout) > SPREAD_LAYERS:       # a DiT's blocks: widest would be all of them
            return select_layers(layout, PRESET_SPREAD)
        return chosen
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
