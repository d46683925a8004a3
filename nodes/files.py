"""Save / Load Motion Embedding (``models/motion_embeddings``, ``.safetensors`` only)."""
from __future__ import annotations

import logging

import folder_paths
from comfy_api.v0_0_2 import io, ui

from ..motion_core.fileio import EmbeddingFileError, load_embedding, save_numbered
from .common import CATEGORY, FOLDER_NAME, NODE_PREFIX, MotionEmbeddingSocket, embedding_folder

log = logging.getLogger(__name__)


class SaveMotionEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "SaveMotionEmbedding",
            display_name="Save Motion Embedding",
            category=CATEGORY,
            description="Saves a motion embedding to models/motion_embeddings/ as .safetensors with its settings. "
                        "Never overwrites: each save gets the next free number.",
            inputs=[
                MotionEmbeddingSocket.Input("motion_embedding", tooltip="The embedding to save."),
                io.String.Input("filename_prefix", default="motion",
                                tooltip="File name start; _00001, _00002, ... is appended."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Where the file was written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion_embedding, filename_prefix) -> io.NodeOutput:
        path = save_numbered(motion_embedding, embedding_folder(), filename_prefix)
        log.info("Saved motion embedding to %s", path)
        return io.NodeOutput(path, ui=ui.PreviewText(f"saved {path}\n{motion_embedding.summary()}"))


class LoadMotionEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "LoadMotionEmbedding",
            display_name="Load Motion Embedding",
            category=CATEGORY,
            description="Loads a motion embedding saved by Save Motion Embedding from models/motion_embeddings/.",
            inputs=[io.Combo.Input("embedding", options=folder_paths.get_filename_list(FOLDER_NAME),
                                   tooltip="A file in models/motion_embeddings/.")],
            outputs=[MotionEmbeddingSocket.Output(display_name="motion_embedding", tooltip="The loaded motion.")],
        )

    @classmethod
    def validate_inputs(cls, embedding):
        if folder_paths.get_full_path(FOLDER_NAME, embedding) is None:
            return f"motion embedding {embedding!r} not found in models/{FOLDER_NAME}/"
        return True

    @classmethod
    def execute(cls, embedding) -> io.NodeOutput:
        path = folder_paths.get_full_path_or_raise(FOLDER_NAME, embedding)
        try:
            loaded = load_embedding(path)
        except EmbeddingFileError as exc:
            raise ValueError(str(exc)) from exc
        return io.NodeOutput(loaded, ui=ui.PreviewText(loaded.summary()))
