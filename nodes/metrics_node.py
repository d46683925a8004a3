"""Motion Fidelity Score: how alike the motion of two clips is (Motion Inversion, eq. 6)."""
from __future__ import annotations

from comfy_api.v0_0_2 import io, ui

from ..motion_core.metrics import motion_fidelity_score
from .common import CATEGORY, NODE_PREFIX

MOVING, ALL = "moving", "all"
POINTS = (MOVING, ALL)


class MotionFidelityScore(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "MotionFidelityScore",
            display_name="Motion Fidelity Score",
            category=CATEGORY,
            description="Compares the motion of two clips with KLT point tracks (Motion Fidelity Score of Motion "
                        "Inversion, eq. 6): about 1 for the same motion, low for different or opposite motion. "
                        "Appearance does not matter; the clips need the same frame count. By default only points "
                        "that move count: still background agrees with anything that keeps it still.",
            inputs=[
                io.Image.Input("reference", tooltip="The reference clip (frames as an IMAGE batch)."),
                io.Image.Input("generated", tooltip="The generated clip, same number of frames."),
                io.Combo.Input("points", options=list(POINTS), default=MOVING, optional=True,
                               tooltip="moving: only tracks that move in either clip (the paper's score does not "
                                       "reward still tracks; a clip with no motion at all scores about 0.58 on "
                                       "all points against the toy references, near 0.25 on moving ones). all: "
                                       "every track, still background included."),
            ],
            outputs=[io.Float.Output(display_name="score", tooltip="Motion Fidelity Score, -1..1 (1 = same motion).")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reference, generated, points: str = MOVING) -> io.NodeOutput:
        if points not in POINTS:
            raise ValueError(f"points must be one of {list(POINTS)}, got {points!r}")
        if reference.shape[0] != generated.shape[0]:
            raise ValueError(f"the clips have {reference.shape[0]} and {generated.shape[0]} frames; give clips of "
                             "the same length (e.g. the same frame count in Load Reference Video and the sampler)")
        value = motion_fidelity_score(reference, generated, moving_only=points == MOVING)
        return io.NodeOutput(float(value), ui=ui.PreviewText(f"Motion Fidelity Score ({points} points): {value:.3f}"))
