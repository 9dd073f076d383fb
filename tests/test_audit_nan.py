"""NaN input gradients (a complex cell ``sqrt(q0^2 + q1^2)`` without epsilon) in the audit:
``gradients_finite_nonzero`` names the fraction of NaN entries, ``budget_used`` sees that
FGSM leaves those pixels unperturbed, and the audit runs to the end on such a model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advlab.attacks import FGSM, NonFiniteGradientError
from advlab.evaluate.audit import (
    Thresholds,
    audit,
    check_budget_used,
    check_gradients,
)
from conftest import blobs

SIZE, BORDER = 12, 4  # 12x12 images, black frame 4 pixels wide around a 4x4 centre
CENTRE = (SIZE - 2 * BORDER) ** 2
NAN_PIXELS = SIZE * SIZE - CENTRE  # every frame pixel lies in an all-black 3x3 window


def framed(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images that are exactly 0 outside a centre of values in [0.2, 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, SIZE, SIZE)
    x[:, :, BORDER:-BORDER, BORDER:-BORDER] = 0.2 + 0.8 * torch.rand(n, 1, SIZE - 2 * BORDER,
                                                                      SIZE - 2 * BORDER,
                                                                      generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


def nan_safe_sqrt(s: torch.Tensor) -> torch.Tensor:
    """``sqrt(s)`` with the same values, and gradient 0 (a finite subgradient) at ``s = 0``."""
    pos = s > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, s, torch.ones_like(s))),
                       torch.zeros_like(s))


class ComplexCell(nn.Module):
    """A fixed quadrature pair of 3x3 filters, the energy ``sqrt(q0^2 + q1^2)`` and a linear
    read-out of it and of the raw pixels. ``safe=False`` takes the plain sqrt: where a
    window is all black, ``q0 = q1 = 0`` and backward gives ``0 * inf = NaN``."""

    def __init__(self, safe: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.safe = safe
        self.register_buffer("kernel", torch.randn(2, 1, 3, 3, generator=g))
        side = SIZE - 2
        self.read_energy = nn.Linear(side * side, 3)
        self.read_pixels = nn.Linear(SIZE * SIZE, 3)
        with torch.no_grad():
            self.read_energy.weight.copy_(torch.randn(3, side * side, generator=g) * 0.3)
            self.read_pixels.weight.copy_(torch.randn(3, SIZE * SIZE, generator=g) * 0.3)
            self.read_energy.bias.zero_()
            self.read_pixels.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = nn.functional.conv2d(x, self.kernel)
        energy = q[:, 0] ** 2 + q[:, 1] ** 2
        cell = nan_safe_sqrt(energy) if self.safe else torch.sqrt(energy)
        return self.read_energy(cell.flatten(1)) + self.read_pixels(x.flatten(1))


class AllNaN(nn.Module):
    """Every input-gradient entry is NaN; the outputs are those of ``net``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + torch.sqrt(x - x).flatten(1).sum(1, keepdim=True)


@pytest.fixture(scope="module")
def data():
    return framed(24, seed=1)


@pytest.fixture(scope="module")
def models():
    return ComplexCell(safe=False).eval(), ComplexCell(safe=True).eval()


def test_the_two_models_differ_only_in_backward(models, data):
    x, y = data
    bad, good = models
    with torch.no_grad():
        assert torch.equal(bad(x), good(x))
    xs = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(bad(xs), y).backward()
    nan = torch.isnan(xs.grad)
    frame = torch.ones(SIZE, SIZE, dtype=torch.bool)
    frame[BORDER:-BORDER, BORDER:-BORDER] = False
    assert torch.equal(nan, frame.expand_as(nan))  # NaN exactly on the black frame
    # the default of every gradient attack is to refuse such a gradient
    with pytest.raises(NonFiniteGradientError):
        FGSM(eps=0.1)(bad, x, y)


def test_gradient_check_names_the_nan_entry_fraction(models, data):
    x, y = data
    bad, good = models
    flag = check_gradients(bad, x, y)
    assert flag.severity == "fail" and not flag.passed
    assert flag.numbers["nonfinite_fraction"] == 1.0
    assert flag.numbers["nonfinite_entry_fraction"] == pytest.approx(NAN_PIXELS / SIZE**2,
                                                                      abs=1e-4)
    assert flag.numbers["nonfinite_entries"] == NAN_PIXELS * x.shape[0]
    assert flag.evidence.startswith(
        f"{100 * NAN_PIXELS / SIZE**2:.3g} % of input-gradient entries are NaN/inf "
        f"({x.shape[0]} of {x.shape[0]} examples affected)")
    assert "sqrt at 0 without epsilon" in flag.evidence
    assert "sign(NaN) = 0" in flag.evidence

    ok = check_gradients(good, x, y)
    assert ok.passed and ok.severity == "info"
    assert ok.numbers["nonfinite_entry_fraction"] == 0.0
    assert ok.numbers["nonfinite_fraction"] == 0.0


