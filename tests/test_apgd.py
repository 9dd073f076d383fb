"""APGD, APGD-DLR and APGD-T (Croce & Hein, ICML 2020): formulas by hand, the step-size
schedule, bounds, side effects, strength against PGD and agreement with torchattacks."""

from __future__ import annotations

import copy
import doctest

import pytest
import torch
from torch import nn

from advlab.attacks import PGD
from advlab.attacks import apgd as apgd_module
from advlab.attacks.apgd import (
    APGD,
    APGDDLR,
    APGDT,
    APGDResult,
    _halve_where,
    checkpoints,
    dlr,
    dlr_targeted,
)
from advlab.stats import wilson_interval
from advlab.threat import Norm, per_example_norm
from conftest import blobs

EPS = {Norm.LINF: 0.1, Norm.L2: 0.8}
ATTACKS = {"apgd": APGD, "apgddlr": APGDDLR, "apgdt": APGDT}


def robust(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def test_module_doctests_run():
    res = doctest.testmod(apgd_module, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


# -- losses ---------------------------------------------------------------------------------
def test_dlr_by_hand_on_four_classes():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.0],    # label on top: -(4 - 3) / (4 - 1)
                      [1.0, 5.0, 2.0, 0.5]])   # label third: -(1 - 5) / (5 - 1)
    y = torch.tensor([0, 0])
    torch.testing.assert_close(dlr(z, y), torch.tensor([-1 / 3, 1.0]))
    # positive exactly when the model is wrong about the label (advlab's loss convention)
    assert dlr(z, torch.tensor([1, 1])).tolist()[1] < 0 < dlr(z, torch.tensor([1, 1]))[0]
    # invariant to shift and positive scale of the logits
    torch.testing.assert_close(dlr(3 * z - 7, y), dlr(z, y))


def test_targeted_dlr_by_hand_on_four_classes():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.0],
                      [1.0, 5.0, 2.0, 0.5]])
    y, t = torch.tensor([0, 0]), torch.tensor([2, 3])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    expected = torch.tensor([-(4 - 3) / (4 - (1 + 0) / 2), -(1 - 0.5) / (5 - (1 + 0.5) / 2)])
    torch.testing.assert_close(dlr_targeted(z, y, t), expected)
    torch.testing.assert_close(dlr_targeted(2 * z + 1, y, t), expected)


def test_dlr_needs_enough_classes():
    with pytest.raises(ValueError, match=r"at least 3 classes, got shape \(1, 2\)"):
        dlr(torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"at least 4 classes, got shape \(1, 3\)"):
        dlr_targeted(torch.zeros(1, 3), torch.tensor([0]), torch.tensor([1]))


# -- step-size schedule ---------------------------------------------------------------------
def test_checkpoints_are_the_papers_for_100_steps():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99: intervals 22, 19, 16, 13, 10,
    # 7, then the minimum 6
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # T = 10: first interval max(int(2.2), 1) = 2, shrinking by 1 to at least 1
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [1]
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        checkpoints(0)


def test_halving_conditions_by_hand():
    best = torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0])
    at_check = torch.tensor([1.0, 1.0, 1.0, 0.5, 1.5])
    halved = torch.tensor([False, True, True, False, False])
    # 22 steps, rho = 0.75: fewer than 16.5 rises halve (condition 1)
    rises = torch.tensor([17, 16, 20, 16, 17])
    got = _halve_where(rises, 22, 0.75, best, at_check, halved)
    # 0: enough rises, but no progress and not halved last time (condition 2)
    # 1: too few rises (condition 1); 2: enough rises, no progress, halved last time: keep
    # 3: too few rises, despite progress; 4: enough rises and progress: keep
    assert got.tolist() == [True, True, False, True, False]
    # had every example been halved last time, only condition 1 remains
    got = _halve_where(rises, 22, 0.75, best, at_check, torch.ones(5, dtype=torch.bool))
    assert got.tolist() == [False, True, False, True, False]
    # the paper's strict "fewer than": 15 rises out of 20 (= 0.75 * 20) do not halve
    one = torch.ones(1)
    assert not _halve_where(torch.tensor([15]), 20, 0.75, one, one - 1,
                            torch.ones(1, dtype=torch.bool)).item()


