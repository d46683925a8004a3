"""Learn Motion Embedding at full size: memory and time of one learning step, checkpointing off and on.

    COMFYUI_PATH=../shared/comfyui python -m bench.learn_memory --families svd   # CPU, float32, ~25 min
    COMFYUI_PATH=../shared/comfyui python -m bench.learn_memory --families wan   # CPU, Wan blocks, ~15 min
    COMFYUI_PATH=/path/to/ComfyUI python -m bench.learn_memory --device cuda     # GPU, both families, full size

On a GPU one run measures SVD at 576x320 and 1024x576 and the whole Wan 1.3B (832x480x81,
learn_scale 0.5 and 1) and 5B (1280x704x121) in bfloat16; Wan's rows are in
``bench/learn_memory_wan.py``.

Builds the full-size SVD UNet (ComfyUI's ``SVD_img2vid``, random weights, no download)
under ``torch.inference_mode`` as ComfyUI's loader does, and runs the Learn node's own
path (``nodes.learn.prepare_learning`` then ``nodes.host_training.train_in_host``) for two
steps per row; the second is measured. Per row: bytes saved for backward outside
checkpointed regions (weights excluded), the peak memory rise over the loaded model (CPU:
resident set size polled every 2 ms; GPU: ``torch.cuda.max_memory_allocated``), the step's
seconds, and the loop's overhead (step time over the model's forward+backward). Rows with
checkpointing off and on share the seed; their first-step gradients are compared.

On the CPU the rows fit the plan's activation constants (``fixed + per_position * P``,
``P = frames * latent positions``) on the two smallest sizes, check them at the others, and
extrapolate to 576x320 and 1024x576, 14 and 25 frames, in float16. Attention runs through
PyTorch SDPA (``--use-pytorch-cross-attention``), the memory-efficient kernel ComfyUI uses
on NVIDIA GPUs. Writes ``docs/benchmarks.md``'s section and, with ``--json``, the rows.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time

import safetensors.torch
import torch

from bench.docfile import replace_section, write_json

log = logging.getLogger("bench.learn_memory")
GIB = 2 ** 30
FULL_SVD_UNET = {"model_channels": 320, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
                 "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
                 "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "transformer_depth_middle": 1}



def start_host(device: str):
    """ComfyUI (``COMFYUI_PATH``) with the pack loaded, SDPA attention; on the CPU unless ``device == "cuda"``."""
    from tests import host_support
    root = host_support.comfy_path()
    if root is None:
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout with its requirements installed in this Python")
    sys.path.insert(0, root)
    argv = sys.argv
    sys.argv = [argv[0], "--use-pytorch-cross-attention"] + (["--cpu"] if device == "cpu" else [])
    try:
        import comfy.options
        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses the flags above, before host_support imports ComfyUI)
    finally:
        sys.argv = argv
    host_support.start_comfy()
    return host_support


def build_full_svd(dtype: torch.dtype, device: str):
    """A ModelPatcher around the full-size SVD UNet with random weights, built as inference tensors."""
    import comfy.model_base
    import comfy.supported_models
    from tests.host_support import TINY_SVD_UNET
    config = comfy.supported_models.SVD_img2vid(dict(TINY_SVD_UNET, **FULL_SVD_UNET))
    config.unet_config["num_head_channels"] = 64
    config.set_inference_dtype(dtype, None)
    with torch.inference_mode():
        model = comfy.model_base.SVD_img2vid(config, device=device)
    return random_weights_patcher(model, device)


def random_weights_patcher(model, device: str):
    """``model`` with random weights (scaled by fan-in; biases and norms zero), drawn as inference tensors as
    ComfyUI's loaders leave them, in a ModelPatcher on ``device``."""
    import comfy.model_patcher
    with torch.inference_mode():
        generator = torch.Generator(device=device).manual_seed(0)
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0, param[0].numel() ** -0.5, generator=generator)
            else:
                param.zero_()
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device(device), offload_device=torch.device(device))


class PeakMemory:
    """Peak memory above the level at ``start``: CUDA allocator statistics or the CPU's resident set."""

    def __init__(self, device: str):
        self.device = device

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self.peak = self._rss()
        self._stop = threading.Event()

        def poll():
            while not self._stop.wait(0.002):
                self.peak = max(self.peak, self._rss())
        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.rise = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.rise = max(self.peak, self._rss()) - self.base


