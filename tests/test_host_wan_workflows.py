"""The Wan workflows (``workflows/wan_*.json``) against a real ComfyUI.

The checks every workflow gets (links, slots, values, validation) are in
``test_host_workflows.py``; here: the downloads their loaders declare, what feeds what, and a
run of each by ComfyUI's ``PromptExecutor`` with stand-in loaders, shrunk to 9 frames at 64 x 64:

- UNETLoader -> ComfyUI's own Wan model (``model_base.WAN21`` / ``WAN22``), tiny (``TINY_WAN``);
- CLIPLoader -> a real ``comfy.sd.CLIP`` made by ComfyUI's Wan text-encoder classes
  (``comfy.text_encoders.wan``: UMT5 and its tokenizer) at a tiny size: a 32-wide, 2-layer UMT5
  (``umt5xxl_model_config``) and a SentencePiece model (under 200 pieces) trained here on the
  workflows' prompts, so CLIP Text Encode gives (1, 512, 32) conditioning, as wide as the tiny
  Wan's text_dim;
- VAELoader -> ComfyUI's Wan 2.1 / 2.2 VAE at full size with random weights.
"""
import io
import os

import pytest
import torch

from host_support import build_tiny_wan, build_wan22_vae, build_wan_vae, pack_module
from test_host_workflows import (PACK, WAN_WORKFLOWS, _files, _model_chain, _nodes_of, _run, _source,
                                 _webp_frames, stand_ins)  # noqa: F401  (stand_ins: a fixture)
from workflow_support import load_workflow, set_inputs, workflow_to_api_prompt

