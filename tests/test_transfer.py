"""The transfer family on the one loop: formulas by hand, agreement with torchattacks 3.5.1
where the randomness can be matched or switched off, statistical agreement where it cannot,
and the L1 stall at the box edge."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from advlab.attacks import (
    DIFGSM,
    IFGSM,
    MIFGSM,
    NIFGSM,
    PGD,
    SINIFGSM,
    TIFGSM,
    TRANSFER_PRESETS,
    VMIFGSM,
    VNIFGSM,
    AdmixMIFGSM,
    create_attack,
)
from advlab.attacks.transforms import Admix, DiverseInputs, ScaleCopies, gaussian_kernel
from advlab.stats import wilson_interval
from advlab.threat import Norm
from conftest import blobs

EPS, STEPS = 0.12, 10
MAX_DIFF = 1e-6


def diff(a, b) -> float:
    return float((a - b).abs().max())


class ThreeChannel(nn.Module):
    """A 3-channel model made of the trained 1-channel CNN (torchattacks' TI kernel is
    stacked for exactly 3 channels)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.mix = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([0.5, 0.3, 0.2]).reshape(1, 3, 1, 1))

    def forward(self, x):
        return self.net(self.mix(x))


@pytest.fixture(scope="module")
def xy():
    return blobs(128, seed=21)


@pytest.fixture(scope="module")
def rgb(trained_cnn):
    x, y = blobs(128, seed=22)
    g = torch.Generator().manual_seed(5)
    x3 = (x.repeat(1, 3, 1, 1) + 0.05 * torch.randn(128, 3, 8, 8, generator=g)).clamp(0, 1)
    return ThreeChannel(trained_cnn).eval(), x3, y


# -- agreement with torchattacks (randomness matched or off) ------------------------------
@pytest.mark.parametrize("targeted", [False, True])
def test_sinifgsm_agrees(trained_cnn, xy, targeted):
    x, y = xy
    t = (y + 3) % 10 if targeted else None
    ours = SINIFGSM(eps=EPS, steps=STEPS)(trained_cnn, x, y, target=t)
    atk = torchattacks.SINIFGSM(trained_cnn, eps=EPS, alpha=EPS / STEPS, steps=STEPS, m=5)
    if targeted:
        atk.set_mode_targeted_by_function(lambda images, labels: t)
    assert diff(ours, atk(x, y)) <= MAX_DIFF
    # the scale copies matter: SI-NI is not NI on this model
    assert diff(ours, NIFGSM(eps=EPS, steps=STEPS)(trained_cnn, x, y, target=t)) > 0


@pytest.mark.parametrize("size", [15, 5])
@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_tifgsm_agrees(rgb, size, decay):
    model, x, y = rgb
    ours = TIFGSM(eps=EPS, steps=STEPS, kernel_size=size, decay=decay)(model, x, y)
    theirs = torchattacks.TIFGSM(model, eps=EPS, alpha=EPS / STEPS, steps=STEPS, decay=decay,
                                 len_kernel=size, nsig=3, diversity_prob=0.0)(x, y)
    assert diff(ours, theirs) <= MAX_DIFF
    assert diff(ours, MIFGSM(eps=EPS, steps=STEPS, decay=decay)(model, x, y)) > 0


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_difgsm_without_diversity_agrees(trained_cnn, xy, decay):
    x, y = xy
    ours = DIFGSM(eps=EPS, steps=STEPS, decay=decay, diversity_prob=0.0)(trained_cnn, x, y)
    theirs = torchattacks.DIFGSM(trained_cnn, eps=EPS, alpha=EPS / STEPS, steps=STEPS,
                                 decay=decay, diversity_prob=0.0)(x, y)
    assert diff(ours, theirs) <= MAX_DIFF


def test_ti_kernel_is_torchattacks_kernel():
    atk = torchattacks.TIFGSM(nn.Identity(), len_kernel=15, nsig=3)
    theirs = atk.stacked_kernel[0, 0]
    assert diff(gaussian_kernel(15, 3.0), theirs) <= 1e-9
    assert math.isclose(float(gaussian_kernel(7, 2.0).sum()), 1.0, rel_tol=1e-6)


