"""Properties of the threat model (hypothesis)."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings

from advlab.threat import Norm, ThreatModel, per_example_norm

norms = st.sampled_from(list(Norm))
eps_values = st.floats(min_value=0.0, max_value=3.0)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def batch(seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 2, 3, 3, generator=g, dtype=torch.float64)
    d = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64) * scale
    return x, d, g


@settings(max_examples=60, deadline=None)
@given(norm=norms, eps=eps_values, seed=seeds, scale=st.floats(0.0, 5.0))
def test_projection_lands_in_ball_and_box_and_is_idempotent(norm, eps, seed, scale):
    tm = ThreatModel(norm, eps)
    x, d, _ = batch(seed, scale)
    p = tm.project(x + d, x)
    assert (per_example_norm(p - x, norm) <= eps + 1e-9).all()
    assert p.min() >= 0 and p.max() <= 1
    torch.testing.assert_close(tm.project(p, x), p, atol=1e-9, rtol=0)


@settings(max_examples=60, deadline=None)
@given(norm=norms, seed=seeds)
def test_points_inside_are_unchanged(norm, seed):
    x, d, _ = batch(seed, 0.01)
    inside = (x + d).clamp(0, 1)
    tm = ThreatModel(norm, float(per_example_norm(inside - x, norm).max()) + 1e-6)
    torch.testing.assert_close(tm.project(inside, x), inside)


@settings(max_examples=60, deadline=None)
@given(norm=norms, eps=eps_values, seed=seeds)
def test_random_init_inside_ball_and_box(norm, eps, seed):
    tm = ThreatModel(norm, eps)
    x, _, g = batch(seed)
    r = tm.random_init(x, g)
    assert (per_example_norm(r - x, norm) <= eps + 1e-9).all()
    assert r.min() >= 0 and r.max() <= 1


@settings(max_examples=60, deadline=None)
@given(norm=norms, seed=seeds)
def test_step_direction_is_unit_steepest_ascent(norm, seed):
    _, g, _ = batch(seed)
    d = ThreatModel(norm, 1.0).step_direction(g)
    torch.testing.assert_close(per_example_norm(d, norm), torch.ones(5, dtype=g.dtype))
    # steepest: <g, d> equals the dual norm of g (L1 <-> Linf, L2 <-> L2)
    dual = {Norm.LINF: Norm.L1, Norm.L2: Norm.L2, Norm.L1: Norm.LINF}[norm]
    torch.testing.assert_close((g * d).flatten(1).sum(1), per_example_norm(g, dual))


def test_random_init_fills_the_l2_ball_uniformly():
    # the radius of a uniform point in a d-ball has P(r <= t) = t^d: check the median
    tm = ThreatModel(Norm.L2, 1.0, bounds=(-10.0, 10.0))
    x = torch.zeros(4000, 3, dtype=torch.float64)
    r = per_example_norm(tm.random_init(x, torch.Generator().manual_seed(0)), Norm.L2)
    assert abs(float(r.median()) - 0.5 ** (1 / 3)) < 0.02
    # and the Linf start covers the cube: coordinates spread to both faces
    tmi = ThreatModel(Norm.LINF, 0.5, bounds=(-10.0, 10.0))
    u = tmi.random_init(x, torch.Generator().manual_seed(1))
    assert u.min() < -0.49 and u.max() > 0.49 and abs(float(u.mean())) < 0.02


def test_zero_gradient_direction_is_zero():
    for norm in (Norm.LINF, Norm.L2):
        d = ThreatModel(norm, 1.0).step_direction(torch.zeros(2, 3))
        assert torch.equal(d, torch.zeros(2, 3))


def test_l2_direction_of_a_tiny_gradient_has_unit_norm():
    """A confident example's CE gradient can be ~1e-20: its squares underflow in float32."""
    g = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for scale in (1e-20, 1e-30, 1.0, 1e20):
        d = ThreatModel(Norm.L2, 0.5).step_direction(g * scale)
        torch.testing.assert_close(per_example_norm(d, Norm.L2), torch.ones(3))
        torch.testing.assert_close(d, g / per_example_norm(g, Norm.L2).reshape(-1, 1, 1, 1))


def test_l2_pgd_takes_full_steps_on_a_confident_example():
    from advlab.attacks import IFGSM

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[60.0, 0, 0, 0], [-60.0, 0, 0, 0]]))
        model[1].bias.zero_()
    x = torch.full((1, 1, 2, 2), 0.5)  # logit margin 60: the CE gradient is ~1e-26
    x_adv = IFGSM(eps=0.3, norm="l2", steps=3)(model, x, torch.tensor([0]))
    assert float(per_example_norm(x_adv - x, Norm.L2)) == pytest.approx(0.3, abs=1e-6)
