"""Test support for running the pack inside a real ComfyUI (found through ``COMFYUI_PATH``).

ComfyUI is the host, not a dependency: these helpers import it from the folder named by
``COMFYUI_PATH`` (a checkout with its requirements installed in the running Python), run
it on the CPU, load this repository as a custom node pack the way ComfyUI does, and
build tiny models of the real SVD architecture in code (no checkpoint files).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

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


ADE_FOR_OLDEST_HOST = "animatediff-evolved-1.5.6"     # the last ADE release for ComfyUI 0.3.64
ADE_FOR_NEWEST_HOST = "animatediff-evolved-1.5.7"     # for ComfyUI 0.33


def comfy_version(root: str) -> str:
    try:
        with open(os.path.join(root, "comfyui_version.py"), encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("__version__"):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def ade_path() -> str | None:
    """The AnimateDiff-Evolved source to load beside the pack: ``ADE_PATH``, or the ADE snapshot beside the
    ComfyUI tree for its version (1.5.6 for 0.3.x, 1.5.7 for newer); None with ``MI_WITHOUT_ADE=1``."""
    if os.environ.get("MI_WITHOUT_ADE") == "1":
        return None
    explicit = os.environ.get("ADE_PATH")
    if explicit:
        return os.path.abspath(explicit) if os.path.isdir(os.path.join(explicit, "animatediff")) else None
    root = comfy_path()
    if root is None:
        return None
    name = ADE_FOR_OLDEST_HOST if comfy_version(root).startswith("0.3.") else ADE_FOR_NEWEST_HOST
    candidate = os.path.join(os.path.dirname(root), name)
    return candidate if os.path.isdir(os.path.join(candidate, "animatediff")) else None


def ade_loaded() -> bool:
    return bool(_state.get("ade"))


def start_comfy():
    """Import ComfyUI on the CPU, load its extra nodes, this pack and AnimateDiff-Evolved beside it (when its
    source is found, :func:`ade_path`); returns ComfyUI's ``nodes`` module."""
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
    ade = ade_path()
    if ade is not None:          # a companion pack, loaded after ours as ComfyUI orders them (by folder name)
        link = os.path.join(custom, "ComfyUI-AnimateDiff-Evolved")
        os.symlink(ade, link)
        if not asyncio.run(nodes.load_custom_node(link)):
            raise RuntimeError(f"ComfyUI failed to load AnimateDiff-Evolved from {ade}; see the log above")
        _state["ade"] = ade
    embeddings = os.path.join(work, "models", "motion_embeddings")
    os.makedirs(embeddings)
    folder_paths.folder_names_and_paths["motion_embeddings"] = ([embeddings], {".safetensors"})
    _state.update(nodes=nodes, work=work, module=pack_path.replace(".", "_x_"))   # ComfyUI's sys.modules name
    return nodes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _launch(base, with_ade: bool, settings: dict | None, threads: str):
    """Start ``main.py`` with every folder under ``base``; ``(url, process, log path)``, not yet answering."""
    for name in ("custom_nodes", "input", "output", "temp", "user", "models"):
        (base / name).mkdir(parents=True)
    os.symlink(REPO_ROOT, base / "custom_nodes" / PACK_DIR_NAME)
    if with_ade and ade_path() is not None:
        os.symlink(ade_path(), base / "custom_nodes" / "ComfyUI-AnimateDiff-Evolved")
    if settings is not None:
        (base / "user" / "default").mkdir()
        (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings))
    port = free_port()
    log_path = base / "server.log"
    command = [sys.executable, os.path.join(comfy_path(), "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(port), "--base-directory", str(base), "--output-directory", str(base / "output"),
               "--input-directory", str(base / "input"), "--user-directory", str(base / "user"),
               "--temp-directory", str(base / "temp"), "--database-url", "sqlite:///:memory:",
               "--disable-auto-launch", "--disable-api-nodes"]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS=threads)
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=str(base), stdout=log, stderr=subprocess.STDOUT, env=env)
    return f"http://127.0.0.1:{port}", process, log_path


