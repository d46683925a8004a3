"""What the Wan and AnimateDiff rows of bench/learn_memory.py share: a row in a fresh process, and the learning
steps measured under the peak-memory and saved-tensor meters."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Callable

import torch


def run_in_fresh_process(flag: str, spec: dict, device: str, threads: int, folder: str) -> dict | None:
    """``python -m bench.learn_memory FLAG SPEC`` in a fresh process (its resident set measures this row alone);
    the row it wrote, or None when it failed (its output says why)."""
    name = flag.strip("-") + "-" + "-".join(str(v) for v in spec.values()).replace(" ", "") + ".json"
    out = os.path.join(folder, name)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run([sys.executable, "-m", "bench.learn_memory", flag, json.dumps(spec),
                           "--device", device, "--threads", str(threads), "--out", out],
                          env=env, cwd=os.path.join(os.path.dirname(__file__), ".."))
    if done.returncode != 0:
        return None
    with open(out, encoding="utf-8") as fh:
        return json.load(fh)


def measure_steps(model, device: str, steps: int, train: Callable) -> dict:
    """``train(on_step)`` (``steps`` learning steps, the first a warm-up) under ComfyUI's inference mode, as the
    executor runs a node; ``{"peak_rise_gib", "saved_gib", "step_seconds"}``: the peak above the level before,
    what the second step saved for backward outside checkpointed regions, and the mean time of the steps after
    the first."""
    from bench.learn_memory import GIB, PeakMemory, SavedBytes
    marks = {}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    saved = SavedBytes(model)

    def on_step(step, _total, _value):
        sync()
        marks[step] = time.perf_counter()
        saved.active = step == 1

    with PeakMemory(device) as peak, torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        with torch.inference_mode():
            train(on_step)
    return {"peak_rise_gib": peak.rise / GIB, "saved_gib": saved.total / GIB,
            "step_seconds": (marks[steps] - marks[1]) / (steps - 1)}
