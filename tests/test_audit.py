"""The evaluation audit: an honest model passes, masked and randomised models are flagged."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from advlab.attacks import FGSM, PGD
from advlab.attacks.square import SquareAttack
from advlab.evaluate import audit as audit_mod
from advlab.evaluate.audit import (
    AuditReport,
    Flag,
    Thresholds,
    audit,
    check_gradients,
    check_logits,
    check_randomness,
    check_whitebox_vs_transfer,
    outputs_differ,
    worst_case_accuracy,
)
from advlab.models.vone import vone
from conftest import NoisyFront, TinyCNN, blobs

EXPECTED_FLAGS = [
    "randomized_output", "logits_not_probabilities", "clean_accuracy",
    "gradients_finite_nonzero", "budget_used", "iterative_beats_single_step",
    "whitebox_beats_transfer", "gradient_free_below_gradient", "noise_below_gradient",
    "accuracy_falls_with_eps",
    "chance_at_large_eps", "unbounded_reaches_100", "converged",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many small attack steps run fastest on one thread on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained_cnn(_one_thread) -> TinyCNN:
    """conftest's recipe, trained here on one thread: a shared 2-core CPU makes the
    multi-threaded version many times slower."""
    torch.manual_seed(0)
    model = TinyCNN()
    x, y = blobs(2000, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(4):
        for i in range(0, 2000, 100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


class Quantised(nn.Module):
    """Input quantisation in front of a trained net: zero gradient almost everywhere."""

    def __init__(self, net: nn.Module, levels: int = 8) -> None:
        super().__init__()
        self.net = net
        self.levels = levels

    def forward(self, x):
        return self.net(torch.round(x * self.levels) / self.levels)


class Shattered(nn.Module):
    """A tiny, fast-oscillating term on the logits: predictions barely change, but the
    input gradient is dominated by ``a k cos(k x)`` and useless for an attack."""

    def __init__(self, net: nn.Module, a: float = 0.02, k: float = 1e4) -> None:
        super().__init__()
        self.net = net
        self.a, self.k = a, k
        self.register_buffer("w", torch.randn(64, 10, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return self.net(x) + self.a * torch.sin(self.k * x).flatten(1) @ self.w


@pytest.fixture(scope="module")
def audit_data():
    return blobs(64, seed=11)


@pytest.fixture(scope="module")
def plain_report(trained_cnn, audit_data):
    x, y = audit_data
    return audit(trained_cnn, x, y, eps=0.1, quick=True)


def test_plain_cnn_passes_every_check(trained_cnn, plain_report):
    rep = plain_report
    assert isinstance(rep, AuditReport)
    assert [f.name for f in rep.flags] == EXPECTED_FLAGS
    assert rep.trustworthy
    assert not rep.failures
    for name in EXPECTED_FLAGS:
        if name != "gradient_free_below_gradient":  # may warn when Square is a bit stronger
            assert rep.flag(name).passed, rep.flag(name)
    assert not rep.randomized and rep.eot_samples == 1 and rep.eval_draws == 1
    assert rep.flag("whitebox_beats_transfer").numbers["skipped"]
    assert rep.clean_accuracy > 0.95 and rep.clean_accuracy_std == 0.0
    # worst case over every attack is no better than any single one
    assert rep.robust_accuracy <= min(rep.accuracies.values()) + 1e-9
    assert {"clean", "fgsm", "pgd", "pgd-cw", "mifgsm", "square", "random-noise"} <= set(
        rep.accuracies)
    sweep = rep.flag("accuracy_falls_with_eps").numbers
    assert sweep["eps"][0] == 0.0 and sweep["eps"][-1] == 0.5
    assert rep.flag("unbounded_reaches_100").numbers["success"] == 1.0
    json.dumps(rep.as_dict())  # JSON-ready


def test_audit_leaves_no_side_effects(trained_cnn, audit_data):
    x, y = audit_data
    model = copy.deepcopy(trained_cnn).train()
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x0 = x.clone()
    audit(model, x[:16], y[:16], eps=0.1, quick=True, n_queries=10, unbounded_steps=5,
          steps=2, noise_trials=2)
    assert torch.equal(x, x0)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_quantised_front_end_is_flagged(trained_cnn, audit_data):
    x, y = audit_data
    rep = audit(Quantised(trained_cnn), x, y, eps=0.15, quick=True)
    assert not rep.trustworthy
    assert rep.clean_accuracy > 0.9
    grads = rep.flag("gradients_finite_nonzero")
    assert grads.severity == "fail" and grads.numbers["zero_fraction"] > 0.9
    sq = rep.flag("gradient_free_below_gradient")
    assert sq.severity == "fail" and sq.numbers["square"] > sq.numbers["gradient"] + 0.3
    assert rep.flag("unbounded_reaches_100").severity == "fail"
    assert rep.flag("chance_at_large_eps").severity == "fail"
    # the Square Attack sees through the masking: the reported worst case is low
    assert rep.accuracies["square"] < rep.accuracies["pgd"] - 0.3
    assert rep.robust_accuracy <= rep.accuracies["square"]


def test_shattered_gradients_are_flagged(trained_cnn, audit_data):
    x, y = audit_data
    rep = audit(Shattered(trained_cnn), x, y, eps=0.15, quick=True)
    assert not rep.trustworthy
    assert rep.flag("gradients_finite_nonzero").passed  # gradients exist, they are useless
    assert rep.flag("gradient_free_below_gradient").severity == "fail"
    assert rep.flag("unbounded_reaches_100").severity == "fail"


def test_huge_input_noise_is_flagged(trained_cnn, audit_data):
    x, y = audit_data
    model = NoisyFront(trained_cnn, sigma=10.0)
    rep = audit(model, x, y, eps=0.1, quick=True, eot_samples=4)
    assert rep.randomized and rep.eot_samples == 4 and rep.eval_draws == 8
    rnd = rep.flag("randomized_output")
    assert rnd.passed and rnd.numbers["randomized"] and rnd.numbers["eot_samples"] == 4
    assert rep.clean_accuracy_std > 0  # accuracy is a mean over draws, with its spread
    assert rep.flag("clean_accuracy").severity == "warn"  # noise drowns the signal
    assert rep.flag("unbounded_reaches_100").severity == "fail"
    assert rep.flag("whitebox_beats_transfer").numbers["skipped"]  # no way to fix the noise
    assert not rep.trustworthy


def test_randomized_model_without_eot_warns(trained_cnn, audit_data):
    x, y = audit_data
    model = NoisyFront(trained_cnn, sigma=0.3)
    assert outputs_differ(model, x)[0]
    assert not outputs_differ(trained_cnn, x)[0]
    flag = check_randomness(model, x, y, eot_samples=1, quick=True)
    assert flag.severity == "warn" and not flag.passed
    flag = check_randomness(model, x, y, eot_samples=4, quick=True)
    assert flag.passed and flag.numbers["eval_draws"] == 8


@pytest.fixture(scope="module")
def tiny_vone():
    torch.manual_seed(0)
    back = nn.Sequential(nn.Flatten(), nn.Linear(4 * 64, 10))
    net = vone(back, preset="sound", simple_channels=8, complex_channels=8, ksize=7,
               image_size=8, bottleneck_channels=4, noise_seed=0, conv_mode="direct")
    x, y = blobs(600, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(3):
        for i in range(0, 600, 100):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    for p in net.parameters():
        p.grad = None
    return net.eval()


def test_vone_transfer_uses_the_model_with_fixed_noise(tiny_vone, audit_data):
    x, y = audit_data
    x, y = x[:32], y[:32]
    flag = check_whitebox_vs_transfer(tiny_vone, x, y, 0.1, quick=True, eot_samples=2,
                                      eval_draws=4)
    assert not flag.numbers["skipped"]
    assert flag.numbers["surrogate"] == "the same model with its noise fixed"
    assert 0.0 <= flag.numbers["fixed_noise_success"] <= 1.0
    assert flag.passed
    assert not tiny_vone.vone_block.noise_fixed  # the fixed noise was only temporary
    assert outputs_differ(tiny_vone, x)[0]


def test_transfer_beating_whitebox_fails(trained_cnn, audit_data):
    """Quantisation masks the gradient; the unquantised net as a surrogate transfers."""
    x, y = audit_data
    flag = check_whitebox_vs_transfer(Quantised(trained_cnn), x, y, 0.15, quick=True,
                                      surrogate=trained_cnn)
    assert flag.severity == "fail"
    assert flag.numbers["transfer"] > flag.numbers["whitebox"] + 0.3


def test_softmax_and_gradient_checks(trained_cnn, audit_data):
    x, y = audit_data
    soft = nn.Sequential(trained_cnn, nn.Softmax(dim=1))
    flag = check_logits(soft, x)
    assert flag.severity == "fail" and flag.numbers["probabilities"]
    assert check_logits(nn.Sequential(trained_cnn, nn.LogSoftmax(dim=1)), x).passed
    assert check_logits(trained_cnn, x).passed
    assert check_gradients(trained_cnn, x, y).passed

    class NaNGrad(nn.Module):
        def forward(self, x):
            return trained_cnn(x) + torch.sqrt(x - x).sum((1, 2, 3))[:, None]

    flag = check_gradients(NaNGrad(), x, y)
    assert flag.severity == "fail" and flag.numbers["nonfinite_fraction"] == 1.0


def _fake_session(thresholds=None, **outcomes):
    """A stand-in for the audit's session: fixed outcomes, deterministic tolerances."""
    def outcome(correct):
        return audit_mod._Outcome(None, torch.tensor([correct], dtype=torch.bool))

    made = {k: outcome(v) for k, v in outcomes.items()}
    return SimpleNamespace(
        eps=0.1, draws=1, randomized=False,
        thresholds=thresholds or Thresholds(),
        widen=lambda tol, *o: tol,
        fgsm=lambda e: made["fgsm"], mifgsm=lambda e: made["mifgsm"],
        pgd=lambda e, **kw: made["pgd"], clean=lambda: made["clean"],
        apgd=lambda e, **kw: made.get("apgd", made.get("pgd")),
        large_eps=lambda: 0.5, settings={"sweep": (0.5, 1.0, 2.0)},
    ), made


