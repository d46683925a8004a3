"""``python -m motion_core demo --model wan_toy --server URL``: the toy Wan model's motion transfer, run by ComfyUI.

The toy Wan model is ComfyUI's own ``WanModel`` (Load Toy Wan Model), so its demo is the shipped
workflow ``workflows/toy_wan_motion.json`` (turned into ComfyUI's API form here) queued on a
running ComfyUI with this pack installed: Toy Motion Clip draws the reference, Learn Motion
Embedding learns its motion, Debias Value Embedding and Apply Motion apply it, Reference Noise
starts the sampling, and each new Toy Target Image is animated with the motion and, as a
baseline, without it (Apply Motion's strength and Reference Noise's prior at 0; Learn runs
once: ComfyUI caches it). Writes ``target_N.webp`` and ``target_N_no_motion.webp`` (the saved
videos), ``frames.png`` (every other frame of each, a row a video) and ``report.json`` (each
clip's Motion Fidelity Score on moving points).
"""
from __future__ import annotations

import copy
import io
import json
import logging
import os
import sys
import time
from typing import Callable, Optional

from ..comfy_client import PACK, ComfyServer, JobFailed, ServerGone, prompt_node
from ..fileio import write_atomically

log = logging.getLogger(__name__)

WORKFLOW = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "workflows", "toy_wan_motion.json")
FRONTEND_ONLY = {"Note", "MarkdownNote"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}     # "control after generate", after a seed
SCORE_PREFIX = "Motion Fidelity Score (moving points): "


def api_prompt(workflow: dict) -> dict:
    """A UI-format workflow (as the frontend saves it) -> ComfyUI's API prompt ``{id: {"class_type", "inputs"}}``.

    Enough for the pack's own workflows: each node's widget inputs are listed in ``inputs`` in the order of
    ``widgets_values``, a seed's widget is followed by its "control after generate" value, no upload widgets.
    """
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        values, inputs = list(node.get("widgets_values") or []), {}
        for slot in node.get("inputs", []):
            if "widget" in slot:
                if not values:
                    raise ValueError(f"node {node['id']} ({node['type']}): fewer widget values than widgets")
                inputs[slot["name"]] = values.pop(0)
                if slot["name"] in ("seed", "noise_seed") and values and values[0] in CONTROL_VALUES:
                    values.pop(0)
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title", node["type"])}}
    return prompt


def demo_prompt(workflow: dict, motion: str, seed: int, target_seed: int, steps: Optional[int],
                sample_steps: Optional[int], with_motion: bool = True) -> dict:
    """The API workflow with the reference's motion and scene, the target's scene and the step counts set (None:
    the workflow's); without motion: Apply Motion's strength and Reference Noise's prior at 0 (fresh noise, the
    plain model)."""
    prompt = copy.deepcopy(workflow)
    prompt_node(prompt, PACK + "ToyMotionClip")["inputs"].update(motion=motion, seed=seed)
    prompt_node(prompt, PACK + "ToyTargetImage")["inputs"].update(seed=target_seed)
    if steps is not None:
        prompt_node(prompt, PACK + "LearnMotionEmbedding")["inputs"].update(steps=steps)
    if sample_steps is not None:
        prompt_node(prompt, "BasicScheduler")["inputs"].update(steps=sample_steps)
    if not with_motion:
        prompt_node(prompt, PACK + "ApplyMotion")["inputs"].update(strength=0.0)
        prompt_node(prompt, PACK + "ReferenceNoise")["inputs"].update(prior=0.0)
    return prompt


def read_result(entry: dict) -> tuple[Optional[float], list[dict]]:
    """``(Motion Fidelity Score, saved videos [{"filename", "subfolder", "type"}])`` from a history entry."""
    score, videos = None, []
    for output in entry.get("outputs", {}).values():
        for text in output.get("text", []):
            if str(text).startswith(SCORE_PREFIX):
                score = float(str(text)[len(SCORE_PREFIX):])
        videos += [image for image in output.get("images", [])
                   if image.get("type") == "output" and image["filename"].endswith(".webp")]
    return score, videos


