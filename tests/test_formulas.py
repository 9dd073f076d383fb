"""Each attack's steps against the paper's formulas, with gradients computed by hand.

The model is linear, ``z = W x + b``, in float64, so the input gradient of the
cross-entropy is known in closed form: ``grad_x CE(z, y) = W^T (softmax(z) - onehot(y))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks import FGSM, IFGSM, MIFGSM, NIFGSM, PGD, cw_margin
from advlab.threat import Norm, ThreatModel

torch.set_default_dtype(torch.float32)

N, D, C = 6, 12, 4


def linear_model(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(D, C).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(C, D, generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.randn(C, generator=g, dtype=torch.float64))
    return nn.Sequential(nn.Flatten(), lin)


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, 1, 3, 4, generator=g, dtype=torch.float64) * 0.6 + 0.2
    y = torch.randint(0, C, (N,), generator=g)
    return x, y


def grad_ce(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Closed-form input gradient of the summed cross-entropy of a linear model."""
    lin = model[1]
    z = x.flatten(1) @ lin.weight.T + lin.bias
    p = torch.softmax(z, dim=1)
    return ((p - F.one_hot(labels, C).double()) @ lin.weight).reshape(x.shape)


def l1(g):
    return g.abs().flatten(1).sum(1).reshape(-1, 1, 1, 1)


def l2(g):
    return g.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)


def proj_linf(xa, x, eps):
    return torch.clamp(torch.minimum(torch.maximum(xa, x - eps), x + eps), 0, 1)


def proj_l2(xa, x, eps):
    d = xa - x
    n = l2(d)
    d = torch.where(n > eps, d * eps / n, d)
    return torch.clamp(x + d, 0, 1)


def test_fgsm_linf_one_step():
    m, (x, y) = linear_model(), inputs()
    eps = 0.1
    expected = torch.clamp(x + eps * grad_ce(m, x, y).sign(), 0, 1)
    torch.testing.assert_close(FGSM(eps=eps)(m, x, y), expected, atol=1e-12, rtol=0)


def test_fgm_l2_one_step():
    m, (x, y) = linear_model(), inputs()
    eps = 0.5
    g = grad_ce(m, x, y)
    expected = proj_l2(x + eps * g / l2(g), x, eps)
    torch.testing.assert_close(FGSM(eps=eps, norm="l2")(m, x, y), expected, atol=1e-12, rtol=0)


def test_targeted_fgsm_steps_down_the_target_loss():
    m, (x, y) = linear_model(), inputs()
    t = (y + 1) % C
    eps = 0.1
    expected = torch.clamp(x - eps * grad_ce(m, x, t).sign(), 0, 1)
    torch.testing.assert_close(FGSM(eps=eps)(m, x, y, target=t), expected, atol=1e-12, rtol=0)


def test_ifgsm_three_steps():
    m, (x, y) = linear_model(), inputs()
    eps, T = 0.2, 3
    alpha = eps / T
    xa = x.clone()
    for _ in range(T):
        xa = proj_linf(xa + alpha * grad_ce(m, xa, y).sign(), x, eps)
    torch.testing.assert_close(IFGSM(eps=eps, steps=T)(m, x, y), xa, atol=1e-12, rtol=0)


def test_mifgsm_algorithm_1():
    """Dong et al., Algorithm 1: g_{t+1} = mu g_t + grad/||grad||_1; x += alpha sign(g)."""
    m, (x, y) = linear_model(), inputs()
    eps, T, mu = 0.3, 4, 1.0
    alpha = eps / T
    xa, g = x.clone(), torch.zeros_like(x)
    for _ in range(T):
        grad = grad_ce(m, xa, y)
        g = mu * g + grad / l1(grad)
        xa = proj_linf(xa + alpha * g.sign(), x, eps)
    torch.testing.assert_close(MIFGSM(eps=eps, steps=T)(m, x, y), xa, atol=1e-12, rtol=0)


def test_mifgm_l2_and_targeted():
    m, (x, y) = linear_model(), inputs()
    t = (y + 2) % C
    eps, T, mu = 1.0, 4, 0.7
    alpha = eps / T
    xa, g = x.clone(), torch.zeros_like(x)
    for _ in range(T):
        grad = grad_ce(m, xa, t)
        g = mu * g + grad / l1(grad)
        xa = proj_l2(xa - alpha * g / l2(g), x, eps)
    out = MIFGSM(eps=eps, steps=T, decay=mu, norm="l2")(m, x, y, target=t)
    torch.testing.assert_close(out, xa, atol=1e-12, rtol=0)