# -- statistical agreement (the randomness cannot be matched) -----------------------------
def _success(model, x_adv, y) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(1) != y).sum())


def _rate_within(ours: int, theirs: int, n: int) -> None:
    lo, hi = wilson_interval(theirs, n)
    assert lo <= ours / n <= hi, (ours / n, (lo, hi))


@pytest.fixture(scope="module")
def many():
    return blobs(1200, seed=23)


@pytest.mark.parametrize("name", ["difgsm", "vmifgsm", "vnifgsm"])
def test_random_transfer_attacks_agree_in_rate(trained_cnn, many, name):
    x, y = many
    eps, n = 0.08, x.shape[0]
    if name == "difgsm":
        ours = DIFGSM(eps=eps, steps=STEPS, decay=1.0, resize_rate=0.9, seed=1)
        theirs = torchattacks.DIFGSM(trained_cnn, eps=eps, alpha=eps / STEPS, steps=STEPS,
                                     decay=1.0, resize_rate=0.9, diversity_prob=0.5)
    else:
        cls = VMIFGSM if name == "vmifgsm" else VNIFGSM
        tcls = torchattacks.VMIFGSM if name == "vmifgsm" else torchattacks.VNIFGSM
        ours = cls(eps=eps, steps=STEPS, variance_samples=5, seed=1)
        theirs = tcls(trained_cnn, eps=eps, alpha=eps / STEPS, steps=STEPS, N=5, beta=1.5)
    torch.manual_seed(0)
    s_theirs = _success(trained_cnn, theirs(x, y), y)
    s_ours = _success(trained_cnn, ours(trained_cnn, x, y), y)
    _rate_within(s_ours, s_theirs, n)


# -- one step by hand ----------------------------------------------------------------------
def _grad(model, x, y):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    return torch.autograd.grad(loss, x)[0]


def test_ti_one_step_is_sign_of_the_smoothed_gradient(trained_cnn, xy):
    x, y = xy
    k = gaussian_kernel(5, 3.0)
    g = F.conv2d(_grad(trained_cnn, x, y), k[None, None], padding=2)
    expect = (x + EPS * g.sign()).clamp(0, 1)
    got = TIFGSM(eps=EPS, steps=1, kernel_size=5)(trained_cnn, x, y)
    assert diff(got, expect) <= 1e-7


def test_si_one_step_is_sign_of_the_mean_over_scale_copies(trained_cnn, xy):
    x, y = xy
    # d J(x / 2^i) / dx = 2^-i * grad J at x / 2^i (the chain rule is part of SI)
    g = sum(_grad(trained_cnn, x / 2 ** i, y) / 2 ** i for i in range(4)) / 4
    expect = (x + EPS * g.sign()).clamp(0, 1)
    got = MIFGSM(eps=EPS, steps=1, scale_copies=4)(trained_cnn, x, y)
    assert diff(got, expect) <= 1e-7


def test_di_with_certain_diversity_takes_the_gradient_on_the_resized_copy(xy):
    x, y = xy
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 10)).eval()
    atk = DIFGSM(eps=EPS, steps=1, diversity_prob=1.0, resize_rate=1.5, seed=7)
    got = atk(model, x, y)
    # replay the draws of the run's generator: the decision, the size, the offsets
    gen = torch.Generator().manual_seed(7)
    assert float(torch.rand((1,), generator=gen)) < 1.0
    rnd = int(torch.randint(8, 12, (1,), generator=gen))
    top = int(torch.randint(0, 12 - rnd, (1,), generator=gen)) if 12 - rnd > 1 else 0
    left = int(torch.randint(0, 12 - rnd, (1,), generator=gen)) if 12 - rnd > 1 else 0
    xr = x.clone().requires_grad_(True)
    z = F.pad(F.interpolate(xr, size=[rnd, rnd], mode="bilinear", align_corners=False),
              [left, 12 - rnd - left, top, 12 - rnd - top])
    (g,) = torch.autograd.grad(F.cross_entropy(model(z), y, reduction="sum"), xr)
    assert diff(got, (x + EPS * g.sign()).clamp(0, 1)) <= 1e-7