def run_demo(server: ComfyServer, out: str, motion: str, seed: int, targets: int, steps: Optional[int],
             sample_steps: Optional[int],
             progress: Callable[[str, int, int], None] = lambda label, value, maximum: None,
             workflow_path: str = WORKFLOW) -> dict:
    """Queue the reference's learning and each target with and without the motion on ``server``; write the videos
    and ``report.json`` into ``out``; the report."""
    with open(workflow_path, encoding="utf-8") as fh:
        workflow = api_prompt(json.load(fh))
    os.makedirs(out, exist_ok=True)
    report = {"model": "wan_toy", "server": server.url, "workflow": os.path.basename(workflow_path),
              "reference": {"motion": motion, "seed": seed, "palette": "heldout"},
              "learning_steps": steps or prompt_node(workflow, PACK + "LearnMotionEmbedding")["inputs"]["steps"],
              "sample_steps": sample_steps or prompt_node(workflow, "BasicScheduler")["inputs"]["steps"], "targets": []}
    started = time.time()
    for index in range(targets):
        record = {"target": index + 1, "seed": seed + 1 + index}
        for with_motion in (True, False):
            label = f"target {index + 1}/{targets}, {'with' if with_motion else 'without'} the motion"
            prompt = demo_prompt(workflow, motion, seed, record["seed"], steps, sample_steps, with_motion)
            prompt_id = server.queue(prompt)
            entry = server.follow(prompt_id, lambda value, maximum: progress(label, value, maximum))
            score, videos = read_result(entry)
            if score is None or not videos:
                raise JobFailed(f"prompt {prompt_id} gave no Motion Fidelity Score or video: "
                                f"{json.dumps(entry.get('outputs', {}))[:500]}")
            name = f"target_{index + 1}{'' if with_motion else '_no_motion'}.webp"
            video = videos[0]
            write_atomically(os.path.join(out, name),
                              server.download("output", os.path.join(video.get("subfolder", ""), video["filename"])))
            record["with_motion" if with_motion else "no_motion"] = {"motion_fidelity_moving": score, "video": name}
        report["targets"].append(record)
    report["seconds"] = round(time.time() - started, 1)
    frames_picture([os.path.join(out, t[which]["video"]) for t in report["targets"]
                    for which in ("with_motion", "no_motion")], os.path.join(out, "frames.png"))
    for which in ("with_motion", "no_motion"):
        values = [t[which]["motion_fidelity_moving"] for t in report["targets"]]
        report.setdefault("summary", {})[which] = {"motion_fidelity_moving": sum(values) / len(values)}
    write_atomically(os.path.join(out, "report.json"), json.dumps(report, indent=2).encode())
    return report


def frames_picture(videos: list[str], path: str, every: int = 2, scale: int = 2) -> None:
    """Every ``every``-th frame of each animated WEBP in ``videos``, a row a video, enlarged ``scale`` times."""
    from PIL import Image

    rows = []
    for video in videos:
        with Image.open(video) as animation:
            row = []
            for index in range(0, animation.n_frames, every):
                animation.seek(index)
                row.append(animation.convert("RGB").copy())
            rows.append(row)
    width, height = rows[0][0].size
    sheet = Image.new("RGB", (width * max(len(r) for r in rows), height * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, frame in enumerate(row):
            sheet.paste(frame, (c * width, r * height))
    picture = io.BytesIO()
    sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST).save(picture, format="PNG")
    write_atomically(path, picture.getvalue())


def main(args) -> int:
    """``args``: the demo's parsed options (``--server``, ``--out``, ``--motion``, ``--seed``, ``--num-targets``,
    ``--steps``, ``--sample-steps``)."""
    if not args.server:
        sys.stderr.write("demo --model wan_toy runs the shipped workflow toy_wan_motion.json in ComfyUI (the toy is "
                         "ComfyUI's own Wan model): start ComfyUI with this pack installed (e.g. `python main.py "
                         "--cpu` in your ComfyUI folder) and give its address, e.g. --server http://127.0.0.1:8188\n")
        return 2
    server = ComfyServer(args.server, timeout=120.0)
    last = {"label": None}

    def progress(label, value, maximum):
        if label != last["label"]:
            sys.stderr.write("\n" if last["label"] else "")
            last["label"] = label
        sys.stderr.write(f"\r{label}: {value}/{maximum}   ")
        sys.stderr.flush()

    try:
        report = run_demo(server, args.out, args.motion, args.seed, args.num_targets, args.steps, args.sample_steps,
                          progress)
    except ServerGone as error:
        sys.stderr.write(f"\n{error}: is ComfyUI running there? Start it and give its address with --server\n")
        return 1
    except JobFailed as error:
        sys.stderr.write(f"\n{error}\nIs this pack installed in that ComfyUI (its custom_nodes folder), and up to "
                         "date?\n")
        return 1
    sys.stderr.write("\n")
    log.info("wrote %s: %d target videos (+ no-motion baselines), frames.png, report.json", args.out,
             len(report["targets"]))
    log.info("Motion Fidelity Score (moving points): with the motion %.3f, without %.3f",
             report["summary"]["with_motion"]["motion_fidelity_moving"],
             report["summary"]["no_motion"]["motion_fidelity_moving"])
    return 0
