"""The Wan toy world's pieces (host-free): captions, the text encoder, the latent calibration, training, files."""
import json
import os

import numpy as np
import pytest
import torch

from motion_core.toy import toyclips, wanworld
from motion_core.toy.wantrain import (WanToyTrainSettings, caption_batch, caption_table, fit_latent_basis, flow_batch,
                                     latent_patches, start_per_frame, start_temporal_as_copies, train_toy_wan,
                                     train_transformer, train_vae)


def test_captions_name_the_scene_word_by_word_and_read_back_case_blind():
    spec = wanworld.sample_caption_spec(np.random.default_rng(3), "pan_E", palette="heldout")
    words = wanworld.caption_words(spec)
    assert words[0] == "pan_E" and words[-3] == spec.background and len(words) == 1 + 3 * spec.n_objects + 3
    assert wanworld.caption(spec, with_motion=False) == " ".join(words[1:])
    ids = wanworld.caption_ids(wanworld.caption(spec).upper())
    assert ids.shape == (wanworld.CAPTION_TOKENS,) and int((ids != 0).sum()) == len(words)
    assert [wanworld.VOCABULARY[i] for i in ids[: len(words)]] == words
    assert int(wanworld.caption_ids("pan_E wobbling")[1]) == wanworld.VOCABULARY.index(wanworld.UNKNOWN)
    with pytest.raises(ValueError, match="at most 16 words"):
        wanworld.caption_ids(" ".join(["red"] * 17))


def test_the_text_encoder_gives_zeros_where_the_caption_is_padded_and_for_an_empty_prompt():
    encoder = wanworld.TextEncoder()
    torch.nn.init.normal_(encoder.positions)
    encoded = encoder.encode(["red circle", ""])
    assert encoded.shape == (2, wanworld.CAPTION_TOKENS, wanworld.TEXT_DIM)
    assert encoded[0, :2].abs().sum() > 0 and encoded[0, 2:].abs().sum() == 0 and encoded[1].abs().sum() == 0


def test_calibrating_the_latent_gives_wans_statistics_and_leaves_the_decoded_video_alone():
    _transformer, vae, _text = wanworld.build_models(0)
    vae.eval()
    clips = torch.stack([toyclips.render_clip(wanworld.sample_caption_spec(np.random.default_rng(seed), motion))
                         for seed, motion in ((1, "bounce"), (2, "zoom_in"), (3, "pan_W"))])[:, :, :32, :32]
    pixels = clips.permute(0, 4, 1, 2, 3) * 2 - 1
    with torch.no_grad():
        before = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        wanworld.calibrate_latent(vae, clips)
        raw = vae.encode(pixels).latent_dist.mean
        after = vae.decode(raw).sample
    assert raw.shape == (3, 16, 4, 8, 8)                     # 13 frames -> 4 latent frames, 4x smaller sides
    normalised = wanworld.latent_to_model(raw)
    assert torch.allclose(normalised.mean(dim=(0, 2, 3, 4)), torch.zeros(16), atol=1e-4)
    assert torch.allclose(normalised.std(dim=(0, 2, 3, 4)), torch.ones(16), atol=1e-3)
    assert torch.allclose(wanworld.model_to_latent(normalised), raw, atol=1e-5)
    assert torch.allclose(after, before, atol=1e-4)


