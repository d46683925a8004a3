"""The toy world's model inside a real ComfyUI: converted weights, the loader node, SVD's nodes.

The equivalence tests also check the diffusers adapter (``SVDDenoiser``, ``install_motion``)
against the host path (``SVD_img2vid.extra_conds`` + ``calc_cond_batch``, as the samplers
call it) on the same random toy weights.
"""
import contextlib
import importlib
import logging
import os

import pytest
import torch

from host_support import pack_module

log = logging.getLogger(__name__)

FRAMES, LATENT, IMAGE = 8, 16, 64
TOKENS = 3
PACK = "MotionInversion_"


def _core(name):
    """A pack module that no node imports (ComfyUI loads the pack under a path-derived name)."""
    return importlib.import_module(f"{pack_module('motion_core').__name__}.{name}")


def _perturb(module, seed):
    """Random biases, norm affines and mix factors (diffusers' init leaves them 0/1/0.5): a swapped
    norm or mixer mapping must show up numerically."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim <= 1:
                param.add_(torch.randn(param.shape, generator=generator) * 0.3)


@pytest.fixture(scope="module")
def toy_file(comfy_nodes, tmp_path_factory):
    toyworld = pack_module("motion_core.toy.toyworld")
    unet, vae, encoder = toyworld.build_models(seed=0)
    for i, module in enumerate((unet, vae, encoder)):
        _perturb(module, seed=10 + i)
    world = toyworld.ToyWorld(unet, vae, encoder, torch.randn(4, 1024), {"kind": "random test weights"})
    return toyworld.save_world(world, str(tmp_path_factory.mktemp("toy") / "toy_svd.safetensors"))


@pytest.fixture(scope="module")
def loaded(comfy_nodes, toy_file):
    """``(MODEL, CLIP_VISION, VAE)`` from the node, under inference mode as ComfyUI's executor runs it."""
    node = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LoadToyVideoModel"]
    with torch.inference_mode():
        return node.execute(weights=toy_file).result


@pytest.fixture(scope="module")
def world(toy_file):
    return pack_module("motion_core.toy.toyworld").load_world(toy_file)


def _inputs(seed=0):
    generator = torch.Generator().manual_seed(seed)
    first = torch.randn(1, 4, LATENT, LATENT, generator=generator)            # raw VAE latent (c_concat)
    token = torch.randn(1, 1, 1024, generator=generator)                       # the image embedding token
    noisy = torch.randn(FRAMES, 4, LATENT, LATENT, generator=generator) * 3    # model latent space
    return first, token, noisy


def _host_denoised(model, positive, noisy, sigma):
    """The sampler's path: convert_cond -> process_conds (extra_conds) -> calc_cond_batch."""
    import comfy.model_management
    import comfy.sampler_helpers
    import comfy.samplers

    comfy.model_management.load_models_gpu([model])
    device = model.load_device
    noisy = noisy.to(device)
    conds = {"positive": comfy.sampler_helpers.convert_cond(positive)}
    conds = comfy.samplers.process_conds(model.model, noisy, conds, device)
    model.pre_run()
    try:
        with torch.no_grad():
            out = comfy.samplers.calc_cond_batch(model.model, [conds["positive"]], noisy,
                                                 torch.full((FRAMES,), sigma, device=device), model.model_options)
    finally:
        model.cleanup()
    return out[0].float().cpu()


def _diffusers_denoised(world, first, token, noisy, sigma, embedding=None):
    core = _core("diffusers_svd")
    denoiser = core.SVDDenoiser(world.unet, fps=6, motion_bucket_id=127, noise_aug_strength=0.0, image_embeds=token)
    with torch.no_grad():
        if embedding is None:
            return denoiser(noisy, torch.tensor([sigma]), first * core.SVD_VAE_SCALING_FACTOR)
        with core.install_motion(world.unet, embedding, LATENT, LATENT, frames=FRAMES):
            return denoiser(noisy, torch.tensor([sigma]), first * core.SVD_VAE_SCALING_FACTOR)