class SavedBytes:
    """Unique storages saved for backward outside checkpointed regions, weights excluded."""

    def __init__(self, model):
        self.weights = {p.untyped_storage().data_ptr() for p in model.model.parameters()}
        self.seen, self.total, self.active = set(), 0, False

    def pack(self, tensor):
        if not self.active:
            return tensor
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in self.seen and storage.data_ptr() not in self.weights:
            self.seen.add(key)
            self.total += storage.nbytes()
        return tensor


def measure_row(hs, model, vae, width, height, frames, representation, checkpointing, device, steps=2) -> dict:
    """``steps`` learning steps through the Learn node's path; the first is a warm-up, the others are measured."""
    learn = hs.pack_module("nodes.learn")
    host_training = hs.pack_module("nodes.host_training")
    reference = torch.rand(frames, height, width, 3, generator=torch.Generator().manual_seed(1))
    prepared = learn.prepare_learning(model, vae, reference, representation, 5, steps, 1e-2, 0, 2.8, 1.6, "edm", False,
                                      False, 6, 127, 0.0, "all", "", None, checkpointing)
    marks, gradients = {}, {}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    saved = SavedBytes(model)

    def on_step(step, total, value):
        sync()
        marks[f"end{step}"] = time.perf_counter()
        saved.active = step == 1          # count what the second step saves (the steps are alike)

    def on_gradients(step, grads):
        sync()
        marks[f"backward{step}"] = time.perf_counter()
        if step == 1:
            gradients["first"] = [g.detach().float().cpu().clone() for g in grads]

    frame_hook = _ForwardClock(marks, sync)
    with PeakMemory(device) as peak, torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        with frame_hook.installed(model):
            host_training.train_in_host(model, prepared.make_positive, prepared.latents, prepared.initial, prepared.settings,
                                        on_step, checkpointing=checkpointing, on_gradients=on_gradients)
    step_seconds = (marks[f"end{steps}"] - marks["end1"]) / (steps - 1)
    model_seconds = sum(marks[f"backward{k}"] - frame_hook.starts[k - 1] for k in range(2, steps + 1)) / (steps - 1)
    return {"width": width, "height": height, "frames": frames, "representation": representation,
            "layer_preset": "all" if representation != "motion_text" else None, "checkpointing": checkpointing,
            "dtype": str(model.model_dtype()).replace("torch.", ""), "kind": "measured",
            "saved_gib": saved.total / GIB, "peak_rise_gib": peak.rise / GIB,
            "weights_gib": model.model_size() / GIB, "step_seconds": step_seconds,
            "loop_overhead": step_seconds / model_seconds, "gradients": gradients["first"],
            "memory_account": prepared.memory_account}


class _ForwardClock:
    """Records the time each UNet forward starts (a forward pre-hook for the length of the run)."""

    def __init__(self, marks, sync):
        self.marks, self.sync, self.starts = marks, sync, []

    def installed(self, model):
        clock = self

        class _Installed:
            def __enter__(self):
                def hook(_module, _args):
                    clock.sync()
                    clock.starts.append(time.perf_counter())
                self.handle = model.model.diffusion_model.register_forward_pre_hook(hook)

            def __exit__(self, *exc):
                self.handle.remove()
        return _Installed()


def relative_difference(first: list, second: list) -> float:
    num = sum(float((a - b).pow(2).sum()) for a, b in zip(first, second)) ** 0.5
    den = sum(float(a.pow(2).sum()) for a in first) ** 0.5
    return num / max(den, 1e-30)


