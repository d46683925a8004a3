"""The shipped workflows (``workflows/*.json``) against a real ComfyUI.

Each is checked against the registered node definitions (types, links, widget slots and
values), converted to an API prompt and validated by ComfyUI's ``validate_prompt`` with
its shipped values (stand-in files for what it names), then run by ComfyUI's
``PromptExecutor`` with a tiny real-architecture SVD, shrunk to 64 x 64 and 4 frames
(the Wan workflows: ``test_host_wan_workflows.py``).
"""
import asyncio
import glob
import importlib
import json
import os

import numpy as np
import pytest
import torch

from conftest import need_host
from host_support import ade_loaded, build_tiny_svd, build_tiny_vae, pack_module, prompt_executor, work_dir
from workflow_support import (FRONTEND_ONLY, check_links, check_slots, check_values, load_workflow, set_inputs,
                              widget_index, workflow_names, workflow_to_api_prompt)

SVD_WORKFLOWS = ["reenact_svd.json", "apply_saved_motion.json", "motion_embeddings_svd.json"]
WAN_WORKFLOWS = ["wan_t2v_motion.json", "wan_i2v_motion.json"]
AD_WORKFLOW = "animatediff_motion.json"        # needs AnimateDiff-Evolved's nodes
TOY_WAN_WORKFLOW = "toy_wan_motion.json"     # the Wan toy: the pack ships its model, so it runs as shipped
WORKFLOWS = SVD_WORKFLOWS + WAN_WORKFLOWS + [AD_WORKFLOW, "toy_reenact.json", TOY_WAN_WORKFLOW]
LOADER = "ImageOnlyCheckpointLoader"
MODEL_FOLDERS = {LOADER: "checkpoints", "UNETLoader": "diffusion_models", "CLIPLoader": "text_encoders",
                 "VAELoader": "vae", "CheckpointLoaderSimple": "checkpoints",
                 "ADE_LoadAnimateDiffModel": "animatediff_models"}   # the workflows' loaders, where their files go
TEST_LOADER = "MotionInversionTest_TinySVDLoader"
PACK = "MotionInversion_"


# ------------------------------------------------------------------ stand-in files
def _widget_values(class_type):
    """Every value the workflows give the first widget of ``class_type`` nodes."""
    return {node["widgets_values"][0] for name in WORKFLOWS for node in load_workflow(name)["nodes"]
            if node["type"] == class_type}


def _write_video(path, frames=16, width=96, height=64):
    import cv2

    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 8.0, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for f in range(frames):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = np.linspace(0, 120, width, dtype=np.uint8)
        frame[16:48, 4 + 4 * f:28 + 4 * f] = (40, 220, 250)
        writer.write(frame)
    writer.release()