def test_single_step_beating_iterative_fails():
    ten = [True] * 10
    s, _ = _fake_session(fgsm=[False] * 5 + [True] * 5, pgd=[False] * 2 + [True] * 8,
                         mifgsm=[False] * 6 + [True] * 4, apgd=[False] * 10)
    flag = audit_mod._flag_single_step(s)
    assert flag.severity == "fail" and flag.evidence.startswith("PGD succeed")
    s, _ = _fake_session(fgsm=ten, pgd=ten, mifgsm=ten)
    assert audit_mod._flag_single_step(s).passed
    # APGD-CE is among the iterative attacks that must beat FGSM
    fooled = [False] * 10  # the outcomes are "still correct" flags
    s, _ = _fake_session(fgsm=[False] * 5 + [True] * 5, pgd=fooled, mifgsm=fooled,
                         apgd=[True] * 8 + [False] * 2)
    flag = audit_mod._flag_single_step(s)
    assert flag.severity == "fail" and flag.evidence.startswith("APGD-CE succeed")


def test_accuracy_rising_with_eps_fails():
    s, _ = _fake_session(clean=[True] * 10, pgd=[True] * 10)
    outs = {0.0: [True] * 10, 0.05: [True] * 5 + [False] * 5, 0.1: [True] * 9 + [False],
            0.2: [False] * 10, 0.5: [False] * 10}
    s.apgd = lambda e, **kw: audit_mod._Outcome(None, torch.tensor([outs[e]]))
    flag = audit_mod._flag_sweep(s)
    assert flag.severity == "fail" and "0.05 -> 0.1" in flag.evidence
    assert flag.numbers["eps"] == [0.0, 0.05, 0.1, 0.2, 0.5]


