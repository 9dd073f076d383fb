"""Attacking an ensemble of models (Dong et al., CVPR 2018, Sec. 3.2 and Algorithm 2).

Three ways to fuse K models with weights ``w_k`` (normalised to sum 1):

* ``logits``: ``J = CE(sum_k w_k l_k(x), y)`` -- the paper's choice;
* ``probs``:  ``J = CE`` of the weighted average of the softmax outputs,
  ``-log sum_k w_k softmax(l_k(x))_y``;
* ``loss``:   ``J = sum_k w_k CE(l_k(x), y)``.

The ensemble is an ``nn.Module`` usable both as an attack target and for evaluation. Its
``forward`` returns scores whose argmax is the ensemble's prediction under the fusion:
fused logits; the log of the averaged probabilities; and for ``loss`` fusion
``sum_k w_k log_softmax(l_k)``, whose argmax is the class with the lowest fused loss.

Example:
    >>> import torch
    >>> from advlab.attacks import Ensemble
    >>> models = [torch.nn.Linear(4, 3) for _ in range(3)]
    >>> ens = Ensemble(models, fuse="logits")
    >>> ens(torch.rand(2, 4)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.losses import LossFn, cross_entropy

__all__ = ["Ensemble", "Fusion"]


class Fusion(enum.Enum):
    """How an ensemble combines its members."""

    LOGITS = "logits"
    PROBS = "probs"
    LOSS = "loss"

    @classmethod
    def parse(cls, value: Fusion | str) -> Fusion:
        if isinstance(value, Fusion):
            return value
        aliases = {"logits": cls.LOGITS, "probs": cls.PROBS, "predictions": cls.PROBS,
                   "loss": cls.LOSS}
        if isinstance(value, str) and value.lower() in aliases:
            return aliases[value.lower()]
        raise ValueError(
            f"fuse must be one of 'logits', 'probs' (alias 'predictions'), 'loss', got {value!r}")


class Ensemble(nn.Module):
    """A weighted ensemble of classifiers that share the input space.

    Args:
        models: the member classifiers, each mapping ``[N, ...]`` to logits ``[N, C]``.
        weights: non-negative weights, one per model (default equal); normalised to sum 1.
        fuse: ``"logits"`` (default, Dong et al.), ``"probs"`` or ``"loss"``.
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 fuse: Fusion | str = Fusion.LOGITS) -> None:
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("models must contain at least one model, got an empty sequence")
        for i, m in enumerate(models):
            if not isinstance(m, nn.Module):
                raise TypeError(f"models[{i}] must be a torch.nn.Module, got {type(m).__name__}")
        if weights is None:
            weights = [1.0] * len(models)
        weights = [float(w) for w in weights]
        if len(weights) != len(models):
            raise ValueError(f"weights must have one entry per model ({len(models)}), "
                             f"got {len(weights)}")
        if any(not (w >= 0) for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
        total = sum(weights)
        self.members = nn.ModuleList(models)
        self.weights = tuple(w / total for w in weights)
        self.fuse = Fusion.parse(fuse)

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [m(x) for m in self.members]

    def fuse_outputs(self, logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """Combine member logits into the ensemble's scores (see the module docstring)."""
        if self.fuse is Fusion.LOGITS:
            return sum(w * z for w, z in zip(self.weights, logits, strict=True))
        if self.fuse is Fusion.PROBS:
            p = sum(w * F.softmax(z, dim=1) for w, z in zip(self.weights, logits, strict=True))
            return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
        return sum(w * F.log_softmax(z, dim=1) for w, z in zip(self.weights, logits, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse_outputs(self.member_logits(x))

    def fused_loss(self, logits: Sequence[torch.Tensor], labels: torch.Tensor,
                   loss_fn: LossFn = cross_entropy) -> torch.Tensor:
        """Per-example fused loss from member logits."""
        if self.fuse is Fusion.LOSS:
            return sum(w * loss_fn(z, labels) for w, z in zip(self.weights, logits, strict=True))
        return loss_fn(self.fuse_outputs(logits), labels)

    def attack_loss(self, x: torch.Tensor, labels: torch.Tensor,
                    loss_fn: LossFn = cross_entropy) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-example loss, scores)`` used by the attack loop: loss fusion needs this hook
        because a weighted sum of losses is not the loss of any single set of logits."""
        logits = self.member_logits(x)
        return self.fused_loss(logits, labels, loss_fn), self.fuse_outputs(logits)