def fit_constants(rows: list[dict], learned_gib) -> dict:
    """``(fixed, per_position)`` bytes per (representation, checkpointing) from the two smallest sizes.

    ``learned_gib(row)``: what the plan puts outside the activations (learned tensors with
    Adam state, and the kept weight copies without checkpointing), subtracted first.
    """
    constants = {}
    for key in sorted({(r["representation"], r["checkpointing"]) for r in rows}):
        by_size = {}
        for row in rows:
            if (row["representation"], row["checkpointing"]) == key:
                by_size.setdefault(row["width"] * row["height"], row)      # the first row of each size
        mine = [by_size[size] for size in sorted(by_size)[:2]]
        if len(mine) < 2:                  # one size only (a timing run): nothing to fit
            continue
        points = [(r["frames"] * (r["height"] // 8) * (r["width"] // 8),
                   (r["peak_rise_gib"] - learned_gib(r)) * GIB) for r in mine]
        (p1, a1), (p2, a2) = points
        per_position = (a2 - a1) / (p2 - p1)
        constants[key] = (max(a1 - per_position * p1, 0.0), per_position)
    return constants


def run_row(width, height, frames, representation, checkpointing, device, threads, folder, steps=2):
    """One row in a fresh process (clean allocator, so the CPU's resident set measures this row alone);
    ``(None, None)`` when that process failed."""
    out = os.path.join(folder, f"{width}x{height}x{frames}-{representation}-{checkpointing}")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")   # freed tensors go back to the OS at once
    done = subprocess.run([sys.executable, "-m", "bench.learn_memory", "--row", str(width), str(height), str(frames),
                           representation, checkpointing, "--device", device, "--threads", str(threads), "--out", out,
                           "--steps", str(steps)],
                          env=env, cwd=os.path.join(os.path.dirname(__file__), ".."))
    if done.returncode != 0:           # out of memory on a smaller card, say: the other rows still count
        log.warning("%dx%dx%d %s checkpointing %s failed (exit %d); see its output above", width, height, frames,
                    representation, checkpointing, done.returncode)
        return None, None
    with open(out + ".json", encoding="utf-8") as fh:
        row = json.load(fh)
    gradients = safetensors.torch.load_file(out + ".safetensors")
    return row, [gradients[str(i)] for i in range(len(gradients))]


def _row_main(args) -> None:
    width, height, frames, representation, mode = args.row
    hs = start_host(args.device)
    model = build_full_svd(torch.float32 if args.device == "cpu" else torch.float16, args.device)
    row = measure_row(hs, model, hs.build_tiny_vae(), int(width), int(height), int(frames), representation,
                      mode == "on", args.device, args.steps)
    gradients = row.pop("gradients")
    safetensors.torch.save_file({str(i): g.contiguous() for i, g in enumerate(gradients)}, args.out + ".safetensors")
    with open(args.out + ".json", "w", encoding="utf-8") as fh:
        json.dump(row, fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--sizes", nargs="+", default=None, help="WxH, e.g. 128x72 192x112 256x144")
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--representations", nargs="+", default=["motion_text", "temporal"])
    parser.add_argument("--checkpointing", nargs="+", default=["off", "on"], choices=("off", "on"))
    parser.add_argument("--off-sizes", nargs="*", default=None,
                        help="sizes measured with checkpointing off too (default on the CPU: the two smallest, "
                             "since 256x144 without it needs about 21 GB of RAM)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="steps per row; the first is a warm-up (>= 2)")
    parser.add_argument("--json", default=None, help="write the rows to this file")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    parser.add_argument("--report-from", default=None,
                        help="re-make the tables from a --json file of an earlier run instead of measuring")
    parser.add_argument("--families", nargs="+", choices=("svd", "wan", "animatediff"),
                        default=["svd", "wan", "animatediff"],
                        help="which model families to measure (Wan's rows: bench/learn_memory_wan.py; AnimateDiff's, "
                             "which need AnimateDiff-Evolved beside the ComfyUI tree or ADE_PATH: "
                             "bench/learn_memory_ad.py)")
    parser.add_argument("--row", nargs=5, default=None, help=argparse.SUPPRESS)   # internal: one row
    parser.add_argument("--wan-row", default=None, help=argparse.SUPPRESS)        # internal: one Wan row
    parser.add_argument("--ad-row", default=None, help=argparse.SUPPRESS)         # internal: one AnimateDiff row
    parser.add_argument("--wan-timing-only", action="store_true",
                        help="re-measure only Wan's interleaved checkpointing timing, keeping the rows in "
                             "docs/learn_memory.json")
    parser.add_argument("--wan-timing-size", default=None, metavar="WxHxF",
                        help="with --wan-timing-only: time this video size (--wan-timing-blocks blocks of Wan "
                             "1.3B) instead of 256x160x17, kept beside the small size's timing")
    parser.add_argument("--wan-timing-blocks", type=int, default=2,
                        help="with --wan-timing-size: how many blocks of Wan 1.3B to time (each is recomputed)")
    parser.add_argument("--wan-report-from", default=None,
                        help="re-make Wan's tables from docs/learn_memory.json (its wan_<device> rows) instead of "
                             "measuring")
    parser.add_argument("--ad-report-from", default=None,
                        help="re-make AnimateDiff's table from docs/learn_memory.json (its animatediff_<device> rows) "
                             "instead of measuring")
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.row:
        return _row_main(args)
    if args.wan_row:
        from bench.learn_memory_wan import wan_row_main
        return wan_row_main(args.wan_row, args.device, args.out)
    if args.ad_row:
        from bench.learn_memory_ad import ad_row_main
        return ad_row_main(args.ad_row, args.device, args.out)
    if "wan" in args.families:
        _wan_main(args)
    if "animatediff" in args.families:
        _ad_main(args)
    if "svd" not in args.families:
        return
    from bench.learn_memory_report import report
    if args.report_from:
        with open(args.report_from, encoding="utf-8") as fh:
            earlier = json.load(fh)
        rows = [r for r in earlier["rows"] if r["kind"] == "measured"]
        hs = start_host(args.device)
        model = build_full_svd(torch.float32 if args.device == "cpu" else torch.float16, args.device)
        text, payload = report(rows, hs, model, args.device, earlier["command"], earlier["seconds"], fit_constants)
        return _write(args, text, payload, earlier["command"], earlier["seconds"])
    sizes = args.sizes or (["128x72", "192x112", "256x144"] if args.device == "cpu" else ["576x320", "1024x576"])
    off_sizes = args.off_sizes if args.off_sizes is not None else (sizes[:2] if args.device == "cpu" else sizes)
    rows = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="learn_memory_") as folder:
        for size in sizes:
            width, height = (int(v) for v in size.split("x"))
            for representation in args.representations:
                pair = {}
                for mode in args.checkpointing:
                    if mode == "off" and size not in off_sizes:
                        continue
                    row, gradients = run_row(width, height, args.frames, representation, mode, args.device,
                                             args.threads, folder, args.steps)
                    if row is None:
                        continue
                    pair[mode] = gradients
                    log.info("%dx%dx%d %s checkpointing %s: saved %.2f GiB, peak rise %.2f GiB, %.1f s/step, "
                             "loop/model %.3f", width, height, args.frames, representation, mode, row["saved_gib"],
                             row["peak_rise_gib"], row["step_seconds"], row["loop_overhead"])
                    rows.append(row)
                if len(pair) == 2:
                    difference = relative_difference(pair["off"], pair["on"])
                    for row in rows[-2:]:
                        row["gradient_rel_diff"] = difference
                    log.info("  gradient relative difference, checkpointing off vs on: %.2e", difference)
    hs = start_host(args.device)
    model = build_full_svd(torch.float32 if args.device == "cpu" else torch.float16, args.device)
    command = ("python -m bench.learn_memory " + " ".join(sys.argv[1:])).strip()
    text, payload = report(rows, hs, model, args.device, command, time.time() - started, fit_constants)
    _write(args, text, payload, command, time.time() - started)


def _wan_main(args) -> None:
    """Wan's rows (CPU: a few full-width blocks and interleaved timing runs; GPU: the whole models)."""
    from bench.learn_memory_wan import CPU_ROWS, CUDA_ROWS, CUDA_TIMING_ROW, TIMING_ROW, run_wan_row, wan_report
    started = time.time()
    rows, timing = [], []
    if args.wan_report_from:
        with open(args.wan_report_from, encoding="utf-8") as fh:
            earlier = json.load(fh)[f"wan_{args.device}"]
        text = wan_report(earlier["rows"], earlier["timing"], earlier.get("timing_large", {}).get("rows"))
        print(text)
        if not args.no_doc:
            replace_section(os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md"),
                            f"learn_memory_wan_{args.device}", f"{_wan_measured_line(earlier)}\n\n{text}")
        return
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "learn_memory.json")
    if args.wan_timing_only:
        with open(path, encoding="utf-8") as fh:
            rows = json.load(fh)[f"wan_{args.device}"]["rows"]
    with tempfile.TemporaryDirectory(prefix="learn_memory_wan_") as folder:
        rows += _measure_rows("Wan", [] if args.wan_timing_only else CUDA_ROWS if args.device == "cuda" else CPU_ROWS,
                              run_wan_row, args, folder, lambda row: f"peak rise {row['peak_rise_gib']:.2f} GiB, "
                              f"saved {row['saved_gib']:.3f} GiB, {row['step_seconds']:.1f} s/step")
        timing_row = TIMING_ROW if args.device == "cpu" else CUDA_TIMING_ROW
        if args.wan_timing_size:
            width, height, frames = (int(v) for v in args.wan_timing_size.lower().split("x"))
            timing_row = dict(timing_row, blocks=args.wan_timing_blocks, width=width, height=height, frames=frames)
        for _repeat in range(3):
            for checkpointing in (True, False):
                row = run_wan_row(dict(timing_row, checkpointing=checkpointing), args.device, args.threads, folder)
                if row is not None:
                    timing.append(row)
    command = ("python -m bench.learn_memory " + " ".join(sys.argv[1:])).strip()
    seconds = time.time() - started
    with open(path, encoding="utf-8") as fh:
        payload = json.load(fh)
    earlier = payload.get(f"wan_{args.device}", {})
    if args.wan_timing_size:
        text = wan_report(rows, earlier.get("timing", []), timing)
    else:
        text = wan_report(rows, timing, earlier.get("timing_large", {}).get("rows") if args.wan_timing_only else None)
    print(text)
    if args.no_doc:
        return
    if args.wan_timing_size:        # the rows and the small size's timing stay; the larger size's is added
        earlier["timing_large"] = {"rows": timing, "command": command, "seconds": seconds,
                                   "date": str(datetime.date.today())}
    elif args.wan_timing_only:        # the rows' own run and command stay; the timing's is added
        earlier.update(timing=timing, timing_command=command, timing_seconds=seconds)
    else:
        earlier = payload[f"wan_{args.device}"] = {"command": command, "seconds": seconds, "rows": rows,
                                                   "timing": timing, "date": str(datetime.date.today())}
    write_json(path, payload)
    replace_section(os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md"),
                    f"learn_memory_wan_{args.device}", f"{_wan_measured_line(earlier)}\n\n{text}")


def _measure_rows(family: str, specs, run_row, args, folder: str, summary) -> list[dict]:
    """``run_row(spec, device, threads, folder)`` for each spec (each in a fresh process); the rows that ran, each
    logged with ``summary(row)``; a row that failed is logged and left out."""
    rows = []
    for spec in specs:
        row = run_row(spec, args.device, args.threads, folder)
        if row is None:
            log.warning("%s row %s failed; see its output above", family, spec)
            continue
        log.info("%s %s: %s", family, spec, summary(row))
        rows.append(row)
    return rows


def _wan_measured_line(entry: dict) -> str:
    """Which commands measured Wan's rows and timings, when, and how long each took."""
    line = f"Measured {entry.get('date', '')}, `{entry['command']}`, {entry['seconds']:.0f} s"
    if "timing_command" in entry:
        line += f"; timing re-measured alone, `{entry['timing_command']}`, {entry['timing_seconds']:.0f} s"
    if "timing_large" in entry:
        large = entry["timing_large"]
        line += (f"; the larger size's timing, measured {large.get('date', entry.get('date', ''))}, "
                 f"`{large['command']}`, {large['seconds']:.0f} s")
    return line + "."


def _ad_main(args) -> None:
    """AnimateDiff's rows (bench/learn_memory_ad.py), each in a fresh process; into docs/learn_memory.json's
    ``animatediff_<device>`` and docs/benchmarks.md."""
    from bench.learn_memory_ad import CPU_ROWS, CUDA_ROWS, ad_report, run_ad_row
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "learn_memory.json")
    if args.ad_report_from:
        with open(args.ad_report_from, encoding="utf-8") as fh:
            earlier = json.load(fh)[f"animatediff_{args.device}"]
        text = ad_report(earlier["rows"])
        print(text)
        if not args.no_doc:
            replace_section(os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md"),
                            f"learn_memory_ad_{args.device}", f"Measured {earlier['date']}, `{earlier['command']}`, "
                                                              f"{earlier['seconds']:.0f} s.\n\n{text}")
        return
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="learn_memory_ad_") as folder:
        rows = _measure_rows("AnimateDiff", CUDA_ROWS if args.device == "cuda" else CPU_ROWS, run_ad_row, args, folder,
                             lambda row: f"peak rise {row['peak_rise_gib']:.2f} GiB (planned "
                             f"{row['planned_less_weights_gib']:.2f}), {row['step_seconds']:.1f} s/step")
    text = ad_report(rows)
    print(text)
    if args.no_doc or not rows:
        return
    command = ("python -m bench.learn_memory " + " ".join(sys.argv[1:])).strip()
    seconds = time.time() - started
    with open(path, encoding="utf-8") as fh:
        payload = json.load(fh)
    payload[f"animatediff_{args.device}"] = {"command": command, "seconds": seconds, "rows": rows,
                                             "date": str(datetime.date.today())}
    write_json(path, payload)
    replace_section(os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md"),
                    f"learn_memory_ad_{args.device}",
                    f"Measured {datetime.date.today()}, `{command}`, {seconds:.0f} s.\n\n{text}")


def _write(args, text, payload, command, seconds) -> None:
    print(text)
    if args.json:
        write_json(args.json, payload)
    if not args.no_doc:
        replace_section(os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md"),
                        "learn_memory", f"Measured {datetime.date.today()}, `{command}`, {seconds:.0f} s.\n\n{text}")


if __name__ == "__main__":
    main()