def test_worst_case_accuracy_is_per_example(trained_cnn):
    x, y = blobs(40, seed=5)
    atks = {"fgsm": FGSM(eps=0.15), "pgd": PGD(eps=0.15, steps=5),
            "square": SquareAttack(eps=0.15, n_queries=30)}
    res = worst_case_accuracy(trained_cnn, x, y, atks)
    assert res.draws == 1 and not res.randomized
    manual = torch.ones(40, dtype=torch.bool)
    with torch.no_grad():
        manual &= trained_cnn(x).argmax(1) == y
        for atk in atks.values():
            manual &= trained_cnn(atk(trained_cnn, x, y)).argmax(1) == y
    assert res.accuracy == pytest.approx(float(manual.float().mean()))
    assert torch.equal(res.robust.bool(), manual)
    assert res.accuracy <= min(res.per_attack.values())
    assert set(res.per_attack) == {"clean", "fgsm", "pgd", "square"}
    named = worst_case_accuracy(trained_cnn, x, y, [FGSM(eps=0.1), FGSM(eps=0.2)],
                                include_clean=False)
    assert set(named.per_attack) == {"fgsm", "fgsm#2"}
    json.dumps(res.as_dict())


def test_worst_case_accuracy_randomized(trained_cnn):
    x, y = blobs(32, seed=6)
    model = NoisyFront(trained_cnn, sigma=0.4)
    res = worst_case_accuracy(model, x, y, {"fgsm": FGSM(eps=0.1, eot_samples=2)},
                              eval_draws=6)
    assert res.randomized and res.draws == 6
    assert res.per_attack_std["clean"] > 0 or res.per_attack_std["fgsm"] > 0
    assert 0.0 <= res.accuracy <= 1.0 and res.accuracy_std >= 0.0
    assert res.robust.shape == (32,)


def test_bad_arguments(trained_cnn, audit_data):
    x, y = audit_data
    with pytest.raises(ValueError, match="eps must be a finite number > 0, got 0"):
        audit(trained_cnn, x, y, eps=0)
    with pytest.raises(ValueError, match="eps must be a finite number > 0, got inf"):
        audit(trained_cnn, x, y, eps=math.inf)
    with pytest.raises(ValueError, match="audit supports norm 'linf' or 'l2', got 'l1'"):
        audit(trained_cnn, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match=r"box \[0.0, 1.0\], got values in"):
        audit(trained_cnn, x * 255, y, eps=0.1)
    with pytest.raises(ValueError, match="y has 3 entries but x has 64"):
        audit(trained_cnn, x, y[:3], eps=0.1)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        audit(trained_cnn, x, y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 9\]"):
        audit(trained_cnn, x, y + 10, eps=0.1)
    with pytest.raises(ValueError, match="severity must be one of"):
        Flag("x", True, "fatal", "")
    with pytest.raises(ValueError, match="noise_z must be a number >= 0"):
        Thresholds(noise_z=-1)
    with pytest.raises(ValueError, match="attacks must contain at least one attack"):
        worst_case_accuracy(trained_cnn, x, y, [])
    with pytest.raises(ValueError, match="'clean' is reserved"):
        worst_case_accuracy(trained_cnn, x, y, {"clean": FGSM(eps=0.1)})
