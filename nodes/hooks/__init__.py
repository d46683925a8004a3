"""Every ModelPatcher hook of the pack, a module per model family, and which family a MODEL is.

- :mod:`.svd`: Stable Video Diffusion (``SVD_img2vid``, the temporal ``time_stack`` attention).
- :mod:`.wan`: Wan 2.1 / 2.2 (``WanModel``, the blocks' self-attention over all frames).
- :mod:`.animatediff`: AnimateDiff on SD1.5 through AnimateDiff-Evolved (optional; its motion
  modules' temporal self-attention).

:func:`model_family` recognises the MODEL a node gets; a node refuses any other family with
the one it found named, and an embedding learned on one family or size is refused on another
(:func:`check_family`), before any forward runs.
"""
from __future__ import annotations

import dataclasses

import comfy.model_base
import comfy.supported_models
from comfy.ldm.wan.model import WanModel

from ...motion_core.embedding import MODEL_FAMILY_SVD, MotionEmbedding
from . import animatediff

MODEL_FAMILY_WAN = "wan"
MODEL_FAMILY_ANIMATEDIFF = "animatediff"


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """What a MODEL is, as far as the pack is concerned.

    ``family``: ``"svd"``, ``"wan"`` or ``"animatediff"`` (the hooks module); ``variant``: a name for messages
    (e.g. ``"Wan 2.1 T2V"``); ``widths``: what an embedding must match (Wan: the blocks'
    width and count), recorded in every embedding learned on it.
    """
    family: str
    variant: str
    widths: dict

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in self.widths.items())
        return f"{self.variant} ({sizes})" if sizes else self.variant


def _wan_variant(model_base, diffusion_model: WanModel) -> str:
    channels_in = int(diffusion_model.patch_embedding.weight.shape[1])
    channels_out = int(diffusion_model.out_dim)
    if isinstance(model_base, comfy.model_base.WAN22) or channels_out == 48:
        return "Wan 2.2 TI2V"
    if getattr(diffusion_model, "img_emb", None) is not None:
        return "Wan 2.1 I2V / first-last-frame"
    if channels_in > channels_out:
        return "Wan I2V (image latent concatenated, no CLIP image tokens)"
    return "Wan T2V"


def model_family(model) -> ModelFamily | None:
    """The family of a ``ModelPatcher``, or None for one the pack does not support."""
    inner = getattr(model, "model", None)
    diffusion_model = getattr(inner, "diffusion_model", None)
    if isinstance(inner, comfy.model_base.SVD_img2vid):
        return ModelFamily(MODEL_FAMILY_SVD, "Stable Video Diffusion", {})
    # exactly WanModel: VACE, Camera, HuMo, S2V, Animate and other variants subclass it with
    # inputs of their own that these hooks do not know
    if type(diffusion_model) is WanModel and isinstance(inner, comfy.model_base.WAN21) \
            and type(inner) in (comfy.model_base.WAN21, comfy.model_base.WAN22):
        widths = {"dim": int(diffusion_model.dim), "blocks": len(diffusion_model.blocks)}
        return ModelFamily(MODEL_FAMILY_WAN, _wan_variant(inner, diffusion_model), widths)
    attached = animatediff.motion_models(model)
    if is_sd15(model) and len(attached) == 1 and animatediff.is_motion_model(attached[0]):
        layers = animatediff.motion_layers(attached[0])
        widths = {"motion_layers": len(layers), "channels": sum(layer.channels for layer in layers)}
        return ModelFamily(MODEL_FAMILY_ANIMATEDIFF, "AnimateDiff on SD1.5", widths)
    return None


def is_sd15(model) -> bool:
    """True for a Stable Diffusion 1.5 MODEL (the base AnimateDiff's SD1.5 motion models are made for)."""
    inner = getattr(model, "model", None)
    return type(inner) is comfy.model_base.BaseModel and \
        isinstance(getattr(inner, "model_config", None), comfy.supported_models.SD15)


def describe_model(model) -> str:
    inner = getattr(model, "model", None)
    return f"{type(inner).__name__} ({type(getattr(inner, 'diffusion_model', None)).__name__})"


FAMILY_NAMES = {
    MODEL_FAMILY_SVD: "Stable Video Diffusion (SVD / SVD-XT, ImageOnlyCheckpointLoader)",
    MODEL_FAMILY_WAN: "Wan 2.1 / 2.2 (UNETLoader with a Wan diffusion model)",
    MODEL_FAMILY_ANIMATEDIFF: "AnimateDiff (an SD1.5 MODEL from AnimateDiff-Evolved's Use Evolved Sampling, with one "
                              "motion model)",
}
ALL_FAMILIES = (MODEL_FAMILY_SVD, MODEL_FAMILY_WAN, MODEL_FAMILY_ANIMATEDIFF)


def require_family(model, node: str, families: tuple[str, ...] = ALL_FAMILIES) -> ModelFamily:
    """The MODEL's family, or a ValueError naming what was found and what ``node`` takes."""
    found = model_family(model)
    if found is None and MODEL_FAMILY_ANIMATEDIFF in families and is_sd15(model):
        animatediff.single_motion_model(model, node)      # says what an SD1.5 MODEL lacks (ADE, a motion model)
    if found is None or found.family not in families:
        names = FAMILY_NAMES
        what = found.describe() if found is not None else describe_model(model)
        raise ValueError(f"{node} takes {' or '.join(names[f] for f in families)}, but the MODEL input is {what}. "
                         "Connect the MODEL output of a loader for one of those models.")
    return found


def check_family(embedding: MotionEmbedding, family: ModelFamily) -> None:
    """Refuse an embedding learned on another family or size, naming both."""
    learned = embedding.metadata.get("model_family", MODEL_FAMILY_SVD)
    widths = embedding.metadata.get("model_widths", {})
    if learned != family.family or (family.widths and widths and widths != family.widths):
        was = learned + (f" ({', '.join(f'{k} {v}' for k, v in widths.items())})" if widths else "")
        raise ValueError(f"this motion embedding was learned on {was}, the MODEL is {family.describe()}: an "
                         "embedding fits only the model it was learned on; learn the motion again on this model")
