"""Save / Load Motion Embedding (``models/motion_embeddings``, ``.safetensors`` only)."""
from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.v0_0_2 import io, ui

from ..motion_core.fileio import EmbeddingFileError, load_embedding, save_numbered
from .common import CATEGORY, FOLDER_NAME, NODE_PREFIX, MotionEmbeddingSocket, embedding_folder

log = logging.getLogger(__name__)

MODELS_FOLDER, OUTPUT_FOLDER = "models", "output"
SAVE_FOLDERS = (MODELS_FOLDER, OUTPUT_FOLDER)
SAVED_MARK = "file: "      # the ui line that names the saved file, relative to ComfyUI's folders (learn-library reads it)


class SaveMotionEmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "SaveMotionEmbedding",
            display_name="Save Motion Embedding",
            category=CATEGORY,
            description="Saves a motion embedding to models/motion_embeddings/ (or output/motion_embeddings/) as "
                        ".safetensors with its settings. Never overwrites: each save gets the next free number.",
            inputs=[
                MotionEmbeddingSocket.Input("motion_embedding", tooltip="The embedding to save."),
                io.String.Input("filename_prefix", default="motion",
                                tooltip="File name start; _00001, _00002, ... is appended. A / makes a subfolder."),
                io.Combo.Input("folder", options=list(SAVE_FOLDERS), default=MODELS_FOLDER, optional=True,
                               tooltip="models: models/motion_embeddings/, where Load Motion Embedding lists them. "
                                       "output: output/motion_embeddings/, which ComfyUI's /view serves over HTTP "
                                       "(python -m motion_core learn-library collects files from there)."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Where the file was written.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, motion_embedding, filename_prefix, folder=MODELS_FOLDER) -> io.NodeOutput:
        if folder not in SAVE_FOLDERS:
            raise ValueError(f"folder {folder!r} is not one of {SAVE_FOLDERS}")
        root = embedding_folder() if folder == MODELS_FOLDER else os.path.join(folder_paths.get_output_directory(),
                                                                                 FOLDER_NAME)
        subfolder, prefix = os.path.split(os.path.normpath(filename_prefix or "motion"))
        target = os.path.abspath(os.path.join(root, subfolder))
        if os.path.commonpath((os.path.abspath(root), target)) != os.path.abspath(root) or not prefix:
            raise ValueError(f"filename_prefix {filename_prefix!r} leaves the {folder} folder; use a name, or "
                             "subfolder/name")
        path = save_numbered(motion_embedding, target, prefix)
        log.info("Saved motion embedding to %s", path)
        relative = os.path.relpath(path, root).replace(os.sep, "/")
        return io.NodeOutput(path, ui=ui.PreviewText(f"saved {path}\n{motion_embedding.summary()}\n"
                                                     f"{SAVED_MARK}{folder}/{FOLDER_NAME}/{relative}"))


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
