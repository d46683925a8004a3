"""Test support for running the pack inside a real ComfyUI (found through ``COMFYUI_PATH``).

ComfyUI is the host, not a dependency: these helpers import it from the folder named by
``COMFYUI_PATH`` (a checkout with its requirements installed in the running Python), run
it on the CPU, load this repository as a custom node pack the way ComfyUI does, and
build tiny models of the real SVD architecture in code (no checkpoint files).
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_DIR_NAME = "comfyui_motion_inversion"

# A real SVD UNet (video resblocks, SpatialVideoTransformer with time_stack, temporal
# cross-attention, "sequential" adm of width 768, 4 latent + 4 c_concat input channels)
# shrunk to two levels of 32/64 channels. Token width stays 1024 (CLIP-H).
TINY_SVD_UNET = {
    "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 768, "in_channels": 8, "out_channels": 4,
    "model_channels": 32, "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
    "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1, "use_linear_in_transformer": True,
    "context_dim": 1024, "extra_ff_mix_layer": True, "use_spatial_context": True,
    "merge_strategy": "learned_with_images", "merge_factor": 0.0, "video_kernel_size": [3, 1, 1],
    "use_temporal_resblock": True, "use_temporal_attention": True, "disable_temporal_crossattention": False,
}

_state = {}


def comfy_path() -> str | None:
    path = os.environ.get("COMFYUI_PATH")
    return os.path.abspath(path) if path and os.path.isdir(os.path.join(path, "comfy")) else None


def host_required() -> bool:
    """``MI_REQUIRE_HOST=1`` (CI's pass against ComfyUI): tests that need the host fail instead of skipping."""
    return os.environ.get("MI_REQUIRE_HOST") == "1"


def tree_state(root: str) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime_ns)`` of every entry under ``root`` (to prove nothing was written there)."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            state[os.path.relpath(path, root)] = (info.st_size if name in files else 0, info.st_mtime_ns)
    return state


def start_comfy():
    """Import ComfyUI on the CPU, load its extra nodes and this pack; returns ComfyUI's ``nodes`` module."""
    if "nodes" in _state:
        return _state["nodes"]
    root = comfy_path()
    if root not in sys.path:
        sys.path.insert(0, root)
    argv = sys.argv
    sys.argv = [argv[0], "--cpu"]
    work = tempfile.mkdtemp(prefix="mi_host_")
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.cli_args  # (parses --cpu now, unless a caller parsed its own flags first)
        # Importing folder_paths creates <base>/input when it can: base it in the temporary
        # directory, never in the ComfyUI tree (CI's copy of the tree is writable).
        if "folder_paths" in sys.modules:
            raise RuntimeError("start_comfy must import ComfyUI's folder_paths itself (it was imported earlier)")
        comfy.cli_args.args.base_directory = work
        import utils.install_util  # noqa: F401  (ComfyUI's top-level utils package, before anything shadows it)
        import folder_paths
        import nodes
    finally:
        sys.argv = argv
    for kind in ("input", "output", "temp", "user"):
        os.makedirs(os.path.join(work, kind), exist_ok=True)
    folder_paths.set_user_directory(os.path.join(work, "user"))
    folder_paths.set_input_directory(os.path.join(work, "input"))
    folder_paths.set_output_directory(os.path.join(work, "output"))
    folder_paths.set_temp_directory(os.path.join(work, "temp"))
    custom = os.path.join(work, "custom_nodes")
    os.makedirs(custom)
    os.symlink(REPO_ROOT, os.path.join(custom, PACK_DIR_NAME))
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    pack_path = os.path.join(custom, PACK_DIR_NAME)
    loaded = asyncio.run(nodes.load_custom_node(pack_path))
    if not loaded:
        raise RuntimeError("ComfyUI failed to load the node pack; see the log above")
    embeddings = os.path.join(work, "models", "motion_embeddings")
    os.makedirs(embeddings)
    folder_paths.folder_names_and_paths["motion_embeddings"] = ([embeddings], {".safetensors"})
    _state.update(nodes=nodes, work=work, module=pack_path.replace(".", "_x_"))   # ComfyUI's sys.modules name
    return nodes


def prompt_executor(server):
    """ComfyUI's ``PromptExecutor`` with its classic cache, on every host version we test.

    This is the harness's one place that follows the host's version where interfaces differ:
    0.3.64 builds it as ``PromptExecutor(server, cache_type=False, cache_size=None)``; 0.33
    takes ``cache_args`` instead and reads ``cache_args["ram"]`` / ``["ram_inactive"]`` (RAM
    headroom in GB) in every ``execute``, so it must be a dict (main.py always passes one).
    """
    import inspect

    import execution

    if "cache_args" in inspect.signature(execution.PromptExecutor).parameters:
        return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0.0, "ram_inactive": 0.0})
    return execution.PromptExecutor(server)


def work_dir() -> str:
    return _state["work"]


def pack_module(name: str):
    """A submodule of the loaded pack, e.g. ``pack_module("nodes.hooks.svd")``."""
    return sys.modules[f"{_state['module']}.{name}"]