def _wait_until_answering(url: str, process, log_path) -> None:
    import pytest

    deadline = time.monotonic() + 180
    while True:
        try:
            get_json(url + "/api/system_stats", timeout=2)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ComfyUI did not start (exit {process.poll()}); its log:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)


def _stop(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def comfy_servers(bases, with_ade: bool = False, settings: dict | None = None, threads: str = "2"):
    """``main.py`` of the ComfyUI at ``COMFYUI_PATH`` running on 127.0.0.1 with this pack (and AnimateDiff-Evolved
    when ``with_ade`` and its source is found), once per folder of ``bases`` (``pathlib.Path``s; every folder it
    writes goes there), all started at once; yields ``[(url, process), ...]`` once each answers, stops them
    afterwards. ``settings``: the frontend's user settings."""
    launched = []
    try:
        for base in bases:
            launched.append(_launch(base, with_ade, settings, threads))
        for url, process, log_path in launched:
            _wait_until_answering(url, process, log_path)
        yield [(url, process) for url, process, _log in launched]
    finally:
        for _url, process, _log in launched:
            _stop(process)


@contextlib.contextmanager
def comfy_server(base, with_ade: bool = False, settings: dict | None = None, threads: str = "2"):
    """One server, as :func:`comfy_servers`; yields ``(url, process)``."""
    with comfy_servers([base], with_ade, settings, threads) as servers:
        yield servers[0]


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


# ---- AnimateDiff (through AnimateDiff-Evolved, loaded beside the pack) ------------------------------
# Stable Diffusion 1.5's UNet as ComfyUI detects it from a checkpoint. ADE's motion modules are built at
# SD1.5's widths (320, 640, 1280, 1280; hard-coded in ADE) and injected after the UNet's blocks, so the
# UNet cannot be narrower: it is the real one (860M parameters), with random weights, run at tiny sizes.
SD15_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False}
TINY_MOTION_MODEL = "tiny_mm_sd15_v2.safetensors"
FULL_MOTION_MODEL = "random_mm_sd_v15_v2.safetensors"     # mm_sd_v15_v2's layout, random weights


