"""The tree shows the architecture: the method never imports the toy world or ComfyUI, the toy
world and its nodes live in their own folders, and no file outgrows ~600 lines."""
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_MODULES = ("comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes")
MAX_LINES = 600


def _method_modules() -> list[str]:
    """Every module of the method: motion_core's top level, not its toy subpackage."""
    folder = os.path.join(ROOT, "motion_core")
    return sorted(name[:-3] for name in os.listdir(folder) if name.endswith(".py") and name != "__main__.py")


def _imports(path: str) -> list[str]:
    """Absolute names of every import in ``path`` (relative ones resolved inside motion_core)."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def test_the_method_imports_no_toy_module():
    offenders = {}
    for module in _method_modules():
        path = os.path.join(ROOT, "motion_core", module + ".py")
        toy = [name for name in _imports(path) if name.startswith("motion_core.toy")]
        if toy:
            offenders[module] = toy
    assert not offenders, offenders


def test_importing_the_method_loads_neither_the_toy_world_nor_comfyui():
    modules = ", ".join(f"motion_core.{m}" for m in _method_modules() if m != "__init__")
    code = (f"import sys, {modules}\n"
            "bad = [m for m in sys.modules if m.startswith('motion_core.toy') or m.split('.')[0] in "
            f"{HOST_MODULES!r}]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_toy_world_imports_no_comfyui():
    folder = os.path.join(ROOT, "motion_core", "toy")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            host = [n for n in _imports(os.path.join(folder, name)) if n.split(".")[0] in HOST_MODULES]
            assert not host, (name, host)


def test_toy_nodes_live_in_their_own_folder():
    for name in os.listdir(os.path.join(ROOT, "nodes")):
        if name.endswith(".py"):
            assert "toy" not in name, f"nodes/{name}: toy nodes belong in nodes/toy/"
            toy = [n for n in _imports(os.path.join(ROOT, "nodes", name))
                   if n.startswith("nodes.toy") and name != "__init__.py"]
            assert not toy, (name, toy)


def test_no_file_over_600_lines_outside_docs_and_weights():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        import pytest
        pytest.skip("not a git checkout")
    long = {}
    for path in listed.stdout.splitlines():
        if path.startswith("docs/") or "/weights/" in path or path.endswith(("package-lock.json", ".png", ".webp",
                                                                                ".webm", ".safetensors")):
            continue
        full = os.path.join(ROOT, path)
        if not os.path.isfile(full):
            continue
        with open(full, "rb") as fh:
            count = fh.read().count(b"\n")
        if count > MAX_LINES:
            long[path] = count
    assert not long, long


def test_only_workflows_uses_one_of_comfyuis_template_folder_names():
    """ComfyUI 0.3.64 serves a pack's templates from the first existing folder of these names
    (app/custom_node_manager.py); a second one (an ``examples/`` of input files, say) would take
    the URL of ``workflows/`` and the template browser could not open our workflows."""
    template_folders = ["example_workflows", "example", "examples", "workflow", "workflows"]
    present = [name for name in template_folders if os.path.isdir(os.path.join(ROOT, name))]
    assert present == ["workflows"], present
