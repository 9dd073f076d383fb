"""Ensemble fusions (Dong et al., Sec. 3.2) against their formulas computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advlab.attacks import FGSM, MIFGSM, Ensemble
from conftest import TinyCNN, blobs

W = [2.0, 1.0, 1.0]


@pytest.fixture(scope="module")
def members():
    out = []
    for s in range(3):
        torch.manual_seed(s)
        out.append(TinyCNN().eval())
    return out


def input_grad(fn, x):
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(xi).sum(), xi)
    return g


def test_weights_are_normalised(members):
    ens = Ensemble(members, weights=W)
    assert ens.weights == pytest.approx((0.5, 0.25, 0.25))


@pytest.mark.parametrize("fuse", ["logits", "probs", "loss"])
def test_fused_loss_and_gradient_equal_the_formula(members, fuse):
    x, y = blobs(8, seed=3)
    w = [v / sum(W) for v in W]
    ens = Ensemble(members, weights=W, fuse=fuse).eval()

    def by_hand(xi):
        logits = [m(xi) for m in members]
        if fuse == "logits":
            return F.cross_entropy(sum(wk * z for wk, z in zip(w, logits)), y, reduction="none")
        if fuse == "probs":
            p = sum(wk * torch.softmax(z, 1) for wk, z in zip(w, logits))
            return -torch.log(p.gather(1, y[:, None]).squeeze(1))
        return sum(wk * F.cross_entropy(z, y, reduction="none") for wk, z in zip(w, logits))

    loss, _ = ens.attack_loss(x, y)
    torch.testing.assert_close(loss, by_hand(x))
    torch.testing.assert_close(input_grad(lambda xi: ens.attack_loss(xi, y)[0], x),
                               input_grad(by_hand, x))
    # the FGSM step on the ensemble is the sign of that gradient
    expected = torch.clamp(x + 0.05 * input_grad(by_hand, x).sign(), 0, 1)
    torch.testing.assert_close(FGSM(eps=0.05)(ens, x, y), expected, atol=1e-6, rtol=0)


def test_predictions_follow_the_fusion(members):
    x, _ = blobs(8, seed=4)
    w = [v / sum(W) for v in W]
    logits = [m(x) for m in members]
    with torch.no_grad():
        ens_l = Ensemble(members, W, "logits")(x)
        ens_p = Ensemble(members, W, "probs")(x)
        ens_s = Ensemble(members, W, "loss")(x)
        torch.testing.assert_close(ens_l, sum(a * z for a, z in zip(w, logits)))
        p = sum(a * torch.softmax(z, 1) for a, z in zip(w, logits))
        torch.testing.assert_close(torch.softmax(ens_p, 1), p)
        # loss fusion predicts the class with the lowest fused cross-entropy
        fused_ce = torch.stack([sum(a * F.cross_entropy(z, torch.full((8,), c), reduction="none")
                                    for a, z in zip(w, logits)) for c in range(10)], 1)
        assert torch.equal(ens_s.argmax(1), fused_ce.argmin(1))


def test_single_member_logits_ensemble_equals_the_model(members):
    x, y = blobs(8, seed=5)
    a = MIFGSM(eps=0.1)(Ensemble(members[:1]), x, y)
    b = MIFGSM(eps=0.1)(members[0], x, y)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_ensemble_bad_arguments(members):
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])
    with pytest.raises(ValueError, match="one entry per model"):
        Ensemble(members, weights=[1.0])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        Ensemble(members, weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="fuse must be one of"):
        Ensemble(members, fuse="mean")
    with pytest.raises(TypeError, match=r"models\[1\]"):
        Ensemble([members[0], "resnet"])