LOADERS = {"UNETLoader": "diffusion_models", "CLIPLoader": "text_encoders", "VAELoader": "vae"}
HUB = "https://huggingface.co/Comfy-Org/"
# what ComfyUI's own templates load (comfyui_workflow_templates: text_to_video_wan, video_wan2_2_5B_ti2v)
MODELS = {"wan_t2v_motion.json": {"wan2.1_t2v_1.3B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                  "wan_2.1_vae.safetensors"},
          "wan_i2v_motion.json": {"wan2.2_ti2v_5B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                  "wan2.2_vae.safetensors"}}
TEST_LOADERS = {"UNETLoader": "MotionInversionTest_TinyWanLoader", "CLIPLoader": "MotionInversionTest_TinyUMT5Loader",
                "VAELoader": "MotionInversionTest_WanVAELoader"}
FRAMES, SIDE = 9, 64


# ------------------------------------------------------------------ static checks
@pytest.mark.parametrize("name", WAN_WORKFLOWS)
def test_wan_loaders_declare_their_downloads(comfy_nodes, name):
    chosen = set()
    for node in load_workflow(name)["nodes"]:
        if node["type"] not in LOADERS:
            continue
        file_name = node["widgets_values"][0]
        models = {m["name"]: m for m in node["properties"]["models"]}
        assert file_name in models and models[file_name]["directory"] == LOADERS[node["type"]]
        assert models[file_name]["url"].startswith(HUB) and models[file_name]["url"].endswith("/" + file_name)
        chosen.add(file_name)
    assert chosen == MODELS[name]
    (clip,) = [n for n in load_workflow(name)["nodes"] if n["type"] == "CLIPLoader"]
    assert clip["widgets_values"][1] == "wan"


def _check_motion_chain(prompt, new_latent):
    """Learn (temporal) -> Debias -> Apply Motion -> CFGGuider, Reference Noise -> SamplerCustomAdvanced,
    with the reference prompt explaining the clip and a new prompt guiding the video."""
    (learn,) = _nodes_of(prompt, PACK + "LearnMotionEmbedding")
    assert {k: prompt[learn]["inputs"][k] for k in ("representation", "loss", "layers", "steps")} == {
        "representation": "temporal", "loss": "appearance_debiased", "layers": "spread", "steps": 1000}
    assert _model_chain(prompt, learn) == ["ModelSamplingSD3", "UNETLoader"]
    assert prompt[_source(prompt, learn, "model")[1]]["inputs"]["shift"] == 8
    explain_type, explain, _slot = _source(prompt, learn, "positive")
    assert explain_type == "CLIPTextEncode" and _source(prompt, explain, "clip")[0] == "CLIPLoader"
    (video,) = _nodes_of(prompt, PACK + "LoadReferenceVideo")
    assert _source(prompt, learn, "reference_frames")[1] == video and _source(prompt, learn, "vae")[0] == "VAELoader"
    (debias,) = _nodes_of(prompt, PACK + "DebiasValueEmbedding")
    assert prompt[debias]["inputs"]["mode"] == "difference" and _source(prompt, debias, "motion_embedding")[1] == learn
    (apply,) = _nodes_of(prompt, PACK + "ApplyMotion")
    assert prompt[apply]["inputs"]["strength"] == 1 and _source(prompt, apply, "motion_embedding")[1] == debias
    (sampler,) = _nodes_of(prompt, "SamplerCustomAdvanced")
    guider_type, guider, _slot = _source(prompt, sampler, "guider")
    assert guider_type == "CFGGuider"
    assert _model_chain(prompt, guider) == [PACK + "ApplyMotion", "ModelSamplingSD3", "UNETLoader"]
    new_type, new, _slot = _source(prompt, guider, "positive")
    assert new_type == "CLIPTextEncode" and new != explain
    assert prompt[new]["inputs"]["text"] != prompt[explain]["inputs"]["text"]
    assert _source(prompt, guider, "negative")[1] not in (new, explain)
    noise_type, noise, _slot = _source(prompt, sampler, "noise")
    assert noise_type == PACK + "ReferenceNoise" and prompt[noise]["inputs"]["prior"] == 0.5
    assert _source(prompt, noise, "motion_embedding")[1] == learn          # inverted like the Learn run
    assert _source(prompt, noise, "positive")[1] == explain
    assert _source(prompt, noise, "reference_frames")[1] == video
    assert _source(prompt, noise, "sigmas")[1] == _source(prompt, sampler, "sigmas")[1]
    (scheduler,) = _nodes_of(prompt, "BasicScheduler")
    assert _model_chain(prompt, scheduler) == ["ModelSamplingSD3", "UNETLoader"]
    assert prompt[scheduler]["inputs"]["scheduler"] == "simple"
    assert prompt[_source(prompt, sampler, "sampler")[1]]["inputs"]["sampler_name"] == "uni_pc"
    assert _source(prompt, sampler, "latent_image")[0] == new_latent
    (webp,) = _nodes_of(prompt, "SaveAnimatedWEBP")
    _cls, decode, _slot = _source(prompt, webp, "images")
    assert _source(prompt, decode, "samples")[1] == sampler and _source(prompt, decode, "vae")[0] == "VAELoader"
    assert len(_nodes_of(prompt, "UNETLoader")) == len(_nodes_of(prompt, "ModelSamplingSD3")) == 1
    return dict(learn=learn, video=video, guider=guider, scheduler=scheduler, webp=webp)


def test_wan_t2v_workflow_learns_temporal_and_samples_a_new_prompt(comfy_nodes):
    """As ComfyUI's Wan 2.1 text-to-video template: 832 x 480 x 81, uni_pc / simple, 30 steps, CFG 6, 16 fps."""
    prompt = workflow_to_api_prompt(load_workflow("wan_t2v_motion.json"), comfy_nodes.NODE_CLASS_MAPPINGS)
    found = _check_motion_chain(prompt, "EmptyHunyuanLatentVideo")
    (latent,) = _nodes_of(prompt, "EmptyHunyuanLatentVideo")
    assert [prompt[latent]["inputs"][k] for k in ("width", "height", "length")] == [832, 480, 81]
    assert [prompt[found["video"]]["inputs"][k] for k in ("width", "height")] == [832, 480]
    assert prompt[found["guider"]]["inputs"]["cfg"] == 6 and prompt[found["scheduler"]]["inputs"]["steps"] == 30
    assert prompt[found["webp"]]["inputs"]["fps"] == 16
    assert not _nodes_of(prompt, "LoadImage")


def test_wan_i2v_workflow_animates_the_target_image_with_wan22_5b(comfy_nodes):
    """As ComfyUI's Wan 2.2 TI2V 5B template: the image in Wan22ImageToVideoLatent, 1280 x 704 x 121,
    uni_pc / simple, 20 steps, CFG 5, 24 fps; Learn's positive is the text prompt alone."""
    prompt = workflow_to_api_prompt(load_workflow("wan_i2v_motion.json"), comfy_nodes.NODE_CLASS_MAPPINGS)
    found = _check_motion_chain(prompt, "Wan22ImageToVideoLatent")
    (latent,) = _nodes_of(prompt, "Wan22ImageToVideoLatent")
    assert [prompt[latent]["inputs"][k] for k in ("width", "height", "length")] == [1280, 704, 121]
    assert _source(prompt, latent, "start_image")[0] == "LoadImage" and _source(prompt, latent, "vae")[0] == "VAELoader"
    assert [prompt[found["video"]]["inputs"][k] for k in ("width", "height")] == [1280, 704]
    assert prompt[found["guider"]]["inputs"]["cfg"] == 5 and prompt[found["scheduler"]]["inputs"]["steps"] == 20
    assert prompt[found["webp"]]["inputs"]["fps"] == 24
    (unet,) = _nodes_of(prompt, "UNETLoader")
    assert prompt[unet]["inputs"]["unet_name"] == "wan2.2_ti2v_5B_fp16.safetensors"


@pytest.mark.parametrize("name", WAN_WORKFLOWS)
def test_wan_workflows_learn_on_frames_the_example_clip_has(comfy_nodes, name):
    """The example clip has 14 frames: the workflows take 13 (1 + 4k, Wan's VAE) and open ready to run."""
    from scripts import make_examples

    prompt = workflow_to_api_prompt(load_workflow(name), comfy_nodes.NODE_CLASS_MAPPINGS)
    (video,) = _nodes_of(prompt, PACK + "LoadReferenceVideo")
    frames = prompt[video]["inputs"]["frames"]
    assert prompt[video]["inputs"]["video"] == make_examples.REFERENCE_NAME
    assert frames <= make_examples.FRAMES and (frames - 1) % 4 == 0
    assert pack_module("nodes.hooks.wan").usable_frames(frames) == frames


# full-size Wan (ComfyUI's WanModel, built on the meta device), the pixels per token side, and the own clip's
# frames and learn_scale the notes quote besides the shipped settings, and the card (GB) the own clip is planned on
FULL_SIZE = {"wan_t2v_motion.json": (dict(dim=1536, ffn_dim=8960, num_heads=12, in_dim=16, out_dim=16), 16, 81, 0.5, 8),
             "wan_i2v_motion.json": (dict(dim=3072, ffn_dim=14336, num_heads=24, in_dim=48, out_dim=48), 32, 121, 0.75,
                                     24)}


def _planned_gib(model, stride, width, height, frames, preset, scale=1.0, card=None):
    """Learn's plan on Wan (``plan_wan``) for a full-size model in bfloat16 with checkpointing, in GiB; on a ``card``
    of that many GiB, with what Learn keeps in CPU memory to fit it."""
    layers_module, plan_module = pack_module("motion_core.layers"), pack_module("motion_core.memory_plan")
    token_height, token_width = int(height * scale) // stride, int(width * scale) // stride
    latent_frames = pack_module("nodes.hooks.wan").latent_frames(frames)
    layout = {f"block.{i:02d}": {"channels": model.dim, "height": token_height, "width": token_width}
              for i in range(len(model.blocks))}
    layers = layers_module.select_layers(layout, preset)
    shape = plan_module.WanLearnShape(
        frames=latent_frames, token_height=token_height, token_width=token_width, dim=model.dim,
        ffn_dim=model.blocks[0].ffn[0].out_features, blocks=len(model.blocks),
        learned=layers_module.embedding_cost(layers, latent_frames)["parameters"], checkpointing=True,
        dtype="bfloat16", weight_bytes=2.0 * sum(p.numel() for p in model.parameters()), heads=model.num_heads)
    if card:
        shape = plan_module.keep_in_cpu_memory(shape, card * plan_module.GIB * plan_module.USABLE_FRACTION)
    return plan_module.plan_wan(shape).total / plan_module.GIB


@pytest.mark.parametrize("name", WAN_WORKFLOWS)
def test_wan_learning_notes_quote_learns_memory_plan(comfy_nodes, name):
    """The memory the learning note gives is what Learn plans, as shipped and for an own clip at Wan's length."""
    import comfy.ldm.wan.model
    import comfy.ops

    config, stride, own_frames, scale, card = FULL_SIZE[name]
    with torch.device("meta"):
        model = comfy.ldm.wan.model.WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=512, text_dim=4096,
                                             freq_dim=256, num_layers=30, window_size=(-1, -1), qk_norm=True,
                                             cross_attn_norm=True, eps=1e-6, operations=comfy.ops.disable_weight_init,
                                             **config)
    workflow = load_workflow(name)
    prompt = workflow_to_api_prompt(workflow, comfy_nodes.NODE_CLASS_MAPPINGS)
    (video,) = _nodes_of(prompt, PACK + "LoadReferenceVideo")
    (learn,) = _nodes_of(prompt, PACK + "LearnMotionEmbedding")
    width, height, frames = (prompt[video]["inputs"][k] for k in ("width", "height", "frames"))
    preset = prompt[learn]["inputs"]["layers"]
    assert prompt[learn]["inputs"]["learn_scale"] == 1.0 and prompt[learn]["inputs"]["activation_checkpointing"]
    (note,) = [n["widgets_values"][0] for n in workflow["nodes"] if n.get("title") == "Note: learning"]
    quoted = {"as shipped": _planned_gib(model, stride, width, height, frames, preset),
              "own clip": _planned_gib(model, stride, width, height, own_frames, preset),
              "own clip, smaller": _planned_gib(model, stride, width, height, own_frames, preset, scale),
              "own clip, all blocks": _planned_gib(model, stride, width, height, own_frames, "all")}
    missing = {what: f"{gib:.1f} GiB" for what, gib in quoted.items() if f"{gib:.1f} GiB" not in note}
    assert not missing, f"the note does not give Learn's plan {missing}: {note}"
    assert f"{own_frames} frames" in note and f"learn_scale {scale}" in note
    on_card = _planned_gib(model, stride, width, height, own_frames, preset, card=card)
    assert on_card < quoted["own clip"] and f"{on_card:.1f} GiB on {'an' if card == 8 else 'a'} {card} GB card" in note, note


# ------------------------------------------------------------------ stand-in loaders
def _spiece_model(texts) -> bytes:
    """A SentencePiece model (UMT5's special ids: pad 0, end 1, unknown 2) trained on ``texts``."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=200, hard_vocab_limit=False,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2)
    return model.getvalue()


def _workflow_texts():
    return [node["widgets_values"][0] for name in WAN_WORKFLOWS for node in load_workflow(name)["nodes"]
            if node["type"] == "CLIPTextEncode"]


def tiny_umt5_clip(seed: int = 0):
    """A real ``comfy.sd.CLIP`` of ComfyUI's Wan text encoder and tokenizer, 32 wide and 2 layers deep."""
    import sentencepiece

    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.wan

    proto = _spiece_model(_workflow_texts())
    pieces = sentencepiece.SentencePieceProcessor(model_proto=proto).get_piece_size()
    config = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2, "vocab_size": pieces}
    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.wan.WanT5Tokenizer, comfy.text_encoders.wan.te())
    clip = comfy.sd.CLIP(target=target, tokenizer_data={"spiece_model": torch.ByteTensor(list(proto))},
                         model_options={"umt5xxl_model_config": config})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():                      # comfy ops skip weight init
        for pname, param in clip.cond_stage_model.named_parameters():
            if param.ndim == 0:
                continue
            if pname.endswith("layer_norm.weight"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
    return clip


def test_the_text_encoder_stand_in_is_comfyuis_wan_umt5_at_the_tiny_wans_width(comfy_nodes):
    import comfy.text_encoders.t5
    import comfy.text_encoders.wan

    clip = tiny_umt5_clip()
    assert isinstance(clip.tokenizer, comfy.text_encoders.wan.WanT5Tokenizer)
    assert isinstance(clip.cond_stage_model.umt5xxl.transformer, comfy.text_encoders.t5.T5)
    text = next(t for t in _workflow_texts() if t.startswith("A flat"))
    encoded = comfy_nodes.NODE_CLASS_MAPPINGS["CLIPTextEncode"]().encode(clip, text)
    tokens = (encoded[0] if isinstance(encoded, tuple) else encoded.result[0])[0][0]
    ids = [token for token, _weight in clip.tokenize(text)["umt5xxl"][0]]
    used = sum(1 for token in ids if token != 0)                          # the text and its end token
    assert len(ids) == 512 and ids[used - 1] == 1 and 10 < used < 512
    assert tokens.shape == (1, 512, 32) and torch.isfinite(tokens).all()
    assert tokens[0, :used].abs().sum(-1).gt(0).all() and not tokens[0, used:].any()   # padding zeroed, as for Wan


def _stand_in(loader, inputs, build):
    class StandIn:
        calls = []
        RETURN_TYPES = (loader.RETURN_TYPES[0],)
        FUNCTION = "load"
        CATEGORY = "testing"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {name: ("STRING", {"default": ""}) for name in inputs}}

        def load(self, **values):
            self.calls.append(values[inputs[0]])
            return (build(values),)
    return StandIn


