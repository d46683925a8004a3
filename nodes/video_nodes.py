"""Load Reference Video."""
from __future__ import annotations

import os

import folder_paths
from comfy_api.v0_0_2 import io

from ..motion_core.video import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoReadError, probe_video, read_reference_video,
                                 select_frame_indices)
from .common import CATEGORY, NODE_PREFIX


def _host_accepts(root: str, path: str) -> bool:
    """Whether this ComfyUI opens ``path`` from its input folder ``root``.

    ComfyUI 0.33 refuses an input that resolves outside the folder (a link to a clip kept
    elsewhere, or ``..``) with "Invalid file path"; 0.3.64 has no such check and opens it.
    """
    within = getattr(folder_paths, "is_within_directory", None)
    return within is None or within(root, path)


def _input_choices() -> list[str]:
    """Video/animation files in ComfyUI's input folder, plus sub-folders holding images.

    Links that this ComfyUI would refuse to open are left out of the list.
    """
    root = folder_paths.get_input_directory()
    choices = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if not _host_accepts(root, path):
                continue
            if os.path.isfile(path) and name.lower().endswith(VIDEO_EXTENSIONS):
                choices.append(name)
            elif os.path.isdir(path) and any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(path)):
                choices.append(name + "/")
    return choices


class InputOutsideFolder(ValueError):
    pass


def _resolve(video: str) -> str:
    """The clip's path; :class:`InputOutsideFolder` where this ComfyUI refuses it (see :func:`_host_accepts`)."""
    if not video:
        return ""
    try:
        return folder_paths.get_annotated_filepath(video.rstrip("/"))
    except ValueError as exc:
        raise InputOutsideFolder(
            f"ComfyUI refuses the reference video {video!r} ({exc}): it resolves outside ComfyUI's input "
            "folder (a link to a file or folder elsewhere, or '..'). Copy the clip into the input folder, "
            "or upload it.") from exc


class LoadReferenceVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "LoadReferenceVideo",
            display_name="Load Reference Video",
            category=CATEGORY,
            description="Reads the reference clip whose motion will be learned: a video (mp4, webm, avi, mov, mkv), "
                        "an animated GIF or WEBP, or a folder of images from ComfyUI's input folder. Picks `frames` "
                        "frames evenly over start..end (or every `stride`-th), resizes and centre-crops them.",
            inputs=[
                io.Combo.Input("video", options=_input_choices(), upload=io.UploadType.video,
                               tooltip="A file in ComfyUI's input folder (upload one here), or a sub-folder of images. "
                                       "motion_inversion_example_reference.webm is the pack's example clip, "
                                       "copied there when ComfyUI starts."),
                io.Int.Input("frames", default=14, min=2, max=128,
                             tooltip="How many frames to take. SVD learns on 14, SVD-XT on 25."),
                io.Int.Input("start_frame", default=0, min=0, max=100000,
                             tooltip="First source frame of the range (0 = the first)."),
                io.Int.Input("end_frame", default=-1, min=-1, max=100000,
                             tooltip="Last source frame of the range, inclusive (-1 = the last)."),
                io.Int.Input("stride", default=0, min=0, max=1000,
                             tooltip="0 spreads the frames evenly over the range; N > 0 takes every N-th frame from start."),
                io.Int.Input("width", default=1024, min=64, max=4096, step=16,
                             tooltip="Output width in pixels, a multiple of 16 (SVD: 1024; Wan 2.1: 832; Wan 2.2 "
                                     "TI2V 5B: 1280, a multiple of 32 there)."),
                io.Int.Input("height", default=576, min=64, max=4096, step=16,
                             tooltip="Output height in pixels, a multiple of 16 (SVD: 576; Wan 2.1: 480; Wan 2.2 "
                                     "TI2V 5B: 704, a multiple of 32 there)."),
            ],
            outputs=[
                io.Image.Output(display_name="frames", tooltip="The chosen frames, (frames, height, width, 3), 0..1."),
                io.Float.Output(display_name="fps", tooltip="Frame rate of the source file (8 for image folders)."),
                io.Int.Output(display_name="source_frame_count", tooltip="How many frames the source has."),
            ],
        )

    @classmethod
    def validate_inputs(cls, video, frames, start_frame, end_frame, stride):
        # ComfyUI skips its own range check for inputs named here, so check them too
        for name, value, low, high in (("frames", frames, 2, 128), ("start_frame", start_frame, 0, 100000),
                                       ("end_frame", end_frame, -1, 100000), ("stride", stride, 0, 1000)):
            if value is not None and not low <= value <= high:
                return f"{name} is {value}; it must be between {low} and {high}"
        if not video:
            return "no reference video chosen: upload one or put it in ComfyUI's input folder"
        try:
            total, _fps = probe_video(_resolve(video))
        except (VideoReadError, InputOutsideFolder) as exc:
            return str(exc)
        try:
            select_frame_indices(total, frames, start_frame, end_frame, stride, source=f"The reference video {video!r}")
        except VideoReadError as exc:
            return str(exc)
        return True

    @classmethod
    def fingerprint_inputs(cls, video, **_kwargs):
        try:
            path = _resolve(video)
        except InputOutsideFolder:
            return ""                     # validate_inputs says what is wrong
        return os.path.getmtime(path) if os.path.exists(path) else ""

    @classmethod
    def execute(cls, video, frames, start_frame, end_frame, stride, width, height) -> io.NodeOutput:
        clip = read_reference_video(_resolve(video), frames=frames, start=start_frame, end=end_frame,
                                    stride=stride, width=width, height=height)
        return io.NodeOutput(clip.frames, float(clip.fps), int(clip.source_frame_count))
