"""Toy-model training pieces and the quality benchmark, on tiny settings."""
import dataclasses
import hashlib
import json

import pytest
import torch

from motion_core.toy import toyclips, toyworld
from motion_core.toy.toytrain import (CheckpointAverage, ToyTrainSettings, _command, batched_denoise, clip_weights,
                                  denoising_loss, lr_schedule, recolour, render_dataset, token_gap, train_toy,
                                  train_unet, train_vae)


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = lr_schedule(optimizer, steps=50, warmup=10)
    rates = []
    for _ in range(50):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:10]))           # warm-up rises
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))            # then only falls
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)           # ... to 10 % of the peak


def test_lr_schedule_final_share_one_holds_the_peak_and_out_of_range_is_refused():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    schedule = lr_schedule(optimizer, steps=30, warmup=5, final_share=1.0)
    rates = []
    for _ in range(30):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.4) and all(rate == pytest.approx(2.0) for rate in rates[4:])
    with pytest.raises(ValueError, match="lr_final_share.*0..1; got 1.5"):
        lr_schedule(optimizer, steps=30, warmup=5, final_share=1.5)


def test_checkpoint_average_is_the_mean_of_late_checkpoints_only():
    net = torch.nn.Linear(3, 2)
    average = CheckpointAverage(first=400)
    for step, value in ((200, 9.0), (400, 1.0), (600, 2.0), (800, 6.0)):
        with torch.no_grad():
            net.weight.fill_(value)
        average.add(step, net, torch.full((4, 5), value))
    tokens = average.apply(net, torch.zeros(4, 5))
    assert average.steps == [400, 600, 800]                      # step 200 is before the averaging window
    assert torch.allclose(net.weight, torch.full((2, 3), 3.0)) and torch.allclose(tokens, torch.full((4, 5), 3.0))
    lone = CheckpointAverage(first=800)
    lone.add(800, net, torch.ones(4, 5))
    with torch.no_grad():
        net.weight.fill_(7.0)
    assert torch.equal(lone.apply(net, torch.zeros(4, 5)), torch.zeros(4, 5))   # one checkpoint: weights left as they are
    assert torch.all(net.weight == 7.0)


def test_temporal_loss_charges_shimmer_more_than_a_steady_error():
    clean = torch.randn(2, toyworld.FRAMES, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    weight = torch.tensor([1.0, 3.0])[:, None, None, None, None]
    steady = clean + 0.1                                                  # the same error in every frame
    shimmer = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    assert denoising_loss(shimmer, clean, weight) == pytest.approx(float((weight * (shimmer - clean) ** 2).mean()))
    assert denoising_loss(steady, clean, weight, 2.0) == pytest.approx(float(denoising_loss(steady, clean, weight)))
    plain, temporal = denoising_loss(shimmer, clean, weight), denoising_loss(shimmer, clean, weight, 2.0)
    assert float(temporal / plain) == pytest.approx(1 + 2 * 2.0, rel=0.1)   # uncorrelated error: 1 + 2 * weight


def test_train_toy_writes_weights_that_match_their_manifest(tmp_path):
    settings = ToyTrainSettings(clips=26, vae_steps=2, vae_batch=2, unet_steps=2, unet_batch=2, warmup_steps=1,
                                checkpoint_every=1, average_last=2, temporal_loss_weight=1.5, hard_class_weight=2.0,
                                vae_colour_jitter=0.5, tokens_per_class=3, threads=1, probe_clips=2)
    old_threads = torch.get_num_threads()
    try:
        record = train_toy(settings, str(tmp_path / "toy.safetensors"), str(tmp_path / "manifest.json"))
    finally:
        torch.set_num_threads(old_threads)
    written = json.loads((tmp_path / "manifest.json").read_text())
    assert written == record
    assert written["sha256"] == hashlib.sha256((tmp_path / "toy.safetensors").read_bytes()).hexdigest()
    assert written["unet_steps"] == 2 and written["averaged_checkpoint_steps"] == [1, 2]
    assert "--temporal-loss-weight 1.5" in written["reproduce"]          # a non-default recipe is reproducible
    assert "--hard-class-weight 2.0" in written["reproduce"]
    assert "--vae-colour-jitter 0.5" in written["reproduce"]
    assert "--tokens-per-class 3" in written["reproduce"]
    assert "--log-sigma-mean" not in written["reproduce"]                 # defaults are not repeated
    assert written["command"] == written["reproduce"]                   # called from code: the equivalent command
    world = toyworld.load_world(str(tmp_path / "toy.safetensors"))
    assert world.motion_tokens.shape == (26, 3, toyworld.TOKEN_WIDTH)       # (classes n d)
    assert world.metadata["settings"]["temporal_loss_weight"] == 1.5
    assert not list(tmp_path.glob("*.partial"))


TINY = dict(clips=26, vae_steps=2, vae_batch=2, unet_steps=2, unet_batch=2, warmup_steps=1, checkpoint_every=1,
            average_last=1, threads=1, probe_clips=2)


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory, one_thread):
    """A tiny trained toy file with its manifest beside it: what a second stage starts from."""
    folder = tmp_path_factory.mktemp("first_stage")
    record = train_toy(ToyTrainSettings(**TINY), str(folder / "toy.safetensors"), str(folder / "manifest.json"))
    return folder / "toy.safetensors", record