@pytest.fixture
def wan_loaders(comfy_nodes, monkeypatch):
    """Test-only stand-ins for the Wan workflows' three loaders; each records the file it was asked for."""
    mappings = comfy_nodes.NODE_CLASS_MAPPINGS
    unet = _stand_in(mappings["UNETLoader"], ["unet_name", "weight_dtype"],
                     lambda v: build_tiny_wan("ti2v" if v["unet_name"].startswith("wan2.2_ti2v") else "t2v"))
    clip = _stand_in(mappings["CLIPLoader"], ["clip_name", "type", "device"], lambda v: tiny_umt5_clip())
    vae = _stand_in(mappings["VAELoader"], ["vae_name"],
                    lambda v: build_wan22_vae() if v["vae_name"] == "wan2.2_vae.safetensors" else build_wan_vae())
    stand_ins = {"UNETLoader": unet, "CLIPLoader": clip, "VAELoader": vae}
    for class_type, test_type in TEST_LOADERS.items():
        monkeypatch.setitem(mappings, test_type, stand_ins[class_type])
    return stand_ins


def _tiny_wan_prompt(comfy_nodes, name):
    prompt = workflow_to_api_prompt(load_workflow(name), comfy_nodes.NODE_CLASS_MAPPINGS)
    for class_type, test_type in TEST_LOADERS.items():
        for node_id in _nodes_of(prompt, class_type):
            prompt[node_id]["class_type"] = test_type
    shrink = {PACK + "LoadReferenceVideo": dict(frames=FRAMES, width=SIDE, height=SIDE),
              PACK + "LearnMotionEmbedding": dict(steps=2),         # spread: both of the tiny Wan's 2 blocks
              PACK + "ReferenceNoise": dict(inversion_steps=2),
              "EmptyHunyuanLatentVideo": dict(width=SIDE, height=SIDE, length=FRAMES),
              "Wan22ImageToVideoLatent": dict(width=SIDE, height=SIDE, length=FRAMES),
              "BasicScheduler": dict(steps=2)}
    for class_type, values in shrink.items():
        if _nodes_of(prompt, class_type):
            set_inputs(prompt, class_type, **values)
    return prompt


