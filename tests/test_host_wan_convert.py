"""diffusers' Wan transformer and ComfyUI's ``WanModel`` are one network: converted weights give the same output.

The Wan toy model is trained host-free with diffusers' ``WanTransformer3DModel`` and loaded
in ComfyUI as its own ``WanModel`` (``motion_core.toy.wan_convert``); this checks, in a real
ComfyUI, that the two compute the same function on the same weights.
"""
import pytest
import torch

from motion_core.toy.wan_convert import diffusers_wan_to_comfy as convert


def _diffusers_wan(layers=2, dim=48, heads=2, channels=4, text_dim=32, seed=0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=dim // heads,
                                  in_channels=channels, out_channels=channels, text_dim=text_dim, freq_dim=32,
                                  ffn_dim=2 * dim, num_layers=layers, cross_attn_norm=True,
                                  qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64).eval()
    with torch.no_grad():
        for parameter in model.parameters():       # diffusers zero-initialises some; make every weight count
            parameter.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("frames, size", [(3, 8), (5, 12)])
def test_converted_diffusers_wan_computes_what_comfyuis_wan_model_computes(comfy_nodes, frames, size):
    import comfy.ldm.wan.model
    import comfy.ops

    source = _diffusers_wan()
    target = comfy.ldm.wan.model.WanModel(
        model_type="t2v", patch_size=(1, 2, 2), text_len=8, in_dim=4, dim=48, ffn_dim=96, freq_dim=32, text_dim=32,
        out_dim=4, num_heads=2, num_layers=2, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6,
        operations=comfy.ops.disable_weight_init)
    target.load_state_dict(convert(source.state_dict()), strict=True)
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(2, 4, frames, size, size, generator=generator)
    context = torch.randn(2, 8, 32, generator=generator)
    timestep = torch.tensor([700.0, 20.0])
    with torch.no_grad():
        expected = source(video, timestep, context, return_dict=False)[0]
        got = target(video, timestep, context)
    assert got.shape == expected.shape == video.shape
    assert float(expected.abs().mean()) > 0.1
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), float((got - expected).abs().max())
    other_time = target(video, torch.tensor([100.0, 20.0]), context)     # the timestep acts on both alike
    assert not torch.allclose(other_time[0], got[0], atol=1e-3) and torch.allclose(other_time[1], got[1], atol=1e-5)


def test_the_conversion_names_every_weight_and_refuses_what_it_cannot_map(comfy_nodes):
    state = _diffusers_wan(layers=1).state_dict()
    converted = convert(state)
    assert len(converted) == len(state)
    assert {"head.modulation", "blocks.0.modulation", "blocks.0.norm3.weight", "time_projection.1.weight",
            "blocks.0.self_attn.q.weight", "blocks.0.cross_attn.o.bias", "blocks.0.ffn.2.weight"} <= set(converted)
    with pytest.raises(ValueError, match="condition_embedder.image_embedder.ff.net.0.proj.weight.*text-to-video"):
        convert({"condition_embedder.image_embedder.ff.net.0.proj.weight": torch.zeros(1)})


def test_converted_diffusers_wan_vae_encodes_and_decodes_as_comfyuis_wan_vae(comfy_nodes):
    """A small Wan 2.1 VAE (4x in time as Wan's, 4x in space): 9 frames -> 3 latent frames, both ways alike."""
    import comfy.ldm.wan.vae
    from diffusers import AutoencoderKLWan

    from motion_core.toy.wan_vae_convert import diffusers_wan_vae_to_comfy

    config = dict(z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[], temperal_downsample=[True, True],
                  dropout=0.0)
    torch.manual_seed(0)
    source = AutoencoderKLWan(base_dim=8, **config).eval()
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.normal_(0.0, 0.1)
    target = comfy.ldm.wan.vae.WanVAE(dim=8, **config).eval()
    target.load_state_dict(diffusers_wan_vae_to_comfy(source.state_dict()), strict=True)
    video = torch.rand(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected_latent = source.encode(video).latent_dist.mean
        latent = target.encode(video)
        assert latent.shape == expected_latent.shape == (1, 4, 3, 8, 8)
        assert torch.allclose(latent, expected_latent, atol=1e-5) and float(latent.abs().mean()) > 0.01
        decoded, expected = target.decode(expected_latent), source.decode(expected_latent).sample
    assert decoded.shape == expected.shape == video.shape
    assert torch.allclose(decoded, expected, atol=1e-5) and float(expected.abs().mean()) > 0.01
    with pytest.raises(ValueError, match="encoder.down_blocks_x"):
        diffusers_wan_vae_to_comfy({"encoder.down_blocks_x.0.weight": torch.zeros(1)})