def test_a_second_stage_keeps_the_vae_and_goes_on_from_the_trained_unet_and_tokens(first_stage, tmp_path):
    first_path, first_record = first_stage
    settings = ToyTrainSettings(**{**TINY, "unet_lr": 1e-5}, init_weights=str(first_path), lr_final_share=1.0,
                                hard_classes="rotate_cw:30,rotate_ccw:30")
    record = train_toy(settings, str(tmp_path / "toy.safetensors"), str(tmp_path / "manifest.json"))
    before, after = toyworld.load_state(str(first_path)), toyworld.load_state(str(tmp_path / "toy.safetensors"))
    for part in ("vae", "image_encoder"):                                 # no VAE phase: the same codec
        assert all(torch.equal(before[0][part][name], after[0][part][name]) for name in before[0][part])
    assert any(not torch.equal(before[0]["unet"][name], after[0]["unet"][name]) for name in before[0]["unet"])
    assert torch.nn.functional.cosine_similarity(before[1].flatten(1), after[1].flatten(1)).min() > 0.99
    assert after[2]["latent_rescale"] == before[2]["latent_rescale"]
    assert record["vae_steps"] == 0 and f"--init-weights {first_path}" in record["reproduce"]
    assert "--lr-final-share 1.0" in record["reproduce"]
    assert record["starts_from"]["sha256"] == first_record["sha256"]
    assert record["starts_from"]["command"] == first_record["command"]    # read from the manifest beside it
    assert record["minutes_all_stages"] >= record["minutes"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == record


def test_a_third_stage_counts_every_stage_even_when_the_manifests_have_other_names(first_stage, tmp_path):
    first_path, first_record = first_stage
    stage = dict(TINY, unet_lr=1e-5, lr_final_share=1.0)
    second = train_toy(ToyTrainSettings(**stage, init_weights=str(first_path)), str(tmp_path / "s2.safetensors"),
                       str(tmp_path / "s2.json"))                        # not manifest.json: the third finds no sidecar
    third = train_toy(ToyTrainSettings(**stage, init_weights=str(tmp_path / "s2.safetensors")),
                      str(tmp_path / "s3.safetensors"), str(tmp_path / "s3.json"))
    assert second["minutes_all_stages"] == pytest.approx(second["minutes"] + first_record["minutes"], abs=0.11)
    assert third["starts_from"]["command"] is None                       # so the sum came from the file itself
    assert third["starts_from"]["reproduce"] == second["reproduce"]       # and how to make that file again
    assert third["starts_from"]["minutes_all_stages"] == second["minutes_all_stages"]
    assert third["minutes_all_stages"] == pytest.approx(third["minutes"] + second["minutes_all_stages"], abs=0.11)
    assert toyworld.load_state(str(tmp_path / "s3.safetensors"))[2]["minutes_all_stages"] == third["minutes_all_stages"]


def test_a_second_stage_names_a_missing_file_or_other_token_count_before_training(first_stage, tmp_path):
    first_path, _ = first_stage
    with pytest.raises(FileNotFoundError, match=r"init_weights: no toy weights file at .*nowhere\.safetensors"):
        train_toy(ToyTrainSettings(**TINY, init_weights=str(tmp_path / "nowhere.safetensors")),
                  str(tmp_path / "toy.safetensors"), str(tmp_path / "m.json"))
    with pytest.raises(ValueError, match="1 token\\(s\\) per class, the settings 3; pass --tokens-per-class 1"):
        train_toy(ToyTrainSettings(**TINY, init_weights=str(first_path), tokens_per_class=3),
                  str(tmp_path / "toy.safetensors"), str(tmp_path / "m.json"))
    assert not list(tmp_path.iterdir())


def test_recolour_changes_hue_of_the_chosen_share_and_keeps_grey():
    pixels = torch.rand(64, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.8 - 0.4   # no clipping
    assert torch.equal(recolour(pixels, 0.0, torch.Generator().manual_seed(1)), pixels)
    changed = recolour(pixels, 1.0, torch.Generator().manual_seed(1))
    assert torch.allclose(changed.mean(1), pixels.mean(1), atol=1e-5)     # the grey part stays: only colour turns
    assert ((changed - pixels).abs().amax((1, 2, 3)) > 0.05).float().mean() > 0.9
    grey = torch.full((8, 3, 2, 2), 0.3)
    assert torch.allclose(recolour(grey, 1.0, torch.Generator().manual_seed(2)), grey, atol=1e-6)
    red = torch.tensor([0.8, -0.7, -0.7]).view(1, 3, 1, 1).expand(256, 3, 1, 1)
    hues = recolour(red, 1.0, torch.Generator().manual_seed(3))
    assert hues.amin() >= -1 and hues.amax() <= 1
    assert (hues[:, 1] > hues[:, 0]).any() and (hues[:, 2] > hues[:, 0]).any()      # greens and blues, not only reds
    half = recolour(pixels, 0.5, torch.Generator().manual_seed(4))
    kept = (half == pixels).flatten(1).all(1).float().mean()
    assert 0.3 < kept < 0.7


def test_vae_colour_jitter_outside_0_to_1_names_the_setting():
    clips = torch.rand(1, 2, 64, 64, 3)
    with pytest.raises(ValueError, match="vae_colour_jitter.*0..1; got 1.5"):
        train_vae(None, clips, ToyTrainSettings(vae_colour_jitter=1.5), torch.Generator())


def test_tokens_per_class_below_one_is_refused_before_any_training(tmp_path):
    with pytest.raises(ValueError, match="tokens_per_class must be 1 or more.*got 0"):
        train_toy(ToyTrainSettings(tokens_per_class=0), str(tmp_path / "toy.safetensors"), str(tmp_path / "m.json"))
    assert not list(tmp_path.iterdir())


def test_a_repeated_image_token_conditions_like_one(one_thread):
    """Training pads the image token to ``tokens_per_class`` by repeating it: the same conditioning."""
    unet, _, _ = toyworld.build_models(0)
    unet.eval()
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, toyworld.FRAMES, 4, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE, generator=generator)
    image_token = torch.randn(1, 1, toyworld.TOKEN_WIDTH, generator=generator)
    with torch.no_grad():
        run = lambda context: batched_denoise(unet, latents, torch.tensor([2.0]), latents[:, 0], context)  # noqa: E731
        one, repeated = run(image_token), run(image_token.expand(-1, 4, -1))
        distinct = run(torch.cat([image_token, torch.randn(1, 3, toyworld.TOKEN_WIDTH, generator=generator) * 10], 1))
    assert torch.allclose(one, repeated, atol=1e-5)
    assert not torch.allclose(one, distinct, atol=1e-3)      # while distinct tokens do change the output


def test_hard_class_weight_draws_the_named_classes_that_much_more_often():
    labels = torch.arange(len(toyclips.MOTION_CLASSES)).repeat(10)            # balanced, like the dataset
    assert clip_weights(labels, ToyTrainSettings(hard_class_weight=1.0)) is None     # uniform draws, stream unchanged
    assert clip_weights(labels, ToyTrainSettings()).max() == 3.0                      # the shipped recipe weighs
    settings = ToyTrainSettings(hard_class_weight=3.0, hard_classes="circle_cw, rotate_ccw")
    weights = clip_weights(labels, settings)
    hard_labels = torch.tensor([toyclips.class_index("circle_cw"), toyclips.class_index("rotate_ccw")])
    hard = torch.isin(labels, hard_labels)
    assert torch.all(weights[hard] == 3.0) and torch.all(weights[~hard] == 1.0)
    draws = labels[torch.multinomial(weights, 20000, replacement=True, generator=torch.Generator().manual_seed(0))]
    share = torch.isin(draws, hard_labels)
    assert abs(float(share.float().mean()) - 6 / 30) < 0.015                # 2 classes x 3 of 24 + 2 x 3
    with pytest.raises(ValueError, match="unknown motion class 'spiral'"):
        clip_weights(labels, dataclasses.replace(settings, hard_classes="circle_cw,spiral"))
    with pytest.raises(ValueError, match="hard_class_weight must be a positive number"):
        clip_weights(labels, dataclasses.replace(settings, hard_class_weight=-1.0))


def test_hard_classes_entry_with_its_own_weight_overrides_the_shared_one():
    labels = torch.arange(len(toyclips.MOTION_CLASSES)).repeat(10)
    settings = ToyTrainSettings(hard_class_weight=3.0, hard_classes="circle_cw, rotate_ccw:6, zoom_in:0.5")
    weights = clip_weights(labels, settings)
    by_class = {name: float(weights[labels == toyclips.class_index(name)].unique()) for name in toyclips.MOTION_CLASSES}
    assert by_class["circle_cw"] == 3.0 and by_class["rotate_ccw"] == 6.0 and by_class["zoom_in"] == 0.5
    assert {by_class[name] for name in by_class if name not in ("circle_cw", "rotate_ccw", "zoom_in")} == {1.0}
    own_only = dataclasses.replace(settings, hard_class_weight=1.0)            # own weights count without a shared one
    assert clip_weights(labels, own_only)[labels == toyclips.class_index("rotate_ccw")].eq(6.0).all()
    with pytest.raises(ValueError, match="'rotate_ccw:fast'.*must be a number"):
        clip_weights(labels, dataclasses.replace(settings, hard_classes="rotate_ccw:fast"))
    with pytest.raises(ValueError, match="'rotate_ccw:0'.*must be a positive number"):
        clip_weights(labels, dataclasses.replace(settings, hard_classes="rotate_ccw:0"))


def test_bfloat16_autocast_trains_close_to_float32_and_is_recorded(one_thread):
    """`--autocast-bf16 1` runs the UNet in bfloat16: not the float32 numbers, but near them."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(4, toyworld.FRAMES, 4, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE, generator=generator) * 5
    labels = torch.tensor([0, 3, 7, 20])
    first_images = torch.rand(4, toyworld.IMAGE_SIZE, toyworld.IMAGE_SIZE, 3, generator=generator) * 2 - 1
    runs = {}
    for autocast_bf16 in (0, 1):
        unet, _, image_encoder = toyworld.build_models(0)
        settings = ToyTrainSettings(unet_steps=2, unet_batch=1, warmup_steps=1, checkpoint_every=10 ** 9,
                                    average_last=1, autocast_bf16=autocast_bf16)
        tokens, history, _ = train_unet(unet, image_encoder, latents, labels, first_images, settings,
                                        torch.Generator().manual_seed(1), checkpoint=lambda *args: None)
        runs[autocast_bf16] = history, tokens, next(unet.parameters())
    (history32, tokens32, _), (history16, tokens16, weight16) = runs[0], runs[1]
    assert history16 != history32                                          # autocast is in the loop ...
    assert history16 == pytest.approx(history32, rel=0.05)                 # ... and trains the same model
    assert weight16.dtype == torch.float32 and tokens16.dtype == torch.float32     # float32 master weights
    assert torch.isfinite(tokens16).all() and not torch.equal(tokens16, tokens32)
    assert "--autocast-bf16 1" in _command(ToyTrainSettings(autocast_bf16=1))
    assert "autocast" not in _command(ToyTrainSettings())                  # the shipped recipe's line unchanged


def test_token_noise_reaches_the_unet_at_its_size_and_is_recorded(one_thread):
    """`--token-noise s` trains on tokens plus N(0, s^2) noise per channel; 0 leaves them exact."""
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(4, toyworld.FRAMES, 4, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE, generator=generator) * 5
    labels = torch.tensor([0, 3, 7, 20])
    first_images = torch.rand(4, toyworld.IMAGE_SIZE, toyworld.IMAGE_SIZE, 3, generator=generator) * 2 - 1
    start_tokens = torch.randn(len(toyclips.MOTION_CLASSES), 1, toyworld.TOKEN_WIDTH, generator=generator)
    seen = {}
    for noise in (0.0, 0.5):
        unet, _, image_encoder = toyworld.build_models(0)
        contexts = []
        unet.register_forward_pre_hook(
            lambda module, args, kwargs: contexts.append(kwargs["encoder_hidden_states"].detach().clone()),
            with_kwargs=True)
        settings = ToyTrainSettings(unet_steps=1, unet_batch=4, warmup_steps=1, checkpoint_every=10 ** 9,
                                    average_last=1, token_noise=noise, image_token_share=0.0)
        train_unet(unet, image_encoder, latents, labels, first_images, settings, torch.Generator().manual_seed(1),
                   checkpoint=lambda *args: None, initial_tokens=start_tokens)
        seen[noise] = contexts[0]                                          # (b n d), the first step's batch
    assert seen[0.0].shape == seen[0.5].shape == (4, 1, toyworld.TOKEN_WIDTH)
    assert all(any(torch.equal(row, token) for token in start_tokens) for row in seen[0.0])   # exact class tokens
    residual = seen[0.5] - seen[0.0]                                       # same draws of clips, noise on top
    assert float(residual.std()) == pytest.approx(0.5, rel=0.05)
    assert "--token-noise 0.5" in _command(ToyTrainSettings(token_noise=0.5))
    assert "token-noise" not in _command(ToyTrainSettings())               # the shipped recipe's line unchanged
    with pytest.raises(ValueError, match="token_noise is a standard deviation, 0 or more.*got -1"):
        train_toy(ToyTrainSettings(token_noise=-1.0), path="unused.safetensors", manifest="unused.json")


def test_token_gap_tells_apart_distinct_from_identical_tokens(one_thread):
    unet, _, _ = toyworld.build_models(0)
    unet.eval()
    latents = torch.randn(2, toyworld.FRAMES, 4, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE) * 5
    labels = torch.tensor([0, 3])
    same = torch.randn(1, 1, toyworld.TOKEN_WIDTH).expand(26, 2, -1)     # (classes n d)
    right, wrong = token_gap(unet, latents, labels, same, torch.Generator().manual_seed(0))
    assert right == wrong                                    # no motion information: no gap
    distinct = torch.randn(26, 2, toyworld.TOKEN_WIDTH) * 10
    right, wrong = token_gap(unet, latents, labels, distinct, torch.Generator().manual_seed(0))
    assert right != wrong


def test_quality_benchmark_prints_every_requested_row(one_thread, capsys):
    from bench import quality

    assert quality.main(["--motions", "translate_E_2", "--variants", "class_token", "no_motion", "text_FF_N1", "mi_difference",
                         "--targets-per-reference", "2", "--steps", "2", "--sample-steps", "2", "--threads", "1", "--no-doc",
                         "--no-json"]) == 0
    tables = [block.splitlines() for block in capsys.readouterr().out.split("\n\n") if block.startswith("|")]
    table, breakdown = tables
    assert table[0].startswith("| method | motion class (dense flow) | nearest ideal motion | motion class (KLT flow) | "
                               "Motion Fidelity (moving points) | MFS, all points |")
    names = [line.split("|")[1].strip() for line in table[2:]]
    assert all(line.split("|")[3].strip().endswith("%") for line in table[2:])   # toy targets: a nearest-ideal reading
    assert names == ["(upper bound) the model's own motion-class token", "no motion input (target's own embedding)",
                     "motion-text F'=F+1, N=1", "MI: query-key + value, difference, Reference Noise"]
    assert breakdown[0] == "| method (nearest ideal / dense flow, MFS on moving points) | translate_E_2 |"
    assert [line.split("|")[1].strip() for line in breakdown[2:]] == names
    # one motion: its column is the row's overall nearest-ideal / dense-flow figures and its moving-points MFS
    assert [line.split("|")[2].strip() for line in breakdown[2:]] == [
        f"{line.split('|')[3].strip()} / {line.split('|')[2].strip()}, {line.split('|')[5].strip()}" for line in table[2:]]


def test_guided_animation_with_zero_embedding_equals_plain_and_leaves_the_unet_unpatched(one_thread):
    from motion_core.toy import toyclips
    from motion_core.diffusers_svd import init_embedding
    from motion_core.toy.toyeval import animate_batch

    world = toyworld.load_world()
    processors = dict(world.unet.attn_processors)
    targets = toyclips.make_target_images(1, 5)
    zero = init_embedding(world.unet, toyworld.FRAMES, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE, vae_factor=4)
    plain = animate_batch(world, targets, None, toyworld.FRAMES, steps=2)
    guided = animate_batch(world, targets, zero, toyworld.FRAMES, steps=2, guidance=3.0)
    assert torch.allclose(guided, plain, atol=1e-5)           # zero Motion Embeddings change nothing
    assert {k: type(v) for k, v in world.unet.attn_processors.items()} == {k: type(v) for k, v in processors.items()}


def test_guidance_ramp_over_frames(one_thread):
    from motion_core.toy import toyclips
    from motion_core.toy.toyeval import animate_batch

    world = toyworld.load_world()
    targets = toyclips.make_target_images(1, 5)
    token = world.motion_tokens[toyclips.class_index("translate_E_2")][None]
    calls = []
    run = lambda **kw: animate_batch(world, targets, None, toyworld.FRAMES, steps=2, context=token, **kw)  # noqa: E731
    constant = run(guidance=3.0, progress=lambda step, total: calls.append((step, total)))
    assert calls == [(1, 2), (2, 2)]
    assert torch.equal(run(guidance=3.0, min_guidance=3.0), constant)          # a flat ramp is constant guidance
    assert torch.equal(run(guidance=1.0, min_guidance=1.0), run())              # scale 1 everywhere: unguided
    ramp = run(guidance=3.0, min_guidance=1.0)
    assert not torch.allclose(ramp, constant) and not torch.allclose(ramp, run())


def test_nearest_ideal_motion_names_every_class_through_noise_and_flicker():
    from motion_core.toy import toyclips
    from motion_core.toy.toyeval import nearest_ideal_motion

    spec = toyclips.make_target_specs(1, seed=11, motion="translate_E_2")[0]
    gen = torch.Generator().manual_seed(0)
    misses = []
    for motion in toyclips.MOTION_CLASSES:
        ideal = toyclips.render_clip(dataclasses.replace(spec, motion=motion))
        shimmer = 0.08 * torch.randn(ideal.shape, generator=gen)                     # per-pixel flicker
        tint = 0.04 * torch.randn(ideal.shape[0], 1, 1, 3, generator=gen)            # per-frame colour drift
        got, errors = nearest_ideal_motion((ideal + shimmer + tint).clamp(0, 1), spec)
        if got != motion:
            misses.append((motion, got))
        assert set(errors) == set(toyclips.MOTION_CLASSES)
    assert not misses, misses
    first = toyclips.render_clip(spec)[:1]
    assert nearest_ideal_motion(first.expand(8, -1, -1, -1), spec)[0] == "static"
    with pytest.raises(ValueError, match="does not match the target scene"):
        nearest_ideal_motion(first.expand(5, -1, -1, -1), spec)


def test_toy_learning_passes_its_augmentation_strength_to_the_training(one_thread):
    from motion_core.toy.toyeval import VARIANTS, ToyLearnSettings, learn_variant

    world = toyworld.load_world()
    reference = toyclips.render_clip(toyclips.make_target_specs(1, 7, motion="translate_E_2")[0])
    learned = {}
    for crop, colour in ((1.0, 0.0), (0.6, 0.3)):
        settings = ToyLearnSettings(steps=2, augment_crop=crop, augment_colour=colour)
        learned[crop], _ = learn_variant(world, reference, VARIANTS["text_FF_N1"], settings)
        augment = learned[crop].metadata["training"]["augment"]
        assert (augment["min_crop_scale"], augment["color_jitter"]) == (crop, colour)
    # a different augmentation draws different training samples: the learned tokens differ
    assert not torch.allclose(learned[1.0].spatial_tokens, learned[0.6].spatial_tokens)
    with pytest.raises(ValueError, match="min_crop_scale"):
        learn_variant(world, reference, VARIANTS["text_FF_N1"], ToyLearnSettings(steps=1, augment_crop=0.0))


def test_toy_learning_starts_the_tokens_where_asked_and_records_the_start(one_thread):
    from motion_core.toy.toyeval import VARIANTS, ToyLearnSettings, learn_variant

    world = toyworld.load_world()
    reference = toyclips.render_clip(toyclips.make_target_specs(1, 3, motion="pan_W")[0])
    image_embeds = world.image_embeds(reference)                       # (f d), norm about 32 each
    learned = {start: learn_variant(world, reference, VARIANTS["text_FF_N1"],
                                    ToyLearnSettings(steps=1, token_start=start))[0] for start in ("image", "zero")}
    # one Adam step moves each entry by about the learning rate (0.02); the start's noise is 0.1
    from_image = (learned["image"].spatial_tokens[:, 0] - image_embeds).abs().max()
    assert from_image < 0.6, from_image
    assert learned["zero"].spatial_tokens.abs().max() < 0.6
    assert image_embeds.abs().max() > 1.0                                # so the two starts are told apart
    assert learned["image"].metadata["init"] == "clip_image_embeds"
    assert learned["zero"].metadata["init"] == "zero"
    with pytest.raises(ValueError, match="token_start must be one of"):
        learn_variant(world, reference, VARIANTS["text_FF_N1"], ToyLearnSettings(steps=1, token_start="mean"))


def test_centring_moves_the_mean_image_embedding_onto_the_tokens_centre_and_records_it(first_stage, tmp_path):
    first_path, _ = first_stage
    settings = ToyTrainSettings(**TINY, init_weights=str(first_path), centre_image_embeddings=1)
    record = train_toy(settings, str(tmp_path / "toy.safetensors"), str(tmp_path / "manifest.json"))
    before, after = toyworld.load_world(str(first_path)), toyworld.load_world(str(tmp_path / "toy.safetensors"))
    firsts = render_dataset(settings)[0][:, 0]             # the first frames of the stage's clips
    with torch.no_grad():
        old_mean = before.image_encoder(firsts).mean(0)
        new_mean = after.image_encoder(firsts).mean(0)
    centre = before.motion_tokens.mean(dim=(0, 1))         # the tokens the stage started from
    assert (old_mean - centre).norm() > 1.0                # a shift that means something ...
    assert (new_mean - centre).norm() < 1e-3 * (old_mean - centre).norm()     # ... lands on the centre
    assert after.metadata["image_embedding_shift"] == pytest.approx(float((old_mean - centre).norm()), rel=1e-4)
    assert "--centre-image-embeddings 1" in record["reproduce"]
    assert before.metadata["image_embedding_shift"] == 0.0                     # the default leaves it alone


def test_image_conditioning_trains_without_motion_tokens_and_records_it(tmp_path, one_thread):
    settings = ToyTrainSettings(**{**TINY, "conditioning": "image"})
    record = train_toy(settings, str(tmp_path / "toy.safetensors"), str(tmp_path / "manifest.json"))
    assert "--conditioning image" in record["reproduce"]
    world = toyworld.load_world(str(tmp_path / "toy.safetensors"))
    assert world.motion_tokens.shape == (0, 1, toyworld.TOKEN_WIDTH)        # no token was trained: none shipped
    assert world.metadata["settings"]["conditioning"] == "image"
    with pytest.raises(ValueError, match="conditioning must be 'class_token'.*or 'image'"):
        train_toy(ToyTrainSettings(**{**TINY, "conditioning": "text"}), str(tmp_path / "x.safetensors"),
                  str(tmp_path / "x.json"))
    further = train_toy(ToyTrainSettings(**{**TINY, "conditioning": "image", "unet_lr": 1e-5},
                                         init_weights=str(tmp_path / "toy.safetensors")),
                        str(tmp_path / "further.safetensors"), str(tmp_path / "further.json"))   # a further stage
    assert further["starts_from"]["sha256"] == record["sha256"]
    assert toyworld.load_world(str(tmp_path / "further.safetensors")).motion_tokens.shape[0] == 0
    with pytest.raises(ValueError, match="has tokens for 0 motion classes"):   # class tokens cannot start from none
        train_toy(ToyTrainSettings(**TINY, init_weights=str(tmp_path / "toy.safetensors")),
                  str(tmp_path / "y.safetensors"), str(tmp_path / "y.json"))


def test_the_motion_bucket_reaches_the_unet(one_thread):
    unet, _vae, _encoder = toyworld.build_models(0)
    latents = torch.randn(2, toyworld.FRAMES, 4, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE)
    context = torch.randn(2, 1, toyworld.TOKEN_WIDTH)
    sigma = torch.tensor([2.0, 2.0])
    with torch.no_grad():
        default = batched_denoise(unet, latents, sigma, latents[:, 0], context)
        moving = batched_denoise(unet, latents, sigma, latents[:, 0], context,
                                 torch.full((2,), float(toyworld.COND_MOTION_BUCKET)))
        still = batched_denoise(unet, latents, sigma, latents[:, 0], context,
                                torch.tensor([float(toyworld.STILL_MOTION_BUCKET), 127.0]))
    assert torch.equal(default, moving)                         # the default bucket is SVD's 127
    assert not torch.allclose(still[0], moving[0]) and torch.allclose(still[1], moving[1])
