"""``python -m motion_core learn-library CLIPS_DIR --server URL [--server URL ...]``: one motion per clip, learned
on running ComfyUI servers.

ComfyUI is the engine: each clip becomes one prompt, the API format of a shipped learning
workflow (``workflows/api/``) with the clip uploaded through the server's ``/upload/image``,
its name in the workflow's Load Reference Video and its own file name in Save Motion
Embedding (which saves into the server's output folder). Jobs go to the servers as they
free up, one at a time each. A server that stops answering is dropped and its job goes
back to the others. Each finished embedding is downloaded (``/view``), checked, and written
into the output folder atomically, with ``manifest.json`` (what is done, per clip, with
the clip's sha256) and ``index.json`` (name, source clip, model, settings, final loss).
Running the command again skips what the manifest lists as done for the same clip bytes.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import sys
import tempfile
import threading
import time
from typing import Callable, Optional

from .comfy_client import PACK, ComfyServer, JobFailed, ServerGone, prompt_node
from .fileio import load_embedding, sha256, write_atomically

log = logging.getLogger(__name__)

LOAD_VIDEO, LEARN, SAVE = PACK + "LoadReferenceVideo", PACK + "LearnMotionEmbedding", PACK + "SaveMotionEmbedding"
CLIP_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".webp")
WORKFLOW_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows", "api")
DEFAULT_WORKFLOW = os.path.join(WORKFLOW_DIR, "learn_motion_toy.json")
SAVED_MARK = "file: "        # Save Motion Embedding's ui line naming the file (nodes/files.py)
MANIFEST, INDEX = "manifest.json", "index.json"


@dataclasses.dataclass
class Job:
    name: str          # the motion's name: the clip's file name without its extension
    clip: str          # the clip's path
    sha256: str


def find_clips(folder: str) -> list[Job]:
    """Every video file in ``folder`` (not its subfolders), sorted by name; a clear error when there is none."""
    if not os.path.isdir(folder):
        raise ValueError(f"{folder!r} is not a folder; give the folder that holds the reference clips")
    names = sorted(name for name in os.listdir(folder) if name.lower().endswith(CLIP_EXTENSIONS))
    if not names:
        raise ValueError(f"no clips in {folder!r} (looked for {', '.join(CLIP_EXTENSIONS)})")
    stems = [os.path.splitext(name)[0] for name in names]
    twins = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twins:
        raise ValueError(f"clips share a name but for the extension ({', '.join(twins)}); each motion is named after "
                         "its clip: rename them")
    return [Job(stem, os.path.join(folder, name), sha256(os.path.join(folder, name))) for stem, name in zip(stems, names)]


def load_workflow(path: str, steps: Optional[int] = None) -> dict:
    """The API-format learning workflow at ``path``: exactly one Load Reference Video, Learn and Save node."""
    with open(path, encoding="utf-8") as handle:
        workflow = json.load(handle)
    if not isinstance(workflow, dict) or not all(isinstance(node, dict) and "class_type" in node
                                                 for node in workflow.values()):
        raise ValueError(f"{path} is not an API-format workflow (ComfyUI: Workflow > Export (API))")
    for class_type in (LOAD_VIDEO, LEARN, SAVE):
        found = [key for key, node in workflow.items() if node["class_type"] == class_type]
        if len(found) != 1:
            raise ValueError(f"{path} needs exactly one {class_type} node, has {len(found)}")
    if steps is not None:
        prompt_node(workflow, LEARN)["inputs"]["steps"] = int(steps)
    return workflow


def job_prompt(workflow: dict, uploaded: str, name: str) -> dict:
    """The workflow for one clip: its uploaded name in Load Reference Video, Save into output/ as ``library/NAME``."""
    prompt = copy.deepcopy(workflow)
    prompt_node(prompt, LOAD_VIDEO)["inputs"]["video"] = uploaded
    prompt_node(prompt, SAVE)["inputs"].update(filename_prefix=f"library/{name}", folder="output")
    return prompt


def _write_json(path: str, content) -> None:
    write_atomically(path, (json.dumps(content, indent=1, sort_keys=True) + "\n").encode("utf-8"))


class Library:
    """The output folder: the embeddings, the manifest and the index, updated under one lock."""

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.lock = threading.Lock()
        path = os.path.join(folder, MANIFEST)
        self.manifest = {"clips": {}}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                self.manifest = json.load(handle)

    def done(self, job: Job) -> bool:
        entry = self.manifest["clips"].get(job.name)
        return bool(entry and entry.get("status") == "done" and entry.get("sha256") == job.sha256
                    and os.path.exists(os.path.join(self.folder, entry["file"])))

    def record(self, job: Job, **fields) -> None:
        with self.lock:
            entry = self.manifest["clips"].setdefault(job.name, {})
            entry.update(clip=os.path.basename(job.clip), sha256=job.sha256, **fields)
            _write_json(os.path.join(self.folder, MANIFEST), self.manifest)
            if fields.get("status") == "done":
                _write_json(os.path.join(self.folder, INDEX), self.index())

    def store(self, name: str, content: bytes):
        """The downloaded embedding as ``NAME.safetensors``, written atomically and checked:
        ``(file name, the embedding as the check loaded it)``."""
        file_name = f"{name}.safetensors"
        handle, partial = tempfile.mkstemp(dir=self.folder, prefix=".partial-", suffix=".safetensors")
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
        try:
            embedding = load_embedding(partial)     # refuses a damaged file, naming the field
        except Exception:
            os.remove(partial)
            raise
        os.replace(partial, os.path.join(self.folder, file_name))
        return file_name, embedding

    def index(self) -> list[dict]:
        return [{"name": name, **{key: entry[key] for key in ("file", "clip", "sha256", "model", "settings",
                                                               "final_loss", "server") if key in entry}}
                for name, entry in sorted(self.manifest["clips"].items()) if entry.get("status") == "done"]


class Progress:
    """A text progress bar per job and overall, redrawn on stderr (one line per change when not a terminal)."""

    def __init__(self, total: int, stream=None):
        self.total, self.finished = total, 0
        self.jobs: dict[str, tuple[str, int, int]] = {}
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()
        self._last = ""

    @staticmethod
    def _bar(value: int, maximum: int, width: int = 12) -> str:
        filled = int(width * value / maximum) if maximum else 0
        return "[" + "#" * filled + "-" * (width - filled) + "]"

    def update(self, job: str, server: str, value: int = 0, maximum: int = 0) -> None:
        with self.lock:
            self.jobs[job] = (server, value, maximum)
            self._draw()

    def end(self, job: str, ok: bool) -> None:
        with self.lock:
            self.jobs.pop(job, None)
            self.finished += 1 if ok else 0
            self._draw()

    def _draw(self) -> None:
        parts = [f"library {self._bar(self.finished, self.total)} {self.finished}/{self.total}"]
        parts += [f"{job} on {server} {self._bar(value, maximum)} {value}/{maximum or '?'}"
                  for job, (server, value, maximum) in sorted(self.jobs.items())]
        line = " | ".join(parts)
        if line == self._last:
            return
        self._last = line
        if self.stream.isatty():
            self.stream.write("\r" + line[:200].ljust(200))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_job(server: ComfyServer, job: Job, workflow: dict, library: Library, progress: Progress) -> None:
    """One clip on one server: upload, queue, follow, download, store; :class:`ServerGone` or :class:`JobFailed`."""
    progress.update(job.name, server.url)
    uploaded = server.upload(job.clip, f"motion_library_{job.name}{os.path.splitext(job.clip)[1]}")
    prompt_id = server.queue(job_prompt(workflow, uploaded, job.name))
    library.record(job, status="running", server=server.url, prompt_id=prompt_id)
    entry = server.follow(prompt_id, lambda value, maximum: progress.update(job.name, server.url, value, maximum))
    saved = [line[len(SAVED_MARK):] for output in entry.get("outputs", {}).values()
             for text in output.get("text", []) for line in str(text).splitlines() if line.startswith(SAVED_MARK)]
    if len(saved) != 1 or not saved[0].startswith("output/"):
        raise JobFailed(f"prompt {prompt_id} on {server.url} did not say where it saved the embedding "
                        f"(outputs: {json.dumps(entry.get('outputs', {}))[:500]}); use a workflow whose Save "
                        "Motion Embedding saves to the output folder")
    file_name, embedding = library.store(job.name, server.download("output", saved[0][len("output/"):]))
    history = embedding.metadata.get("loss_history") or []
    learn = prompt_node(workflow, LEARN)["inputs"]
    settings = {key: value for key, value in learn.items() if not isinstance(value, list)}   # not the links
    library.record(job, status="done", file=file_name, server=server.url, final_loss=history[-1] if history else None,
                   model={"family": embedding.metadata.get("model_family"),
                          "loader": {node["class_type"]: {k: v for k, v in node["inputs"].items()
                                                          if not isinstance(v, list)}
                                     for node in workflow.values() if node["class_type"] not in (LOAD_VIDEO, LEARN, SAVE)
                                     and "Load" in node["class_type"]}},
                   settings=settings, finished=time.strftime("%Y-%m-%d %H:%M:%S"))


def learn_library(clips_dir: str, servers: list[str], out_dir: str, workflow_path: str = DEFAULT_WORKFLOW,
                  steps: Optional[int] = None, on_event: Optional[Callable[[str, str, str], None]] = None,
                  stream=None) -> dict:
    """Learn every clip of ``clips_dir`` not yet done on the ``servers``; returns a summary.

    ``on_event(event, job, server)`` hears ``started``, ``done``, ``failed`` and ``lost``
    (the server stopped answering; the job goes back to the queue). Raises a RuntimeError
    when clips are left and no server answers any more (the manifest keeps what is done).
    """
    if not servers:
        raise ValueError("give at least one ComfyUI server: --server http://127.0.0.1:8188")
    workflow = load_workflow(workflow_path, steps)
    library = Library(out_dir)
    jobs = find_clips(clips_dir)
    pending = [job for job in jobs if not library.done(job)]
    skipped = len(jobs) - len(pending)
    if skipped:
        log.info("%d of %d clips already learned (manifest in %s); %d to go", skipped, len(jobs), out_dir,
                 len(pending))
    clients = [ComfyServer(url) for url in servers]
    changed = threading.Condition()
    in_flight = [0]                 # jobs running: a server that drops one gives it back to the others
    failed, lost = {}, []
    progress = Progress(len(pending), stream)
    event = on_event or (lambda *_: None)

    def next_job() -> Optional[Job]:
        """The next job, waiting while the queue is empty but a job still runs elsewhere (it may come back)."""
        with changed:
            while not pending and in_flight[0]:
                changed.wait(1.0)
            if not pending:
                return None
            in_flight[0] += 1
            return pending.pop(0)

    def finished(job: Optional[Job] = None) -> None:
        with changed:
            if job is not None:
                pending.insert(0, job)
            in_flight[0] -= 1
            changed.notify_all()

    def worker(server: ComfyServer) -> None:
        while True:
            job = next_job()
            if job is None:
                return
            event("started", job.name, server.url)
            try:
                run_job(server, job, workflow, library, progress)
            except ServerGone as error:
                log.warning("%s stopped answering (%s); %s goes back to the queue", server.url, error, job.name)
                lost.append(server.url)
                progress.end(job.name, False)
                event("lost", job.name, server.url)
                finished(job)
                return
            except Exception as error:         # the clip or the workflow: recorded, the others go on
                log.error("%s failed on %s: %s", job.name, server.url, error)
                library.record(job, status="failed", server=server.url, error=str(error)[:2000])
                failed[job.name] = str(error)
                progress.end(job.name, False)
                event("failed", job.name, server.url)
                finished()
                continue
            progress.end(job.name, True)
            event("done", job.name, server.url)
            finished()

    threads = [threading.Thread(target=worker, args=(server,), name=f"learn-library {server.url}", daemon=True)
               for server in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = {"done": [entry["name"] for entry in library.index()], "failed": failed, "lost_servers": lost,
               "left": [job.name for job in pending], "skipped": skipped}
    if pending:
        raise RuntimeError(f"{len(pending)} clip(s) left ({', '.join(job.name for job in pending)}) and no server "
                           f"answers ({', '.join(lost)} stopped); what is done is in {out_dir}: run the command "
                           "again with a running server to go on")
    return summary


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m motion_core learn-library", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips_dir", help="folder of reference clips, one motion each (named after the file)")
    parser.add_argument("--server", action="append", required=True, metavar="URL",
                        help="a running ComfyUI with this pack, e.g. http://127.0.0.1:8188 (repeat for more)")
    parser.add_argument("--out", default="motion_library", help="folder for the embeddings, manifest and index")
    parser.add_argument("--workflow", default=DEFAULT_WORKFLOW,
                        help="API-format learning workflow (default: the toy one, workflows/api/learn_motion_toy.json;"
                             " learn_motion_svd.json for SVD)")
    parser.add_argument("--steps", type=int, help="Learn's steps (default: the workflow's)")
    args = parser.parse_args(argv)
    summary = learn_library(args.clips_dir, args.server, args.out, args.workflow, args.steps)
    log.info("done: %d learned (%d already), %d failed; index in %s", len(summary["done"]), summary["skipped"],
             len(summary["failed"]), os.path.join(args.out, INDEX))
    return 1 if summary["failed"] else 0
