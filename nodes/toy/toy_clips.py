"""Toy-world inputs for ComfyUI: clips with known motion, new target images, and SVD
conditioning that follows the VAE's own downscale (the toy VAE is 4x, SVD's 8x)."""
from __future__ import annotations

import torch
from comfy_api.v0_0_2 import io

from ...motion_core.toy import toyclips, wanworld
from ..common import CATEGORY, NODE_PREFIX

TOY_CATEGORY = CATEGORY + "/toy"


class ToyMotionClip(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "ToyMotionClip",
            display_name="Toy Motion Clip",
            category=TOY_CATEGORY,
            description="A generated clip whose motion is known (toy world): textured shapes moving by the chosen "
                        "motion class. The held-out palette uses shapes, colours and backgrounds the toy model never "
                        "saw. Use it as a reference video for the toy models (13 frames for the toy Wan model); "
                        "its caption is the scene's prompt for the toy Wan model.",
            inputs=[
                io.Combo.Input("motion", options=list(toyclips.MOTION_CLASSES), default="translate_E_2",
                               tooltip="The motion class (translation direction_speed, circle, zoom, rotate, pan, ...)."),
                io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, tooltip="Which scene to draw."),
                io.Combo.Input("palette", options=["heldout", "train"], default="heldout",
                               tooltip="heldout: appearance the toy model never saw; train: like its training clips."),
                io.Int.Input("frames", default=8, min=8, max=14,
                             tooltip="Clip length (the toy video model is trained on 8, the toy Wan model on 13)."),
            ],
            outputs=[io.Image.Output(display_name="frames", tooltip="The clip, (frames, 64, 64, 3)."),
                     io.String.Output(display_name="caption",
                                      tooltip="The scene as a toy Wan prompt, without the motion word (each object's "
                                              "colour, texture and shape, then the background): the prompt to "
                                              "learn its motion with.")],
        )

    @classmethod
    def execute(cls, motion, seed, palette, frames) -> io.NodeOutput:
        clip, spec = toyclips.make_clip(motion, seed, frames=frames, palette=palette)
        return io.NodeOutput(clip, wanworld.caption(spec, with_motion=False))


class ToyTargetImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "ToyTargetImage",
            display_name="Toy Target Image",
            category=TOY_CATEGORY,
            description="A new toy scene (64 x 64) to animate with a learned motion.",
            inputs=[io.Int.Input("seed", default=1, min=0, max=2 ** 31 - 1, tooltip="Which scene to draw."),
                    io.Combo.Input("palette", options=["heldout", "train"], default="heldout",
                                   tooltip="heldout: appearance the toy model never saw.")],
            outputs=[io.Image.Output(display_name="image", tooltip="The first frame, (1, 64, 64, 3)."),
                     io.String.Output(display_name="caption",
                                      tooltip="The scene as a toy Wan prompt, without a motion word: the prompt to "
                                              "draw it with, the learned motion applied.")],
        )

    @classmethod
    def execute(cls, seed, palette) -> io.NodeOutput:
        (spec,) = toyclips.make_target_specs(1, seed, palette=palette)
        return io.NodeOutput(toyclips.first_frames([spec]), wanworld.caption(spec, with_motion=False))


class ToyVideoConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE_PREFIX + "ToyVideoConditioning",
            display_name="Toy Video Conditioning",
            category=TOY_CATEGORY,
            description="SVD_img2vid_Conditioning for the toy model: the same positive, with the empty video latent "
                        "sized by the VAE's own downscale (4x for the toy VAE; the stock node assumes 8x). The "
                        "negative is the toy model's no-motion conditioning (the image token and the first frame), "
                        "not SVD's zeros, which the toy model never saw in training.",
            inputs=[
                io.ClipVision.Input("clip_vision", tooltip="From Load Toy Video Model."),
                io.Image.Input("init_image", tooltip="The image to animate (64 x 64)."),
                io.Vae.Input("vae", tooltip="From Load Toy Video Model."),
                io.Int.Input("video_frames", default=8, min=1, max=64, tooltip="Frames to generate (trained on 8)."),
                io.Int.Input("motion_bucket_id", default=127, min=1, max=1023, tooltip="As in Learn (127)."),
                io.Int.Input("fps", default=6, min=1, max=60, tooltip="As in Learn (6)."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive", tooltip="Image token + first-frame latent."),
                     io.Conditioning.Output(display_name="negative",
                                            tooltip="The toy model's 'no motion': the same image token and latent. "
                                                    "Inflate SVD Conditioning keeps it with negative_mode 'keep "
                                                    "input negative', so CFG amplifies the learned motion."),
                     io.Latent.Output(display_name="latent", tooltip="The empty video latent.")],
        )

    @classmethod
    def execute(cls, clip_vision, init_image, vae, video_frames, motion_bucket_id, fps) -> io.NodeOutput:
        pooled = clip_vision.encode_image(init_image[:1]).image_embeds.unsqueeze(0)
        first = vae.encode(init_image[:1, :, :, :3])
        extra = {"motion_bucket_id": motion_bucket_id, "fps": fps, "augmentation_level": 0.0}
        positive = [[pooled, dict(extra, concat_latent_image=first)]]
        # the toy model's "no motion" is its image token (trained so 15 % of the time), not SVD's zeros
        negative = [[pooled.clone(), dict(extra, concat_latent_image=first.clone())]]
        latent = torch.zeros([video_frames, first.shape[1], first.shape[2], first.shape[3]])
        return io.NodeOutput(positive, negative, {"samples": latent})