def _write_image(path, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = (rng.random((48, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def _tiny_embedding(frames=4, tokens=2):
    embedding_module = pack_module("motion_core.embedding")
    generator = torch.Generator().manual_seed(0)
    return embedding_module.MotionEmbedding(
        spatial_tokens=torch.randn(frames, tokens, 1024, generator=generator) * 0.1,
        temporal_tokens=torch.randn(tokens, 1024, generator=generator) * 0.1,
        metadata=dict(embedding_module.base_metadata(frames, 64, 64, tokens), representation="motion_text"))


@pytest.fixture(scope="module")
def stand_ins(comfy_nodes):
    """Files named by the workflows that are not there yet (the pack copies its example clip and images
    on load, and they are kept): reference video, target images, model files, embedding."""
    import folder_paths

    inputs = folder_paths.get_input_directory()
    for name in _widget_values(PACK + "LoadReferenceVideo"):
        if not os.path.exists(os.path.join(inputs, name)):      # the pack's examples are there already
            _write_video(os.path.join(inputs, name))
    for seed, name in enumerate(sorted(_widget_values("LoadImage"))):
        if not os.path.exists(os.path.join(inputs, name)):
            _write_image(os.path.join(inputs, name), seed)
    stand_in_folders = {}
    for class_type, folder in MODEL_FOLDERS.items():
        path = stand_in_folders[folder] = os.path.join(work_dir(), "models", folder + "_stand_in")
        os.makedirs(path, exist_ok=True)
        for name in _widget_values(class_type):
            open(os.path.join(path, name), "wb").close()         # listed, never loaded
        folder_paths.add_model_folder_path(folder, path)
    embeddings = folder_paths.get_folder_paths("motion_embeddings")[0]
    for name in _widget_values(PACK + "LoadMotionEmbedding"):
        if not os.path.exists(os.path.join(embeddings, name)):
            pack_module("motion_core.fileio").save_embedding(_tiny_embedding(), os.path.join(embeddings, name))
    yield
    for folder, path in stand_in_folders.items():
        folder_paths.folder_names_and_paths[folder][0].remove(path)


# ------------------------------------------------------------------ prompt helpers
def _nodes_of(prompt, class_type):
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def _source(prompt, node_id, name):
    """``(class_type, node id, slot)`` feeding input ``name`` of ``node_id``."""
    link = prompt[node_id]["inputs"][name]
    assert isinstance(link, list), f"{prompt[node_id]['class_type']}.{name} is not linked"
    return prompt[link[0]]["class_type"], link[0], link[1]


def _model_chain(prompt, node_id):
    """Class types on the MODEL path from a KSampler back to the loader."""
    chain, name = [], "model"
    while True:
        class_type, node_id, _slot = _source(prompt, node_id, name)
        chain.append(class_type)
        if "model" not in prompt[node_id]["inputs"]:
            return chain


def _validate(prompt):
    import execution

    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt("validate", prompt, None))
    assert valid is True and not node_errors, json.dumps({"error": error, "node_errors": node_errors}, default=str)
    return outputs


def _output_nodes(comfy_nodes, prompt):
    return {node_id for node_id, node in prompt.items()
            if getattr(comfy_nodes.NODE_CLASS_MAPPINGS[node["class_type"]], "OUTPUT_NODE", False) is True}


# ------------------------------------------------------------------ static checks
def test_every_shipped_workflow_is_covered():
    assert workflow_names() == sorted(WORKFLOWS)


def _need_ade(name):
    if name == AD_WORKFLOW and not ade_loaded():
        need_host(f"{name} needs AnimateDiff-Evolved's nodes: put its source beside the ComfyUI tree or set ADE_PATH")


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_nodes_links_and_widgets_match_definitions(comfy_nodes, name):
    _need_ade(name)
    workflow = load_workflow(name)
    assert workflow["version"] == 0.4 and workflow["last_node_id"] == max(n["id"] for n in workflow["nodes"])
    assert workflow["last_link_id"] == max(link[0] for link in workflow["links"])
    assert check_links(workflow, comfy_nodes.NODE_CLASS_MAPPINGS) == []
    assert check_slots(workflow, comfy_nodes.NODE_CLASS_MAPPINGS) == []
    notes = [n for n in workflow["nodes"] if n["type"] in FRONTEND_ONLY]
    assert len(notes) >= 4 and all(n["widgets_values"][0].strip() for n in notes)


@pytest.mark.parametrize("name", SVD_WORKFLOWS)
def test_workflow_declares_its_checkpoint_download(comfy_nodes, name):
    loaders = [n for n in load_workflow(name)["nodes"] if n["type"] == LOADER]
    assert loaders
    for node in loaders:
        chosen = node["widgets_values"][0]
        models = {m["name"]: m for m in node["properties"]["models"]}
        assert chosen in ("svd.safetensors", "svd_xt.safetensors") and chosen in models
        assert models[chosen]["directory"] == "checkpoints"
        assert models[chosen]["url"].startswith("https://huggingface.co/stabilityai/")
        assert models[chosen]["url"].endswith("/" + chosen)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_passes_comfyui_validation_as_shipped(comfy_nodes, stand_ins, name):
    _need_ade(name)
    prompt = workflow_to_api_prompt(load_workflow(name), comfy_nodes.NODE_CLASS_MAPPINGS)
    assert not any(node["class_type"] in FRONTEND_ONLY for node in prompt.values())
    assert set(_validate(prompt)) == _output_nodes(comfy_nodes, prompt)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_widget_values_fit_choices_and_ranges(comfy_nodes, stand_ins, name):
    # ComfyUI 0.3.64's validate_prompt does not check V3 combos, nor ranges of inputs a
    # node's validate_inputs takes: check_values does it for every widget
    _need_ade(name)
    assert check_values(load_workflow(name), comfy_nodes.NODE_CLASS_MAPPINGS) == []


@pytest.mark.parametrize("node_type,widget,bad,why", [
    (PACK + "LearnMotionEmbedding", "representation", "motion-text", "is not one of"),
    (PACK + "LearnMotionEmbedding", "steps", 0, "below min"),
    (PACK + "LoadReferenceVideo", "width", 1000, "step 16"),
    ("KSampler", "sampler_name", "euler_a", "is not one of"),
    ("SaveAnimatedWEBP", "lossless", "no", "is not a BOOLEAN"),
])
def test_value_check_catches_bad_widgets(comfy_nodes, stand_ins, node_type, widget, bad, why):
    workflow = load_workflow("reenact_svd.json")
    node = next(n for n in workflow["nodes"] if n["type"] == node_type)
    node["widgets_values"][widget_index(comfy_nodes.NODE_CLASS_MAPPINGS[node_type], widget)] = bad
    (problem,) = check_values(workflow, comfy_nodes.NODE_CLASS_MAPPINGS)
    assert f"node {node['id']} " in problem and why in problem


def test_conversion_refuses_a_shifted_widget_list(comfy_nodes):
    workflow = load_workflow("reenact_svd.json")
    node = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
    del node["widgets_values"][1]          # the seed's "control after generate" value
    with pytest.raises(ValueError, match="6 widget values, the node has 7 widgets"):
        workflow_to_api_prompt(workflow, comfy_nodes.NODE_CLASS_MAPPINGS)
    assert any("widget values for 7 widgets" in p for p in check_slots(workflow, comfy_nodes.NODE_CLASS_MAPPINGS))


def test_link_check_catches_a_type_mismatch(comfy_nodes):
    workflow = load_workflow("reenact_svd.json")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    link = next(l for l in workflow["links"] if l[5] == "VAE" and nodes[l[3]]["type"] == "VAEDecode")
    link[2], link[5] = 0, "MODEL"          # MODEL output into VAEDecode's vae input
    problems = check_links(workflow, comfy_nodes.NODE_CLASS_MAPPINGS)
    assert any(f"link {link[0]} " in p and "takes VAE" in p for p in problems)


def test_animatediff_workflow_learns_on_the_evolved_sampling_model_and_declares_its_downloads(comfy_nodes):
    """SD1.5 + mm_sd_v15_v2 through ADE's Gen2 nodes; Learn, Reference Noise and Apply Motion on Use Evolved
    Sampling's MODEL; the files as ADE's README and ComfyUI's SD1.5 templates name them, with their URLs."""
    _need_ade(AD_WORKFLOW)
    workflow = load_workflow(AD_WORKFLOW)
    downloads = {model["name"]: model for node in workflow["nodes"] for model in node["properties"].get("models", [])}
    assert set(downloads) == {"v1-5-pruned-emaonly-fp16.safetensors", "mm_sd15_v2.safetensors"}
    assert downloads["mm_sd15_v2.safetensors"] == {
        "name": "mm_sd15_v2.safetensors", "directory": "animatediff_models",
        "url": "https://huggingface.co/conrevo/AnimateDiff-A1111/resolve/main/motion_module/mm_sd15_v2.safetensors"}
    assert downloads["v1-5-pruned-emaonly-fp16.safetensors"]["directory"] == "checkpoints"
    assert downloads["v1-5-pruned-emaonly-fp16.safetensors"]["url"].startswith(
        "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/")
    prompt = workflow_to_api_prompt(workflow, comfy_nodes.NODE_CLASS_MAPPINGS)
    (learn,) = _nodes_of(prompt, PACK + "LearnMotionEmbedding")
    assert {k: prompt[learn]["inputs"][k] for k in ("representation", "loss", "layers")} == {
        "representation": "temporal", "loss": "appearance_debiased", "layers": "widest"}
    evolved = ["ADE_UseEvolvedSampling", "CheckpointLoaderSimple"]
    assert _model_chain(prompt, learn) == evolved
    (use_evolved,) = _nodes_of(prompt, "ADE_UseEvolvedSampling")
    assert _source(prompt, use_evolved, "m_models")[0] == "ADE_ApplyAnimateDiffModelSimple"
    (apply,) = _nodes_of(prompt, PACK + "ApplyMotion")
    (noise,) = _nodes_of(prompt, PACK + "ReferenceNoise")
    (guider,) = _nodes_of(prompt, "CFGGuider")
    assert _model_chain(prompt, apply) == evolved and _model_chain(prompt, noise) == evolved
    assert _model_chain(prompt, guider) == [PACK + "ApplyMotion"] + evolved
    assert _source(prompt, apply, "motion_embedding")[0] == PACK + "DebiasValueEmbedding"
    assert _source(prompt, noise, "positive")[1] == _source(prompt, learn, "positive")[1]
    assert _source(prompt, guider, "positive")[1] != _source(prompt, learn, "positive")[1]
    (video,) = _nodes_of(prompt, PACK + "LoadReferenceVideo")
    assert (prompt[video]["inputs"]["width"], prompt[video]["inputs"]["height"]) == (512, 512)
    assert prompt[video]["inputs"]["frames"] <= 16          # within mm_sd_v15_v2's window, as learning needs
    (latent,) = _nodes_of(prompt, "EmptyLatentImage")
    assert prompt[latent]["inputs"]["batch_size"] == 16


def test_reenact_workflow_uses_paper_defaults_and_svd_settings(comfy_nodes):
    prompt = workflow_to_api_prompt(load_workflow("reenact_svd.json"), comfy_nodes.NODE_CLASS_MAPPINGS)
    (learn,) = _nodes_of(prompt, PACK + "LearnMotionEmbedding")
    assert {k: prompt[learn]["inputs"][k] for k in ("representation", "tokens_per_frame", "steps", "learning_rate",
                                                     "noise_mean", "noise_std", "flip")} == {
        "representation": "motion_text", "tokens_per_frame": 5, "steps": 1000, "learning_rate": 0.01,
        "noise_mean": 2.8, "noise_std": 1.6, "flip": False}
    assert _source(prompt, learn, "clip_vision")[0] == LOADER
    (video,) = _nodes_of(prompt, PACK + "LoadReferenceVideo")
    assert [prompt[video]["inputs"][k] for k in ("frames", "width", "height")] == [14, 1024, 576]
    (cond,) = _nodes_of(prompt, "SVD_img2vid_Conditioning")
    assert {k: v for k, v in prompt[cond]["inputs"].items() if not isinstance(v, list)} == {
        "width": 1024, "height": 576, "video_frames": 14, "motion_bucket_id": 127, "fps": 6, "augmentation_level": 0}
    (sampler,) = _nodes_of(prompt, "KSampler")
    assert [prompt[sampler]["inputs"][k] for k in ("cfg", "steps", "sampler_name", "scheduler")] == [
        3, 25, "euler", "karras"]
    assert _model_chain(prompt, sampler) == ["VideoLinearCFGGuidance", LOADER]
    assert prompt[_nodes_of(prompt, "VideoLinearCFGGuidance")[0]]["inputs"]["min_cfg"] == 1
    for name in ("positive", "negative"):
        assert _source(prompt, sampler, name)[0] == PACK + "InflateSVDConditioning"
    (inflate,) = _nodes_of(prompt, PACK + "InflateSVDConditioning")
    assert _source(prompt, inflate, "motion_embedding")[0] == PACK + "LearnMotionEmbedding"
    assert _source(prompt, inflate, "latent")[1] == cond and _source(prompt, sampler, "latent_image")[1] == cond
    (save,) = _nodes_of(prompt, PACK + "SaveMotionEmbedding")
    assert _source(prompt, save, "motion_embedding")[1] == learn
    (preview,) = _nodes_of(prompt, "PreviewImage")
    assert _source(prompt, preview, "images")[1:] == (learn, 1)        # the loss plot
    (webp,) = _nodes_of(prompt, "SaveAnimatedWEBP")
    assert prompt[webp]["inputs"]["fps"] == 6 and _source(prompt, webp, "images")[0] == "VAEDecode"
    learn_node = next(n for n in load_workflow("reenact_svd.json")["nodes"] if n["type"] == PACK + "LearnMotionEmbedding")
    learn_class = comfy_nodes.NODE_CLASS_MAPPINGS[learn_node["type"]]
    assert learn_node["widgets_values"][widget_index(learn_class, "seed", "control")] == "fixed"   # no re-learning


def test_apply_workflow_has_independent_rows_per_target_image(comfy_nodes):
    prompt = workflow_to_api_prompt(load_workflow("apply_saved_motion.json"), comfy_nodes.NODE_CLASS_MAPPINGS)
    (embedding,) = _nodes_of(prompt, PACK + "LoadMotionEmbedding")
    saves = _nodes_of(prompt, "SaveAnimatedWEBP")
    assert len(saves) >= 2
    images, prefixes = set(), set()
    for save in saves:
        _cls, decode, _slot = _source(prompt, save, "images")
        cls, sampler, _slot = _source(prompt, decode, "samples")
        assert cls == "KSampler" and _model_chain(prompt, sampler) == ["VideoLinearCFGGuidance", LOADER]
        _cls, inflate, _slot = _source(prompt, sampler, "positive")
        assert _source(prompt, sampler, "negative")[1] == inflate
        assert _source(prompt, inflate, "motion_embedding")[1] == embedding
        _cls, cond, _slot = _source(prompt, inflate, "positive")
        assert _source(prompt, sampler, "latent_image")[1] == cond
        images.add(prompt[_source(prompt, cond, "init_image")[1]]["inputs"]["image"])
        prefixes.add(prompt[save]["inputs"]["filename_prefix"])
    assert len(images) == len(saves) and len(prefixes) == len(saves)


def test_motion_embeddings_workflow_learns_temporal_and_applies_debiased(comfy_nodes):
    prompt = workflow_to_api_prompt(load_workflow("motion_embeddings_svd.json"), comfy_nodes.NODE_CLASS_MAPPINGS)
    (learn,) = _nodes_of(prompt, PACK + "LearnMotionEmbedding")
    assert prompt[learn]["inputs"]["representation"] == "temporal"
    assert prompt[learn]["inputs"]["loss"] == "appearance_debiased"
    (debias,) = _nodes_of(prompt, PACK + "DebiasValueEmbedding")
    assert prompt[debias]["inputs"]["mode"] == "difference" and _source(prompt, debias, "motion_embedding")[1] == learn
    (apply,) = _nodes_of(prompt, PACK + "ApplyMotion")
    assert prompt[apply]["inputs"]["strength"] == 1 and _source(prompt, apply, "motion_embedding")[1] == debias
    (sampler,) = _nodes_of(prompt, "SamplerCustomAdvanced")
    guider_type, guider, _slot = _source(prompt, sampler, "guider")
    assert guider_type == "CFGGuider" and prompt[guider]["inputs"]["cfg"] == 3
    assert _model_chain(prompt, guider) == ["VideoLinearCFGGuidance", PACK + "ApplyMotion", LOADER]
    assert _source(prompt, guider, "positive")[0] == "SVD_img2vid_Conditioning"
    noise_type, noise, _slot = _source(prompt, sampler, "noise")
    assert noise_type == PACK + "ReferenceNoise" and prompt[noise]["inputs"]["prior"] == 0.5
    assert _source(prompt, noise, "motion_embedding")[1] == learn      # inverted like the Learn run
    assert _source(prompt, noise, "sigmas")[1] == _source(prompt, sampler, "sigmas")[1]
    assert not _nodes_of(prompt, PACK + "InflateSVDConditioning")


def test_toy_workflow_guides_like_the_benchmark(comfy_nodes):
    """toy_reenact.json samples with the demo's and the benchmark's guidance (the ramp, and the
    toy model's image token as the negative), the chain test_host_toy checks number for number."""
    toyeval = importlib.import_module(pack_module("motion_core").__name__ + ".toy.toyeval")   # no node imports it
    keep = pack_module("nodes.conditioning").NEGATIVE_KEEP
    prompt = workflow_to_api_prompt(load_workflow("toy_reenact.json"), comfy_nodes.NODE_CLASS_MAPPINGS)
    (sampler,) = _nodes_of(prompt, "SamplerCustomAdvanced")
    guider_type, guider, _slot = _source(prompt, sampler, "guider")
    assert guider_type == "CFGGuider" and prompt[guider]["inputs"]["cfg"] == toyeval.DEFAULT_GUIDANCE
    assert _model_chain(prompt, guider) == ["VideoLinearCFGGuidance", PACK + "LoadToyVideoModel"]
    (learn,) = _nodes_of(prompt, PACK + "LearnMotionEmbedding")   # the tokens: what moves the toy model (quality.md)
    assert prompt[learn]["inputs"]["representation"] == "motion_text"
    (ramp,) = _nodes_of(prompt, "VideoLinearCFGGuidance")
    assert prompt[ramp]["inputs"]["min_cfg"] == toyeval.DEFAULT_MIN_GUIDANCE
    inflate_type, inflate, _slot = _source(prompt, guider, "negative")
    assert inflate_type == PACK + "InflateSVDConditioning" and prompt[inflate]["inputs"]["negative_mode"] == keep
    assert _source(prompt, inflate, "negative")[0] == PACK + "ToyVideoConditioning"


# ------------------------------------------------------------------ running them
def _tiny_clip_vision(projection_dim=1024):
    """A real ``comfy.clip_vision.ClipVisionModel`` (CLIP-H layout, 1024-wide image_embeds), tiny."""
    import comfy.clip_vision

    config = {"hidden_act": "gelu", "hidden_size": 32, "image_size": 28, "intermediate_size": 64,
              "layer_norm_eps": 1e-5, "model_type": "clip_vision_model", "num_attention_heads": 2,
              "num_channels": 3, "num_hidden_layers": 2, "patch_size": 14, "projection_dim": projection_dim}
    path = os.path.join(work_dir(), f"tiny_clip_vision_{projection_dim}.json")
    with open(path, "w") as fh:
        json.dump(config, fh)
    model = comfy.clip_vision.ClipVisionModel(path)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():                      # comfy ops skip weight init
        for module in model.model.modules():
            for pname, param in module.named_parameters(recurse=False):
                if isinstance(module, torch.nn.LayerNorm):
                    param.fill_(1.0 if pname == "weight" else 0.0)
                else:
                    param.copy_(torch.randn(param.shape, generator=generator).to(param.dtype) * 0.02)
    return model


class _TinySVDLoader:
    """Test-only stand-in for ImageOnlyCheckpointLoader: tiny SVD, CLIP vision and VAE."""
    calls = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": ("STRING", {"default": "svd.safetensors"})}}

    RETURN_TYPES = ("MODEL", "CLIP_VISION", "VAE")
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, ckpt_name):
        self.calls.append(ckpt_name)
        return build_tiny_svd(), _tiny_clip_vision(), build_tiny_vae()


class _Server:
    """What PromptExecutor needs of ComfyUI's PromptServer (no clients: nothing is sent)."""
    client_id, last_node_id, sockets_metadata = None, None, {}

    def send_sync(self, event, data, sid=None):
        pass


def _tiny_prompt(comfy_nodes, name):
    prompt = workflow_to_api_prompt(load_workflow(name), comfy_nodes.NODE_CLASS_MAPPINGS)
    for node_id in _nodes_of(prompt, LOADER):
        prompt[node_id]["class_type"] = TEST_LOADER
    shrink = {PACK + "LoadReferenceVideo": dict(frames=4, width=64, height=64),
              PACK + "LearnMotionEmbedding": dict(steps=2),
              "SVD_img2vid_Conditioning": dict(width=64, height=64, video_frames=4),
              "KSampler": dict(steps=2)}
    for class_type, values in shrink.items():
        if _nodes_of(prompt, class_type):
            set_inputs(prompt, class_type, **values)
    return prompt


@pytest.fixture
def tiny_loader(comfy_nodes, monkeypatch):
    monkeypatch.setitem(comfy_nodes.NODE_CLASS_MAPPINGS, TEST_LOADER, _TinySVDLoader)
    _TinySVDLoader.calls.clear()
    return _TinySVDLoader


def _run(comfy_nodes, prompt):
    outputs = _validate(prompt)
    assert set(outputs) == _output_nodes(comfy_nodes, prompt)
    executor = prompt_executor(_Server())
    executor.execute(prompt, "workflow-test", {}, outputs)
    errors = [{k: data[k] for k in ("node_type", "exception_message", "traceback")}
              for event, data in executor.status_messages if event == "execution_error"]
    assert executor.success and not errors, json.dumps(errors, indent=1)
    return executor


def _files(pattern):
    return set(glob.glob(pattern))


def _webp_frames(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.n_frames, image.size


def test_reenact_workflow_runs_in_comfyui_executor(comfy_nodes, stand_ins, tiny_loader):
    import folder_paths

    embeddings = os.path.join(folder_paths.get_folder_paths("motion_embeddings")[0], "*.safetensors")
    videos = os.path.join(folder_paths.get_output_directory(), "motion_inversion", "reenact_*.webp")
    before_embeddings, before_videos = _files(embeddings), _files(videos)
    prompt = _tiny_prompt(comfy_nodes, "reenact_svd.json")
    executor = _run(comfy_nodes, prompt)
    assert tiny_loader.calls == ["svd.safetensors"]
    (new_video,) = _files(videos) - before_videos
    assert _webp_frames(new_video) == (4, (64, 64))
    (new_embedding,) = _files(embeddings) - before_embeddings
    loaded = pack_module("motion_core.fileio").load_embedding(new_embedding)
    assert loaded.spatial_tokens.shape == (4, 5, 1024) and not loaded.has_temporal
    assert len(loaded.metadata["loss_history"]) == 2
    (preview,) = _nodes_of(prompt, "PreviewImage")
    assert executor.history_result["outputs"][preview]["images"]


def test_motion_embeddings_workflow_runs_in_comfyui_executor(comfy_nodes, stand_ins, tiny_loader):
    import folder_paths

    embeddings = os.path.join(folder_paths.get_folder_paths("motion_embeddings")[0], "motion_temporal_*.safetensors")
    videos = os.path.join(folder_paths.get_output_directory(), "motion_inversion", "motion_embeddings_*.webp")
    before_embeddings, before_videos = _files(embeddings), _files(videos)
    _run(comfy_nodes, _tiny_prompt(comfy_nodes, "motion_embeddings_svd.json"))
    (new_video,) = _files(videos) - before_videos
    assert _webp_frames(new_video) == (4, (64, 64))
    (new_embedding,) = _files(embeddings) - before_embeddings
    loaded = pack_module("motion_core.fileio").load_embedding(new_embedding)
    assert loaded.has_temporal and loaded.value_embedding and not loaded.has_motion_text
    assert loaded.metadata["debias"] == "none"           # saved raw; debiasing happens downstream
    assert loaded.metadata["layer_preset"] == "widest"


def test_apply_saved_motion_workflow_runs_in_comfyui_executor(comfy_nodes, stand_ins, tiny_loader):
    import folder_paths

    videos = os.path.join(folder_paths.get_output_directory(), "motion_inversion", "apply_*.webp")
    before = _files(videos)
    prompt = _tiny_prompt(comfy_nodes, "apply_saved_motion.json")
    _run(comfy_nodes, prompt)
    new = _files(videos) - before
    assert len(new) == len(_nodes_of(prompt, "SaveAnimatedWEBP")) >= 2
    assert all(_webp_frames(path) == (4, (64, 64)) for path in new)


@pytest.mark.parametrize("class_type,widget,bad", [
    ("MotionInversion_ApplyMotion", "strength", 5.0),
    ("MotionInversion_ApplyMotion", "end_percent", 1.5),
    ("MotionInversion_LoadReferenceVideo", "width", 100000),
    ("MotionInversion_LoadReferenceVideo", "frames", 1),
])
def test_comfyui_validation_refuses_out_of_range_values(comfy_nodes, stand_ins, class_type, widget, bad):
    import execution

    prompt = workflow_to_api_prompt(load_workflow("motion_embeddings_svd.json"), comfy_nodes.NODE_CLASS_MAPPINGS)
    assert set_inputs(prompt, class_type, **{widget: bad})
    _valid, _error, _outputs, node_errors = asyncio.run(execution.validate_prompt("validate", prompt, None))
    assert widget in json.dumps(node_errors, default=str)   # the node is refused (other branches may still run)


def test_toy_workflow_runs_in_comfyui_executor_without_downloads(comfy_nodes):
    """The toy world's workflow with the shipped toy weights: no stand-ins, only fewer steps."""
    prompt = workflow_to_api_prompt(load_workflow("toy_reenact.json"), comfy_nodes.NODE_CLASS_MAPPINGS)
    assert not _nodes_of(prompt, LOADER)                       # nothing to download
    set_inputs(prompt, PACK + "LearnMotionEmbedding", steps=3)
    set_inputs(prompt, "KarrasScheduler", steps=3)
    new_video, score = _run_toy(comfy_nodes, prompt, "toy_*.webp")
    assert _webp_frames(new_video) == (8, (64, 64))
    assert score.startswith("Motion Fidelity Score (moving points)")


def _run_toy(comfy_nodes, prompt, video_pattern):
    """Run a toy workflow's ``prompt``: ``(the one video it saved under output/motion_inversion/, its Motion Fidelity
    Score node's text)``."""
    import folder_paths

    videos = os.path.join(folder_paths.get_output_directory(), "motion_inversion", video_pattern)
    before = _files(videos)
    executor = _run(comfy_nodes, prompt)
    (new_video,) = _files(videos) - before
    (score_node,) = _nodes_of(prompt, PACK + "MotionFidelityScore")
    (text,) = executor.history_result["outputs"][score_node]["text"]
    return new_video, text


def test_learn_refuses_a_clip_vision_of_the_wrong_width(comfy_nodes):
    from test_host_motion_text import _learn

    with pytest.raises(ValueError, match="512-wide image embeddings.*takes 1024"):
        _learn(comfy_nodes, clip_vision=_tiny_clip_vision(512))
    embedding = _learn(comfy_nodes, steps=1, clip_vision=_tiny_clip_vision(1024)).result[0]
    assert embedding.metadata["init"] == "clip_image_embeds"


def test_toy_wan_workflow_runs_as_shipped_and_scores_its_video(comfy_nodes):
    """toy_wan_motion.json on the shipped toy Wan model (steps lowered): Learn on the reference clip's caption,
    the target's caption as the prompt, its first frame kept, a 13-frame video saved and scored."""
    prompt = workflow_to_api_prompt(load_workflow(TOY_WAN_WORKFLOW), comfy_nodes.NODE_CLASS_MAPPINGS)
    set_inputs(prompt, PACK + "LearnMotionEmbedding", steps=2)
    set_inputs(prompt, "BasicScheduler", steps=2)
    (learn,) = _nodes_of(prompt, PACK + "LearnMotionEmbedding")
    assert _source(prompt, _source(prompt, learn, "positive")[1], "text")[0] == PACK + "ToyMotionClip"
    (guider,) = _nodes_of(prompt, "CFGGuider")
    assert _source(prompt, _source(prompt, guider, "positive")[1], "text")[0] == PACK + "ToyTargetImage"
    assert _model_chain(prompt, guider) == [PACK + "ApplyMotion", PACK + "LoadToyWanModel"]
    new_video, score = _run_toy(comfy_nodes, prompt, "toy_wan_*.webp")
    assert _webp_frames(new_video) == (13, (64, 64))
    assert score.startswith("Motion Fidelity Score (moving points): ")
    # the demo's own conversion of the UI workflow gives the same prompt (python -m motion_core demo --model wan_toy)
    wan_demo = importlib.import_module(pack_module("motion_core").__name__ + ".toy.wan_demo")
    converted = wan_demo.api_prompt(load_workflow(TOY_WAN_WORKFLOW))
    shipped = workflow_to_api_prompt(load_workflow(TOY_WAN_WORKFLOW), comfy_nodes.NODE_CLASS_MAPPINGS)
    assert {k: (v["class_type"], v["inputs"]) for k, v in converted.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in shipped.items()}
