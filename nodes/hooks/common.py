"""Hooks every model family uses while learning: backprop through a loaded model, activation checkpointing.

Both go on a private clone through ComfyUI's undoable patches (weight wrappers, object
patches) and are gone when learning ends, also after an error or a Cancel.
"""
from __future__ import annotations

import torch
import torch.utils.checkpoint

import comfy.utils


def trainable_clone(model):
    """A clone whose weights can be backpropagated through.

    Models loaded inside ComfyUI's executor hold inference tensors, which autograd
    refuses to save for backward. Identity weight wrappers make comfy's cast layers hand
    out ordinary copies; the frozen weights themselves are untouched.
    """
    clone = model.clone()
    if not any(p.is_inference() for p in clone.model.parameters()):
        return clone

    def identity(weight):
        return weight

    for name, module in clone.model.diffusion_model.named_modules():
        if hasattr(module, "weight_function"):
            for attr in ("weight", "bias"):
                if getattr(module, attr, None) is not None:
                    clone.add_weight_wrapper(f"diffusion_model.{name}.{attr}", identity)
    return clone


class RecomputedForward:
    """A module's forward whose activations are recomputed in the backward pass.

    Under grad it runs ``forward`` through non-reentrant ``torch.utils.checkpoint``, so
    only its inputs are kept; without grad (sampling) it is the plain forward. The
    ``transformer_options`` dict is copied at call time: ComfyUI mutates the shared dict
    as the forward goes on (``activations_shape``, ``block_index``), and the recompute in
    the backward pass must see the values of the original call.
    """

    def __init__(self, forward):
        self.forward = forward

    def __call__(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.forward(*args, **kwargs)
        options = kwargs.get("transformer_options")
        if isinstance(options, dict):
            kwargs = {**kwargs, "transformer_options": dict(options)}
        return torch.utils.checkpoint.checkpoint(self.forward, *args, use_reentrant=False,
                                                 preserve_rng_state=False, **kwargs)

    def __deepcopy__(self, memo):
        return self


def recompute(model, names: list[str]) -> list[str]:
    """Checkpoint the modules ``names`` (under ``diffusion_model``) of ``model``, a private clone; returns the keys.

    Object patches are ComfyUI's undoable attribute patches: applied when the clone is
    loaded for sampling and restored by ``unpatch_model``; :func:`end_recompute` restores
    them as soon as learning ends.
    """
    keys = []
    for name in names:
        key = f"diffusion_model.{name}.forward"
        model.add_object_patch(key, RecomputedForward(model.get_model_object(key)))
        keys.append(key)
    return keys


def end_recompute(model, keys: list[str]) -> None:
    """Put the plain forwards back on the shared modules and drop the patches ``keys`` from ``model``.

    Any object patch on a module's ``forward`` can be taken off this way (checkpointing's,
    the Wan projections').
    """
    backup = model.object_patches_backup
    for key in keys:
        model.object_patches.pop(key, None)
        if key not in backup:      # never patched in (learning failed before the model loaded)
            continue
        original = backup.pop(key)
        module = comfy.utils.get_attr(model.model, key.rsplit(".", 1)[0])
        if getattr(original, "__func__", None) is type(module).forward and original.__self__ is module:
            module.__dict__.pop("forward", None)     # the class's own forward: leave no instance attribute
        else:
            comfy.utils.set_attr(model.model, key, original)


def has_recompute(model) -> bool:
    """True if any module of ``model``'s diffusion model still has a recomputed forward (tests)."""
    return any(isinstance(module.__dict__.get("forward"), RecomputedForward)
               for module in model.model.diffusion_model.modules())