class Scripted(nn.Module):
    """Three classes, label 0 always on top. Example 0's loss never changes; example 1's
    rises on every call; the logits do not depend on the input (zero gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        z = torch.zeros(x.shape[0], 3, dtype=x.dtype) + self.w * x.flatten(1).sum(1, True)
        z[:, 0] = 10.0
        if x.shape[0] > 1:
            z[1, 1] = 0.01 * self.calls
        return z


def test_step_halves_at_every_checkpoint_where_the_loss_is_flat_only():
    x, y = torch.full((2, 1, 2, 2), 0.5), torch.zeros(2, dtype=torch.long)
    eps = 0.2
    model = Scripted()
    res = APGD(eps=eps, steps=100).run(model, x, y)
    assert isinstance(res, APGDResult)
    # flat loss: no rise, so every one of the 8 checkpoints halves; rising loss: none does
    torch.testing.assert_close(res.step_size, torch.tensor([2 * eps / 2 ** 8, 2 * eps]))
    assert not res.success.any()
    # one forward pass per iteration: the input check, the clean pass, x_0 and 100 steps
    assert model.calls == 1 + 1 + 1 + 100


def test_eot_runs_k_passes_per_iteration():
    x, y = torch.full((2, 1, 2, 2), 0.5), torch.zeros(2, dtype=torch.long)
    model = Scripted()
    APGD(eps=0.1, steps=10, eot_samples=3).run(model, x, y)
    assert model.calls == 1 + 1 + 3 * 11


# -- the iteration by hand ------------------------------------------------------------------
def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5)).double()


def _ce_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xi = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(xi), y, reduction="sum").backward()
    return xi.grad


def test_first_two_linf_steps_by_hand():
    model = _linear()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64) * 0.6 + 0.2
    y = model(x).argmax(1)  # attack from a correct prediction
    eps = 0.05
    res = APGD(eps=eps, steps=2, random_start=False).run(model, x, y, record=True)
    x1 = x + res.updates[0]
    x2 = x1 + res.updates[1]

    def proj(z):
        return torch.minimum(torch.maximum(z, x - eps), x + eps).clamp(0, 1)

    # step 1 (no momentum): P(x_0 + 2 eps sign(grad))
    x1_hand = proj(x + 2 * eps * _ce_grad(model, x, y).sign())
    torch.testing.assert_close(x1, x1_hand, atol=1e-12, rtol=0)
    # the checkpoint after step 1 keeps the step when the loss rose there (the case here)
    with torch.no_grad():
        rose = (nn.functional.cross_entropy(model(x1), y, reduction="none")
                > nn.functional.cross_entropy(model(x), y, reduction="none"))
    assert rose.all()
    # step 2: z = P(x_1 + 2 eps sign(grad)), x_2 = P(x_1 + 0.75 (z - x_1) + 0.25 (x_1 - x_0))
    z = proj(x1 + 2 * eps * _ce_grad(model, x1, y).sign())
    x2_hand = proj(x1 + 0.75 * (z - x1) + 0.25 * (x1 - x))
    torch.testing.assert_close(x2, x2_hand, atol=1e-12, rtol=0)


def test_first_l2_step_by_hand():
    model = _linear(1)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(4),
                   dtype=torch.float64) * 0.6 + 0.2
    y = model(x).argmax(1)
    eps = 0.3
    res = APGD(eps=eps, norm="l2", steps=1, random_start=False).run(model, x, y, record=True)
    grad = _ce_grad(model, x, y)
    unit = grad / grad.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    # x + 2 eps u leaves the ball: its projection is x + eps u, then the box
    x1_hand = (x + eps * unit).clamp(0, 1)
    torch.testing.assert_close(x + res.updates[0], x1_hand, atol=1e-12, rtol=0)


def test_random_start_lies_on_the_sphere_of_radius_eps():
    """With zero gradients the iterates never move from x_0: the output is the start."""
    model = Scripted()
    x, y = torch.full((2, 1, 4, 4), 0.5), torch.zeros(2, dtype=torch.long)
    for norm, eps in ((Norm.LINF, 0.2), (Norm.L2, 0.3)):
        x0 = APGD(eps=eps, norm=norm, steps=3, seed=5)(model, x, y)
        torch.testing.assert_close(per_example_norm(x0 - x, norm),
                                   torch.full((2,), eps), atol=1e-6, rtol=0)


# -- properties -----------------------------------------------------------------------------
@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2], ids=lambda n: n.value)
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_bounds_and_no_side_effects(name, norm, targeted, trained_cnn, data):
    x, y = data
    model = copy.deepcopy(trained_cnn)
    model.train()  # the caller's mode must come back untouched
    model.features[1].eval()  # mixed modes too
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x0, y0 = x.clone(), y.clone()
    target = (y + 3) % 10 if targeted else None
    x_adv = ATTACKS[name](eps=EPS[norm], norm=norm, steps=10)(model, x, y, target=target)

    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert per_example_norm(x_adv - x, norm).max() <= EPS[norm] + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2], ids=lambda n: n.value)
def test_per_example_eps(norm, trained_cnn):
    x, y = blobs(8, seed=3)
    eps = torch.tensor([0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5]) * (1 if norm is Norm.LINF
                                                                       else 4)
    for cls in (APGD, APGDT):
        x_adv = cls(eps=eps, norm=norm, steps=10)(trained_cnn, x, y)
        assert (per_example_norm(x_adv - x, norm) <= eps + 1e-6).all()
        assert torch.equal(x_adv[0], x[0])  # eps 0: nothing moves
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_seeded_runs_are_identical(trained_cnn, data):
    x, y = data
    for cls in (APGD, APGDT):
        a = cls(eps=0.1, steps=10, seed=3).run(trained_cnn, x, y)
        b = cls(eps=0.1, steps=10, seed=3).run(trained_cnn, x, y)
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.loss, b.loss)
        c = cls(eps=0.1, steps=10, seed=4)(trained_cnn, x, y)
        assert not torch.equal(a.x_adv, c)
    # the global generator is neither used nor advanced
    state = torch.get_rng_state()
    APGD(eps=0.1, steps=5)(trained_cnn, x, y)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2], ids=lambda n: n.value)
def test_batch_of_n_equals_n_batches_of_one(norm, trained_cnn, data):
    x, y = data
    for cls in (APGD, APGDT):
        atk = cls(eps=EPS[norm], norm=norm, steps=10, random_start=False)
        batch = atk(trained_cnn, x, y)
        singles = torch.cat([atk(trained_cnn, x[i:i + 1], y[i:i + 1]) for i in range(len(x))])
        # batch 1 may reduce in another order: L2 steps carry the last bits of the gradient
        atol = 1e-6 if norm is Norm.LINF else 1e-5
        torch.testing.assert_close(singles, batch, atol=atol, rtol=0)


def test_speed_options_and_gradient_hooks(trained_cnn, data):
    from advlab.attacks import Ensemble

    x, y = data
    plain = APGD(eps=0.1, steps=10)(trained_cnn, x, y)
    nhwc = APGD(eps=0.1, steps=10, channels_last=True)(trained_cnn, x, y)
    torch.testing.assert_close(nhwc, plain, atol=1e-6, rtol=0)
    assert nhwc.is_contiguous()
    ens = Ensemble([trained_cnn, copy.deepcopy(trained_cnn)], low_memory=True)
    for cls in (APGD, APGDT):
        x_adv = cls(eps=0.2, steps=10)(ens, x, y)
        assert per_example_norm(x_adv - x, Norm.LINF).max() <= 0.2 + 1e-6
        assert not robust(ens, x_adv, y).all()


def test_result_reports_the_returned_points(trained_cnn):
    x, y = blobs(200, seed=11)
    res = APGD(eps=0.15, steps=20).run(trained_cnn, x, y)
    with torch.no_grad():
        z = trained_cnn(res.x_adv)
    torch.testing.assert_close(res.logits, z, atol=1e-4, rtol=1e-4)
    assert torch.equal(res.success, z.argmax(1) != y)
    torch.testing.assert_close(res.loss, nn.functional.cross_entropy(z, y, reduction="none"),
                               atol=1e-4, rtol=1e-4)


def test_restarts_keep_every_success(trained_cnn):
    x, y = blobs(200, seed=13)
    one = APGD(eps=0.13, steps=10, restarts=1)(trained_cnn, x, y)
    two = APGD(eps=0.13, steps=10, restarts=2)(trained_cnn, x, y)
    # the first restart draws what the single run drew; keep-best never loses a success
    ok1, ok2 = robust(trained_cnn, one, y), robust(trained_cnn, two, y)
    assert not (ok2 & ~ok1).any()
    assert per_example_norm(two - x, Norm.LINF).max() <= 0.13 + 1e-6


# -- strength -------------------------------------------------------------------------------
def test_apgd_is_at_least_as_strong_as_pgd(trained_cnn):
    x, y = blobs(1000, seed=21)
    acc_apgd = robust(trained_cnn, APGD(eps=0.15, steps=20)(trained_cnn, x, y), y)
    acc_pgd = robust(trained_cnn, PGD(eps=0.15, steps=20)(trained_cnn, x, y), y)
    assert acc_apgd.float().mean() <= acc_pgd.float().mean()


def test_apgdt_untargeted_is_not_weaker_than_apgd_ce(trained_cnn):
    x, y = blobs(1000, seed=21)
    clean = robust(trained_cnn, x, y).float().mean()
    ce = robust(trained_cnn, APGD(eps=0.15, steps=20)(trained_cnn, x, y), y).float().mean()
    res = APGDT(eps=0.15, steps=20).run(trained_cnn, x, y)
    t = robust(trained_cnn, res.x_adv, y)
    assert t.float().mean() <= clean - 0.5
    assert t.float().mean() <= ce + 0.02
    assert torch.equal(res.success, ~t)


@pytest.mark.parametrize("cls", [APGD, APGDT])
def test_targeted_reaches_the_target_more_than_chance(cls, trained_cnn):
    x, y = blobs(200, seed=12)
    target = (y + 1 + torch.arange(200) % 9) % 10
    with torch.no_grad():
        before = trained_cnn(x)
    x_adv = cls(eps=0.3, steps=20)(trained_cnn, x, y, target=target)
    with torch.no_grad():
        after = trained_cnn(x_adv)
    hit = after.argmax(1) == target
    assert (before.argmax(1) == target).float().mean() < 0.02
    assert hit.float().mean() > 0.8  # chance is 0.1

    def margin(z):  # target logit minus the best other one
        return z.gather(1, target[:, None]).squeeze(1) - z.scatter(
            1, target[:, None], float("-inf")).amax(1)

    assert (margin(after) > margin(before)).float().mean() > 0.95


def test_apgdt_with_fewer_classes_than_targets():
    model = _linear()  # 5 classes: 4 targets
    x = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)
    y = model(x).argmax(1)
    res = APGDT(eps=0.3, steps=5).run(model, x, y)
    assert per_example_norm(res.x_adv - x, Norm.LINF).max() <= 0.3 + 1e-9


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(norm="l1"), "supports norm 'linf' or 'l2', got 'l1'"),
    (dict(alpha=0.01), "alpha must be None, got 0.01"),
    (dict(decay=1.0), "decay must be 0, got 1.0"),
    (dict(nesterov=True), "nesterov must be False, got True"),
    (dict(clip=False), "clip must be True, got False"),
    (dict(eps=float("inf")), "needs a finite eps .* got inf"),
    (dict(eps=torch.tensor([0.1, float("inf")])), "needs a finite eps"),
    (dict(rho=0.0), r"rho must be a number in \(0, 1\], got 0.0"),
    (dict(momentum=1.5), r"momentum must be a number in \(0, 1\], got 1.5"),
    (dict(steps=0), "steps must be an integer >= 1, got 0"),
    (dict(eps=-0.1), "eps must be >= 0, got -0.1"),
    (dict(loss="xent"), "loss must be one of"),
])
def test_bad_configs_raise_naming_the_value(kw, match):
    kw = {"eps": 0.1, **kw}
    with pytest.raises(ValueError, match=match):
        APGD(**kw)


def test_apgdt_specific_errors(trained_cnn, data):
    with pytest.raises(ValueError, match="n_target_classes must be an integer >= 1, got 0"):
        APGDT(eps=0.1, n_target_classes=0)
    with pytest.raises(ValueError, match="loss must stay 'dlr', got 'ce'"):
        APGDT(eps=0.1, loss="ce")
    x, y = data
    with pytest.raises(ValueError, match="record=True"):
        APGDT(eps=0.1, steps=2).run(trained_cnn, x, y, record=True)
    three = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ValueError, match="at least 4 classes .*, got 3"):
        APGDT(eps=0.1, steps=2)(three, x, y % 3)
    two = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ValueError, match="at least 3 classes"):
        APGDDLR(eps=0.1, steps=2)(two, x, y % 2)


def test_loss_by_name_dlr():
    assert APGD(eps=0.1, loss="dlr").loss is dlr
    assert APGDDLR(eps=0.1).loss is dlr and APGDDLR.name == "apgddlr"


# -- agreement with the authors' algorithm as implemented by torchattacks -------------------
@pytest.mark.parametrize("norm, eps", [("Linf", 0.13), ("L2", 0.8)])
def test_robust_accuracy_agrees_with_torchattacks(norm, eps, trained_cnn):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = blobs(1200, seed=21)
    ours = APGD(eps=eps, norm=norm.lower(), steps=100)(trained_cnn, x, y)
    with torch.random.fork_rng(devices=[]):  # torchattacks seeds the global generator
        theirs = torchattacks.APGD(trained_cnn, norm=norm, eps=eps, steps=100, n_restarts=1,
                                   seed=0, loss="ce", eot_iter=1)(x, y)
    n = x.shape[0]
    acc_ours = int(robust(trained_cnn, ours, y).sum())
    acc_theirs = int(robust(trained_cnn, theirs, y).sum())
    lo, hi = wilson_interval(acc_theirs, n)
    assert 0.2 < acc_theirs / n < 0.8  # an informative operating point
    assert lo <= acc_ours / n <= hi, (acc_ours / n, (lo, hi))


@pytest.fixture(scope="module")
def mnist_cnn():
    """A small CNN trained on 8000 real MNIST digits (two passes, a few seconds)."""
    from advlab.data import load_mnist

    x, y = load_mnist("train")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for i in list(range(0, 8000, 100)) * 2:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[i:i + 100]), y[i:i + 100]).backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("norm, eps", [("linf", 0.12), ("l2", 2.0)])
def test_apgd_not_above_pgd_on_a_trained_mnist_cnn(mnist_cnn, norm, eps):
    """The acceptance point: same budget and steps, APGD's robust accuracy <= PGD's."""
    from advlab.data import load_mnist

    x, y = load_mnist("test")
    x, y = x[:300], y[:300]
    clean = robust(mnist_cnn, x, y).float().mean()
    assert clean > 0.9
    acc = {name: robust(mnist_cnn, cls(eps=eps, norm=norm, steps=20)(mnist_cnn, x, y),
                        y).float().mean()
           for name, cls in (("pgd", PGD), ("apgd", APGD), ("apgddlr", APGDDLR))}
    assert acc["apgd"] <= acc["pgd"], acc
    assert acc["apgddlr"] <= clean - 0.2, acc
    assert acc["pgd"] < clean - 0.2  # a budget that matters
