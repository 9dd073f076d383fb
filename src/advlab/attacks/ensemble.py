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

Memory: a plain ensemble attack keeps the autograd graphs of all K members until the
backward pass, so its peak memory grows with K. With ``low_memory=True`` the input gradient
is computed one member at a time by the chain rule through the logits::

    l_k = member_k(x)                   (K forwards without graphs)
    G_k = dJ / dl_k                     (J = the fused loss of the detached logits)
    grad_x J = sum_k  (dl_k / dx)^T G_k  (per member: forward + backward, graph freed)

which holds one member's activations at a time for the price of one extra forward per
member. It equals the plain gradient to rounding (members must be deterministic given the
input: a member drawing fresh noise in each forward sees different draws in its two passes).

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
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.losses import LossFn, cross_entropy

__all__ = ["Ensemble", "Fusion"]

Call = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def _plain_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


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
        low_memory: compute attack gradients one member at a time (see the module
            docstring): peak memory of about one member instead of K, one extra forward
            pass per member and step.
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None,
                 fuse: Fusion | str = Fusion.LOGITS, *, low_memory: bool = False) -> None:
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
        if not isinstance(low_memory, bool):
            raise TypeError(f"low_memory must be a bool, got {low_memory!r}")
        total = sum(weights)
        self.members = nn.ModuleList(models)
        self.weights = tuple(w / total for w in weights)
        self.fuse = Fusion.parse(fuse)
        self.low_memory = low_memory

    def extra_repr(self) -> str:
        return f"fuse={self.fuse.value}, weights={self.weights}, low_memory={self.low_memory}"

    def member_logits(self, x: torch.Tensor, call: Call = _plain_call) -> list[torch.Tensor]:
        """Each member's logits; ``call(module, x)`` runs one member (the attack's options)."""
        return [call(m, x) for m in self.members]

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
                    loss_fn: LossFn = cross_entropy, *, call: Call = _plain_call,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per-example loss, scores)`` used by the attack loop: loss fusion needs this hook
        because a weighted sum of losses is not the loss of any single set of logits."""
        logits = self.member_logits(x, call)
        return self.fused_loss(logits, labels, loss_fn), self.fuse_outputs(logits)

    def input_gradient(self, x: torch.Tensor, labels: torch.Tensor,
                       loss_fn: LossFn = cross_entropy, *, call: Call = _plain_call,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(grad_x of the summed fused loss, per-example loss, scores)``; the attack loop
        prefers this hook. With ``low_memory`` one member's graph exists at a time.

        Example:
            >>> import torch
            >>> models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
            ...           for _ in range(3)]
            >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
            >>> g1, _, _ = Ensemble(models, fuse="probs").input_gradient(x, y)
            >>> g2, _, _ = Ensemble(models, fuse="probs", low_memory=True).input_gradient(x, y)
            >>> torch.allclose(g1, g2, atol=1e-6)
            True
        """
        x = x.detach()
        if not self.low_memory:
            xi = x.requires_grad_(True)
            with torch.enable_grad():
                loss, scores = self.attack_loss(xi, labels, loss_fn, call=call)
                (grad,) = torch.autograd.grad(loss.sum(), xi)
            return grad, loss.detach(), scores.detach()
        with torch.no_grad():
            logits = self.member_logits(x, call)
        with torch.enable_grad():
            leaves = [z.detach().requires_grad_(True) for z in logits]
            loss = self.fused_loss(leaves, labels, loss_fn)
            dlogits = torch.autograd.grad(loss.sum(), leaves)
        with torch.no_grad():
            scores = self.fuse_outputs(logits)
        grad = None
        for member, w, gz in zip(self.members, self.weights, dlogits, strict=True):
            if w == 0:
                continue  # no gradient reaches a member of weight 0
            xi = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(call(member, xi), xi, grad_outputs=gz)
            grad = g if grad is None else grad + g
        if grad is None:
            grad = torch.zeros_like(x)
        return grad, loss.detach(), scores
