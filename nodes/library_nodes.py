"""Gather Reference Clips and Blend Motion Embeddings: one motion from several clips, several motions in one."""
from __future__ import annotations

import torch

from comfy_api.v0_0_2 import io, ui

from ..motion_core.library import blend
from .common import CATEGORY, NODE_PREFIX, MotionEmbeddingSocket, ReferenceClipsSocket

MAX_CLIPS_PER_NODE = 4
MAX_BLEND = 4


def _check_clip(name: str, clip) -> torch.Tensor:
    if not isinstance(clip, torch.Tensor) or clip.ndim != 4 or clip.shape[0] < 2 or clip.shape[-1] < 3:
        shape = tuple(clip.shape) if isinstance(clip, torch.Tensor) else type(clip).__name__
        raise ValueError(f"{name} must be a clip of 2 frames or more (an IMAGE batch from Load Reference Video), got "
                         f"{shape}")
    return clip


class GatherReferenceClips(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        clip_inputs = [io.Image.Input(f"clip_{index}", optional=index > 1,
                                      tooltip=("A clip of the motion, e.g. from Load Reference Video." if index == 1
                                               else "Another clip of the same motion (optional).") +
                                      " Any length and size: Learn conforms each to its reference.")
                       for index in range(1, MAX_CLIPS_PER_NODE + 1)]
        return io.Schema(
            node_id=NODE_PREFIX + "GatherReferenceClips",
            display_name="Gather Reference Clips",
            category=CATEGORY,
            description="Gathers clips of one motion (e.g. the same camera move or gesture on other scenes) for Learn "
                        "Motion Embedding's more_references input: each learning step takes one clip of them all, so "
                        "the embedding keeps the motion they share. Chain nodes (clips in) for more than "
                        f"{MAX_CLIPS_PER_NODE}. The clips may differ in length and size; Learn picks frames evenly and "
                        "scales and crops each to its reference's.",
            inputs=[ReferenceClipsSocket.Input("clips", optional=True,
                                               tooltip="Clips gathered by another Gather Reference Clips, to add to.")]
                   + clip_inputs,
            outputs=[ReferenceClipsSocket.Output(display_name="clips",
                                                 tooltip="The clips, for Learn Motion Embedding's more_references.")],
        )

    @classmethod
    def execute(cls, clip_1, clip_2=None, clip_3=None, clip_4=None, clips=None) -> io.NodeOutput:
        gathered = list(clips or [])
        for index, clip in enumerate((clip_1, clip_2, clip_3, clip_4), start=1):
            if clip is not None:
                gathered.append(_check_clip(f"clip_{index}", clip))
        sizes = ", ".join(f"{int(c.shape[0])}x{int(c.shape[2])}x{int(c.shape[1])}" for c in gathered)
        return io.NodeOutput(gathered, ui=ui.PreviewText(f"{len(gathered)} clip(s) (frames x width x height): {sizes}"))


class BlendMotionEmbeddings(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        inputs = []
        for index in range(1, MAX_BLEND + 1):
            optional = index > 2
            inputs += [
                MotionEmbeddingSocket.Input(f"motion_embedding_{index}", optional=optional,
                                            tooltip="A learned motion" + (" (optional)." if optional else ".") +
                                            (" It sets the frame count and grid; the others are resampled to it."
                                             if index == 1 else "")),
                io.Float.Input(f"weight_{index}", default=0.5 if index <= 2 else 0.0, min=-2.0, max=2.0, step=0.01,
                               optional=optional, tooltip=f"Weight of motion_embedding_{index}. Weights that add up "
                                                          "to 1 keep each motion at that share of its strength: on the "
                                                          "toy model a 0.5 / 0.5 blend of two weak motions read mostly "
                                                          "as still (docs/quality.md); try weights that sum to more."),
            ]
        return io.Schema(
            node_id=NODE_PREFIX + "BlendMotionEmbeddings",
            display_name="Blend Motion Embeddings",
            category=CATEGORY,
            description="Mixes two to four learned motions into one: every learned tensor (query-key and value "
                        "Motion Embeddings, motion tokens) is the weighted sum of theirs. They must come from the "
                        "same model with the same layers and representation and be debiased alike; frame counts "
                        "and sizes may differ (resampled to the first's). The result goes to Apply Motion (or "
                        "Inflate SVD Conditioning) like any embedding.",
            inputs=inputs,
            outputs=[MotionEmbeddingSocket.Output(display_name="motion_embedding", tooltip="The blend.")],
        )

    @classmethod
    def execute(cls, motion_embedding_1, weight_1, motion_embedding_2, weight_2, motion_embedding_3=None,
                weight_3=0.0, motion_embedding_4=None, weight_4=0.0) -> io.NodeOutput:
        pairs = [(embedding, weight) for embedding, weight in ((motion_embedding_1, weight_1),
                                                               (motion_embedding_2, weight_2),
                                                               (motion_embedding_3, weight_3),
                                                               (motion_embedding_4, weight_4)) if embedding is not None]
        out = blend([embedding for embedding, _ in pairs], [weight for _, weight in pairs])
        weights = " + ".join(f"{weight:g}" for _, weight in pairs)
        return io.NodeOutput(out, ui=ui.PreviewText(f"blend of {len(pairs)} motions ({weights}): {out.summary()}"))
