"""The low-memory ensemble: the plain ensemble's gradient, one member's graph at a time."""

from __future__ import annotations

import pytest
import torch

from advlab.attacks import FGSM, MIFGSM, PGD, Ensemble
from conftest import TinyCNN, blobs

FUSIONS = ["logits", "probs", "loss"]


@pytest.fixture(scope="module")
def members():
    out = []
    for s in range(3):
        torch.manual_seed(10 + s)
        out.append(TinyCNN().eval())
    return out


@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("weights", [None, [2.0, 1.0, 1.0], [1.0, 0.0, 3.0]],
                         ids=["equal", "weighted", "zero-weight"])
@pytest.mark.parametrize("fuse", FUSIONS)
def test_gradient_equals_the_plain_ensemble(members, fuse, weights, loss):
    x, y = blobs(32, seed=1)
    atk = MIFGSM(eps=0.1, loss=loss)
    plain = Ensemble(members, weights, fuse)
    low = Ensemble(members, weights, fuse, low_memory=True)
    g_plain, l_plain = atk._gradient(plain, x, y)
    g_low, l_low = atk._gradient(low, x, y)
    torch.testing.assert_close(g_low, g_plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(l_low, l_plain, atol=1e-6, rtol=1e-6)
    # and the gradient is the one of the loss by hand
    xi = x.clone().requires_grad_(True)
    (g_hand,) = torch.autograd.grad(plain.attack_loss(xi, y, atk_loss(loss))[0].sum(), xi)
    torch.testing.assert_close(g_low, g_hand, atol=1e-5, rtol=0)
    _, _, scores = low.input_gradient(x, y)
    with torch.no_grad():
        torch.testing.assert_close(scores, plain(x))


def atk_loss(name):
    from advlab.attacks import get_loss

    return get_loss(name)


@pytest.mark.parametrize("fuse", FUSIONS)
def test_attacks_equal_the_plain_ensemble(members, fuse):
    x, y = blobs(32, seed=2)
    plain = Ensemble(members, fuse=fuse)
    low = Ensemble(members, fuse=fuse, low_memory=True)
    for atk in (FGSM(eps=0.1), MIFGSM(eps=0.1, steps=5), PGD(eps=0.1, steps=3, restarts=2)):
        a, b = atk(plain, x, y), atk(low, x, y)
        assert (a != b).float().mean() < 0.002, atk.name  # equal up to a rare rounding flip
    t = (y + 1) % 10
    torch.testing.assert_close(MIFGSM(eps=0.1)(low, x, y, target=t),
                               MIFGSM(eps=0.1)(plain, x, y, target=t), atol=1e-6, rtol=0)


class SavedBytes:
    """Peak bytes of the tensors autograd keeps for backward (alive at the same time)."""

    def __init__(self):
        self.alive = 0
        self.peak = 0

    def __enter__(self):
        tracker = self

        class Handle:
            def __init__(self, t):
                self.t = t
                self.n = t.numel() * t.element_size()
                tracker.alive += self.n
                tracker.peak = max(tracker.peak, tracker.alive)

            def __del__(self):
                tracker.alive -= self.n

        self._ctx = torch.autograd.graph.saved_tensors_hooks(Handle, lambda h: h.t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def test_low_memory_holds_one_member_graph_at_a_time():
    x, y = blobs(64, seed=3)
    models = []
    for s in range(6):
        torch.manual_seed(s)
        models.append(TinyCNN().eval())
    atk = MIFGSM(eps=0.1)
    peaks = {}
    for key, model in {"single": models[0], "plain6": Ensemble(models),
                       "low6": Ensemble(models, low_memory=True)}.items():
        with SavedBytes() as sb:
            atk._gradient(model, x, y)
        peaks[key] = sb.peak
    assert peaks["plain6"] >= 5 * peaks["single"]
    assert peaks["low6"] <= 1.1 * peaks["single"]


def test_low_memory_costs_one_extra_forward_per_member():
    calls = []

    class Counting(TinyCNN):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    torch.manual_seed(0)
    ens = Ensemble([Counting().eval() for _ in range(3)], low_memory=True)
    x, y = blobs(8, seed=4)
    MIFGSM(eps=0.1, steps=4)(ens, x, y)
    # probe (3 members, one example) + per step: 3 forwards without graph + 3 with
    assert len(calls) == 3 + 4 * 6


def test_low_memory_flag_is_checked(members):
    with pytest.raises(TypeError, match="low_memory must be a bool, got 'yes'"):
        Ensemble(members, low_memory="yes")
    assert "low_memory=True" in repr(Ensemble(members, low_memory=True))
