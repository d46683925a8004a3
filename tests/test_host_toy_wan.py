"""The Wan toy world inside a real ComfyUI: Load Toy Wan Model gives ComfyUI's own Wan MODEL, VAE and a text encoder.

Random weights of the toy's configs, saved and loaded through the node: the MODEL computes what
the diffusers transformer computes on the same weights, the VAE encodes and decodes as the
diffusers VAE does (Wan's 4x temporal compression, the toy's 4x spatial stride), CLIP Text
Encode gives the toy text encoder's vectors, and the pack's Learn node learns on it as on Wan.
"""
import numpy as np
import pytest
import torch

from host_support import pack_module
from motion_core.toy import toyclips, wanworld

PACK = "MotionInversion_"


def _loader():
    """Load Toy Wan Model's class, as ComfyUI registered it."""
    import nodes as comfy_nodes
    return comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "LoadToyWanModel"]


@pytest.fixture(scope="module")
def toy_file(comfy_nodes, tmp_path_factory):
    transformer, vae, text = wanworld.build_models(seed=0)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():       # diffusers zero-initialises the output layers: make every weight count
        for parameter in transformer.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    world = wanworld.WanToyWorld(transformer, vae, text, {"kind": "random test weights"})
    return wanworld.save_world(world, str(tmp_path_factory.mktemp("toy_wan") / "toy_wan.safetensors"))


@pytest.fixture(scope="module")
def loaded(comfy_nodes, toy_file):
    """Random weights of the toy's configs through the registered node."""
    node = _loader()
    with torch.inference_mode():
        return node.execute(weights=toy_file).result


def _clip(seed=0, motion="translate_E_2"):
    return toyclips.render_clip(wanworld.sample_caption_spec(np.random.default_rng(seed), motion))


def test_the_toy_is_comfyuis_wan_t2v_and_computes_what_it_was_trained_as(comfy_nodes, toy_file, loaded):
    model, _clip_model, _vae = loaded
    family = pack_module("nodes.hooks").model_family(model)
    assert family.family == "wan" and family.variant == "Wan T2V" and family.widths == {"dim": 128, "blocks": 6}
    assert float(model.model.model_sampling.shift) == pytest.approx(wanworld.SAMPLING_SHIFT)
    world = wanworld.load_world(toy_file)
    latents = torch.randn(1, 16, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    context = world.text_encoder.encode(["circle_cw red checker square noise blue green"])
    timestep = torch.tensor([600.0])
    with torch.no_grad():
        expected = world.transformer(latents, timestep, context, return_dict=False)[0]
        got = model.model.diffusion_model(latents, timestep, context)
    assert float(expected.abs().mean()) > 0.01 and torch.allclose(got, expected, atol=1e-4)


def test_a_missing_weights_file_is_named_with_the_command_that_trains_it(comfy_nodes, tmp_path):
    node = _loader()
    with pytest.raises(FileNotFoundError, match="train-toy-wan"):
        node.execute(weights=str(tmp_path / "none.safetensors"))


def test_the_toy_vae_compresses_as_wans_and_the_text_encoder_reads_prompts(comfy_nodes, toy_file, loaded):
    _model, text, vae = loaded
    world = wanworld.load_world(toy_file)
    frames = _clip()
    latents = vae.encode(frames)
    assert latents.shape == (1, 16, 4, 16, 16)
    assert torch.allclose(latents, world.encode(frames), atol=1e-4)
    decoded = vae.decode(latents)
    assert decoded.shape[-4:] == (13, 64, 64, 3) and torch.allclose(decoded.reshape(13, 64, 64, 3),
                                                                    world.decode(latents), atol=1e-4)
    encode = comfy_nodes.NODE_CLASS_MAPPINGS["CLIPTextEncode"]()
    prompt = "zoom_in pink dots star checker orange teal"
    (conditioning,) = encode.encode(text, prompt) if hasattr(encode, "encode") else encode.execute(text, prompt)
    cond, extra = conditioning[0]
    assert torch.equal(cond, world.text_encoder.encode([prompt])) and extra["pooled_output"] is None
    with pytest.raises(ValueError, match="at most 16 words"):
        text.tokenize(" ".join(["red"] * 20))


def test_learn_and_sample_on_the_toy_wan_model(comfy_nodes, loaded):
    import comfy.sample

    model, text, vae = loaded
    learn = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "LearnMotionEmbedding"]
    positive = text.encode_from_tokens_scheduled(text.tokenize("translate_E_2 red checker circle noise blue green"))
    with torch.inference_mode():
        out = learn.execute(model=model, vae=vae, reference_frames=_clip(), representation="temporal",
                            tokens_per_frame=3, steps=3, learning_rate=1e-2, seed=0, noise_mean=0.5, noise_std=1.0,
                            loss="appearance_debiased", augmentation=False, flip=False, fps=6, motion_bucket_id=127,
                            augmentation_level=0.0, layers="spread", explicit_layers="", positive=positive)
    embedding = out.result[0]
    assert embedding.metadata["frames"] == 4 and embedding.metadata["video_frames"] == 13
    assert embedding.value_embedding[next(iter(embedding.value_embedding))].shape == (64, 4, 128)   # 8x8 tokens
    applied = comfy_nodes.NODE_CLASS_MAPPINGS[PACK + "ApplyMotion"].execute(model, embedding, 1.0, 0.0, 1.0, 0).result[0]
    latent = torch.zeros(1, 16, 4, 16, 16)
    noise = comfy.sample.prepare_noise(latent, 3)
    negative = text.encode_from_tokens_scheduled(text.tokenize(""))
    sampled = comfy.sample.sample(applied, noise, 3, 3.0, "euler", "simple", positive, negative, latent, seed=3,
                                  disable_pbar=True)
    assert sampled.shape == latent.shape and torch.isfinite(sampled).all()
    assert vae.decode(sampled).shape[-4:] == (13, 64, 64, 3)


def test_the_shipped_toy_wan_loads_as_comfyuis_wan_and_draws_a_scene(comfy_nodes):
    """The default `weights` (empty): the shipped file, whose bytes the manifest pins (tests/test_toy_wan.py)."""
    import comfy.sample

    with torch.inference_mode():
        model, text, vae = _loader().execute(weights="").result
    family = pack_module("nodes.hooks").model_family(model)
    assert family.family == "wan" and family.variant == "Wan T2V"
    world = wanworld.load_world()
    latents = torch.randn(1, 16, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    prompt = "pan_W red checker square noise blue green"
    context = world.text_encoder.encode([prompt])
    with torch.no_grad():
        expected = world.transformer(latents, torch.tensor([500.0]), context, return_dict=False)[0]
        got = model.model.diffusion_model(latents, torch.tensor([500.0]), context)
    assert torch.allclose(got, expected, atol=1e-4)
    positive = text.encode_from_tokens_scheduled(text.tokenize(prompt))
    negative = text.encode_from_tokens_scheduled(text.tokenize(""))
    latent = torch.zeros(1, 16, 4, 16, 16)
    sampled = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), 8, 4.0, "euler", "simple", positive,
                                  negative, latent, seed=0, disable_pbar=True)
    frames = vae.decode(sampled).reshape(13, 64, 64, 3)
    # a drawn scene, not the flat grey of an untrained model (docs/wan_toy.md item 1: std 0.025)
    assert float(frames.std()) > 0.08, float(frames.std())