def test_vmi_two_steps_by_hand(trained_cnn, xy):
    x, y = xy[0][:16], xy[1][:16]
    eps, n_nb, beta = 0.1, 3, 1.5
    alpha = eps / 2
    got = VMIFGSM(eps=eps, steps=2, variance_samples=n_nb, seed=11)(trained_cnn, x, y)
    gen = torch.Generator().manual_seed(11)

    def mean_abs(t):
        return t.abs().mean(dim=(1, 2, 3), keepdim=True)

    x_t, v, mom = x, torch.zeros_like(x), torch.zeros_like(x)
    for _ in range(2):
        grad = _grad(trained_cnn, x_t, y)
        nb = sum(_grad(trained_cnn, x_t + (torch.rand(x.shape, generator=gen) * 2 - 1)
                       * (beta * eps), y) for _ in range(n_nb)) / n_nb
        mom = mom + (grad + v) / mean_abs(grad + v)
        v = nb - grad
        x_t = torch.min(torch.max(x_t + alpha * mom.sign(), x - eps), x + eps).clamp(0, 1)
    assert diff(got, x_t) <= 1e-6


def test_transforms_make_the_papers_copies():
    x = torch.rand(4, 1, 6, 6)
    si = ScaleCopies(5)(x, None)
    assert len(si) == 5 and all(torch.equal(c, x / 2 ** i) for i, c in enumerate(si))
    gen = torch.Generator().manual_seed(3)
    mix = Admix(3, 0.2)(x, gen)
    gen = torch.Generator().manual_seed(3)
    for c in mix:
        j = torch.randint(0, 4, (4,), generator=gen)
        assert torch.equal(c, x + 0.2 * x[j])
    assert DiverseInputs(0.0)(x, None)[0] is x
    out = DiverseInputs(1.0, 1.1)(torch.rand(2, 3, 299, 299), torch.Generator().manual_seed(0))
    assert out[0].shape[-2:] == (328, 328)  # int(299 * 1.1): the paper pads to about 330
    out = DiverseInputs(1.0, 0.9)(torch.rand(2, 3, 32, 32), torch.Generator().manual_seed(0))
    assert out[0].shape[-2:] == (32, 32)


def test_admix_uses_fifteen_gradients_per_step(trained_cnn, xy):
    x, y = xy
    calls = []
    hook = trained_cnn.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        AdmixMIFGSM(eps=EPS, steps=2)(trained_cnn, x, y)
    finally:
        hook.remove()
    # (one 1-example probe of the model first, then the attack)
    assert [c for c in calls if c == x.shape[0]] == [x.shape[0]] * (2 * 3 * 5)


# -- composition and validation --------------------------------------------------------------
def test_presets_compose_from_the_fields(trained_cnn, xy):
    x, y = xy
    a = create_attack("tidimifgsm", eps=EPS, seed=4, resize_rate=0.9)(trained_cnn, x, y)
    b = MIFGSM(eps=EPS, kernel_size=15, diversity_prob=0.5, resize_rate=0.9,
               seed=4)(trained_cnn, x, y)
    assert torch.equal(a, b)
    # every transfer preset is a registered gradient attack of the one loop
    for cls in TRANSFER_PRESETS:
        assert create_attack(cls.name, eps=EPS).name == cls.name


@pytest.mark.parametrize("kw, match", [
    ({"diversity_prob": 1.5}, "diversity_prob must be in"),
    ({"resize_rate": 1.0}, "resize_rate must be"),
    ({"scale_copies": 0}, "scale_copies must be"),
    ({"admix_copies": -1}, "admix_copies must be"),
    ({"admix_strength": -0.1}, "admix_strength must be"),
    ({"kernel_size": 2.5}, "kernel_size must be"),
    ({"kernel_nsig": 0}, "kernel_nsig must be"),
    ({"variance_samples": -2}, "variance_samples must be"),
    ({"variance_beta": float("nan")}, "variance_beta must be"),
])
def test_bad_transfer_options_raise_naming_the_value(kw, match):
    with pytest.raises(ValueError, match=match):
        MIFGSM(eps=0.1, **kw)


