"""Shared bits of the node layer: the socket type, the model folder, server events."""
from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.v0_0_2 import io

log = logging.getLogger(__name__)

CATEGORY = "motion_inversion"
NODE_PREFIX = "MotionInversion_"
FOLDER_NAME = "motion_embeddings"
LOSS_EVENT = "motion_inversion.loss"

MotionEmbeddingSocket = io.Custom("MOTION_EMBEDDING")
ReferenceClipsSocket = io.Custom("MOTION_REFERENCE_CLIPS")   # a list of IMAGE batches: more clips of one motion
FRAME_STRENGTHS_TOOLTIP = ("Strength over the frames: numbers spread evenly from the first frame to the last, linear "
                           "between them. Empty = 1 everywhere; '0, 1' ramps the motion in; '1, 1, 0' fades it out "
                           "over the last half; '1, 0.5, 1' eases it in the middle. Each between 0 and 2.")


def check_percent_range(start_percent, end_percent):
    """``True``, or what is wrong with a start / end percent pair (ComfyUI skips its own range check for inputs
    that a node's ``validate_inputs`` names)."""
    for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
        if value is not None and not 0.0 <= value <= 1.0:
            return f"{name} is {value}; it must be between 0 and 1"
    if start_percent is not None and end_percent is not None and start_percent > end_percent:
        return f"start_percent ({start_percent}) must not be after end_percent ({end_percent})"
    return True


def register_model_folder() -> None:
    """``models/motion_embeddings`` as a model folder listing only ``.safetensors`` files."""
    default = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    folder_paths.add_model_folder_path(FOLDER_NAME, default, is_default=True)
    paths, _extensions = folder_paths.folder_names_and_paths[FOLDER_NAME]
    folder_paths.folder_names_and_paths[FOLDER_NAME] = (paths, {".safetensors"})


def embedding_folder() -> str:
    if FOLDER_NAME not in folder_paths.folder_names_and_paths:
        register_model_folder()
    return folder_paths.get_folder_paths(FOLDER_NAME)[0]


def send_event(event: str, payload: dict) -> None:
    """Best-effort websocket event to the frontend (absent when run without a server)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None:
        server.send_sync(event, payload, getattr(server, "client_id", None))
