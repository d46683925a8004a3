import pytest
import torch

from host_support import comfy_path, start_comfy


@pytest.fixture(scope="session")
def comfy_nodes():
    """ComfyUI's ``nodes`` module with this pack loaded; skips cleanly without COMFYUI_PATH."""
    if comfy_path() is None:
        pytest.skip("needs a real ComfyUI: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    return start_comfy()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for CPU-heavy test modules: 2 threads on 2 shared cores slow down many-fold."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