def _svd_positive(first, token):
    return [[token, {"motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0, "concat_latent_image": first}]]


def _align_group_norm_eps(world, model):
    """Give diffusers' GroupNorms ComfyUI's eps; returns how many differed (diffusers: 1e-6 in the
    down/up resnets, ComfyUI's ResBlock: always 1e-5 as in SVD's original code)."""
    convert = pack_module("motion_core.toy.svd_convert")
    toyworld = pack_module("motion_core.toy.toyworld")
    mapping = convert.diffusers_svd_unet_key_map(world.unet.state_dict().keys(), toyworld.UNET_CONFIG)
    host = dict(model.model.diffusion_model.named_modules())
    changed = 0
    for source, target in mapping.items():
        if source.endswith(".weight"):
            mine, theirs = world.unet.get_submodule(source[:-7]), host[target[:-7]]
            if isinstance(mine, torch.nn.GroupNorm) and mine.eps != theirs.eps:
                mine.eps, changed = theirs.eps, changed + 1
    return changed


@contextlib.contextmanager
def _equal_group_norm_eps(world, model):
    """Within the block, diffusers' GroupNorms use ComfyUI's eps (restored afterwards)."""
    saved = {name: m.eps for name, m in world.unet.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    try:
        assert _align_group_norm_eps(world, model) > 0
        yield
    finally:
        for name, module in world.unet.named_modules():
            if name in saved:
                module.eps = saved[name]


def _motion_text(seed=1):
    core = pack_module("motion_core.embedding")
    generator = torch.Generator().manual_seed(seed)
    return core.MotionEmbedding(spatial_tokens=torch.randn(FRAMES, TOKENS, 1024, generator=generator),
                                temporal_tokens=torch.randn(TOKENS, 1024, generator=generator),
                                metadata={"frames": FRAMES, "tokens_per_frame": TOKENS})


@pytest.mark.parametrize("sigma", [2.5, 0.3])
def test_diffusers_and_converted_comfy_unet_agree(loaded, world, sigma):
    model = loaded[0]
    first, token, noisy = _inputs()
    inflate = pack_module("nodes.conditioning").inflate
    embedding = _motion_text()
    positive = _svd_positive(first, token)
    motion_positive, _negative = inflate(positive, positive, embedding, FRAMES)

    host_plain = _host_denoised(model, positive, noisy, sigma)
    host_motion = _host_denoised(model, motion_positive, noisy, sigma)
    ours_plain = _diffusers_denoised(world, first, token, noisy, sigma)
    ours_motion = _diffusers_denoised(world, first, token, noisy, sigma, embedding)
    plain, motion = (host_plain - ours_plain).abs().max().item(), (host_motion - ours_motion).abs().max().item()
    # the two implementations differ only in some GroupNorm eps (1e-6 vs 1e-5): ~1e-4 here
    assert plain < 1e-3 and motion < 1e-3, (plain, motion)
    assert (host_motion - host_plain).abs().max() > 0.05          # the motion text does change the output

    with _equal_group_norm_eps(world, model):
        plain_eps = (host_plain - _diffusers_denoised(world, first, token, noisy, sigma)).abs().max().item()
        motion_eps = (host_motion - _diffusers_denoised(world, first, token, noisy, sigma, embedding)).abs().max().item()
    log.info("sigma %.2f: max |diffusers - ComfyUI| plain %.2e, motion text %.2e; with equal GroupNorm eps "
             "%.2e / %.2e (outputs up to %.2f)", sigma, plain, motion, plain_eps, motion_eps, host_plain.abs().max())
    assert plain_eps < 2e-5 and motion_eps < 2e-5, (plain_eps, motion_eps)


def test_guided_toy_workflow_chain_samples_like_the_benchmark(comfy_nodes, loaded, world):
    """Toy Video Conditioning -> Inflate SVD Conditioning (keep input negative) -> CFGGuider on
    VideoLinearCFGGuidance, Karras 40 -> 0.02, Euler: the chain toy_reenact.json samples with
    gives the video that ``toyeval.animate_batch`` (the demo's and the benchmark's sampler)
    gives with the same guidance ramp, seed and motion tokens."""
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    model, clip_vision, vae = loaded
    image = torch.rand(1, IMAGE, IMAGE, 3, generator=torch.Generator().manual_seed(3))
    embedding = _motion_text()
    steps, seed, cfg, min_cfg = 4, 7, 5.0, 1.0
    with torch.inference_mode():
        positive, negative, latent = nodes[PACK + "ToyVideoConditioning"].execute(clip_vision, image, vae, FRAMES,
                                                                                  127, 6).result
        keep = pack_module("nodes.conditioning").NEGATIVE_KEEP
        positive, negative = nodes[PACK + "InflateSVDConditioning"].execute(positive, negative, embedding, 0, latent,
                                                                            negative_mode=keep).result
        guided_model = nodes["VideoLinearCFGGuidance"]().patch(model, min_cfg)[0]
        guider = nodes["CFGGuider"]().get_guider(guided_model, positive, negative, cfg)[0]
        sigmas = nodes["KarrasScheduler"]().get_sigmas(steps, 40.0, 0.02, 7.0)[0]
        sampler = nodes["KSamplerSelect"]().get_sampler("euler")[0]
        noise = nodes["RandomNoise"]().get_noise(seed)[0]
        samples = nodes["SamplerCustomAdvanced"]().sample(noise, guider, sampler, sigmas, latent)[0]["samples"]
        host_video = vae.decode(samples).float().cpu()
    toyeval = _core("toy.toyeval")
    with _equal_group_norm_eps(world, model):
        ours = toyeval.animate_batch(world, image, embedding, FRAMES, steps, seed=seed, guidance=cfg,
                                     min_guidance=min_cfg)[0]
        unguided = toyeval.animate_batch(world, image, embedding, FRAMES, steps, seed=seed)[0]
    difference = (host_video - ours).abs().max().item()
    log.info("guided toy chain: max |ComfyUI - animate_batch| %.2e; guidance moved pixels by up to %.2f",
             difference, (ours - unguided).abs().max())
    assert host_video.shape == ours.shape == (FRAMES, IMAGE, IMAGE, 3)
    assert (ours - unguided).abs().max() > 0.05           # the guidance matters, so the match says something
    assert difference < 2e-4, difference


def test_inflate_keeps_the_negative_tokens_and_latent_when_asked(comfy_nodes, loaded):
    nodes = comfy_nodes.NODE_CLASS_MAPPINGS
    _model, clip_vision, vae = loaded
    conditioning = pack_module("nodes.conditioning")
    image = torch.rand(1, IMAGE, IMAGE, 3, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        positive, negative, latent = nodes[PACK + "ToyVideoConditioning"].execute(clip_vision, image, vae, FRAMES,
                                                                                  127, 6).result
    token = clip_vision.encode_image(image).image_embeds
    assert torch.allclose(negative[0][0][0], token) and negative[0][1]["concat_latent_image"].abs().max() > 0
    inflate = nodes[PACK + "InflateSVDConditioning"]
    _pos, kept = inflate.execute(positive, negative, _motion_text(), 0, latent,
                                 negative_mode=conditioning.NEGATIVE_KEEP).result
    tokens, options = kept[0]
    assert tokens.shape == options["time_conditioning"].shape == (1, TOKENS, 1024)
    assert torch.allclose(tokens, token.expand(1, TOKENS, -1))
    assert torch.equal(options["concat_latent_image"], negative[0][1]["concat_latent_image"])
    _pos, zeros = inflate.execute(positive, negative, _motion_text(), 0, latent).result   # the default: SVD's
    assert not zeros[0][0].any() and not zeros[0][1]["time_conditioning"].any()
    with pytest.raises(ValueError, match="2 tokens and the motion embedding 3"):
        inflate.execute(positive, [[token[None].expand(1, 2, -1), {}]], _motion_text(), 0, latent,
                        negative_mode=conditioning.NEGATIVE_KEEP)
    with pytest.raises(ValueError, match="unknown negative mode"):
        conditioning.inflate(positive, negative, _motion_text(), FRAMES, "ones")


def test_full_size_svd_keys_map_onto_comfy_svd_unet(comfy_nodes):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from diffusers import UNetSpatioTemporalConditionModel

    from test_host_temporal import SVD_UNET

    with torch.device("meta"):
        theirs = UNetModel(**SVD_UNET, device="meta", operations=comfy.ops.disable_weight_init).state_dict()
        ours = UNetSpatioTemporalConditionModel()           # diffusers' defaults: SVD
    state = ours.state_dict()
    converted = pack_module("motion_core.toy.svd_convert").diffusers_svd_unet_to_comfy(state, dict(ours.config))
    assert set(converted) == set(theirs)
    assert all(converted[key].shape == theirs[key].shape for key in theirs)


def test_toy_unet_keys_and_heads_match_comfy_config(loaded, world):
    model = loaded[0]
    toyworld = pack_module("motion_core.toy.toyworld")
    assert type(model.model).__name__ == "SVD_img2vid"
    assert model.model.diffusion_model.num_head_channels == 16
    heads = [b.attn1.heads for _n, b, _c, _f in pack_module("nodes.hooks.svd").temporal_blocks(model.model.diffusion_model)]
    assert heads == [4, 4, 4, 4, 4, 4, 4] == [toyworld.UNET_CONFIG["num_attention_heads"][level]
                                              for level in (0, 1, 1, 1, 1, 0, 0)]


def test_vae_and_clip_vision_match_the_toy_world(loaded, world):
    _model, clip_vision, vae = loaded
    frames = torch.rand(FRAMES, IMAGE, IMAGE, 3, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():      # the node's models hold inference tensors, as in ComfyUI's executor
        latents, decoded = vae.encode(frames), vae.decode(world.encode(frames))
        output = clip_vision.encode_image(frames)
        bigger = torch.nn.functional.interpolate(frames.movedim(-1, 1), scale_factor=2).movedim(1, -1)
        bigger_embeds = clip_vision.encode_image(bigger).image_embeds
    assert latents.shape == (FRAMES, 4, LATENT, LATENT)
    assert torch.allclose(latents, world.encode(frames), atol=1e-4)
    assert decoded.shape == (FRAMES, IMAGE, IMAGE, 3)
    assert torch.allclose(decoded, world.decode(world.encode(frames)), atol=1e-4)
    assert vae.spacial_compression_encode() == 4

    assert output.image_embeds.shape == (FRAMES, 1024) and output["last_hidden_state"].shape == (FRAMES, 1, 1024)
    assert torch.allclose(output.image_embeds, world.image_embeds(frames), atol=1e-5)
    assert bigger_embeds.shape == (FRAMES, 1024)                                     # brought to 64x64 first


def test_node_outputs_work_with_svd_conditioning_and_the_sampler(comfy_nodes, loaded):
    import comfy.sample

    model, clip_vision, vae = loaded
    image = torch.rand(1, IMAGE, IMAGE, 3, generator=torch.Generator().manual_seed(5))
    conditioning = comfy_nodes.NODE_CLASS_MAPPINGS["SVD_img2vid_Conditioning"]()
    with torch.inference_mode():
        positive, negative, latent = conditioning.encode(clip_vision, image, vae, IMAGE, IMAGE, FRAMES, 127, 6, 0.0)
    assert positive[0][0].shape == (1, 1, 1024)
    with torch.inference_mode():
        assert torch.allclose(positive[0][0][0], clip_vision.encode_image(image).image_embeds)
    assert positive[0][1]["concat_latent_image"].shape == (1, 4, LATENT, LATENT)
    assert latent["samples"].shape == (FRAMES, 4, IMAGE // 8, IMAGE // 8)   # ComfyUI sizes it for an 8x VAE
    samples = torch.zeros(FRAMES, 4, LATENT, LATENT)
    with torch.inference_mode():
        out = comfy.sample.sample(model, comfy.sample.prepare_noise(samples, 0), 2, 2.5, "euler", "karras", positive,
                                  negative, samples, seed=0, disable_pbar=True)
        video = vae.decode(out)
    assert out.shape == samples.shape and torch.isfinite(out).all() and out.std() > 0
    assert video.shape == (FRAMES, IMAGE, IMAGE, 3)


def test_fingerprint_follows_the_file(comfy_nodes, toy_file):
    node = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LoadToyVideoModel"]
    first = node.fingerprint_inputs(weights=toy_file)
    assert first == node.fingerprint_inputs(weights=toy_file)
    stat = os.stat(toy_file)
    os.utime(toy_file, (stat.st_atime, stat.st_mtime + 10))
    assert node.fingerprint_inputs(weights=toy_file) != first


def test_missing_weights_name_the_path_and_the_fix(comfy_nodes, tmp_path, monkeypatch):
    node = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LoadToyVideoModel"]
    missing = str(tmp_path / "nowhere.safetensors")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors.*train-toy.*`weights`"):
        node.execute(weights=missing)
    toyworld = pack_module("motion_core.toy.toyworld")
    for model in toyworld.TOY_MODELS:
        monkeypatch.setitem(toyworld.TOY_MODELS, model, str(tmp_path / "shipped.safetensors"))
        with pytest.raises(FileNotFoundError, match=r"shipped\.safetensors"):
            node.execute(toy_model=model)
    with pytest.raises(ValueError, match="unknown toy_model 'toy_svd'; choose one of"):
        node.execute(toy_model="toy_svd")


def test_the_model_choice_loads_each_shipped_file(comfy_nodes):
    toyworld = pack_module("motion_core.toy.toyworld")
    node = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LoadToyVideoModel"]
    options = node.GET_NODE_INFO_V1()["input"]["required"]["toy_model"]
    assert options[1]["options"] == list(toyworld.TOY_MODELS) and options[1]["default"] == "class-token toy (toy_svd)"
    fingerprints = {node.fingerprint_inputs(toy_model=model) for model in toyworld.TOY_MODELS}
    assert len(fingerprints) == 2                                         # two files
    for model, path in toyworld.TOY_MODELS.items():
        assert os.path.isfile(path), path                                 # both ship with the pack
        patcher, clip_vision, vae = node.execute(toy_model=model).result
        assert patcher.model.diffusion_model is not None and vae is not None and clip_vision is not None


def test_weights_that_do_not_fit_fail_loudly(comfy_nodes, toy_file, tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(toy_file)
    del tensors["unet.conv_out.bias"]
    broken = str(tmp_path / "broken.safetensors")
    save_file(tensors, broken)
    node = comfy_nodes.NODE_CLASS_MAPPINGS["MotionInversion_LoadToyVideoModel"]
    with pytest.raises(ValueError, match=r"(?s)do not fit.*out\.2\.bias"):
        node.execute(weights=broken)


def test_node_is_registered_with_description_and_tooltips(comfy_nodes):
    node_id = "MotionInversion_LoadToyVideoModel"
    assert comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == "Load Toy Video Model"
    info = comfy_nodes.NODE_CLASS_MAPPINGS[node_id].GET_NODE_INFO_V1()
    assert info["description"] and info["category"] == "motion_inversion"
    assert info["output"] == ["MODEL", "CLIP_VISION", "VAE"] and all(info["output_tooltips"])
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            assert spec[1].get("tooltip"), name