def build_sd15(seed: int = 0, dtype=None, inference: bool = False):
    """A ``ModelPatcher`` around SD1.5 (``model_base.BaseModel``, epsilon prediction), random weights (3.4 GB in
    float32: hold it only as long as needed). ``dtype``: the weights' dtype, computed in the dtype ComfyUI's
    checkpoint loader picks for it on ComfyUI's device (``unet_manual_cast``: float32 for float16 on the CPU);
    ``inference``: the weights are inference tensors, as ComfyUI's loaders leave them."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.SD15(dict(SD15_UNET))
    if dtype is not None:
        model_config.set_inference_dtype(dtype, comfy.model_management.unet_manual_cast(
            dtype, comfy.model_management.get_torch_device(), model_config.supported_inference_dtypes))
    with torch.inference_mode(inference):
        model = model_config.get_model({}, "", device=torch.device("cpu"))
        _init_weights(model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def ade_module(name: str):
    """A module of the loaded AnimateDiff-Evolved, e.g. ``ade_module("animatediff.motion_module_ad")``."""
    for module_name, module in list(sys.modules.items()):
        if module_name.endswith("." + name) and "AnimateDiff" in module_name.replace("_x_", "."):
            return module
    for module_name, module in list(sys.modules.items()):
        if module_name.endswith("." + name) and os.path.realpath(getattr(module, "__file__", "") or "").startswith(
                os.path.realpath(_state.get("ade", "/nonexistent"))):
            return module
    raise LookupError(f"AnimateDiff-Evolved's {name} is not loaded")


def motion_model_layout(frames: int = 32, full: bool = False) -> dict[str, torch.Tensor]:
    """The positional-encoding keys ADE reads an SD1.5 motion model's layout from, as zeros ``(1 frames c)``:
    the down blocks and the mid block with one temporal self-attention each, or with ``full`` the layout of
    ``mm_sd_v15_v2`` (down, up and mid blocks, two temporal self-attentions per module; 42 layers)."""
    prefix = "temporal_transformer.transformer_blocks.0.attention_blocks"
    attentions = (0, 1) if full else (0,)
    levels = [("down_blocks", level, width) for level, width in enumerate((320, 640, 1280, 1280))]
    if full:
        levels += [("up_blocks", level, width) for level, width in enumerate((1280, 1280, 640, 320))]
    layout = {f"{kind}.{level}.motion_modules.0.{prefix}.{attention}.pos_encoder.pe": torch.zeros(1, frames, width)
              for kind, level, width in levels for attention in attentions}
    layout[f"mid_block.motion_modules.0.{prefix}.0.pos_encoder.pe"] = torch.zeros(1, frames, 1280)
    return layout


def write_motion_model(seed: int = 0, frames: int = 32, full: bool = False) -> str:
    """An SD1.5 AnimateDiff motion model in AnimateDiff's key layout (:func:`motion_model_layout`; ``full``: that
    of ``mm_sd_v15_v2``), random weights, written in float16 to the ``animatediff_models`` folder for ADE's own
    loader; returns its file name. Its key set comes from ADE's own ``AnimateDiffModel`` built for that layout."""
    import folder_paths
    import safetensors.torch

    name = FULL_MOTION_MODEL if full else TINY_MOTION_MODEL
    folder = os.path.join(folder_paths.models_dir, "animatediff_models")
    path = os.path.join(folder, name)
    if os.path.isfile(path):
        return name
    motion_module_ad = ade_module("animatediff.motion_module_ad")
    info = motion_module_ad.AnimateDiffInfo(sd_type="SD1.5", mm_format="AnimateDiff", mm_version="v2", mm_name=name)
    with torch.device("meta"):
        model = motion_module_ad.AnimateDiffModel(mm_state_dict=motion_model_layout(frames, full), mm_info=info)
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key, value in model.state_dict().items():
        if key.endswith("pos_encoder.pe"):
            position = torch.arange(frames, dtype=torch.float32)[:, None]
            channels = value.shape[-1]
            scale = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-9.21 / channels))
            pe = torch.zeros(1, frames, channels)
            pe[0, :, 0::2], pe[0, :, 1::2] = torch.sin(position * scale), torch.cos(position * scale)
            weights[key] = pe
        elif key.endswith(("norm.weight", "norms.0.weight", "ff_norm.weight")):
            weights[key] = torch.ones(value.shape)
        elif value.ndim >= 2:
            weights[key] = torch.randn(value.shape, generator=generator) / value.shape[1] ** 0.5
        else:
            weights[key] = torch.randn(value.shape, generator=generator) * 0.01
    os.makedirs(folder, exist_ok=True)
    safetensors.torch.save_file({k: v.half().contiguous() for k, v in weights.items()}, path + ".partial")
    os.replace(path + ".partial", path)
    return name


def ade_model(sd_model, motion_model_name: str, context_length: int = 0, context_overlap: int = 0):
    """The SD MODEL with the motion model attached as a user's graph does it, through ADE's own Gen2 nodes run
    under inference mode as ComfyUI's executor runs them: Load AnimateDiff Model -> Apply AnimateDiff Model ->
    Use Evolved Sampling (beta schedule autoselect; with standard static context options of
    ``context_length`` frames, ``context_overlap`` shared, when given). Returns ``(MODEL, MOTION_MODEL_ADE)``."""
    import nodes

    mappings = nodes.NODE_CLASS_MAPPINGS
    with torch.inference_mode():
        motion_model, = mappings["ADE_LoadAnimateDiffModel"]().load_motion_model(motion_model_name)
        m_models, = mappings["ADE_ApplyAnimateDiffModelSimple"]().apply_motion_model(motion_model)
        context = None
        if context_length:
            context, = mappings["ADE_StandardStaticContextOptions"]().create_options(
                context_length=context_length, context_overlap=context_overlap)
        model, = mappings["ADE_UseEvolvedSampling"]().use_evolved_sampling(sd_model, "autoselect", m_models,
                                                                           context_options=context)
    return model, motion_model