def _init_weights(module: torch.nn.Module, seed: int) -> None:
    """comfy ops skip weight init: initialise by module type, deterministically."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            for name, param in sub.named_parameters(recurse=False):
                if isinstance(sub, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                    param.fill_(1.0 if name == "weight" else 0.0)
                elif name == "mix_factor":
                    param.zero_()
                elif param.ndim >= 2:
                    param.copy_(torch.randn(param.shape, generator=generator) / param[0].numel() ** 0.5)
                else:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.01)


def build_tiny_svd(seed: int = 0, unet_config: dict | None = None, device=None):
    """A ``ModelPatcher`` around ``comfy.model_base.SVD_img2vid`` with the tiny UNet."""
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.SVD_img2vid(dict(unet_config or TINY_SVD_UNET))
    model_config.unet_config["num_head_channels"] = 16   # SVD's 64 would leave 32-channel layers without heads
    model = comfy.model_base.SVD_img2vid(model_config, device=device or comfy.model_management.get_torch_device())
    _init_weights(model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


# ComfyUI's own Wan models (comfy.ldm.wan.model.WanModel through supported_models / model_base),
# shrunk to two blocks of width 64 (two heads of 32). Text tokens stay narrow (32 for T5's 4096).
TINY_WAN = {"image_model": "wan2.1", "patch_size": (1, 2, 2), "dim": 64, "ffn_dim": 128, "freq_dim": 256,
            "text_dim": 32, "num_heads": 2, "num_layers": 2, "window_size": (-1, -1), "qk_norm": True,
            "cross_attn_norm": True, "eps": 1e-6}
TINY_WAN_VARIANTS = {
    # Wan 2.1 T2V (1.3B / 14B layout): 16-channel latent
    "t2v": ("WAN21_T2V", {"model_type": "t2v", "in_dim": 16, "out_dim": 16}),
    # Wan 2.1 I2V / first-last-frame: image latent + mask concatenated (36 channels), CLIP image tokens
    "i2v": ("WAN21_I2V", {"model_type": "i2v", "in_dim": 36, "out_dim": 16}),
    # Wan 2.2 TI2V 5B: 48-channel latent, per-frame timesteps from the noise mask
    "ti2v": ("WAN22_T2V", {"model_type": "t2v", "in_dim": 48, "out_dim": 48}),
}


def build_tiny_wan(variant: str = "t2v", seed: int = 0, dtype=None, manual_cast: bool = False):
    """A ``ModelPatcher`` around ComfyUI's Wan model (``model_base.WAN21`` / ``WAN22``), tiny, built in code.

    ``dtype``: the weights' dtype; ``manual_cast``: compute in the dtype UNETLoader would pick
    for it on this device (``unet_manual_cast``, float32 for float8 on the CPU).
    """
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config_name, extra = TINY_WAN_VARIANTS[variant]
    model_config = getattr(comfy.supported_models, config_name)(dict(TINY_WAN, **extra))
    dtype = dtype or torch.float32
    cast = (comfy.model_management.unet_manual_cast(dtype, torch.device("cpu"), model_config.supported_inference_dtypes)
            if manual_cast else None)
    model_config.set_inference_dtype(dtype, cast)
    model = model_config.get_model({}, "", device=torch.device("cpu"))
    _init_weights(model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def build_wan_vae(seed: int = 0):
    """ComfyUI's Wan 2.1 VAE (``comfy.sd.VAE`` recognises it from its keys), random weights, full size.

    ComfyUI builds this VAE at its one size (dim 96), so it is not tiny: about 127M
    parameters. Encoding a few 64 x 64 frames on the CPU takes seconds.
    """
    import comfy.ldm.wan.vae
    import comfy.sd

    config = {"dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
              "temperal_downsample": [False, True, True], "dropout": 0.0}
    weights = comfy.ldm.wan.vae.WanVAE(**config)
    _init_weights(weights, seed)
    return comfy.sd.VAE(sd=weights.state_dict())


def build_wan22_vae(seed: int = 0):
    """ComfyUI's Wan 2.2 VAE (``comfy.ldm.wan.vae2_2``: 48 channels, 16x down), random weights, full size.

    ``comfy.sd.VAE`` recognises it from its keys and builds it at its one size (dim 160), about
    705M parameters, so it is far from tiny. It is given zeros that take no memory (one value
    broadcast to each shape) and its weights are drawn in place: one copy, about 10 s to build on
    one CPU thread and 15 s to encode and decode 9 frames at 64 x 64, 5 GB at the peak.
    """
    import comfy.ldm.wan.vae2_2
    import comfy.sd

    config = {"dim": 160, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
              "temperal_downsample": [False, True, True], "dropout": 0.0}
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in comfy.ldm.wan.vae2_2.WanVAE(**config).state_dict().items()}
    vae = comfy.sd.VAE(sd={key: torch.zeros(()).expand(shape) for key, shape in shapes.items()})
    _init_weights(vae.first_stage_model, seed)
    return vae


def build_tiny_vae(seed: int = 0):
    """A ``comfy.sd.VAE`` of the SD AutoencoderKL architecture (8x down, 4 channels), tiny."""
    import comfy.sd

    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    vae = comfy.sd.VAE(sd={}, config={"params": {"ddconfig": ddconfig, "embed_dim": 4}})
    _init_weights(vae.first_stage_model, seed)
    return vae


def svd_conditioning(frames_latent: torch.Tensor, image_token: torch.Tensor | None = None):
    """positive/negative shaped like SVD_img2vid_Conditioning's, from a first-frame latent ``(1 c h w)``."""
    token = torch.zeros(1, 1, 1024) if image_token is None else image_token
    extra = {"motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0}
    positive = [[token, dict(extra, concat_latent_image=frames_latent)]]
    negative = [[torch.zeros_like(token), dict(extra, concat_latent_image=torch.zeros_like(frames_latent))]]
    return positive, negative
