"""What the Comfy Registry reads: pyproject.toml's [project] and [tool.comfy], the icon, the publish workflow."""
import os
import re

import cv2
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPOSITORY = "https://github.com/motion-inversion/comfyui-motion-inversion"


@pytest.fixture(scope="module")
def pyproject():
    try:
        import tomllib
    except ImportError:                                   # Python 3.10
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)


def test_project_metadata_for_the_registry_page(pyproject):
    project = pyproject["project"]
    assert len(project["description"]) > 40 and "motion" in project["description"].lower()
    assert project["license"] == {"file": "LICENSE"} and os.path.isfile(os.path.join(ROOT, "LICENSE"))
    assert project["urls"]["Repository"] == REPOSITORY
    assert all(url.startswith(REPOSITORY) for url in project["urls"].values())
    assert len(project["keywords"]) >= 3 and "comfyui" in project["keywords"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    # the Registry takes supported systems / accelerators from these prefixes (comfy_config.config_parser)
    assert any(c.startswith("Operating System :: ") for c in project["classifiers"])
    assert any(c.startswith("Environment :: GPU :: ") for c in project["classifiers"])


def test_icon_is_a_small_square_png_in_the_repository(pyproject):
    comfy = pyproject["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    prefix = REPOSITORY.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/"
    assert comfy["Icon"].startswith(prefix), comfy["Icon"]
    path = os.path.join(ROOT, comfy["Icon"][len(prefix):])
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert image is not None, f"{path} is not a readable image"
    assert image.shape[0] == image.shape[1] <= 400 and os.path.getsize(path) < 100_000
    assert float(image.std()) > 10, "the icon is blank"


def test_publish_workflow_runs_the_registry_action_on_pyproject_changes():
    path = os.path.join(ROOT, ".github", "workflows", "publish.yml")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(text)
    triggers = workflow[True] if True in workflow else workflow["on"]      # YAML 1.1 reads `on` as True
    assert triggers["push"]["branches"] == ["main"] and triggers["push"]["paths"] == ["pyproject.toml"]
    assert "workflow_dispatch" in triggers
    (job,) = workflow["jobs"].values()
    steps = {step.get("uses", "").split("@")[0]: step for step in job["steps"]}
    assert "actions/checkout" in steps
    publish = steps["Comfy-Org/publish-node-action"]
    assert publish["with"]["personal_access_token"] == "${{ secrets.REGISTRY_ACCESS_TOKEN }}"


def test_registry_and_readme_name_the_same_tested_comfyui_range(pyproject):
    """requires-comfyui is the range CI tests, and the README says the same to users."""
    specifier = pyproject["tool"]["comfy"]["requires-comfyui"]
    match = re.fullmatch(r">=(\d+\.\d+\.\d+),<(\d+)\.(\d+)", specifier)
    assert match, specifier
    oldest, below_major, below_minor = match.groups()
    newest = f"{below_major}.{int(below_minor) - 1}"
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert f"ComfyUI {oldest} to {newest} (tested)" in readme
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as fh:
        ci = fh.read()
    assert "../shared/comfyui " in ci and "../shared/comfyui-" + newest in ci
