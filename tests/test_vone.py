"""Tests of the VOneBlock (Dapello et al. 2020) and the VOne versions of the report's models."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import advlab.models.vone.kernels as vone_kernels
from advlab.data import load_mnist
from advlab.models import (
    PRESETS,
    VOneBlock,
    VOneNet,
    create,
    finite_gradient_twin,
    fraction_above_nyquist,
    gabor_bank_stats,
    gabor_kernels,
    is_randomized,
    model_info,
    sample_gabor_params,
    vonenet,
)


def small_block(**overrides) -> VOneBlock:
    """A cheap block (8 + 8 cells) for behaviour tests."""
    settings = dict(simple_channels=8, complex_channels=8, noise_seed=0)
    settings.update(overrides)
    return VOneBlock("sound", **settings)


def with_mode(block: VOneBlock, mode: str) -> VOneBlock:
    block.config = dataclasses.replace(block.config, conv_mode=mode)
    return block


@pytest.fixture(scope="module")
def digits():
    images, labels = load_mnist("test")
    return images[:4], labels[:4]


# --------------------------------------------------------------------------- Gabor bank


def test_gabor_params_reproducible_from_seed_and_global_rng_untouched():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = sample_gabor_params(64, seed=3)
    b = sample_gabor_params(64, seed=3)
    c = sample_gabor_params(64, seed=4)
    for field in ("sf_cpd", "theta_deg", "phase_deg", "nx", "ny"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
        assert not np.array_equal(getattr(a, field), getattr(c, field))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_block_bank_reproducible_and_seed_dependent():
    a, b, c = small_block(gabor_seed=1), small_block(gabor_seed=1), small_block(gabor_seed=2)
    assert torch.equal(a.gabor_weight, b.gabor_weight)
    assert not torch.equal(a.gabor_weight, c.gabor_weight)


def test_sampled_ranges_and_truncation():
    p = sample_gabor_params(2000, seed=0, sf_min=1.0, sf_max=4.0)
    assert p.sf_cpd.min() >= 1.0 and p.sf_cpd.max() <= 4.0
    assert (p.theta_deg >= 0).all() and (p.theta_deg < 180).all()
    assert (p.phase_deg >= 0).all() and (p.phase_deg < 360).all()
    assert (p.nx >= 0.1).all() and (p.ny <= 10**0.2 + 1e-12).all()
    # the copula couples nx with frequency (correlation 0.75 on the normal scale)
    assert np.corrcoef(np.log(p.nx), np.log(p.sf_cpd))[0, 1] > 0.4
    u = sample_gabor_params(2000, seed=0, distribution="uniform")
    assert abs(np.corrcoef(np.log(u.nx), np.log(u.sf_cpd))[0, 1]) < 0.1
    assert not p.sf_cpd.flags.writeable


def test_sampling_argument_errors():
    with pytest.raises(ValueError, match="distribution must be"):
        sample_gabor_params(4, distribution="gaussian")
    with pytest.raises(ValueError, match=r"\[9.0, 10.0\]"):
        sample_gabor_params(4, sf_min=9.0, sf_max=10.0)
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        sample_gabor_params(0)


def test_kernel_formula_at_one_tap():
    p = sample_gabor_params(1, seed=5, visual_degrees=2.0)
    k = gabor_kernels(p, ksize=11)
    y, x = -2.0, 3.0  # row offset, column offset from the centre
    th, ph = math.radians(p.theta_deg[0]), math.radians(p.phase_deg[0])
    sx, sy, f = p.sigma_x[0], p.sigma_y[0], p.sf[0]
    xr = x * math.cos(th) + y * math.sin(th)
    yr = -x * math.sin(th) + y * math.cos(th)
    g = math.exp(-0.5 * (xr**2 / sx**2 + yr**2 / sy**2)) / (2 * math.pi * sx * sy)
    g *= math.cos(2 * math.pi * f * xr + ph)
    assert k[0, 5 - 2, 5 + 3].item() == pytest.approx(g, rel=1e-12, abs=1e-15)


def test_buffers_not_parameters():
    block = small_block()
    names = [n for n, _ in block.named_parameters()]
    assert names == ["bottleneck.weight"]
    assert "gabor_weight" in dict(block.named_buffers())
    assert "gabor_weight" in block.state_dict()
    assert not block.gabor_weight.requires_grad
    assert block.gabor_weight.shape == (8 + 2 * 8, 1, 55, 55)


def test_nyquist_and_sigma_per_preset():
    report, sound = VOneBlock("aliased-28px"), VOneBlock("sound")
    assert fraction_above_nyquist(report) == pytest.approx(382 / 512)
    assert fraction_above_nyquist(sound.gabor_params) == 0.0
    rs, ss = gabor_bank_stats(report), gabor_bank_stats(sound)
    assert rs["median_sigma_x"] == pytest.approx(0.52, abs=0.01)
    assert ss["median_sigma_x"] == pytest.approx(2.04, abs=0.01)
    assert sound.config.ksize >= ss["min_odd_ksize_6sigma"]  # ksize >= 6 sigma_max
    assert ss["fraction_truncated"] == 0.0
    assert (report.config.simple_channels, report.config.complex_channels) == (256, 256)
    assert (report.config.ksize, report.config.stride, report.config.visual_degrees) == (25, 1, 8)


# --------------------------------------------------------------------------- convolution


@pytest.mark.parametrize("preset", ["aliased-28px", "sound"])
def test_fft_equals_direct_full_bank(preset, digits):
    block = VOneBlock(preset, noise_mode="none")
    x = torch.cat([digits[0][:2], torch.rand(1, 1, 28, 28)])
    fft = with_mode(block, "fft").gabor_responses(x)
    direct = with_mode(block, "direct").gabor_responses(x)
    assert ((fft - direct).abs().max() / direct.abs().max()).item() < 1e-4
    assert block._use_fft() is False  # with_mode left it on direct
    assert with_mode(block, "auto")._use_fft() is True  # ksize >= FFT_MIN_KSIZE


@pytest.mark.parametrize(
    "overrides, size",
    [({}, (28, 28)), ({"stride": 2}, (28, 28)), ({}, (17, 23)), ({"in_channels": 3}, (12, 9))],
)
def test_fft_equals_direct_forward_and_backward(overrides, size):
    block = small_block(noise_mode="none", ksize=15, **overrides).double()
    x = torch.rand(2, block.config.in_channels, *size, dtype=torch.float64)
    results = []
    for mode in ("direct", "fft"):
        xi = x.clone().requires_grad_(True)
        out = with_mode(block, mode)(xi)
        (grad,) = torch.autograd.grad((out * torch.cos(out)).sum(), xi)
        results.append((out, grad))
    (o1, g1), (o2, g2) = results
    assert o1.shape == o2.shape
    torch.testing.assert_close(o2, o1, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g2, g1, rtol=1e-8, atol=1e-9)


def test_fft_and_direct_gradients_agree_on_digits(digits):
    block = small_block(ksize=25)
    x = digits[0][:2]
    grads = []
    for mode in ("direct", "fft"):
        xi = x.clone().requires_grad_(True)
        with with_mode(block, mode).frozen_noise(7):
            block(xi).square().sum().backward()
        grads.append(xi.grad)
    close = torch.isclose(grads[1], grads[0], rtol=1e-3, atol=1e-4 * grads[0].abs().max())
    assert close.float().mean() > 0.99  # only kinks hit by float32 rounding may differ


def test_custom_autograd_functions_pass_gradcheck():
    torch.manual_seed(0)
    q = torch.randn(1, 2 + 2 * 2, 3, 3, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(1, 2 + 2, 3, 3, dtype=torch.float64)
    tol = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    for mode in ("neuronal", "gaussian", "none"):
        fn = lambda t, m=mode: vone_kernels._V1Response.apply(t, noise, tol, 2, 2.5, m, 0.35, 0.07)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (q,), fast_mode=True)
    block = small_block(simple_channels=2, complex_channels=1, ksize=5).double()
    x = torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block._conv_fft, (x,), fast_mode=True)


def test_spectrum_cache_follows_loaded_weights():
    a, b = (
        small_block(gabor_seed=0, noise_mode="none"),
        small_block(gabor_seed=1, noise_mode="none"),
    )
    x = torch.rand(2, 1, 28, 28)
    with_mode(a, "fft")(x)  # fills a's spectrum cache
    a.load_state_dict(b.state_dict())
    torch.testing.assert_close(with_mode(a, "fft")(x), with_mode(b, "fft")(x))


def test_batch_of_n_equals_n_batches_of_one_without_noise():
    block = small_block(noise_mode="none")
    x = torch.rand(5, 1, 28, 28)
    whole = block(x)
    block.chunk_size = 1
    torch.testing.assert_close(torch.cat([block(x[i : i + 1]) for i in range(5)]), whole)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("preset", ["sound", "aliased-28px"])
def test_input_gradient_finite_and_nonzero_everywhere(preset, digits):
    torch.manual_seed(0)
    # the preset's kernels and geometry with fewer cells, to keep the test fast
    model = create(
        "vone-mnist-cnn", preset=preset, simple_channels=32, complex_channels=32, noise_seed=0
    ).eval()
    x, y = digits
    for inputs in (x[:1], torch.zeros(1, 1, 28, 28), torch.rand(1, 1, 28, 28)):
        xi = inputs.clone().requires_grad_(True)
        F.cross_entropy(model(xi), y[:1]).backward()
        assert torch.isfinite(xi.grad).all()
        assert (xi.grad != 0).float().mean() > 0.99, "input gradient vanishes"
        model.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------- noise


def test_noise_on_in_eval_mode_and_fixable():
    model = create("vone-mnist-cnn", simple_channels=8, complex_channels=8, noise_seed=0).eval()
    assert model_info("vone-mnist-cnn").randomized and is_randomized(model)
    x = torch.rand(2, 1, 28, 28)
    assert not torch.equal(model(x), model(x)), "eval() must keep the noise on"
    model.fix_noise(11)
    assert model.vone_block.noise_fixed
    assert torch.equal(model(x), model(x))
    first = model(x)
    model.unfix_noise()
    assert not torch.equal(model(x), model(x))
    with model.frozen_noise(11):
        assert torch.equal(model(x), first)
    assert not model.vone_block.noise_fixed  # restored
    model.train()
    assert not torch.equal(model(x), model(x))


def test_noise_reproducible_from_seed_without_global_rng():
    torch.manual_seed(0)
    a = small_block(noise_seed=5)
    b = copy.deepcopy(a)
    b.reseed_noise(5)
    c = copy.deepcopy(a).reseed_noise(6)
    x = torch.rand(2, 1, 28, 28)
    state = torch.get_rng_state()
    outs_a = [a(x) for _ in range(2)]
    outs_b = [b(x) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(outs_a[0], outs_b[0]) and torch.equal(outs_a[1], outs_b[1])
    assert not torch.equal(outs_a[0], outs_a[1])
    assert not torch.equal(c(x), outs_a[0])


@pytest.mark.parametrize("mode", ["neuronal", "gaussian"])
def test_noise_modes_are_random_and_none_is_deterministic(mode):
    x = torch.rand(2, 1, 28, 28)
    noisy = small_block(noise_mode=mode)
    clean = small_block(noise_mode="none")
    assert noisy.randomized and not clean.randomized
    assert not torch.equal(noisy(x), noisy(x))
    assert torch.equal(clean(x), clean(x))
    v1 = noisy.v1(x)
    assert (v1 >= 0).all() and v1.shape == (2, 16, 28, 28)
    # noise has the documented scale: compare with the noise-free responses
    diff = (noisy.v1(x) - clean.v1(x)).std()
    assert 0 < diff < 50


def test_neuronal_noise_formula():
    block = small_block(noise_mode="neuronal", noise_scale=0.35, noise_level=0.07)
    x = torch.rand(1, 1, 28, 28)
    clean = block.gabor_responses(x)
    with block.frozen_noise(3):
        noisy = block.v1(x)
    gen = torch.Generator().manual_seed(3)
    n = torch.randn(clean.shape, generator=gen)
    y = clean * 0.35 + 0.07
    y = y + n * torch.sqrt(torch.relu(y) + 1e-4)
    torch.testing.assert_close(noisy, torch.relu((y - 0.07) / 0.35))


# --------------------------------------------------------------------------- VOne models


@pytest.mark.parametrize("name", ["vone-mnist-convnet", "vone-mnist-cnn", "vone-mnist-mlp"])
def test_vone_models_shapes_and_parameter_counts(name):
    model = create(name, preset="sound", noise_mode="none").eval()
    assert isinstance(model, VOneNet)
    out = model(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10)
    plain = create(name.removeprefix("vone-"), in_channels=32)
    bottleneck = (64 + 64) * 32
    assert sum(p.numel() for p in model.parameters()) == bottleneck + sum(
        p.numel() for p in plain.parameters()
    )
    assert not model_info(name, noise_mode="none").randomized


def test_vone_alexnet_and_report_mlp_shapes():
    model = create("vone-mnist-alexnet", noise_seed=0).eval()
    assert model(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    mlp = vonenet("mnist-mlp", preset="report", num_classes=10)
    assert mlp.backbone.fc1.in_features == 32 * 28 * 28  # the report flattens 32x28x28
    assert mlp.vone_block.bottleneck.weight.shape == (32, 512, 1, 1)


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="ksize must be a positive odd int, got 24"):
        VOneBlock("sound", ksize=24)
    with pytest.raises(ValueError, match="noise_mode must be one of .* got 'poisson'"):
        VOneBlock("sound", noise_mode="poisson")
    with pytest.raises(TypeError, match="'kernel_size'"):
        VOneBlock("sound", kernel_size=5)
    with pytest.raises(ValueError, match="preset must be one of"):
        create("vone-mnist-cnn", preset="fast")
    with pytest.raises(ValueError, match="stride=2"):
        create("vone-mnist-cnn", stride=2)
    with pytest.raises(
        ValueError, match=r"expects input \[N, 1, H, W\], got shape \(2, 3, 28, 28\)"
    ):
        small_block()(torch.rand(2, 3, 28, 28))
    assert set(PRESETS) == {"report", "report-finite", "aliased-28px", "sound"}
    with pytest.raises(ValueError, match="complex_cell must be one of .* got 'sqrt'"):
        VOneBlock("report", complex_cell="sqrt")
    with pytest.raises(ValueError, match="needs the exact zeros of direct convolution"):
        VOneBlock("report", conv_mode="fft")
    with pytest.raises(ValueError, match="convention must be one of"):
        VOneBlock("sound", convention="torchvision")


def test_deepcopy_keeps_bank_and_noise_state():
    model = create("vone-mnist-cnn", simple_channels=8, complex_channels=8, noise_seed=1)
    x = torch.rand(2, 1, 28, 28)
    twin = copy.deepcopy(model)
    assert torch.equal(twin(x), model(x))


@pytest.mark.slow
def test_quick_training_of_sound_vone_cnn_is_fast():
    """10k images, one epoch, batch 64: well under two minutes on a 2-core CPU."""
    images, labels = load_mnist("train")
    images, labels = images[:10_000], labels[:10_000]
    torch.manual_seed(0)
    model = create("vone-mnist-cnn", preset="sound", noise_seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for i in range(0, len(images), 64):
        opt.zero_grad()
        F.cross_entropy(model(images[i : i + 64]), labels[i : i + 64]).backward()
        opt.step()
    elapsed = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        test_x, test_y = load_mnist("test")
        acc = (model(test_x[:1000]).argmax(1) == test_y[:1000]).float().mean().item()
    load = os.getloadavg()[0]
    assert elapsed < 120, (
        f"one epoch of 10k images took {elapsed:.0f} s with {torch.get_num_threads()} threads "
        f"at load average {load:.1f} (a shared CPU: try OMP_NUM_THREADS=1)"
    )
    assert acc > 0.9, acc


# --------------------------------------------------------------------------- the student's bank


def test_report_preset_is_the_students_bank_number_for_number():
    """dicarlolab's sampling (seed 0) at 224 px over 8 degrees while feeding 28-px images:
    values checked against a separate re-typing of the student's code path."""
    block = VOneBlock("report")
    p, c = block.gabor_params, block.config
    assert (c.simple_channels, c.complex_channels, c.ksize, c.stride, c.k_exc) == (
        256, 256, 25, 1, 25.0)
    assert c.ppd == 28.0 and c.image_size == 28 and c.nominal_image_size == 224
    assert (c.noise_mode, c.noise_scale, c.noise_level) == ("neuronal", 0.35, 0.07)
    assert c.complex_cell == "exact" and c.convention == "dicarlolab"
    np.testing.assert_allclose(p.sf_cpd[:5], [2.1155, 4.7758, 3.8346, 4.8353, 3.4009],
                               atol=1e-4)
    np.testing.assert_allclose(p.theta_deg[:5], [106.69, 98.13, 89.77, 102.44, 11.87],
                               atol=5e-3)
    assert fraction_above_nyquist(p) == 0.0
    assert p.sf.min() == pytest.approx(0.0182, abs=1e-4)
    assert p.sf.max() == pytest.approx(0.1997, abs=1e-4)
    assert p.sigma_x.min() == pytest.approx(1.51, abs=0.01)
    assert p.sigma_y.max() == pytest.approx(28.04, abs=0.01)
    assert block.bottleneck.bias is None and block.bottleneck.out_channels == 32


