"""Random sign noise: the weakest possible "attack", a sanity check for evaluations.

``x' = clip(x + eps * r)`` with ``r`` a uniformly random sign pattern (one independent
``+-1`` per pixel), scaled to lie on the sphere of the norm (``eps * r`` for Linf,
``eps * r / sqrt(d)`` for L2, ``eps * r / d`` for L1). Of ``trials`` draws per example the
first that fools the model is kept, else the one with the lowest margin.

Any gradient attack must beat this baseline; if random noise succeeds more often than the
best gradient attack, the gradients are masked (Carlini et al., "On Evaluating Adversarial
Robustness", 2019, Sec. 5; Athalye, Carlini and Wagner, ICML 2018).

Example:
    >>> import torch
    >>> from advlab.attacks.noise import RandomSignNoise
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 2])
    >>> x_adv = RandomSignNoise(eps=0.1, trials=5)(model, x, y)
    >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advlab._check import positive_int
from advlab.attacks._score import (
    ScoreQueries,
    batch_view,
    random_signs,
    validate_config,
)
from advlab.attacks.base import model_mode, prepare_run, probe_model
from advlab.attacks.losses import Goal
from advlab.attacks.square import SquareResult
from advlab.threat import Norm, ThreatModel

__all__ = ["RandomSignNoise"]


@dataclass(frozen=True, eq=False)
class RandomSignNoise:
    """Best of ``trials`` random sign perturbations of size eps per example.

    Args:
        eps: radius (float >= 0, or a 1-D tensor of per-example radii).
        norm: ``"linf"`` (default), ``"l2"`` or ``"l1"``; the pattern is scaled to norm eps.
        trials: random draws per example (>= 1); a fooled example stops early.
        eot_samples: forward passes averaged per draw (for randomised models).
        seed: seed of the local generator (None: nondeterministic).
        bounds: valid pixel range (default ``(0, 1)``).
        model_mode: ``"eval"`` (default), ``"train"`` or ``"keep"``; restored afterwards.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(3, 4), torch.tensor([0, 1, 2])
        >>> res = RandomSignNoise(eps=0.5, norm="l2", trials=3).run(model, x, y)
        >>> bool((res.x_adv - x).norm(dim=1).max() <= 0.5 + 1e-6)
        True
    """

    eps: float | torch.Tensor
    norm: Norm | str = Norm.LINF
    trials: int = 10
    eot_samples: int = 1
    seed: int | None = 0
    bounds: tuple[float, float] = (0.0, 1.0)
    model_mode: str = "eval"

    name: ClassVar[str] = "random-noise"
    #: ``run`` takes ``generator=`` (the attack protocol of :mod:`advlab.attacks`).
    accepts_generator: ClassVar[bool] = True

    def __post_init__(self) -> None:
        validate_config(self, (Norm.LINF, Norm.L2, Norm.L1), "random sign noise")
        positive_int("trials", self.trials)

    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(self.norm, self.eps, self.bounds)

    def replace(self, **changes: Any) -> RandomSignNoise:
        """A copy with some fields changed (configs are frozen)."""
        return dataclasses.replace(self, **changes)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        """Perturbed inputs; untargeted on labels ``y`` unless ``target`` is given."""
        return self.run(model, x, y, target=target).x_adv

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None = None, *,
            generator: torch.Generator | None = None) -> SquareResult:
        """Draw up to ``trials`` patterns per example; returns a
        :class:`~advlab.attacks.square.SquareResult` (``queries`` = draws evaluated)."""
        x, labels, goal, checks, generator = prepare_run(self, model, x, y, target, generator)
        with model_mode(model, self.model_mode):
            probe_model(model, x, checks)
            return self._draw(model, x, labels, goal, generator)

    def _scale(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        d = x[0].numel()
        if self.norm is Norm.L2:
            eps = eps / math.sqrt(d)
        elif self.norm is Norm.L1:
            eps = eps / d
        return batch_view(eps, x.ndim)

    def _draw(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, goal: Goal,
              generator: torch.Generator) -> SquareResult:
        n = x.shape[0]
        tm = self.threat
        scale = self._scale(x, tm.eps_tensor(x))
        query = ScoreQueries(model, goal, "margin", self.eot_samples)
        x_best = x.clone()
        margin = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        logits = None
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        for _ in range(self.trials):
            active = (margin >= 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            xa = x[active]
            signs = random_signs(tuple(xa.shape), generator, xa)
            cand = ThreatModel(self.norm, tm.eps_tensor(x)[active], self.bounds).project(
                (xa + signs * scale[active]).clamp(*self.bounds), xa)
            m, _, z = query(cand, labels[active])
            queries[active] += 1
            if logits is None:
                logits = torch.zeros(n, z.shape[1], device=x.device, dtype=z.dtype)
            take = m < margin[active]
            idx = active[take]
            x_best[idx], margin[idx], logits[idx] = cand[take], m[take], z[take]
        return SquareResult(x_adv=tm.project(x_best, x).detach(), loss=margin, logits=logits,
                            queries=queries, success=margin < 0, margin=margin)
