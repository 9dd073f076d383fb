"""What an attack did, as the audit measures it: the adversarial inputs and the model's
verdicts on them over evaluation draws (:class:`_Outcome`, :func:`_evaluate`), and the two
probes of the model every check builds on, :func:`outputs_differ` and :func:`input_gradient`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import model_mode

__all__ = ["outputs_differ", "input_gradient"]


@torch.no_grad()
def outputs_differ(model: nn.Module, x: torch.Tensor, *, max_examples: int = 16
                   ) -> tuple[bool, float]:
    """Call the model twice on the same inputs in eval mode: ``(differ, max |difference|)``.

    Example:
        >>> import torch
        >>> outputs_differ(torch.nn.Linear(3, 2), torch.rand(4, 3))
        (False, 0.0)
    """
    xs = x[:max_examples]
    with model_mode(model, "eval"):
        a, b = model(xs), model(xs)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    return (not torch.equal(a, b)), diff


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int,
             batch_size: int) -> torch.Tensor:
    """``[draws, n]`` booleans: prediction == label in each evaluation draw."""
    rows = []
    with model_mode(model, "eval"):
        for _ in range(draws):
            preds = [model(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0],
                                                                           batch_size)]
            rows.append(torch.cat(preds) == y)
    return torch.stack(rows)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   batch_size: int = 256) -> torch.Tensor:
    """Input gradient of the summed cross-entropy, ``[N, ...]``, one forward per batch in
    eval mode (one noise draw of a randomised model). NaN/inf entries are kept: they are what
    the gradient check looks for.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> input_gradient(m, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])).shape
        torch.Size([5, 1, 2, 2])
    """
    grads = []
    with model_mode(model, "eval"):
        for i in range(0, x.shape[0], batch_size):
            xi = x[i:i + batch_size].detach().clone().requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(xi), y[i:i + batch_size], reduction="sum")
                (g,) = torch.autograd.grad(loss, xi)
            grads.append(g.detach())
    return torch.cat(grads)


@dataclass(frozen=True)
class _Outcome:
    """An attack's adversarial inputs and the model's verdicts on them.

    ``correct`` ``[draws, n]`` holds the scoring draws: every accuracy, spread and success
    rate below is measured on them. ``select`` ``[selection draws, n]`` holds the selection
    draws, on which :func:`_per_example_best` chooses the worst attack per example. For a
    randomised model they are separate, fresh forward passes (see :func:`_evaluate`); for
    a deterministic model, or when not given, they are the same tensor as ``correct``.
    """

    x_adv: torch.Tensor | None
    correct: torch.Tensor  # [draws, n] bool: scoring draws
    select: torch.Tensor | None = None  # [selection draws, n] bool

    def __post_init__(self) -> None:
        if self.select is None:
            object.__setattr__(self, "select", self.correct)

    @property
    def draws(self) -> int:
        return self.correct.shape[0]

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    @property
    def accuracy_std(self) -> float:
        per_draw = self.correct.float().mean(1)
        return float(per_draw.std()) if per_draw.numel() > 1 else 0.0

    @property
    def success(self) -> float:
        return 1.0 - self.accuracy


def _evaluate(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, draws: int,
              fresh_selection: bool, batch_size: int) -> _Outcome:
    """Evaluate ``x_adv`` in ``draws`` scoring passes; with ``fresh_selection``, run
    ``2 * draws`` passes: the first ``draws`` are the selection draws, the last ``draws``
    the scoring draws (disjoint forward passes, so a choice made on the former does not
    bias the latter). Without it the scoring passes double as selection draws."""
    if not fresh_selection:
        rows = _correct(model, x_adv, y, draws, batch_size)
        return _Outcome(x_adv, rows, rows)
    rows = _correct(model, x_adv, y, 2 * draws, batch_size)
    return _Outcome(x_adv, rows[draws:], rows[:draws])
