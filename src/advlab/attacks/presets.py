"""The gradient attacks of the momentum paper and its relatives, as presets of one loop.

* :class:`FGSM` (Goodfellow et al., ICLR 2015): one step of size eps. With ``norm="l2"``
  it is FGM: ``x + eps * g / ||g||_2``.
* :class:`IFGSM` / BIM (Kurakin et al., 2017): T steps of ``alpha = eps / T``.
* :class:`PGD` (Madry et al., ICLR 2018): I-FGSM from a uniform random start, with
  restarts; default ``alpha = 2.5 * eps / T``.
* :class:`MIFGSM` (Dong et al., CVPR 2018, Algorithm 1): momentum ``mu = 1.0`` and
  ``alpha = eps / T``; with ``norm="l2"`` it is MI-FGM.
* :class:`NIFGSM` (Lin et al., ICLR 2020): MI-FGSM with a Nesterov look-ahead.

The transfer family that followed (the pieces are in :mod:`advlab.attacks.transforms`; any
attack composes them through its fields, e.g. ``MIFGSM(eps, kernel_size=15,
diversity_prob=0.5)`` is TI-DI-MI-FGSM):

* :class:`DIFGSM` (Xie et al., CVPR 2019): I-FGSM on randomly resized and padded inputs
  (p = 0.5); :class:`DIMIFGSM` adds momentum (M-DI2-FGSM).
* :class:`TIFGSM` (Dong et al., CVPR 2019): I-FGSM with the gradient smoothed by a 15 x 15
  Gaussian kernel; :class:`TIMIFGSM` and :class:`TIDIMIFGSM` (TI-DIM) combine it.
* :class:`SINIFGSM` (Lin et al., ICLR 2020): NI-FGSM on the gradient averaged over 5 scale
  copies ``x / 2^i``.
* :class:`VMIFGSM` / :class:`VNIFGSM` (Wang and He, CVPR 2021): MI-/NI-FGSM with variance
  tuning (N = 20 neighbours, beta = 3/2).
* :class:`AdmixMIFGSM` (Wang et al., ICCV 2021): MI-FGSM on 3 admixed images x 5 scale copies
  (eta = 0.2).

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

__all__ = ["FGSM", "FGM", "IFGSM", "BIM", "PGD", "MIFGSM", "MIFGM", "NIFGSM", "DIFGSM",
           "DIMIFGSM", "TIFGSM", "TIMIFGSM", "TIDIMIFGSM", "SINIFGSM", "VMIFGSM", "VNIFGSM",
           "AdmixMIFGSM", "TRANSFER_PRESETS"]


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


@dataclass(frozen=True, eq=False)
class DIFGSM(Attack):
    """DI2-FGSM (Xie et al., CVPR 2019): I-FGSM whose gradient is taken, with probability
    0.5 per step (the paper's p), on a randomly resized and zero-padded copy. By default the
    copy is shrunk to ``rnd`` in ``[0.9 W, W)`` and padded back to ``W`` (``resize_rate=0.9``,
    torchattacks' choice), which every model accepts; ``resize_rate=1.1`` is the paper's own
    enlargement (299 -> [299, 330) -> 330) for models with global pooling (checked on one
    example before the attack)."""

    steps: int = 10
    diversity_prob: float = 0.5
    name: ClassVar[str] = "difgsm"


@dataclass(frozen=True, eq=False)
class DIMIFGSM(DIFGSM):
    """M-DI2-FGSM (Xie et al., CVPR 2019): DI2-FGSM with MI-FGSM's momentum (mu = 1)."""

    decay: float = 1.0
    name: ClassVar[str] = "dimifgsm"


@dataclass(frozen=True, eq=False)
class TIFGSM(Attack):
    """TI-FGSM, iterative (Dong et al., CVPR 2019): each gradient convolved with a 15 x 15
    Gaussian kernel on [-3, 3] standard deviations before the sign step."""

    steps: int = 10
    kernel_size: int = 15
    name: ClassVar[str] = "tifgsm"


@dataclass(frozen=True, eq=False)
class TIMIFGSM(TIFGSM):
    """TI-MI-FGSM (Dong et al., CVPR 2019): TI with momentum (mu = 1)."""

    decay: float = 1.0
    name: ClassVar[str] = "timifgsm"


@dataclass(frozen=True, eq=False)
class TIDIMIFGSM(TIMIFGSM):
    """TI-DIM (Dong et al., CVPR 2019): momentum, input diversity (p = 0.5) and the
    translation-invariant smoothing together."""

    diversity_prob: float = 0.5
    name: ClassVar[str] = "tidimifgsm"


@dataclass(frozen=True, eq=False)
class SINIFGSM(NIFGSM):
    """SI-NI-FGSM (Lin et al., ICLR 2020): NI-FGSM with the gradient averaged over the
    scale copies ``x / 2^i``, i < 5, at the look-ahead point."""

    scale_copies: int = 5
    name: ClassVar[str] = "sinifgsm"


@dataclass(frozen=True, eq=False)
class VMIFGSM(MIFGSM):
    """VMI-FGSM (Wang and He, CVPR 2021): MI-FGSM whose gradient at step t+1 is corrected by
    the variance ``v_t = mean_{i<N} grad J(x_t + r_i) - grad J(x_t)`` of step t,
    ``r_i ~ U(-beta eps, beta eps)^d``, N = 20, beta = 3/2 (the paper's defaults)."""

    variance_samples: int = 20
    name: ClassVar[str] = "vmifgsm"


@dataclass(frozen=True, eq=False)
class VNIFGSM(NIFGSM):
    """VNI-FGSM (Wang and He, CVPR 2021): NI-FGSM with variance tuning (N = 20, beta = 3/2);
    the neighbours are drawn around ``x_t``, the gradient is the look-ahead's."""

    variance_samples: int = 20
    name: ClassVar[str] = "vnifgsm"


@dataclass(frozen=True, eq=False)
class AdmixMIFGSM(MIFGSM):
    """Admix (Wang et al., ICCV 2021) on MI-FGSM: the gradient is the mean over 3 images
    ``x + 0.2 x'`` (``x'`` drawn from the batch) times 5 scale copies ``/ 2^i``."""

    admix_copies: int = 3
    admix_strength: float = 0.2
    scale_copies: int = 5
    name: ClassVar[str] = "admix"


#: the transfer family, in the order of the "beyond the paper" table.
TRANSFER_PRESETS: tuple[type[Attack], ...] = (
    NIFGSM, DIFGSM, DIMIFGSM, TIFGSM, TIMIFGSM, TIDIMIFGSM, SINIFGSM, VMIFGSM, VNIFGSM,
    AdmixMIFGSM)


def FGM(eps: float, **kw) -> FGSM:  # noqa: N802 - named like the method in the papers
    """Fast gradient method (L2 FGSM): ``x + eps * g / ||g||_2``."""
    return FGSM(eps=eps, norm="l2", **kw)


def MIFGM(eps: float, **kw) -> MIFGSM:  # noqa: N802
    """MI-FGM (L2 momentum attack): ``x + alpha * g / ||g||_2``."""
    return MIFGSM(eps=eps, norm="l2", **kw)


BIM = IFGSM
