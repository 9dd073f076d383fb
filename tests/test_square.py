"""Square Attack and the random-noise baseline: bounds, state, seeds, strength, validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from advlab.attacks.noise import RandomSignNoise
from advlab.attacks.square import SquareAttack, l2_bump, p_schedule
from advlab.threat import Norm, per_example_norm
from conftest import TinyCNN, blobs

EPS = {Norm.LINF: 0.1, Norm.L2: 0.8, Norm.L1: 4.0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Square's many tiny queries run fastest on one thread on a shared CPU."""
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


def _acc(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _snapshot(model):
    return ([m.training for m in model.modules()],
            {k: v.clone() for k, v in model.state_dict().items()})


def _assert_untouched(model, snap, x, x0):
    modes, state = snap
    assert torch.equal(x, x0)
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2], ids=lambda n: n.value)
def test_square_in_ball_and_box_without_side_effects(norm, targeted, trained_cnn, data):
    x, y = data
    model = copy.deepcopy(trained_cnn)
    model.train()
    model.features[1].eval()  # mixed modes must come back as they were
    snap = _snapshot(model)
    x0 = x.clone()
    target = (y + 3) % 10 if targeted else None
    res = SquareAttack(eps=EPS[norm], norm=norm, n_queries=40).run(model, x, y, target=target)
    x_adv = res.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert per_example_norm(x_adv - x, norm).max() <= EPS[norm] + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()
    assert res.queries.max() <= 40 and res.margin.shape == (x.shape[0],)
    _assert_untouched(model, snap, x, x0)


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2, Norm.L1], ids=lambda n: n.value)
def test_noise_in_ball_and_box_without_side_effects(norm, trained_cnn, data):
    x, y = data
    model = copy.deepcopy(trained_cnn).train()
    snap = _snapshot(model)
    x0 = x.clone()
    atk = RandomSignNoise(eps=EPS[norm], norm=norm, trials=5)
    x_adv = atk(model, x, y)
    assert atk.name == "random-noise"
    assert per_example_norm(x_adv - x, norm).max() <= EPS[norm] + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()
    _assert_untouched(model, snap, x, x0)


def test_linf_perturbation_sits_on_the_vertices(trained_cnn, data):
    """Every changed pixel moves by exactly eps (or is clipped by the box)."""
    x, y = data
    res = SquareAttack(eps=0.1, n_queries=30).run(trained_cnn, x, y)
    attacked = res.queries > 0  # examples misclassified when clean are left alone
    d = (res.x_adv - x).abs()[attacked]
    clipped = ((res.x_adv == 0) | (res.x_adv == 1))[attacked]
    assert attacked.any()
    assert ((d - 0.1).abs() < 1e-6)[~clipped].all()


@pytest.mark.parametrize("cls", [SquareAttack, RandomSignNoise])
def test_seeded(cls, trained_cnn, data):
    x, y = data
    kw = {"n_queries": 30} if cls is SquareAttack else {"trials": 5}
    a = cls(eps=0.1, seed=3, **kw)(trained_cnn, x, y)
    b = cls(eps=0.1, seed=3, **kw)(trained_cnn, x, y)
    c = cls(eps=0.1, seed=4, **kw)(trained_cnn, x, y)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(cls(eps=0.1, seed=None, **kw).run(trained_cnn, x, y, generator=gen).x_adv,
                       a)


def test_square_beats_noise_and_lowers_accuracy(trained_cnn):
    x, y = blobs(64, seed=12)
    clean = _acc(trained_cnn, x, y)
    sq = _acc(trained_cnn, SquareAttack(eps=0.2, n_queries=100)(trained_cnn, x, y), y)
    nz = _acc(trained_cnn, RandomSignNoise(eps=0.2, trials=100)(trained_cnn, x, y), y)
    assert clean > 0.9
    assert sq < clean - 0.5
    assert sq < nz - 0.4  # same query budget: the search is far better than luck
    sq2 = _acc(trained_cnn, SquareAttack(eps=1.6, norm="l2", n_queries=100)(trained_cnn, x, y),
               y)
    assert sq2 < clean


@pytest.mark.parametrize("loss", ["margin", "ce"])
def test_targeted_square_reaches_the_target(loss, trained_cnn):
    x, y = blobs(48, seed=12)
    target = (y + 1 + torch.arange(48) % 9) % 10
    res = SquareAttack(eps=0.3, n_queries=150, loss=loss).run(trained_cnn, x, y, target=target)
    with torch.no_grad():
        hit = trained_cnn(res.x_adv).argmax(1) == target
    assert hit.float().mean() > 0.8
    assert torch.equal(hit, res.success)  # the reported success is the model's verdict


class Counting(TinyCNN):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.rows = 0

    def forward(self, x):
        self.calls += 1
        self.rows += x.shape[0]
        return super().forward(x)


