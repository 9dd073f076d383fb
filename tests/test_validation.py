"""Bad input gets a clear error naming the value, raised before any work."""

from __future__ import annotations

import math

import pytest
import torch

from advlab.attacks import FGSM, MIFGSM, PGD, create_attack
from advlab.threat import ThreatModel
from conftest import TinyCNN, blobs


class Counting(TinyCNN):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    x, y = blobs(4)
    return Counting().eval(), x, y


@pytest.mark.parametrize(
    "mutate, exc, pattern",
    [
        (lambda x, y: (x.clone().index_fill_(0, torch.tensor([1]), float("nan")), y),
         ValueError, "NaN or infinite"),
        (lambda x, y: (x.clone().index_fill_(0, torch.tensor([1]), float("inf")), y),
         ValueError, "NaN or infinite"),
        (lambda x, y: (x * 255, y), ValueError, r"box \[0.0, 1.0\], got values in"),
        (lambda x, y: (x - 0.5, y), ValueError, r"box \[0.0, 1.0\]"),
        (lambda x, y: (x[0, 0, 0], y), ValueError, "at least 2 dimensions, got shape"),
        (lambda x, y: (x, y[:3]), ValueError, "y has 3 entries but x has 4"),
        (lambda x, y: (x, y.float()), TypeError, "integer class indices, got dtype"),
        (lambda x, y: (x, y[:, None]), ValueError, r"y must be 1-D \[N\], got shape"),
        (lambda x, y: (x, y + 10), ValueError, r"y must lie in \[0, 9\].*got values in"),
        (lambda x, y: (x, y - 20), ValueError, r"y must lie in \[0, 9\]"),
        (lambda x, y: (x.to(torch.uint8), y), TypeError, "floating-point"),
        (lambda x, y: (x.numpy(), y), TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_inputs(setup, mutate, exc, pattern):
    model, x, y = setup
    bx, by = mutate(x, y)
    with pytest.raises(exc, match=pattern):
        MIFGSM(eps=0.1)(model, bx, by)
    # raised before any work: at most the one-example probe of the output shape ran
    assert model.calls <= 1


def test_bad_target(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match=r"target must lie in \[0, 9\]"):
        FGSM(eps=0.1)(model, x, y, target=y + 10)
    with pytest.raises(ValueError, match="target has 2 entries but x has 4"):
        FGSM(eps=0.1)(model, x, y, target=y[:2])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(eps=-0.1), r"eps must be >= 0, got -0.1"),
        (dict(eps=float("nan")), "eps must be >= 0"),
        (dict(eps=0.1, steps=0), "steps must be an integer >= 1, got 0"),
        (dict(eps=0.1, steps=2.5), "steps must be an integer >= 1, got 2.5"),
        (dict(eps=0.1, decay=-1.0), r"decay must be >= 0, got -1.0"),
        (dict(eps=0.1, restarts=0), "restarts must be an integer >= 1"),
        (dict(eps=0.1, eot_samples=0), "eot_samples must be an integer >= 1"),
        (dict(eps=0.1, alpha=-1.0), "alpha must be a finite number > 0"),
        (dict(eps=0.1, norm="l3"), "norm must be one of"),
        (dict(eps=0.1, loss="mse"), "loss must be one of"),
        (dict(eps=0.1, model_mode="test"), "model_mode must be one of"),
        (dict(eps=0.1, bounds=(1.0, 0.0)), "bounds must be finite with low < high"),
        (dict(eps=math.inf), "alpha must be given explicitly"),
        (dict(eps=torch.tensor([0.1, math.inf, 0.2])),
         r"alpha must be given explicitly .*eps is inf for example\(s\) \[1\]"),
        (dict(eps=torch.tensor([[0.1]])), "eps tensor must be 1-D"),
        (dict(eps=torch.tensor([0.1, -0.2])), "eps must be >= 0 everywhere"),
    ],
)
def test_bad_config(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        create_attack("mifgsm", **kwargs)


def test_model_output_must_be_n_by_c(setup):
    _, x, y = setup
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.Flatten(0))
    with pytest.raises(ValueError, match=r"model output must be logits of shape \[N, C\]; "
                                         r"for a batch of 1 expected \[1, C\], got \(10,\)"):
        FGSM(eps=0.1)(flat, x, y)


def test_probabilities_warn(setup):
    model, x, y = setup
    probs = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="look like probabilities"):
        FGSM(eps=0.1)(probs, x, y)


def test_device_mismatch_is_an_error(setup):
    _, x, y = setup
    meta = torch.nn.Linear(64, 10, device="meta")
    with pytest.raises(ValueError, match="model is on meta but the inputs are on cpu"):
        FGSM(eps=0.1)(meta, x.flatten(1), y)


def test_per_example_eps(setup):
    model, x, y = setup
    eps = torch.tensor([0.0, 0.05, 0.1, 0.2])
    x_adv = PGD(eps=eps, steps=3)(model, x, y)
    dist = (x_adv - x).abs().flatten(1).amax(1)
    assert (dist <= eps + 1e-6).all()
    assert dist[0] == 0
    with pytest.raises(ValueError, match="eps has 4 per-example radii but x has 2"):
        PGD(eps=eps)(model, x[:2], y[:2])
    assert ThreatModel("linf", eps).eps_tensor(x).shape == (4,)


def test_unbounded_attack_reaches_everything(setup):
    model, x, y = setup
    x_adv = PGD(eps=math.inf, alpha=0.1, steps=30)(model, x, y)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("name", ["fgsm", "ifgsm", "mifgsm", "nifgsm", "pgd"])
def test_per_example_infinite_eps_with_an_explicit_alpha_is_finite(setup, name):
    """An unbounded example is fine once alpha is given: finite output inside the box."""
    model, x, y = setup
    eps = torch.full((x.shape[0],), 0.1)
    eps[0] = math.inf
    xa = create_attack(name, eps=eps, alpha=0.05)(model, x, y)
    assert torch.isfinite(xa).all() and xa.min() >= 0 and xa.max() <= 1
    assert (xa[1:] - x[1:]).abs().max() <= 0.1 + 1e-6
