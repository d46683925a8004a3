"""Motion-textual inversion inside a real ComfyUI, on a tiny SVD built in code."""
import os

import pytest
import torch

from host_support import build_tiny_svd, build_tiny_vae, pack_module, svd_conditioning, work_dir

FRAMES, HEIGHT, WIDTH = 4, 64, 64   # latent 8x8


def _reference_frames(seed=0):
    """A bright square moving right over a gradient, (f h w 3) in 0..1."""
    frames = torch.zeros(FRAMES, HEIGHT, WIDTH, 3)
    frames[..., 2] = torch.linspace(0, 0.5, WIDTH)
    for f in range(FRAMES):
        frames[f, 20:40, 8 + 8 * f:28 + 8 * f, 0] = 1.0
    return frames


def _learn(comfy_nodes, steps=3, representation="motion_text", **overrides):
    learn = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LearnMotionEmbedding"]
    args = dict(model=build_tiny_svd(), vae=build_tiny_vae(), reference_frames=_reference_frames(),
                representation=representation, tokens_per_frame=3, steps=steps, learning_rate=1e-2, seed=0,
                noise_mean=0.5, noise_std=1.0, loss="edm", augmentation=True, flip=False, fps=6,
                motion_bucket_id=127, augmentation_level=0.0, layers="all", explicit_layers="")
    args.update(overrides)
    with torch.inference_mode():       # the executor runs every node in inference mode
        return learn.execute(**args)


def test_learn_node_trains_inside_inference_mode(comfy_nodes):
    out = _learn(comfy_nodes, steps=4)
    embedding, plot, history = out.result
    assert embedding.spatial_tokens.shape == (FRAMES, 3, 1024)
    assert embedding.temporal_tokens.shape == (3, 1024)
    assert not embedding.spatial_tokens.is_inference() and embedding.all_finite()
    assert len(embedding.metadata["loss_history"]) == 4
    assert plot.shape[0] == 1 and plot.shape[-1] == 3
    assert embedding.metadata["width"] == WIDTH and embedding.metadata["frames"] == FRAMES


def test_learn_node_changes_tokens_and_is_seeded(comfy_nodes):
    first = _learn(comfy_nodes, steps=3).result[0]
    again = _learn(comfy_nodes, steps=3).result[0]
    assert torch.equal(first.spatial_tokens, again.spatial_tokens)
    init = _learn(comfy_nodes, steps=1, learning_rate=1e-6).result[0]
    assert not torch.allclose(first.spatial_tokens, init.spatial_tokens, atol=1e-4)


def test_learn_node_encodes_reference_once(comfy_nodes, monkeypatch):
    vae = build_tiny_vae()
    calls = []
    original = vae.encode
    monkeypatch.setattr(vae, "encode", lambda pixels: calls.append(pixels.shape) or original(pixels))
    _learn(comfy_nodes, steps=3, vae=vae)
    assert calls == [torch.Size([FRAMES, HEIGHT, WIDTH, 3])]