def test_partly_nan_examples_are_counted_per_entry_and_per_example(models, data):
    x, y = data
    bad, _ = models
    x = x.clone()
    x[:6] = 0.5  # uniform grey images: no all-black window, finite gradient everywhere
    flag = check_gradients(bad, x, y)
    n = x.shape[0]
    assert flag.severity == "fail"
    assert flag.numbers["nonfinite_fraction"] == pytest.approx((n - 6) / n, abs=1e-4)
    expected = (n - 6) * NAN_PIXELS / (n * SIZE**2)
    assert flag.numbers["nonfinite_entry_fraction"] == pytest.approx(expected, abs=1e-4)
    assert f"({n - 6} of {n} examples affected)" in flag.evidence


def test_budget_used_fails_when_nan_pixels_stay_put(models, data):
    x, y = data
    bad, good = models
    eps = 0.1
    flag = check_budget_used(bad, x, y, eps)
    assert flag.severity == "fail" and not flag.passed
    nums = flag.numbers
    # the finite centre moves by the full eps; the NaN frame does not move at all
    assert nums["median_linf"] == pytest.approx(eps)
    assert nums["median_moved_fraction"] == pytest.approx(CENTRE / SIZE**2, abs=1e-4)
    assert nums["unchanged_images_fraction"] == 0.0
    assert nums["eps"] == eps and nums["norm"] == "linf"
    assert "median moved fraction 11.1% < 25%" in flag.evidence
    assert "eps=0.1" in flag.evidence

    ok = check_budget_used(good, x, y, eps)
    assert ok.passed and ok.severity == "info", ok.evidence
    assert ok.numbers["median_linf"] == pytest.approx(eps)
    # frame pixels whose gradient points below 0 are not movable; all others moved
    assert ok.numbers["median_moved_fraction"] == 1.0
    assert ok.numbers["movable_fraction"] < 0.9


def test_budget_used_fails_when_nothing_moves(trained_cnn):
    x, y = blobs(16, seed=4)
    model = AllNaN(trained_cnn)
    for norm, eps in (("linf", 0.1), ("l2", 1.0)):
        flag = check_budget_used(model, x, y, eps, norm=norm)
        assert flag.severity == "fail", norm
        assert flag.numbers["median_norm"] == 0.0 and flag.numbers["median_linf"] == 0.0
        assert flag.numbers["unchanged_images_fraction"] == 1.0
        assert flag.numbers["median_moved_fraction"] == 0.0
        assert f"< {Thresholds().budget_min_fraction:g} x eps" in flag.evidence


def test_budget_used_passes_an_honest_cnn(trained_cnn):
    x, y = blobs(32, seed=5)
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        flag = check_budget_used(trained_cnn, x, y, eps, norm=norm)
        assert flag.passed, (norm, flag.evidence)
        assert flag.numbers["median_norm"] >= 0.9 * eps
        assert flag.numbers["median_moved_fraction"] >= 0.9
        assert flag.numbers["unchanged_images_fraction"] == 0.0
    # the thresholds are the ones applied: demand more than the whole budget and it fails
    strict = check_budget_used(trained_cnn, x, y, 0.1, thresholds=Thresholds(
        budget_min_fraction=1.5))
    assert strict.severity == "fail" and strict.numbers["min_fraction"] == 1.5


def test_budget_used_passes_a_cnn_on_mnist():
    """Real digits: most pixels are exactly 0 or 1, and FGSM cannot push them further out."""
    from advlab.data import load_mnist

    x, y = load_mnist("test")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(16 * 7 * 7, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for i in range(0, 2000, 100):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i:i + 100]), y[i:i + 100]).backward()
        opt.step()
    net.eval()
    xt, yt = x[-64:], y[-64:]
    assert float(((xt == 0) | (xt == 1)).float().mean()) > 0.7
    for norm, eps in (("linf", 0.3), ("l2", 2.0)):
        flag = check_budget_used(net, xt, yt, eps, norm=norm)
        assert flag.passed, (norm, flag.evidence)
        assert flag.numbers["median_moved_fraction"] >= 0.9
        # ... although far fewer than all pixels can move
        assert flag.numbers["movable_fraction"] < 0.8


def test_audit_runs_on_the_nan_model_and_is_not_trustworthy(models, data):
    x, y = data
    bad, good = models
    small = dict(quick=True, steps=3, n_queries=20, noise_trials=2, unbounded_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may escape the audit
        rep = audit(bad, x, y, eps=0.1, surrogate=bad, **small)
    names = [f.name for f in rep.flags]
    assert names[names.index("gradients_finite_nonzero") + 1] == "budget_used"
    assert not rep.trustworthy
    assert rep.flag("gradients_finite_nonzero").severity == "fail"
    assert rep.flag("budget_used").severity == "fail"
    assert not rep.flag("whitebox_beats_transfer").numbers["skipped"]  # ran on the NaN model
    assert 0.0 <= rep.robust_accuracy <= min(rep.accuracies.values())

    rep_ok = audit(good, x, y, eps=0.1, **small)
    assert rep_ok.flag("gradients_finite_nonzero").passed
    assert rep_ok.flag("budget_used").passed
