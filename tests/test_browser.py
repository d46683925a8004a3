"""The shipped workflows in ComfyUI's real frontend, in Debian's headless Chromium.

Starts ``main.py`` of the ComfyUI at ``COMFYUI_PATH`` on 127.0.0.1 with this pack (and
AnimateDiff-Evolved beside it, when its source is found: ``host_support.ade_path``) as its custom
node packs and every folder it writes (input, output, temp, user, models, custom_nodes)
in a temporary directory (``--base-directory``), then drives the page with
``tests/browser/run_workflows.mjs`` (playwright-core from ``tests/browser/node_modules``,
pointed at ``/usr/bin/chromium``; it never downloads a browser). Screenshots go to the
test's temporary folder and their paths are printed.

Queued from the page, the two toy workflows (``toy_reenact.json`` on the SVD toy,
``toy_wan_motion.json`` on the Wan toy) run one after the other with their Learn steps lowered
to ``MI_BROWSER_LEARN_STEPS`` (default 12, at least 30 on the quicker Wan toy; the workflows'
own take minutes on 2 cores) and their sampler steps to 3: enough to see the live curve grow,
the summaries and the video.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from host_support import PACK_DIR_NAME, REPO_ROOT, ade_path, comfy_path, comfy_server, get_json
from workflow_support import FRONTEND_ONLY, WORKFLOW_DIR, workflow_names

BROWSER_DIR = os.path.join(REPO_ROOT, "tests", "browser")
CHROMIUM = os.environ.get("MI_CHROMIUM", "/usr/bin/chromium")
LEARN_STEPS = int(os.environ.get("MI_BROWSER_LEARN_STEPS", "12"))
SAMPLER_STEPS = 3
TOY = "toy_reenact.json"
TOY_WAN = "toy_wan_motion.json"
TOYS = (TOY, TOY_WAN)      # the workflows whose files the pack ships: they load clean and run
# Learn steps per toy run: the Wan toy's steps are quicker, so more of them give the page time to draw the live curve
RUN_STEPS = {TOY: LEARN_STEPS, TOY_WAN: max(LEARN_STEPS, 30)}
# Files the shipped workflows name that the test server lacks: the model files (downloads) and the
# embedding reenact_svd.json saves for apply_saved_motion.json.
DOWNLOADS = {  # per workflow, the files its Missing Models dialog (or 1.49's panel) must offer
    "reenact_svd.json": {"svd.safetensors"}, "apply_saved_motion.json": {"svd.safetensors"},
    "motion_embeddings_svd.json": {"svd.safetensors"},
    "wan_t2v_motion.json": {"wan2.1_t2v_1.3B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                            "wan_2.1_vae.safetensors"},
    "wan_i2v_motion.json": {"wan2.2_ti2v_5B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                            "wan2.2_vae.safetensors"},
    "animatediff_motion.json": {"v1-5-pruned-emaonly-fp16.safetensors", "mm_sd15_v2.safetensors"},
    TOY: set(), TOY_WAN: set(),
}
MISSING_HERE = {"ckpt_name=svd.safetensors", "embedding=motion_00001.safetensors",
                "unet_name=wan2.1_t2v_1.3B_fp16.safetensors", "unet_name=wan2.2_ti2v_5B_fp16.safetensors",
                "clip_name=umt5_xxl_fp8_e4m3fn_scaled.safetensors", "vae_name=wan_2.1_vae.safetensors",
                "vae_name=wan2.2_vae.safetensors", "ckpt_name=v1-5-pruned-emaonly-fp16.safetensors",
                "model_name=mm_sd15_v2.safetensors"}


def _missing_tools() -> str | None:
    if comfy_path() is None:
        return "needs a real ComfyUI: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Development')"
    if ade_path() is None:
        return ("needs AnimateDiff-Evolved's source for animatediff_motion.json: put it beside the ComfyUI tree "
                "(../shared/animatediff-evolved-1.5.x) or set ADE_PATH")
    if not os.access(CHROMIUM, os.X_OK):
        return f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium, or set MI_CHROMIUM)"
    if shutil.which("node") is None:
        return "needs Node.js (apt-get install nodejs npm)"
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return "needs playwright-core: npm ci --prefix tests/browser"
    return None


def _get(url: str, timeout: float = 10.0):
    return get_json(url, timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ComfyUI server with this pack (and AnimateDiff-Evolved, for animatediff_motion.json), on 127.0.0.1;
    yields ``(url, base directory)``. Its settings give screenshots every node's text, even zoomed out, and no
    tutorial."""
    from conftest import need_host

    missing = _missing_tools()
    if missing:
        need_host(missing)
    base = tmp_path_factory.mktemp("comfy_server")
    settings = {"LiteGraph.Canvas.MinFontSizeForLOD": 1, "Comfy.TutorialCompleted": True}
    with comfy_server(base, with_ade=True, settings=settings) as (url, _process):
        yield url, base


def test_pack_loaded_and_its_workflows_are_templates(server):
    url, base = server
    log = (base / "server.log").read_text()
    assert "IMPORT FAILED" not in log or PACK_DIR_NAME not in log.split("IMPORT FAILED", 1)[1][:300], log[-3000:]
    templates = _get(url + "/api/workflow_templates")
    assert sorted(templates.get(PACK_DIR_NAME, [])) == sorted(n[:-5] for n in workflow_names()), templates
    for name in workflow_names():     # the template browser fetches them from here
        served = _get(f"{url}/api/workflow_templates/{PACK_DIR_NAME}/{name}")
        with open(os.path.join(WORKFLOW_DIR, name), encoding="utf-8") as fh:
            assert served == json.load(fh), name
    object_info = _get(url + "/api/object_info", timeout=60)
    for name in workflow_names():
        with open(os.path.join(WORKFLOW_DIR, name), encoding="utf-8") as fh:
            types = {n["type"] for n in json.load(fh)["nodes"]} - FRONTEND_ONLY
        assert types <= set(object_info), (name, sorted(types - set(object_info)))


