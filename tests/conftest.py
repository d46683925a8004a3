import pytest

from host_support import comfy_path, start_comfy


@pytest.fixture(scope="session")
def comfy_nodes():
    """ComfyUI's ``nodes`` module with this pack loaded; skips cleanly without COMFYUI_PATH."""
    if comfy_path() is None:
        pytest.skip("needs a real ComfyUI: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    return start_comfy()
