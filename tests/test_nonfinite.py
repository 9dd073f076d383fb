"""The attack loop never steps on a NaN/inf input gradient silently (sign(NaN) = 0)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advlab.attacks import (
    FGSM,
    IFGSM,
    MIFGSM,
    NIFGSM,
    PGD,
    Ensemble,
    NonFiniteGradientError,
    NonFiniteGradientWarning,
)


class SqrtAtZero(nn.Module):
    """A fixed 3x3 filter pair, then sqrt(q0^2 + q1^2) with no epsilon: where a window sees
    only zeros, q0 = q1 = 0 and autograd's derivative is 0 * inf = NaN."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(2, 1, 3, 3, generator=g))
        self.fc = nn.Linear(8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = nn.functional.conv2d(x, self.w, padding=1)
        return self.fc(torch.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2).flatten(1))


def frame_images(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits-like images: a bright 3x3 patch in a black 8x8 field."""
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(n, 1, 8, 8)
    x[:, :, 3:6, 3:6] = 0.2 + 0.8 * torch.rand(n, 1, 3, 3, generator=g)
    return x, torch.arange(n) % 4


def nan_entries(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xi), y, reduction="sum"), xi)
    return int((~torch.isfinite(g)).sum())


ATTACKS = [
    FGSM(eps=0.3), IFGSM(eps=0.3, steps=3), MIFGSM(eps=0.3, steps=3), NIFGSM(eps=0.3, steps=3),
    PGD(eps=0.3, steps=3, random_start=False), FGSM(eps=1.0, norm="l2"),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: f"{a.name}-{a.norm.value}")
def test_nan_gradient_raises_with_the_count(attack):
    torch.manual_seed(0)
    model = SqrtAtZero()
    x, y = frame_images()
    count = nan_entries(model, x, y)
    assert count > 0
    x0 = x.clone()
    with pytest.raises(NonFiniteGradientError, match=rf"has {count} NaN/inf entries out of "
                                                     rf"{x.numel()}") as err:
        attack(model, x, y)
    assert err.value.count == count and err.value.total == x.numel()
    assert "nonfinite='warn'" in str(err.value) and "sign(NaN) = 0" in str(err.value)
    assert torch.equal(x, x0)


def test_warn_proceeds_like_torch_sign_of_nan():
    """With nonfinite='warn' the step is the one torch takes on the raw gradient: sign(NaN) is
    0, so those pixels stay; one warning per run."""
    torch.manual_seed(0)
    model = SqrtAtZero()
    x, y = frame_images()
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xi), y, reduction="sum"), xi)
    expected = (x + 0.3 * torch.sign(g)).clamp(0, 1)  # the student's FGSM
    assert torch.isnan(g).any() and (torch.sign(g)[torch.isnan(g)] == 0).all()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = FGSM(eps=0.3, nonfinite="warn")(model, x, y)
    assert torch.equal(out, expected)
    assert len([w for w in caught if w.category is NonFiniteGradientWarning]) == 1
    assert ((out == x) | torch.isfinite(g)).all()  # only finite-gradient pixels moved


def test_warn_keeps_momentum_and_l2_finite():
    torch.manual_seed(0)
    model = SqrtAtZero()
    x, y = frame_images()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for atk in (MIFGSM(eps=0.3, steps=4, nonfinite="warn"),
                    PGD(eps=1.0, norm="l2", steps=4, nonfinite="warn")):
            out = atk(model, x, y)
            delta = (out - x).flatten(1)
            assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
            size = delta.abs().amax(1) if atk.norm.value == "linf" else delta.norm(dim=1)
            assert (size <= atk.eps + 1e-5).all() and (size > 0).all()


def test_finite_models_are_untouched_by_the_check():
    """No NaN: 'raise' and 'warn' give the same bits, and no warning."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    x, y = frame_images()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = PGD(eps=0.2, steps=3)(model, x, y)
        b = PGD(eps=0.2, steps=3, nonfinite="warn")(model, x, y)
    assert torch.equal(a, b)


def test_ensemble_gradients_are_checked_too():
    torch.manual_seed(0)
    ens = Ensemble([SqrtAtZero(), nn.Sequential(nn.Flatten(), nn.Linear(64, 4))])
    x, y = frame_images()
    with pytest.raises(NonFiniteGradientError):
        IFGSM(eps=0.3, steps=2)(ens, x, y)


def test_bad_nonfinite_value_is_refused_before_any_work():
    with pytest.raises(ValueError, match="nonfinite must be one of .*'raise', 'warn'.* got "
                                         "'ignore'"):
        FGSM(eps=0.3, nonfinite="ignore")
