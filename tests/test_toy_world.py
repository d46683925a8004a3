"""The shipped toy world: weights match their manifest, load in diffusers, and the demo runs."""
import json
import os

import pytest
import torch

from motion_core.toy import toyclips, toyworld
from motion_core.toy.toytrain import sha256


@pytest.mark.parametrize("weights,manifest", [(toyworld.WEIGHTS_PATH, toyworld.MANIFEST_PATH),
                                               (toyworld.SVD_LIKE_WEIGHTS_PATH, toyworld.SVD_LIKE_MANIFEST_PATH)])
def test_weights_match_manifest(weights, manifest):
    with open(manifest, encoding="utf-8") as fh:
        record = json.load(fh)
    assert record["file"] == os.path.basename(weights)
    assert sha256(weights) == record["sha256"]
    assert os.path.getsize(weights) == record["bytes"]
    for key in ("command", "reproduce", "unet_steps", "final_unet_loss_mean_last_100", "date", "seed"):
        assert key in record, key


def test_the_svd_like_model_has_no_motion_tokens_and_was_trained_on_images_alone():
    _parts, tokens, metadata = toyworld.load_state(toyworld.SVD_LIKE_WEIGHTS_PATH)
    assert tokens.shape[0] == 0 and metadata["settings"]["conditioning"] == "image"
    assert "--conditioning image" in metadata["reproduce"]


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    return toyworld.load_world()


def test_weights_load_in_diffusers_and_denoise(world):
    from motion_core.diffusers_svd import SVDDenoiser

    clip = torch.rand(toyworld.FRAMES, toyworld.IMAGE_SIZE, toyworld.IMAGE_SIZE, 3)
    latents = world.encode(clip) * toyworld.SVD_LATENT_SCALE
    assert latents.shape == (toyworld.FRAMES, 4, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE)
    denoiser = SVDDenoiser(world.unet, image_embeds=world.image_embeds(clip[:1]))
    noisy = latents + 2.0 * torch.randn_like(latents)
    out = denoiser(noisy, torch.full((toyworld.FRAMES,), 2.0), latents[:1])
    assert out.shape == latents.shape and torch.isfinite(out).all()
    assert world.motion_tokens.dim() == 3 and world.motion_tokens.shape[::2] == (26, toyworld.TOKEN_WIDTH)  # (classes n d)
    assert world.metadata["classes"][0] == "translate_E_1"


def test_vae_keeps_svd_latent_scale(world):
    from motion_core.toy import toyclips

    clip, _spec = toyclips.make_clip("pan_E", 3)
    latents = world.encode(clip) * toyworld.SVD_LATENT_SCALE
    assert 0.4 < float(latents.std()) < 2.5
    decoded = world.decode(latents / toyworld.SVD_LATENT_SCALE)
    assert float((decoded - clip).abs().mean()) < 0.12


def test_short_demo_writes_every_output(tmp_path, world):
    from motion_core.toy.demo import main

    out = str(tmp_path / "demo")
    assert main(["--out", out, "--steps", "3", "--sample-steps", "3", "--num-targets", "2"]) == 0
    names = set(os.listdir(out))
    assert {"reference.webp", "target_1.webp", "target_2.webp", "target_1_no_motion.webp", "grid.png", "grid.webp",
            "report.json"} <= names
    import cv2
    from PIL import Image

    grid = cv2.imread(os.path.join(out, "grid.png"))
    strip = toyworld.FRAMES * toyworld.IMAGE_SIZE * 2
    assert grid.shape[1] > strip + 150 and grid.shape[0] > 5 * toyworld.IMAGE_SIZE * 2   # label band; 5 rows
    with Image.open(os.path.join(out, "grid.webp")) as animated:
        assert animated.n_frames == toyworld.FRAMES
    with open(os.path.join(out, "report.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    assert len(report["targets"]) == 2 and report["reference_class"] == "translate_E_2"
    for key in ("class_accuracy", "dense_class_accuracy", "nearest_ideal_accuracy", "motion_fidelity",
                "motion_fidelity_wide", "first_frame_psnr", "appearance_leakage"):
        assert key in report["summary"]["with_motion"]
    assert report["guidance"] == {"first_frame": 1.0, "last_frame": 5.0}
    assert report["targets"][0]["with_motion"]["ideal_class"] in toyclips.MOTION_CLASSES
