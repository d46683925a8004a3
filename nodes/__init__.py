"""The ComfyUI nodes of the pack (V3 schema, registered through ``comfy_entrypoint``)."""
from __future__ import annotations

from typing_extensions import override

from comfy_api.v0_0_2 import ComfyExtension, io

from .common import register_model_folder
from .conditioning import InflateSVDConditioning
from .examples import install_examples
from .files import LoadMotionEmbedding, SaveMotionEmbedding
from .learn import LearnMotionEmbedding
from .library_nodes import BlendMotionEmbeddings, GatherReferenceClips
from .metrics_node import MotionFidelityScore
from .motion import ApplyMotion, DebiasValueEmbedding
from .reference_noise import ReferenceNoise
from .toy.toy_clips import ToyMotionClip, ToyTargetImage, ToyVideoConditioning
from .toy.toy_model import LoadToyVideoModel
from .toy.toy_wan_model import LoadToyWanModel, ToyWanFirstFrameLatent
from .video_nodes import LoadReferenceVideo

NODES = [LoadReferenceVideo, LearnMotionEmbedding, DebiasValueEmbedding, InflateSVDConditioning, ApplyMotion,
         SaveMotionEmbedding, LoadMotionEmbedding, ReferenceNoise, LoadToyVideoModel, LoadToyWanModel,
         MotionFidelityScore, ToyMotionClip, ToyTargetImage, ToyVideoConditioning, ToyWanFirstFrameLatent,
         GatherReferenceClips, BlendMotionEmbeddings]


class MotionInversionExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> MotionInversionExtension:
    register_model_folder()
    install_examples()          # the example clip and images the shipped workflows name
    return MotionInversionExtension()