def test_variance_needs_a_finite_eps():
    with pytest.raises(ValueError, match="variance_samples needs a finite eps"):
        VMIFGSM(eps=torch.tensor([0.1, math.inf]), alpha=0.01)


def test_transfer_attacks_on_ensembles_and_with_eot(trained_cnn, xy):
    from advlab.attacks import Ensemble
    x, y = xy
    ens = Ensemble([trained_cnn, trained_cnn], fuse="logits")
    a = SINIFGSM(eps=EPS, steps=3)(ens, x, y)
    b = SINIFGSM(eps=EPS, steps=3)(trained_cnn, x, y)
    assert diff(a, b) <= 1e-6  # an ensemble of one model twice is that model
    c = TIFGSM(eps=EPS, steps=3, kernel_size=3, eot_samples=2)(trained_cnn, x, y)
    assert diff(c, TIFGSM(eps=EPS, steps=3, kernel_size=3)(trained_cnn, x, y)) <= 1e-6


# -- the L1 stall at the box edge ----------------------------------------------------------
class Saturated(nn.Module):
    """Logits ``[w . x, 0]``: the loss of label 1 rises with the pixels of largest weight,
    which sit at 1 -- the old L1 step chose them forever and the clamp cancelled it."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x):
        s = (x.flatten(1) * self.w).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


@pytest.mark.parametrize("cls", [IFGSM, PGD, MIFGSM])
def test_l1_attack_does_not_stall_at_the_box_edge(cls):
    d = 28 * 28
    x = torch.zeros(2, 1, 28, 28)
    x.view(2, -1)[:, :100] = 1.0  # saturated pixels, which carry the largest weights
    w = torch.linspace(0.1, 0.2, d)
    w[:100] = 1.0 + torch.linspace(0, 1, 100)
    model = Saturated(w)
    y = torch.ones(2, dtype=torch.long)  # ascending CE of label 1 raises the logit w . x
    eps, steps = 10.0, 20
    kw = {"random_start": False} if cls is PGD else {}
    x_adv = cls(eps=eps, norm=Norm.L1, steps=steps, alpha=eps / steps, **kw)(model, x, y)
    moved = (x_adv - x).abs().flatten(1).sum(1)
    assert bool((moved >= eps - 1e-4).all()), moved  # it spends the whole budget
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_enlarging_di_on_a_fixed_size_model_fails_before_any_work(trained_cnn, xy):
    x, y = xy
    with pytest.raises(ValueError, match="does not accept"):
        DIFGSM(eps=EPS, resize_rate=1.5)(trained_cnn, x, y)  # 12x12: its Linear refuses


def test_every_transfer_flag_reaches_the_attack():
    from advlab import cli
    args = cli.build_parser().parse_args([
        "attack", "mnist-cnn", "--attack", "mifgsm", "--eps", "0.2", "--diversity-prob", "0.3",
        "--resize-rate", "0.8", "--scale-copies", "3", "--admix-copies", "2",
        "--admix-strength", "0.1", "--kernel-size", "5", "--kernel-nsig", "2",
        "--variance-samples", "4", "--variance-beta", "1.2"])
    atk = cli.attack_from_args(args)
    assert (atk.diversity_prob, atk.resize_rate, atk.scale_copies, atk.admix_copies,
            atk.admix_strength, atk.kernel_size, atk.kernel_nsig, atk.variance_samples,
            atk.variance_beta) == (0.3, 0.8, 3, 2, 0.1, 5, 2.0, 4, 1.2)
    # unset: each preset's own defaults
    args = cli.build_parser().parse_args(["attack", "mnist-cnn", "--attack", "vmifgsm",
                                          "--eps", "0.2"])
    atk = cli.attack_from_args(args)
    assert (atk.variance_samples, atk.variance_beta, atk.decay) == (20, 1.5, 1.0)
    # and a piece the attack does not have is refused, naming the flag
    args = cli.build_parser().parse_args(["attack", "mnist-cnn", "--attack", "square",
                                          "--eps", "0.2", "--kernel-size", "5"])
    with pytest.raises(SystemExit, match="--kernel-size does not apply"):
        cli.attack_from_args(args)
