"""diffusers -> ComfyUI key mapping of the SVD UNet and the AutoencoderKL (no ComfyUI needed).

The numerical equivalence of the converted UNet and VAE is checked inside a real ComfyUI
in tests/test_host_toy.py; here: coverage, uniqueness, shapes and known anchor names.
"""
import pytest
import torch
from diffusers import AutoencoderKL, UNetSpatioTemporalConditionModel

from motion_core.toy.svd_convert import (block_layout, diffusers_svd_unet_key_map, diffusers_svd_unet_to_comfy,
                                     diffusers_vae_to_comfy)
from motion_core.toy.toyworld import UNET_CONFIG, VAE_CONFIG, build_models

# SD's (and SVD's) image VAE in diffusers terms: four levels, two resnets each
SD_VAE_CONFIG = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
                 "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
                 "block_out_channels": [128, 256, 512, 512]}


@pytest.fixture(scope="module")
def toy_unet():
    return build_models(0)[0]


@pytest.fixture(scope="module")
def full_svd_unet():
    """diffusers' defaults are SVD's UNet (4 levels, 320..1280 channels), built without memory."""
    with torch.device("meta"):
        return UNetSpatioTemporalConditionModel()


def test_toy_unet_every_key_maps_once_with_its_tensor(toy_unet):
    state = toy_unet.state_dict()
    converted = diffusers_svd_unet_to_comfy(state, UNET_CONFIG)
    mapping = diffusers_svd_unet_key_map(state.keys(), UNET_CONFIG)
    assert set(mapping) == set(state) and len(set(mapping.values())) == len(state) == len(converted)
    for source, target in mapping.items():
        assert converted[target] is state[source]          # same tensor: no copy, no reshape


def test_toy_unet_anchor_names(toy_unet):
    mapping = diffusers_svd_unet_key_map(toy_unet.state_dict().keys(), UNET_CONFIG)
    expected = {
        "conv_in.weight": "input_blocks.0.0.weight",
        "time_embedding.linear_2.bias": "time_embed.2.bias",
        "add_embedding.linear_1.weight": "label_emb.0.0.weight",
        "down_blocks.0.resnets.0.spatial_res_block.conv1.weight": "input_blocks.1.0.in_layers.2.weight",
        "down_blocks.0.resnets.0.temporal_res_block.conv2.weight": "input_blocks.1.0.time_stack.out_layers.3.weight",
        "down_blocks.0.resnets.0.time_mixer.mix_factor": "input_blocks.1.0.time_mixer.mix_factor",
        "down_blocks.0.attentions.0.temporal_transformer_blocks.0.ff_in.net.0.proj.weight":
            "input_blocks.1.1.time_stack.0.ff_in.net.0.proj.weight",
        "down_blocks.0.attentions.0.time_pos_embed.linear_2.weight": "input_blocks.1.1.time_pos_embed.2.weight",
        "down_blocks.0.attentions.0.time_mixer.mix_factor": "input_blocks.1.1.time_mixer.mix_factor",
        "down_blocks.0.downsamplers.0.conv.weight": "input_blocks.2.0.op.weight",
        "up_blocks.0.resnets.1.spatial_res_block.conv_shortcut.weight": "output_blocks.1.0.skip_connection.weight",
        "mid_block.resnets.1.temporal_res_block.norm1.bias": "middle_block.2.time_stack.in_layers.0.bias",
        "mid_block.attentions.0.proj_in.weight": "middle_block.1.proj_in.weight",
        "up_blocks.0.upsamplers.0.conv.weight": "output_blocks.1.2.conv.weight",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight":
            "output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
        "conv_norm_out.weight": "out.0.weight",
        "conv_out.bias": "out.2.bias",
    }
    for source, target in expected.items():
        assert mapping[source] == target, source


def test_full_size_svd_unet_maps_every_key_once(full_svd_unet):
    """The real SVD mapping comes out of the same code: anchors from SVD checkpoints' key names."""
    state = full_svd_unet.state_dict()
    config = dict(full_svd_unet.config)
    mapping = diffusers_svd_unet_key_map(state.keys(), config)
    assert len(mapping) == len(state) == len(set(mapping.values()))
    assert mapping["down_blocks.0.downsamplers.0.conv.weight"] == "input_blocks.3.0.op.weight"
    assert mapping["down_blocks.3.resnets.1.spatial_res_block.conv2.weight"] == "input_blocks.11.0.out_layers.3.weight"
    assert mapping["down_blocks.1.resnets.0.spatial_res_block.conv_shortcut.weight"] == \
        "input_blocks.4.0.skip_connection.weight"                                        # 320 -> 640 channels
    assert mapping["up_blocks.0.upsamplers.0.conv.weight"] == "output_blocks.2.1.conv.weight"    # no attention there
    assert mapping["up_blocks.1.upsamplers.0.conv.weight"] == "output_blocks.5.2.conv.weight"
    assert mapping["up_blocks.3.attentions.2.proj_out.weight"] == "output_blocks.11.1.proj_out.weight"
    assert not any(target.startswith(("input_blocks.10.1", "input_blocks.11.1")) for target in mapping.values())