def test_dicarlolab_kernels_run_x_along_rows():
    params = sample_gabor_params(6, seed=3, convention="dicarlolab", image_size=224)
    theirs = gabor_kernels(params, 25, convention="dicarlolab")
    ours = gabor_kernels(params, 25)
    assert theirs.dtype == torch.float32
    torch.testing.assert_close(theirs, ours.transpose(-1, -2).float(), rtol=1e-4, atol=1e-6)
    quad = gabor_kernels(params, 25, 90.0, convention="dicarlolab")
    torch.testing.assert_close(quad, gabor_kernels(params, 25, 90.0).transpose(-1, -2).float(),
                               rtol=1e-4, atol=1e-6)


def test_exact_complex_cell_gives_nan_gradients_and_its_twin_does_not(digits):
    """The student's complex cell: NaN input gradients on MNIST digits (black borders); the
    finite twin has the same forward values and finite gradients."""
    torch.manual_seed(0)
    exact = create("vone-mnist-cnn", preset="report", noise_seed=0).eval()
    twin = finite_gradient_twin(exact)
    assert twin.vone_block.config.complex_cell == "safe"
    assert exact.vone_block.config.complex_cell == "exact"  # the original is untouched
    assert finite_gradient_twin(twin) is twin
    x, y = digits[0][:4], digits[1][:4]
    with exact.frozen_noise(3), twin.frozen_noise(3):
        assert torch.equal(exact(x), twin(x))
    grads = []
    for m in (exact, twin):
        xi = x.clone().requires_grad_(True)
        with m.frozen_noise(3):
            (g,) = torch.autograd.grad(F.cross_entropy(m(xi), y), xi)
        grads.append(g)
    bad = ~torch.isfinite(grads[0])
    assert bad.float().mean() > 0.8
    assert torch.isfinite(grads[1]).all()
    # where the exact gradient is finite, the twin's is the same number
    torch.testing.assert_close(grads[1][~bad], grads[0][~bad])


