"""Motion Inversion for ComfyUI: learn the motion of a reference video, re-apply it with SVD.

ComfyUI imports this package from ``custom_nodes/`` and calls ``comfy_entrypoint`` (V3
registration). The node modules import ComfyUI, so they are imported only then; the
method itself is in ``motion_core`` and never imports ComfyUI.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import comfy_entrypoint as nodes_entrypoint

    return await nodes_entrypoint()


__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
