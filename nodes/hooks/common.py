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
    trainable_weights(clone, clone.model.diffusion_model, "diffusion_model.")
    return clone


def _identity(weight):
    return weight


def trainable_weights(patcher, root: torch.nn.Module, prefix: str = "") -> None:
    """Identity weight wrappers on every comfy cast layer under ``root`` (at ``prefix`` in ``patcher.model``),
    if its weights are inference tensors (see :func:`trainable_clone`); for a patcher that is already a clone."""
    if not any(p.is_inference() for p in root.parameters()):
        return
    for name, module in root.named_modules():
        if hasattr(module, "weight_function"):
            for attr in ("weight", "bias"):
                if getattr(module, attr, None) is not None:
                    patcher.add_weight_wrapper(f"{prefix}{name}.{attr}", _identity)


class RecomputedForward:
    """A module's forward whose activations are recomputed in the backward pass.

    Under grad it runs ``forward`` through non-reentrant ``torch.utils.checkpoint``, so
    only its inputs are kept; without grad (sampling) it is the plain forward. The
    ``transformer_options`` dict is copied at call time: ComfyUI mutates the shared dict
    as the forward goes on (``activations_shape``, ``block_index``), and the recompute in
    the backward pass must see the values of the original call.

    ``offload``: the first positional input (a Wan block's tokens ``(b L c)``), when it is on
    an accelerator, is kept in pinned CPU memory until the backward pass needs it again,
    so the device holds no block input at all; the plan counts it as host memory.
    """

    def __init__(self, forward, offload: bool = False):
        self.forward = forward
        self.offload = offload

    def __call__(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.forward(*args, **kwargs)
        options = kwargs.get("transformer_options")
        if isinstance(options, dict):
            kwargs = {**kwargs, "transformer_options": dict(options)}
        if self.offload and args and torch.is_tensor(args[0]) and off_host(args[0]):
            return offloaded_checkpoint(self.forward, *args, **kwargs)
        return torch.utils.checkpoint.checkpoint(self.forward, *args, use_reentrant=False,
                                                 preserve_rng_state=False, **kwargs)

    def __deepcopy__(self, memo):
        return self


def off_host(tokens: torch.Tensor) -> bool:
    """True if ``tokens`` live on an accelerator, so keeping them in CPU memory frees device memory."""
    return tokens.device.type != "cpu"


def offloaded_checkpoint(forward, tokens: torch.Tensor, *args, **kwargs):
    """``forward(tokens, *args, **kwargs)`` checkpointed, with ``tokens`` kept in CPU memory meanwhile.

    Non-reentrant checkpointing keeps its inputs alive for the recompute; here the input
    it keeps is a CPU copy (pinned when ``tokens`` is on CUDA, so both copies are fast),
    and the recompute copies it back. Gradients flow through both copies unchanged, so
    they equal plain checkpointing's. The device copy is freed as soon as nothing else
    holds it (the block's output does not).
    """
    device = tokens.device
    kept = torch.empty(tokens.shape, dtype=tokens.dtype, device="cpu", pin_memory=tokens.is_cuda)
    kept.copy_(tokens)

    def forward_from_host(host_tokens, *rest, **options):
        return forward(host_tokens.to(device, non_blocking=True), *rest, **options)
    return torch.utils.checkpoint.checkpoint(forward_from_host, kept, *args, use_reentrant=False,
                                             preserve_rng_state=False, **kwargs)


def recompute(model, names: list[str], offload: bool = False, prefix: str = "diffusion_model.") -> list[str]:
    """Checkpoint the modules ``names`` (under ``prefix`` in ``model.model``: the diffusion model, or ``""`` for
    a model that is its own root, as ADE's motion models) of ``model``, a private clone; returns the keys.

    Object patches are ComfyUI's undoable attribute patches: applied when the clone is
    loaded for sampling and restored by ``unpatch_model``; :func:`end_recompute` restores
    them as soon as learning ends. ``offload``: keep each module's first input in CPU memory
    (:func:`offloaded_checkpoint`), for modules whose first input is their tokens.
    """
    keys = []
    for name in names:
        key = f"{prefix}{name}.forward"
        model.add_object_patch(key, RecomputedForward(model.get_model_object(key), offload=offload))
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