def test_exact_zeros_do_not_depend_on_the_channel_count():
    """A window that sees only zeros responds exactly 0 whatever algorithm the convolution
    library picks for the shape, so the NaN pattern of the exact cell is a property of the
    image and the bank, not of the channel count."""
    x = torch.zeros(2, 1, 28, 28)
    x[:, :, 0:4, 0:4] = torch.rand(2, 1, 4, 4) + 0.1
    for ch in (1, 3, 16):
        block = VOneBlock("report", simple_channels=ch, complex_channels=ch, noise_mode="none",
                          bottleneck_channels=None)
        q = block._conv_direct(x)
        block._exact_zeros(x, q)
        far = torch.ones(28, 28, dtype=torch.bool)
        far[:4 + 12, :4 + 12] = False  # windows that touch the bright patch
        assert (q[..., far] == 0).all()
        assert (q[..., ~far] != 0).float().mean() > 0.5


@pytest.mark.parametrize("cell", ["exact", "safe"])
def test_exact_and_safe_cells_pass_gradcheck_away_from_zero(cell):
    torch.manual_seed(0)
    q = torch.randn(1, 2 + 2 * 2, 3, 3, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(1, 2 + 2, 3, 3, dtype=torch.float64)
    for mode in ("neuronal", "none"):
        fn = lambda t, m=mode: vone_kernels._V1Response.apply(  # noqa: E731
            t, noise, None, 2, 2.5, m, 0.35, 0.07, cell)
        assert torch.autograd.gradcheck(fn, (q,), fast_mode=True)
