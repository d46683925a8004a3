"""Reference Noise without the host: the inversion schedule, the blend, and the toy benchmark's use of them."""
import math

import pytest
import torch

from motion_core.inversion import blend_noise, euler_inversion_step, inversion_sigmas
from motion_core.toy import toyclips, toyworld

pytestmark = pytest.mark.usefixtures("one_thread")


def test_inversion_sigmas_rise_log_spaced_to_the_target():
    sigmas = inversion_sigmas(40.0, 8)
    assert sigmas.shape == (9,) and math.isclose(float(sigmas[0]), 0.05, rel_tol=1e-5)
    assert math.isclose(float(sigmas[-1]), 40.0, rel_tol=1e-5)
    ratios = sigmas[1:] / sigmas[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))
    with pytest.raises(ValueError, match="steps >= 1"):
        inversion_sigmas(40.0, 0)
    with pytest.raises(ValueError, match="target sigma above 0.05"):
        inversion_sigmas(0.01, 8)


def test_euler_inversion_of_a_clean_point_scales_it_with_sigma():
    # a denoiser that always answers 0 (the data's mean): x/sigma stays constant along the ODE
    start = torch.randn(3, 4) * 0.05
    sigmas = inversion_sigmas(40.0, 6).tolist()
    x = start
    for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:]):
        x = euler_inversion_step(x, torch.zeros_like(x), sigma, next_sigma)
    assert torch.allclose(x / sigmas[-1], start / sigmas[0], rtol=1e-4)


def test_blend_keeps_unit_variance_and_refuses_a_prior_outside_0_to_1():
    generator = torch.Generator().manual_seed(0)
    inverted, fresh = torch.randn(200000, generator=generator), torch.randn(200000, generator=generator)
    blended = blend_noise(inverted, fresh, 0.5)
    assert abs(float(blended.std()) - 1.0) < 0.01
    assert torch.equal(blend_noise(inverted, fresh, 0.0), fresh)
    assert torch.allclose(blend_noise(inverted, fresh, 1.0), inverted)
    with pytest.raises(ValueError, match="prior is the share of inverted noise"):
        blend_noise(inverted, fresh, 1.5)


def test_toy_reference_noise_carries_the_reference_and_leaves_the_unet_unpatched():
    from motion_core.diffusers_svd import init_embedding
    from motion_core.toy.toyeval import animate_batch, invert_reference, karras_sigmas

    world = toyworld.load_world()
    processors = {k: type(v) for k, v in world.unet.attn_processors.items()}
    reference = toyclips.make_clip("translate_E_2", 3, palette="heldout")[0]
    other = toyclips.make_clip("pan_W", 4, palette="heldout")[0]
    sigma = karras_sigmas(2)[0]
    inverted = invert_reference(world, reference, sigma, steps=3)
    assert inverted.shape == (toyworld.FRAMES, 4, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE)
    assert torch.isfinite(inverted).all() and 0.5 < float(inverted.std()) < 2.0
    assert torch.equal(inverted, invert_reference(world, reference, sigma, steps=3))          # deterministic
    assert not torch.allclose(inverted, invert_reference(world, other, sigma, steps=3))       # of this reference
    embedding = init_embedding(world.unet, toyworld.FRAMES, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE, vae_factor=4)
    with torch.no_grad():
        next(iter(embedding.temporal_qk.values())).add_(1.0)
    assert not torch.allclose(inverted, invert_reference(world, reference, sigma, embedding, steps=3))  # as learned
    assert {k: type(v) for k, v in world.unet.attn_processors.items()} == processors
    targets = toyclips.make_target_images(2, 5)
    run = lambda seed, prior: animate_batch(world, targets, None, toyworld.FRAMES, steps=2, seed=seed,  # noqa: E731
                                            reference_noise=inverted, prior=prior)
    assert torch.allclose(run(0, 0.0), animate_batch(world, targets, None, toyworld.FRAMES, steps=2, seed=0), atol=1e-5)
    assert torch.allclose(run(0, 1.0), run(1, 1.0), atol=1e-5)      # all inverted: the seed no longer matters
    assert not torch.allclose(run(0, 0.5), run(1, 0.5))


def test_lowest_layers_are_the_smallest_grid_and_widest_is_all_on_the_toy():
    from motion_core.diffusers_svd import temporal_layer_layout
    from motion_core.toy.toyeval import VARIANTS, variant_layers

    world = toyworld.load_world()
    layout = temporal_layer_layout(world.unet, toyworld.LATENT_SIZE, toyworld.LATENT_SIZE)
    lowest = variant_layers(world, VARIANTS["mi_lowest_difference"], toyworld.LATENT_SIZE, toyworld.LATENT_SIZE)
    smallest = min(layer["height"] for layer in layout.values())
    assert lowest and set(lowest) < set(layout) and all(layer["height"] == smallest for layer in lowest.values())
    widest = variant_layers(world, VARIANTS["mi_difference"], toyworld.LATENT_SIZE, toyworld.LATENT_SIZE)
    assert widest is None or set(widest) == set(layout)             # every toy level is 64 wide
