import os

import pytest
import torch

from host_support import ade_path, comfy_path, host_required, start_comfy, tree_state


def need_host(reason: str):
    """Skip for want of the host, or fail where the host is required (MI_REQUIRE_HOST=1, CI's second pass)."""
    if host_required():
        pytest.fail(f"MI_REQUIRE_HOST=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def comfy_nodes():
    """ComfyUI's ``nodes`` module with this pack loaded; skips cleanly without COMFYUI_PATH."""
    if comfy_path() is None:
        need_host("needs a real ComfyUI: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Development')")
    return start_comfy()


@pytest.fixture(scope="session", autouse=True)
def comfy_tree_untouched():
    """Tests never write into the ComfyUI tree or the AnimateDiff-Evolved source loaded beside the pack (CI's
    copies are read-only): their files are the same at the end."""
    roots = [root for root in (comfy_path(), ade_path()) if root is not None]
    before = {root: tree_state(root) for root in roots}
    yield
    for root in roots:
        changed = sorted(set(before[root].items()) ^ set(tree_state(root).items()))
        assert not changed, f"the tests wrote into {root}: {[path for path, _ in changed][:10]}"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for CPU-heavy test modules: 2 threads on 2 shared cores slow down many-fold."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


HOST_FIXTURES = {"comfy_nodes", "server", "servers"}   # the tests that run inside a real ComfyUI use one of these


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs the host ``host``: CI's passes against each ComfyUI run ``-m host``."""
    for item in items:
        if HOST_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.host)
