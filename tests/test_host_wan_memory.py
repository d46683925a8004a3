"""Learning on Wan within a card's memory: the plan's refusals, and what goes to CPU memory when it does not fit."""
import dataclasses
import weakref

import torch

from host_support import build_tiny_wan, pack_module
from test_host_wan import FRAMES, _conds, _embedding, _learn_wan, _reference_latents


def test_on_an_accelerator_what_does_not_fit_goes_to_cpu_memory_step_by_step(comfy_nodes, monkeypatch):
    """Block inputs first, then Adam's state; only as much as the budget needs; the CPU never offloads."""
    import comfy.model_management

    memory = pack_module("nodes.memory")
    memory_plan = pack_module("motion_core.memory_plan")
    model = build_tiny_wan("t2v").clone()
    layout = {f"block.0{i}": {"channels": 64, "height": 4, "width": 4} for i in range(2)}
    shape = memory.wan_learn_shape(model, layout, FRAMES, 4, 4, 0, True)
    plans = [memory_plan.plan_wan(dataclasses.replace(shape, offload=offload, host_optimizer=adam)).total
             for offload, adam in ((False, False), (True, False), (True, True))]
    assert plans[0] > plans[1] > plans[2]
    monkeypatch.setattr(comfy.model_management, "get_torch_device_name", lambda device: f"fake {device}")
    chosen = []
    for device in ("cuda", "cpu"):
        model.load_device = torch.device(device)
        for between in ((plans[0] + plans[1]) / 2, (plans[1] + plans[2]) / 2, plans[0] * 2):
            monkeypatch.setattr(comfy.model_management, "get_total_memory",
                                lambda *args, budget=between, **kwargs: budget / memory.USABLE_FRACTION)
            try:
                account, planned = memory.check_wan_learn_memory(model, layout, FRAMES, 4, 4)
                chosen.append((device, planned.offload, planned.host_optimizer, "CPU memory" in account))
            except MemoryError as refusal:
                chosen.append((device, "refused", "CPU memory" in str(refusal)))
    assert chosen == [("cuda", True, False, True), ("cuda", True, True, True), ("cuda", False, False, False),
                      ("cpu", "refused", False), ("cpu", "refused", False), ("cpu", False, False, False)]


def test_a_refusal_on_a_24gb_card_names_settings_of_different_kinds_that_fit(comfy_nodes):
    """Wan 2.1 I2V 14B with fp8 weights at 832x480x81: nothing fits alone; the pairs named are of two kinds."""
    memory = pack_module("nodes.memory")
    memory_plan = pack_module("motion_core.memory_plan")
    layers = {f"block.{i:02d}": {"channels": 5120, "height": 30, "width": 52} for i in (0, 13, 26, 39)}
    shape = memory_plan.WanLearnShape(21, 30, 52, 5120, 13824, 40, 4 * 21 * 5120 * (1 + 30 * 52), True, "bfloat16",
                                      16.4e9)
    budget = 24e9 * memory.USABLE_FRACTION
    assert memory_plan.plan_wan(shape).total > budget
    advice = memory._wan_alternatives(shape, layers, budget, 81, 1.0)
    assert advice and all(" and " in line and "together" in line for line in advice)
    for line in advice:
        first, second = line.split(" together")[0].split(" and ")
        assert first.split(" ")[0] != second.split(" ")[0] or not first[0].isdigit()
        assert not (first[0].isdigit() and second[0].isdigit())          # never two frame counts
        assert float(line.rsplit("(", 1)[1].split(" GiB")[0]) * 2 ** 30 <= budget


def test_offloaded_checkpointing_gives_the_same_gradients_and_keeps_no_device_input(comfy_nodes, monkeypatch):
    """On an accelerator the checkpointed blocks' inputs wait in CPU memory; forced here on the CPU (the copies are
    real copies) to check the gradients and that the block's own input is not what the backward pass keeps."""
    common = pack_module("nodes.hooks.common")
    calls = []
    offloaded = common.offloaded_checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return offloaded(*args, **kwargs)

    model = build_tiny_wan("t2v")
    grads = {}

    def keep(name):
        def on_gradients(_step, values):
            grads[name] = [g.detach().clone() for g in values]
        return on_gradients

    _learn_wan(model, steps=1, checkpointing=True, on_gradients=keep("on device"))
    monkeypatch.setattr(common, "off_host", lambda tokens: True)
    monkeypatch.setattr(common, "offloaded_checkpoint", counting)
    training = pack_module("nodes.host_training")
    TrainSettings = pack_module("motion_core.training").TrainSettings
    AugmentSettings = pack_module("motion_core.augment").AugmentSettings
    settings = TrainSettings(steps=1, learning_rate=5e-2, seed=0, augment=AugmentSettings(enabled=False))
    with torch.inference_mode():
        training.train_wan_in_host(model, _conds("t2v")[0], _reference_latents(), _embedding(scale=0.0), settings,
                                   checkpointing=True, offload=True, on_gradients=keep("offloaded"))
    assert len(calls) >= 2                        # every block, forward (and not again in the recompute)
    assert any(float(g.abs().max()) > 0 for g in grads["offloaded"])
    for on_device, offloaded_grad in zip(grads["on device"], grads["offloaded"]):
        assert torch.allclose(on_device, offloaded_grad, rtol=1e-5, atol=1e-8)
    assert not pack_module("nodes.hooks.common").has_recompute(model)

    weight = torch.randn(8, 8, requires_grad=True)

    def block(tokens, scale=1.0):
        return torch.tanh(tokens @ weight) * scale

    for keep_on_host, alive in ((True, False), (False, True)):
        leaf = torch.randn(2, 5, 8, requires_grad=True)
        tokens = leaf * 2.0                        # the block's input, held by nothing else
        watch = weakref.ref(tokens)
        out = offloaded(block, tokens, scale=3.0) if keep_on_host else \
            torch.utils.checkpoint.checkpoint(block, tokens, use_reentrant=False, scale=3.0)
        del tokens
        assert (watch() is not None) == alive
        out.sum().backward()
        expected = torch.autograd.grad((torch.tanh((leaf * 2.0) @ weight) * 3.0).sum(), leaf)[0]
        assert torch.allclose(leaf.grad, expected, atol=1e-6)