def test_block_layout_follows_block_types_and_layers():
    config = dict(UNET_CONFIG, layers_per_block=[1, 2],
                  down_block_types=["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
                  up_block_types=["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"])
    layout = block_layout(config)
    assert layout[("down_blocks", 1, "resnets", 1)] == "input_blocks.4.0."
    assert ("down_blocks", 1, "attentions", 0) not in layout
    assert layout[("up_blocks", 0, "upsamplers", 0)] == "output_blocks.2.1."     # 3 blocks, no attention
    assert layout[("up_blocks", 1, "attentions", 1)] == "output_blocks.4.1."
    assert ("up_blocks", 1, "upsamplers", 0) not in layout
    with pytest.raises(ValueError, match="3 entries for 2 levels"):
        block_layout(dict(config, layers_per_block=[1, 1, 1]))


def test_conv_proj_option_reshapes_only_transformer_projections(toy_unet):
    state = toy_unet.state_dict()
    converted = diffusers_svd_unet_to_comfy(state, UNET_CONFIG, linear_proj=False)
    assert converted["input_blocks.1.1.proj_in.weight"].shape == (64, 64, 1, 1)
    assert converted["middle_block.1.proj_out.weight"].shape == (64, 64, 1, 1)
    assert converted["input_blocks.1.1.proj_in.bias"].shape == (64,)
    assert converted["input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight"].ndim == 2


def test_unknown_or_mismatched_keys_raise(toy_unet):
    state = dict(toy_unet.state_dict())
    with pytest.raises(ValueError, match="no ComfyUI counterpart.*somewhere.weight"):
        diffusers_svd_unet_to_comfy(dict(state, **{"somewhere.weight": torch.zeros(1)}), UNET_CONFIG)
    # a config with fewer blocks than the weights: the extra block's keys are unknown
    with pytest.raises(ValueError, match="no ComfyUI counterpart"):
        diffusers_svd_unet_key_map(state.keys(), dict(UNET_CONFIG, layers_per_block=0))


def test_toy_vae_every_key_maps_once_attention_becomes_1x1_conv():
    vae = build_models(0)[1]
    state = vae.state_dict()
    converted = diffusers_vae_to_comfy(state, VAE_CONFIG)
    assert len(converted) == len(state)
    assert converted["decoder.up.2.block.0.norm1.weight"] is state["decoder.up_blocks.0.resnets.0.norm1.weight"]
    assert converted["decoder.up.0.block.1.conv2.weight"] is state["decoder.up_blocks.2.resnets.1.conv2.weight"]
    assert "decoder.up.2.upsample.conv.weight" in converted and "decoder.up.0.upsample.conv.weight" not in converted
    assert "encoder.down.1.downsample.conv.bias" in converted and "encoder.down.2.downsample.conv.bias" not in converted
    assert converted["encoder.down.1.block.0.nin_shortcut.weight"].shape == (64, 32, 1, 1)
    assert converted["encoder.mid.block_2.conv1.weight"] is state["encoder.mid_block.resnets.1.conv1.weight"]
    q = state["encoder.mid_block.attentions.0.to_q.weight"]
    assert converted["encoder.mid.attn_1.q.weight"].shape == (*q.shape, 1, 1)
    assert torch.equal(converted["decoder.mid.attn_1.proj_out.weight"][..., 0, 0],
                       state["decoder.mid_block.attentions.0.to_out.0.weight"])
    assert converted["decoder.mid.attn_1.norm.weight"].shape == (64,)
    assert converted["decoder.norm_out.bias"] is state["decoder.conv_norm_out.bias"]
    assert converted["post_quant_conv.weight"] is state["post_quant_conv.weight"]


def test_sd_vae_four_levels_match_sd_names():
    with torch.device("meta"):
        vae = AutoencoderKL(**SD_VAE_CONFIG)
    converted = diffusers_vae_to_comfy(vae.state_dict(), SD_VAE_CONFIG)
    assert len(converted) == len(vae.state_dict())
    assert "decoder.up.3.block.2.conv1.weight" in converted       # SD: up_blocks.0 is up.3
    assert "decoder.up.1.upsample.conv.weight" in converted and "decoder.up.0.upsample.conv.weight" not in converted
    assert converted["encoder.mid.attn_1.k.weight"].shape == (512, 512, 1, 1)
    with pytest.raises(ValueError, match="no ComfyUI counterpart"):
        diffusers_vae_to_comfy({"encoder.something.weight": torch.zeros(1)}, SD_VAE_CONFIG)