@pytest.mark.parametrize("name,variant", [("wan_t2v_motion.json", "Wan T2V"), ("wan_i2v_motion.json", "Wan 2.2 TI2V")])
def test_wan_workflow_runs_in_comfyui_executor(comfy_nodes, stand_ins, wan_loaders, one_thread, name, variant):
    import folder_paths

    save = next(n for n in load_workflow(name)["nodes"] if n["type"] == PACK + "SaveMotionEmbedding")
    embeddings = os.path.join(folder_paths.get_folder_paths("motion_embeddings")[0],
                              save["widgets_values"][0] + "_*.safetensors")
    videos = os.path.join(folder_paths.get_output_directory(), "motion_inversion", name[:-5] + "_*.webp")
    before_embeddings, before_videos = _files(embeddings), _files(videos)
    prompt = _tiny_wan_prompt(comfy_nodes, name)
    executor = _run(comfy_nodes, prompt)
    assert {wan_loaders[t].calls[-1] for t in LOADERS} == MODELS[name]      # each loader asked for its file
    (new_video,) = _files(videos) - before_videos
    assert _webp_frames(new_video) == (FRAMES, (SIDE, SIDE))
    (new_embedding,) = _files(embeddings) - before_embeddings
    loaded = pack_module("motion_core.fileio").load_embedding(new_embedding)
    assert loaded.has_temporal and loaded.value_embedding and not loaded.has_motion_text
    assert loaded.metadata["model_family"] == "wan" and loaded.metadata["model_variant"] == variant
    assert sorted(loaded.metadata["layers"]) == ["block.00", "block.01"]
    assert loaded.metadata["debias"] == "none" and loaded.metadata["video_frames"] == FRAMES
    assert len(loaded.metadata["loss_history"]) == 2
    (preview,) = _nodes_of(prompt, "PreviewImage")
    assert executor.history_result["outputs"][preview]["images"]
