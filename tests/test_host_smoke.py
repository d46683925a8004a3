"""The pack inside a real ComfyUI: loading and registration."""
from host_support import pack_module

EXPECTED = {
    "MotionInversion_LoadReferenceVideo": "Load Reference Video",
    "MotionInversion_LearnMotionEmbedding": "Learn Motion Embedding",
    "MotionInversion_DebiasValueEmbedding": "Debias Value Embedding",
    "MotionInversion_InflateSVDConditioning": "Inflate SVD Conditioning",
    "MotionInversion_ApplyMotion": "Apply Motion",
    "MotionInversion_SaveMotionEmbedding": "Save Motion Embedding",
    "MotionInversion_LoadMotionEmbedding": "Load Motion Embedding",
    "MotionInversion_GatherReferenceClips": "Gather Reference Clips",
    "MotionInversion_BlendMotionEmbeddings": "Blend Motion Embeddings",
}


def test_pack_registers_every_node_with_tooltips(comfy_nodes):
    for node_id, display in EXPECTED.items():
        assert node_id in comfy_nodes.NODE_CLASS_MAPPINGS, node_id
        assert comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == display
        info = comfy_nodes.NODE_CLASS_MAPPINGS[node_id].GET_NODE_INFO_V1()
        assert info["description"], f"{node_id} has no description"
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(info["output_tooltips"]), f"{node_id} has an output without tooltip"


def test_web_directory_is_served(comfy_nodes):
    assert any(path.endswith("web") for path in comfy_nodes.EXTENSION_WEB_DIRS.values())


def test_model_hooks_module_is_the_loaded_pack(comfy_nodes):
    hooks = pack_module("nodes.hooks.svd")
    assert hooks.HOOK_KEY == "motion_inversion"
