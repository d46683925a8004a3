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