def test_budget_early_stop_and_misclassified_inputs(trained_cnn):
    x, y = blobs(16, seed=3)
    model = Counting()
    model.load_state_dict(trained_cnn.state_dict())
    model.eval()
    wrong = y.clone()
    wrong[:4] = (trained_cnn(x[:4]).argmax(1) + 1) % 10  # labels the model already misses
    res = SquareAttack(eps=0.3, n_queries=25).run(model, x, wrong)
    assert torch.equal(res.x_adv[:4], x[:4])  # already fooled: returned unchanged
    assert (res.queries[:4] == 0).all()
    assert res.queries.max() <= 25
    fooled_early = res.success & (res.queries < 25)
    assert fooled_early[4:].any()  # successful examples stop being queried
    # one probe of one example, one clean check, then one batch per query at most
    assert model.calls <= 2 + 25
    assert model.rows == 1 + 16 + int(res.queries.sum())


class NoisyLogits(torch.nn.Module):
    """A deterministic CNN plus random logit noise (a randomised model)."""

    def __init__(self, net, scale):
        super().__init__()
        self.net = net
        self.scale = scale
        self.gen = torch.Generator().manual_seed(0)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        z = self.net(x)
        return z + self.scale * torch.randn(z.shape, generator=self.gen)


def test_eot_samples_average_k_passes_per_query(trained_cnn):
    x, y = blobs(8, seed=4)
    m = NoisyLogits(trained_cnn, 0.5)
    res = SquareAttack(eps=0.05, n_queries=5, eot_samples=3).run(m, x, y)
    # one probe, 3 passes for the clean check, 3 per query round
    assert m.calls == 1 + 3 + 3 * int(res.queries.max())
    det = SquareAttack(eps=0.05, n_queries=5, eot_samples=3)(trained_cnn, x, y)
    one = SquareAttack(eps=0.05, n_queries=5)(trained_cnn, x, y)
    torch.testing.assert_close(det, one, atol=0, rtol=0)  # deterministic: mean of equal passes


def test_p_schedule_and_bump():
    assert p_schedule(0.05, 0, 1000) == 0.05
    assert p_schedule(0.05, 1, 1000) == 0.05  # 10/10000 of the budget: not yet halved
    assert p_schedule(0.05, 2, 1000) == 0.025
    assert p_schedule(0.8, 999, 1000) == pytest.approx(0.8 / 512)
    halvings = [round(math.log2(0.8 / p_schedule(0.8, i, 10000)))
                for i in (10, 11, 51, 201, 501, 1001, 2001, 4001, 6001, 8001)]
    assert halvings == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    for s in (1, 3, 4, 7):
        b = l2_bump(s)
        assert b.shape == (s, s) and float(b.norm()) == pytest.approx(1.0)
    b = l2_bump(6)
    assert (b[:3] > 0).all() and (b[3:] < 0).all()
    assert b[1, 3] == b.max()  # the centre of the top half carries the most mass


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(eps=-0.1), r"eps must be >= 0, got -0.1"),
        (dict(eps=0.1, norm="l1"), "Square Attack supports norm 'linf' or 'l2', got 'l1'"),
        (dict(eps=0.1, norm="l3"), "norm must be one of"),
        (dict(eps=0.1, n_queries=0), "n_queries must be an integer >= 1, got 0"),
        (dict(eps=0.1, p_init=0.0), r"p_init must be a number in \(0, 1\], got 0.0"),
        (dict(eps=0.1, p_init=1.5), r"p_init must be a number in \(0, 1\]"),
        (dict(eps=0.1, loss="cw"), "loss must be one of"),
        (dict(eps=0.1, eot_samples=0), "eot_samples must be an integer >= 1"),
        (dict(eps=0.1, model_mode="test"), "model_mode must be one of"),
        (dict(eps=0.1, bounds=(1.0, 0.0)), "bounds must be finite with low < high"),
        (dict(eps=math.inf, norm="l2"), "eps must be finite for the L2 Square Attack"),
    ],
)
def test_bad_config(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        SquareAttack(**kwargs)


def test_bad_inputs_same_messages_as_gradient_attacks(trained_cnn):
    x, y = blobs(4)
    model = Counting().eval()
    for atk in (SquareAttack(eps=0.1, n_queries=5), RandomSignNoise(eps=0.1, trials=2)):
        with pytest.raises(ValueError, match=r"box \[0.0, 1.0\], got values in"):
            atk(model, x * 255, y)
        with pytest.raises(ValueError, match="y has 3 entries but x has 4"):
            atk(model, x, y[:3])
        with pytest.raises(ValueError, match=r"target must lie in \[0, 9\]"):
            atk(model, x, y, target=y + 10)
        with pytest.raises(TypeError, match="integer class indices"):
            atk(model, x, y.float())
    with pytest.raises(ValueError, match=r"needs image batches \[N, C, H, W\]"):
        SquareAttack(eps=0.1, n_queries=5)(torch.nn.Linear(64, 10), x.flatten(1), y)
    with pytest.raises(ValueError, match="trials must be an integer >= 1, got 0"):
        RandomSignNoise(eps=0.1, trials=0)
    assert model.calls <= 4  # at most the one-example probes ran