def test_learn_node_refuses_non_svd_model(comfy_nodes):
    import comfy.model_patcher

    class NotSVD(torch.nn.Module):
        diffusion_model = torch.nn.Linear(2, 2)

    model = comfy.model_patcher.ModelPatcher(NotSVD(), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(ValueError, match="takes Stable Video Diffusion.*or Wan.*NotSVD"):
        _learn(comfy_nodes, model=model)


class _CancellingClient:
    """Stands in for the browser: watches the Learn node's loss events and presses Cancel at a step.

    Cancel is ComfyUI's own interrupt (what the frontend's button sets); the learning loop
    must notice it after that step, whatever else of the host checks the flag before.
    """
    client_id = None

    def __init__(self, cancel_at_step: int):
        import comfy.model_management

        self.cancel_at_step = cancel_at_step
        self.steps = []
        self.training_flags = []
        self.model_management = comfy.model_management

    def send_sync(self, event, data, sid=None):
        if event != pack_module("nodes.learn").LOSS_EVENT:
            return
        self.steps.append(data["step"])
        self.training_flags.append(getattr(self.model_management, "in_training", None))
        if data["step"] == self.cancel_at_step:
            self.model_management.interrupt_current_processing(True)


def test_cancel_saves_last_good_embedding(comfy_nodes, caplog, monkeypatch):
    import comfy.model_management
    from server import PromptServer

    client = _CancellingClient(cancel_at_step=2)
    monkeypatch.setattr(PromptServer, "instance", client, raising=False)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            _learn(comfy_nodes, steps=5)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert client.steps == [1, 2]
    folder = os.path.join(work_dir(), "output", "motion_embeddings")
    saved = sorted(os.listdir(folder))
    assert saved and saved[-1].startswith("interrupted_")
    loaded = pack_module("motion_core.fileio").load_embedding(os.path.join(folder, saved[-1]))
    assert loaded.metadata["training"]["steps_done"] == 2
    assert any(saved[-1] in record.getMessage() for record in caplog.records)
    # ComfyUI 0.33's training flag was on during the steps and is off again after the Cancel
    # (0.3.64 has no flag: the pack must not add one).
    if hasattr(comfy.model_management, "in_training"):
        assert client.training_flags == [True, True] and comfy.model_management.in_training is False
    else:
        assert client.training_flags == [None, None]


def _routing_probe(model, tokens, time_tokens):
    """attn2 patch recording whether each frame's spatial cross-attention saw tokens[f]."""
    seen = []

    def attn2_patch(n, context, value, extra_options):
        cond_or_uncond = extra_options["cond_or_uncond"]
        frames = extra_options["original_shape"][0] // len(cond_or_uncond)
        _bt, _c, h, w = extra_options["activations_shape"]
        temporal = context.shape[0] == len(cond_or_uncond) * h * w and n.shape[1] == frames
        chunk = cond_or_uncond.index(0)
        if temporal:
            rows = context[chunk * h * w:(chunk + 1) * h * w]
            seen.append(("temporal", all(torch.equal(r, time_tokens[0].to(r)) for r in rows)))
        else:
            rows = context[chunk * frames:(chunk + 1) * frames]
            seen.append(("spatial", all(torch.equal(rows[f], tokens[f].to(rows)) for f in range(frames))))
        seen.append(("batch", tuple(cond_or_uncond)))
        return n, context, value

    patched = model.clone()
    patched.set_model_attn2_patch(attn2_patch)
    return patched, seen


def test_inflated_conditioning_routes_tokens_per_frame_and_batches_cfg(comfy_nodes):
    import comfy.sample

    embedding = _learn(comfy_nodes, steps=2).result[0]
    inflate = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_InflateSVDConditioning"]
    first_latent = torch.randn(1, 4, HEIGHT // 8, WIDTH // 8)
    positive, negative = svd_conditioning(first_latent)
    latent = {"samples": torch.zeros(FRAMES + 2, 4, HEIGHT // 8, WIDTH // 8)}
    pos, neg = inflate.execute(positive, negative, embedding, 0, latent).result
    tokens, time_tokens = pos[0][0], pos[0][1]["time_conditioning"]
    assert tokens.shape == (FRAMES + 2, 3, 1024) and time_tokens.shape == (1, 3, 1024)
    assert neg[0][0].shape == (1, 3, 1024) and not neg[0][1]["time_conditioning"].any()
    model, seen = _routing_probe(build_tiny_svd(), tokens, time_tokens)
    samples = latent["samples"]
    comfy.sample.sample(model, comfy.sample.prepare_noise(samples, 0), 2, 3.0, "euler", "karras", pos, neg,
                        samples, seed=0, disable_pbar=True)
    checks = [ok for kind, ok in seen if kind in ("spatial", "temporal")]
    assert checks and all(checks)
    assert {kind for kind, _ok in seen if kind != "batch"} == {"spatial", "temporal"}
    batches = {batch for kind, batch in seen if kind == "batch"}
    assert batches and all(sorted(batch) == [0, 1] for batch in batches)   # cond and uncond in one forward


def test_inflate_refuses_embedding_without_tokens(comfy_nodes):
    embedding_cls = pack_module("motion_core.embedding").MotionEmbedding
    empty = embedding_cls(temporal_qk={"temporal_attn.00": torch.zeros(1, 4, 32)}, metadata={"frames": 4})
    inflate = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_InflateSVDConditioning"]
    positive, negative = svd_conditioning(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="no motion-text tokens"):
        inflate.execute(positive, negative, empty, 0, None)


def test_save_and_load_nodes_round_trip_without_overwriting(comfy_nodes):
    embedding = _learn(comfy_nodes, steps=1).result[0]
    save = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_SaveMotionEmbedding"]
    load = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LoadMotionEmbedding"]
    first = save.execute(embedding, "roundtrip").result[0]
    second = save.execute(embedding, "roundtrip").result[0]
    assert first != second and os.path.exists(first) and os.path.exists(second)
    loaded = load.execute(os.path.basename(second)).result[0]
    assert torch.equal(loaded.spatial_tokens, embedding.spatial_tokens)
    assert loaded.metadata["svd_conditioning"]["fps"] == 6