def test_workflows_load_and_toy_runs_in_the_frontend(server, tmp_path, capsys):
    assert sorted(DOWNLOADS) == workflow_names()
    url, base = server
    shots = tmp_path / "screenshots"
    shots.mkdir()
    config = {"url": url, "chromium": CHROMIUM, "out": str(shots), "profile": str(tmp_path / "chromium-profile"),
              "result": str(tmp_path / "result.json"),
              "workflows": [{"name": n, "path": os.path.join(WORKFLOW_DIR, n)} for n in workflow_names()],
              "runs": [{"name": name, "learnSteps": RUN_STEPS[name], "samplerSteps": SAMPLER_STEPS, "timeoutS": 600}
                       for name in TOYS]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    started = time.monotonic()
    done = subprocess.run(["node", os.path.join(BROWSER_DIR, "run_workflows.mjs"), str(tmp_path / "config.json")],
                          cwd=BROWSER_DIR, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0 and os.path.exists(config["result"]), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    seconds = time.monotonic() - started
    with capsys.disabled():      # shown whatever pytest's capture setting, as the paths are the point
        for path in sorted(str(p) for p in shots.glob("*.png")):
            print(f"\nscreenshot: {path}", end="")
        print(f"\nbrowser run: {seconds:.0f} s; queued from the page, "
              + ", ".join(f"{name} ran {run.get('seconds')} s" for name, run in result.get("runs", {}).items()))
    assert "failure" not in result, result["failure"]
    assert result["extensionLoaded"], "the pack's web extension (web/motion_inversion.js) was not served"
    assert result["packErrors"] == [], result["packErrors"]
    assert result["blocked"] == [] or all("127.0.0.1" not in b for b in result["blocked"])

    for name in workflow_names():
        with open(os.path.join(WORKFLOW_DIR, name), encoding="utf-8") as fh:
            listed = sorted((str(n["id"]), n["type"]) for n in json.load(fh)["nodes"])
        loaded = result["workflows"][name]
        # ids by value: frontend 1.2x reports them as numbers, 1.49 as strings
        assert sorted((str(n["id"]), n["type"]) for n in loaded["nodes"]) == listed, name
        unregistered = [n["type"] for n in loaded["nodes"] if not n["registered"]]
        assert unregistered == [], f"{name}: missing node types {unregistered}"
        red = [n for n in loaded["nodes"] if n["hasErrors"] or n["color"] == "#FF0000" or n["bgcolor"] == "#FF0000"]
        # Frontend 1.49 marks a node whose file is missing (the SVD checkpoint to download, an
        # embedding still to learn) as it loads; 1.27 waits for Run. Any other error is a bug,
        # and the toy workflow, whose files the pack ships, has none.
        unexplained = [n for n in red if not n["missing"] or not n["hasErrors"]]
        assert unexplained == [], f"{name}: nodes drawn with errors {unexplained}"
        if name in TOYS:
            assert red == [] and not any(n["missing"] for n in loaded["nodes"]), loaded["nodes"]
        missing = {value for n in loaded["nodes"] for value in n["missing"]}
        assert missing <= MISSING_HERE, f"{name}: the server lacks {missing - MISSING_HERE}"
        assert not any("missing node" in d.lower() for d in loaded["dialogs"]), loaded["dialogs"]
        offered = "\n".join(loaded["dialogs"])    # the model workflows offer their downloads; the toy needs none
        assert all(file_name in offered for file_name in DOWNLOADS[name]), (name, loaded["dialogs"])
        assert os.path.getsize(loaded["screenshot"]) > 10_000

    assert sorted(result["runs"]) == sorted(TOYS), result["runs"]
    for name in TOYS:
        _check_run(result["runs"][name], RUN_STEPS[name], base)


def _check_run(run, steps, base):
    """A toy workflow queued from the page: the live curve, both summaries, a saved video."""
    assert run["finished"], f"{run['name']} did not finish in time: {run}"
    assert run["lossesSeen"] > 1 and run["curveSeen"] > 50, f"no live loss curve on the Learn node while it ran: {run}"
    assert run["losses"] == steps and run["curveAfter"] > 50
    assert "MotionEmbedding[" in run["learnSummary"] and f"{steps} steps" in run["learnSummary"], run["learnSummary"]
    assert run["scoreSummary"].startswith("Motion Fidelity Score (moving points): "), run["scoreSummary"]
    _no_overlap(run["learnWidgets"], run["learnSize"])
    (entry,) = run["history"].values()
    assert entry["status"]["status_str"] == "success", entry["status"]
    videos = [image for output in entry["outputs"].values() for image in output.get("images", [])
              if image["filename"].endswith(".webp")]
    assert videos, entry["outputs"]
    for video in videos:
        path = base / "output" / video["subfolder"] / video["filename"]
        assert path.stat().st_size > 1000, path


def _no_overlap(widgets, size):
    """The Learn node's widgets after the run: the curve and the summary each in a slot of its own."""
    names = [w["name"] for w in widgets]
    assert "loss_curve" in names and "summary" in names, names
    boxes = sorted((w["y"], w["y"] + w["height"], w["name"]) for w in widgets)
    for (top, bottom, name), (next_top, _next_bottom, next_name) in zip(boxes, boxes[1:]):
        assert bottom <= next_top + 1, f"{name} ({top}..{bottom}) overlaps {next_name} (from {next_top}): {boxes}"
    assert boxes[-1][1] <= size[1] + 1, f"{boxes[-1][2]} ends at {boxes[-1][1]}, below the node's bottom {size[1]}"
