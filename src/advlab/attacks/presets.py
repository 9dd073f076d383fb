"""The gradient attacks of the momentum paper and its relatives, as presets of one loop.

* :class:`FGSM` (Goodfellow et al., ICLR 2015): one step of size eps. With ``norm="l2"``
  it is FGM: ``x + eps * g / ||g||_2``.
* :class:`IFGSM` / BIM (Kurakin et al., 2017): T steps of ``alpha = eps / T``.
* :class:`PGD` (Madry et al., ICLR 2018): I-FGSM from a uniform random start, with
  restarts; default ``alpha = 2.5 * eps / T``.
* :class:`MIFGSM` (Dong et al., CVPR 2018, Algorithm 1): momentum ``mu = 1.0`` and
  ``alpha = eps / T``; with ``norm="l2"`` it is MI-FGM.
* :class:`NIFGSM` (Lin et al., ICLR 2020): MI-FGSM with a Nesterov look-ahead.

Example:
    >>> import torch
    >>> from advlab.attacks import MIFGSM
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
    >>> x_adv = MIFGSM(eps=16 / 255, steps=10)(model, x, y)
    >>> bool(((x_adv - x).abs() <= 16 / 255 + 1e-6).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from advlab.attacks.base import Attack

__all__ = ["FGSM", "FGM", "IFGSM", "BIM", "PGD", "MIFGSM", "MIFGM", "NIFGSM"]


@dataclass(frozen=True, eq=False)
class FGSM(Attack):
    """Fast gradient sign method: ``x* = clip(x + eps * sign(grad_x J(x, y)))``."""

    steps: int = 1
    name: ClassVar[str] = "fgsm"
    alpha_factor: ClassVar[float] = 1.0  # alpha = eps / 1


@dataclass(frozen=True, eq=False)
class IFGSM(Attack):
    """Iterative FGSM / BIM: ``x_{t+1} = clip_{x,eps}(x_t + alpha * sign(grad))``."""

    steps: int = 10
    name: ClassVar[str] = "ifgsm"


@dataclass(frozen=True, eq=False)
class PGD(Attack):
    """Projected gradient descent from a random start, keeping the best of ``restarts``."""

    steps: int = 10
    random_start: bool = True
    name: ClassVar[str] = "pgd"
    alpha_factor: ClassVar[float] = 2.5


@dataclass(frozen=True, eq=False)
class MIFGSM(Attack):
    """Momentum iterative FGSM: ``g <- mu g + grad / mean|grad|``, step ``alpha sign(g)``.

    The paper writes ``||grad||_1``; dividing by the mean instead (the authors' code) gives
    the same steps and keeps ``g`` of order 1 for NI-FGSM's look-ahead."""

    steps: int = 10
    decay: float = 1.0
    name: ClassVar[str] = "mifgsm"


@dataclass(frozen=True, eq=False)
class NIFGSM(Attack):
    """Nesterov iterative FGSM (Lin et al., ICLR 2020): the gradient is taken at
    ``x_t + alpha * mu * g_t``, with ``g`` accumulated from mean-|grad|-normalised gradients
    as in the authors' code (with L1-normalised ones the look-ahead would vanish)."""

    steps: int = 10
    decay: float = 1.0
    nesterov: bool = True
    name: ClassVar[str] = "nifgsm"


def FGM(eps: float, **kw) -> FGSM:  # noqa: N802 - named like the method in the papers
    """Fast gradient method (L2 FGSM): ``x + eps * g / ||g||_2``."""
    return FGSM(eps=eps, norm="l2", **kw)


def MIFGM(eps: float, **kw) -> MIFGSM:  # noqa: N802
    """MI-FGM (L2 momentum attack): ``x + alpha * g / ||g||_2``."""
    return MIFGSM(eps=eps, norm="l2", **kw)


BIM = IFGSM