def _clips(count: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    motions = toyclips.MOTION_CLASSES
    return torch.stack([toyclips.render_clip(wanworld.sample_caption_spec(rng, motions[i % len(motions)]))
                        for i in range(count)])


def test_the_latent_basis_has_wans_causal_geometry_and_keeps_more_than_the_mean():
    clips = _clips(12)
    basis = fit_latent_basis(clips, samples=4000)
    pixels = clips.permute(0, 4, 1, 2, 3) * 2 - 1                       # (b c 13 64 64)
    coefficients = basis.encode(pixels)
    assert coefficients.shape == (12, wanworld.LATENT_CHANNELS, 4, 16, 16)
    changed = pixels.clone()
    changed[:, :, 5:] = torch.rand_like(changed[:, :, 5:])              # frames 5.. belong to latent frames 2, 3
    recoded = basis.encode(changed)
    assert torch.equal(recoded[:, :, :2], coefficients[:, :, :2]) and not torch.equal(recoded[:, :, 2], coefficients[:, :, 2])
    # an orthonormal basis: projecting back keeps far more than the mean patch does
    first, _ = latent_patches(pixels)
    kept = torch.einsum("bkhw,kp->bhwp", coefficients[:, :, 0], basis.first_basis) + basis.first_mean
    assert torch.allclose(basis.first_basis @ basis.first_basis.T, torch.eye(wanworld.LATENT_CHANNELS), atol=1e-4)
    assert ((kept - first) ** 2).mean() < 0.2 * ((basis.first_mean - first) ** 2).mean()


def test_each_vae_stage_lowers_its_own_loss():
    clips = _clips(8)
    _, vae, _ = wanworld.build_models(0)
    steps = 25
    settings = WanToyTrainSettings(vae_encoder_steps=steps, vae_decoder_steps=steps, vae_image_steps=0, vae_steps=0,
                                   vae_image_batch=4, vae_crop=16, warmup_steps=2)
    history = train_vae(vae, clips, settings, torch.Generator().manual_seed(0))
    assert len(history) == 2 * steps
    for stage in (history[:steps], history[steps:]):
        assert sum(stage[-5:]) < 0.8 * sum(stage[:5]), stage


def test_the_vae_starts_per_frame_and_its_temporal_convolutions_as_averages_and_copies():
    _, vae, _ = wanworld.build_models(0)
    start_per_frame(vae)
    convolution = vae.encoder.down_blocks[0].conv1                     # a causal 3x3x3 convolution
    frames = torch.randn(1, convolution.in_channels, 3, 6, 6)
    alone = convolution(frames[:, :, 2:])
    assert torch.allclose(convolution(frames)[:, :, 2:], alone, atol=1e-5)   # frame 2 sees only itself
    start_temporal_as_copies(vae)
    down = next(m for m in vae.encoder.modules() if getattr(m, "time_conv", None) is not None)
    up = next(m for m in vae.decoder.modules() if getattr(m, "time_conv", None) is not None)
    frames = torch.randn(1, down.time_conv.in_channels, 5, 4, 4)       # (previous, a, b, c, d)
    averaged = down.time_conv(frames)
    assert averaged.shape[2] == 2
    assert torch.allclose(averaged[:, :, 0], (frames[:, :, 1] + frames[:, :, 2]) / 2, atol=1e-6)
    assert torch.allclose(averaged[:, :, 1], (frames[:, :, 3] + frames[:, :, 4]) / 2, atol=1e-6)
    current = torch.randn(1, up.time_conv.in_channels, 1, 4, 4)
    copied = up.time_conv(current)
    assert torch.allclose(copied, torch.cat([current, current], dim=1), atol=1e-6)


def test_training_batches_drop_motion_words_and_captions_at_their_shares():
    specs = [wanworld.sample_caption_spec(np.random.default_rng(s), "circle_cw") for s in range(400)]
    generator = torch.Generator().manual_seed(0)
    settings = WanToyTrainSettings(motion_word_share=0.75, caption_drop=0.2)
    ids = caption_batch(caption_table(specs), torch.arange(400), settings, generator)
    motion = wanworld.VOCABULARY.index("circle_cw")
    dropped = (ids == 0).all(dim=1)
    with_motion = (ids[:, 0] == motion) & ~dropped
    assert 0.12 < float(dropped.float().mean()) < 0.28
    assert 0.65 < float(with_motion.sum()) / float((~dropped).sum()) < 0.85
    clean = torch.randn(64, 16, 4, 8, 8)
    noisy, timestep, target = flow_batch(clean, generator, shift=3.0)
    sigma = (timestep / 1000).view(-1, 1, 1, 1, 1)
    noise = target + clean
    assert torch.allclose(noisy, (1 - sigma) * clean + sigma * noise, atol=1e-5)
    assert float((timestep / 1000).median()) > 0.6              # shift 3 leans towards noise


def test_the_dataset_renders_only_the_motions_named_and_unknown_names_are_refused():
    from motion_core.toy.wantrain import motion_classes, render_dataset
    assert motion_classes("") == toyclips.MOTION_CLASSES
    _clips, specs = render_dataset(WanToyTrainSettings(clips=6, motions="zoom_in, pan_W, static"))
    assert [spec.motion for spec in specs] == ["zoom_in", "pan_W", "static"] * 2
    with pytest.raises(ValueError, match="zoom_sideways"):
        motion_classes("zoom_in,zoom_sideways")


def test_the_transformer_learns_the_clips_it_is_shown():
    torch.manual_seed(0)
    transformer, _vae, text = wanworld.build_models(0)
    specs = [wanworld.sample_caption_spec(np.random.default_rng(s), "translate_E_2") for s in range(4)]
    latents = torch.randn(4, 16, 4, 8, 8) * 0.3 + torch.linspace(-1, 1, 16).view(1, 16, 1, 1, 1)
    settings = WanToyTrainSettings(steps=60, batch=4, lr=3e-3, warmup_steps=5, checkpoint_every=1000)
    history, ema = train_transformer(transformer, text, latents, specs, settings, torch.Generator().manual_seed(1),
                                     lambda *_: None)
    assert len(history) == 60 and sum(history[-15:]) < 0.8 * sum(history[:15]), history
    assert not torch.equal(next(ema["transformer"].parameters()), next(transformer.parameters()))   # an average


def test_train_toy_wan_writes_weights_that_match_their_manifest(tmp_path):
    settings = WanToyTrainSettings(clips=26, vae_encoder_steps=2, vae_decoder_steps=2, vae_image_steps=2, vae_steps=2,
                                   vae_batch=2,
                                   steps=8, batch=4, lr=2e-3, warmup_steps=2,
                                   checkpoint_every=4, threads=1)
    path, manifest = tmp_path / "toy_wan.safetensors", tmp_path / "manifest.json"
    record = train_toy_wan(settings, str(path), str(manifest))
    written = json.loads(manifest.read_text())
    assert written == record and written["transformer_steps"] == 8 and written["bytes"] == path.stat().st_size
    import hashlib
    assert hashlib.sha256(path.read_bytes()).hexdigest() == written["sha256"]
    assert written["command"].startswith("python -m motion_core train-toy-wan") and "--steps 8" in written["command"]
    world = wanworld.load_world(str(path))
    assert world.metadata["transformer_steps_done"] == 8 and not any(
        p.requires_grad for p in world.transformer.parameters())
    frames = toyclips.render_clip(wanworld.sample_caption_spec(np.random.default_rng(0), "bounce"))
    latents = world.encode(frames)
    assert latents.shape == (1, 16, 4, 16, 16) and world.decode(latents).shape == frames.shape
    with pytest.raises(ValueError, match="caption_drop"):
        train_toy_wan(WanToyTrainSettings(caption_drop=1.5), str(path), str(manifest))
    # going on from the file: its VAE is kept as it is, its transformer trains on from its weights
    second = tmp_path / "second.safetensors"
    settings = WanToyTrainSettings(clips=26, steps=5, batch=4, lr=2e-3, warmup_steps=1, checkpoint_every=100,
                                   threads=1, init_weights=str(path))
    again = train_toy_wan(settings, str(second), str(tmp_path / "second.json"))
    assert again["vae_steps"] == [0, 0, 0, 0] and f"--init-weights {path}" in again["reproduce"]
    went_on = wanworld.load_world(str(second))
    assert all(torch.equal(a, b) for a, b in zip(world.vae.state_dict().values(), went_on.vae.state_dict().values()))
    moved = [not torch.equal(a, b) for a, b in zip(world.transformer.parameters(), went_on.transformer.parameters())]
    assert any(moved) and went_on.metadata["latent_calibration"] == world.metadata["latent_calibration"]
    with pytest.raises(FileNotFoundError, match="init_weights"):
        train_toy_wan(WanToyTrainSettings(init_weights=str(tmp_path / "none.safetensors")), str(second),
                      str(tmp_path / "second.json"))


def test_the_shipped_toy_wan_matches_its_manifest_and_each_stage_names_its_command():
    from motion_core.toy.toytrain import sha256

    with open(wanworld.MANIFEST_PATH, encoding="utf-8") as fh:
        record = json.load(fh)
    assert record["file"] == "toy_wan.safetensors" == wanworld.WEIGHTS_PATH.rsplit("/", 1)[-1]
    assert sha256(wanworld.WEIGHTS_PATH) == record["sha256"]
    assert record["bytes"] == os.path.getsize(wanworld.WEIGHTS_PATH)
    stages = record["stages"]
    assert [s["stage"] for s in stages] == [1, 2, 3] and stages[-1]["sha256"] == record["sha256"]
    for earlier, later in zip(stages, stages[1:]):       # each stage goes on from the one before it
        assert "--init-weights" in later["command"] and later["vae_steps"] == [0, 0, 0, 0], later
    assert stages[0]["vae_steps"] != [0, 0, 0, 0] and "--init-weights" not in stages[0]["command"]
    assert record["transformer_steps_all_stages"] == sum(s["transformer_steps"] for s in stages)
    world = wanworld.load_world()
    assert world.metadata["transformer_steps_done"] == record["transformer_steps"]
    frames = toyclips.render_clip(wanworld.sample_caption_spec(np.random.default_rng(0), "pan_W", palette="heldout"))
    decoded = world.decode(world.encode(frames))
    psnr = float(-10 * torch.log10(((decoded - frames) ** 2).mean()))
    assert psnr > 20.0, psnr       # the staged VAE's round trip (docs/wan_toy.md item 4: 24 dB on held-out clips)