def test_nifgsm_looks_ahead():
    m, (x, y) = linear_model(), inputs()
    eps, T, mu = 0.3, 3, 1.0
    alpha = eps / T
    xa, g = x.clone(), torch.zeros_like(x)
    for _ in range(T):
        grad = grad_ce(m, xa + alpha * mu * g, y)
        g = mu * g + grad / (l1(grad) / D)  # mean |grad|, as Lin et al.'s code
        xa = proj_linf(xa + alpha * g.sign(), x, eps)
    torch.testing.assert_close(NIFGSM(eps=eps, steps=T)(m, x, y), xa, atol=1e-12, rtol=0)


def test_nifgsm_look_ahead_is_of_order_alpha_on_a_nonlinear_model():
    """The look-ahead alpha * mu * g moves x by about alpha per entry, so NI-FGSM and MI-FGSM
    part ways on a curved model. With g built from L1-normalised gradients (entries ~ t/d)
    the look-ahead vanished and NI matched MI on all but a fraction of a percent of pixels."""
    gen = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(8 * 28 * 28, 10)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3)
    x = torch.rand(16, 1, 28, 28, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=gen)
    eps, T = 0.3, 10
    alpha = eps / T

    def reference(nesterov: bool) -> torch.Tensor:
        xa, g = x.clone(), torch.zeros_like(x)
        for _ in range(T):
            xl = (xa + alpha * g if nesterov else xa).requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(net(xl), y, reduction="sum"), xl)
            g = g + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)
            xa = proj_linf(xa.detach() + alpha * g.sign(), x, eps).clamp(0, 1)
        return xa

    ni, mi = NIFGSM(eps=eps, steps=T)(net, x, y), MIFGSM(eps=eps, steps=T)(net, x, y)
    torch.testing.assert_close(ni, reference(True), atol=1e-12, rtol=0)
    torch.testing.assert_close(mi, reference(False), atol=1e-12, rtol=0)
    assert (ni != mi).double().mean() > 0.05


def test_pgd_random_start_then_steps():
    m, (x, y) = linear_model(), inputs()
    eps, T = 0.2, 2
    alpha = 2.5 * eps / T
    gen = torch.Generator().manual_seed(5)
    x0 = x + (torch.rand(x.shape, generator=gen, dtype=x.dtype) * 2 - 1) * eps
    xa = x0.clamp(0, 1)
    for _ in range(T):
        xa = proj_linf(xa + alpha * grad_ce(m, xa, y).sign(), x, eps)
    out = PGD(eps=eps, steps=T, seed=5)(m, x, y)
    torch.testing.assert_close(out, xa, atol=1e-12, rtol=0)


def test_logistic_model_closed_form():
    """Binary logistic model with logits [0, w.x + b]: grad of CE(y=0) is sigmoid(s) w."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(D, generator=g, dtype=torch.float64)

    class Logistic(nn.Module):
        def forward(self, x):
            s = x.flatten(1) @ w + 0.1
            return torch.stack([torch.zeros_like(s), s], dim=1)

    x, _ = inputs()
    y = torch.zeros(N, dtype=torch.long)
    s = x.flatten(1) @ w + 0.1
    grad = (torch.sigmoid(s)[:, None] * w).reshape(x.shape)
    eps = 0.05
    torch.testing.assert_close(FGSM(eps=eps)(Logistic(), x, y),
                               torch.clamp(x + eps * grad.sign(), 0, 1), atol=1e-12, rtol=0)
    torch.testing.assert_close(FGSM(eps=eps, norm="l2")(Logistic(), x, y),
                               proj_l2(x + eps * grad / l2(grad), x, eps), atol=1e-12, rtol=0)


def test_cw_margin_by_hand():
    z = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, -1.0]])
    y = torch.tensor([0, 2])
    torch.testing.assert_close(cw_margin(z, y), torch.tensor([2.5 - 3.0, 4.0 - (-1.0)]))


def test_cw_loss_attack_uses_margin_gradient():
    m, (x, y) = linear_model(), inputs()
    lin = m[1]
    z = x.flatten(1) @ lin.weight.T + lin.bias
    other = z.scatter(1, y[:, None], float("-inf")).argmax(1)
    grad = (lin.weight[other] - lin.weight[y]).reshape(x.shape)
    eps = 0.02
    out = FGSM(eps=eps, loss="cw")(m, x, y)
    torch.testing.assert_close(out, torch.clamp(x + eps * grad.sign(), 0, 1), atol=1e-12, rtol=0)


def test_l1_threat_model_projection_is_exact():
    tm = ThreatModel(Norm.L1, eps=1.0, bounds=(-10.0, 10.0))
    x = torch.zeros(1, 4, dtype=torch.float64)
    v = torch.tensor([[2.0, -1.5, 0.5, 0.0]], dtype=torch.float64)
    # Duchi et al.: theta solves sum max(|v| - theta, 0) = 1: (2 - t) + (1.5 - t) = 1 -> 1.25
    expected = torch.tensor([[0.75, -0.25, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(tm.project(v, x), expected)
