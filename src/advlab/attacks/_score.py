"""What the score-based attacks share: the Square Attack (:mod:`advlab.attacks.square`) and
the random-noise baseline (:mod:`advlab.attacks.noise`).

Both only read the model's scores. They validate their configs and inputs with the same
messages as the gradient attacks (:func:`validate_config`, :func:`prepare_run`), query the
model through :class:`ScoreQueries` (the margin and the objective, averaged over
``eot_samples`` forward passes) and draw random signs with :func:`random_signs`.

A private module of :mod:`advlab.attacks`: the names are public to the package only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab._check import positive_int
from advlab.attacks.base import _MODES
from advlab.attacks.losses import Goal, cw_margin
from advlab.threat import Norm, ThreatModel

__all__ = ["ScoreQueries", "batch_view", "random_signs",
           "validate_config"]


def batch_view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Per-example values ``[N]`` reshaped to ``[N, 1, ..., 1]`` (``ndim`` dimensions)."""
    return v.reshape(v.shape[0], *([1] * (ndim - 1)))


class ScoreQueries:
    """Margin and objective of a batch, averaged over ``eot_samples`` forward passes.

    Shared by the Square Attack and the random-noise baseline (advlab.attacks.noise).
    The *remaining margin* is positive while the attack has not succeeded: ``z_y - max_{j!=y}``
    (untargeted) or ``max_{j!=t} z_j - z_t`` (targeted).
    """

    def __init__(self, model: nn.Module, goal: Goal, loss: str, eot_samples: int) -> None:
        self.model = model
        self.goal = goal
        self.loss = loss
        self.eot_samples = eot_samples

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        margin = objective = logits = None
        for _ in range(self.eot_samples):
            z = self.model(x).detach()
            m = cw_margin(z, labels)
            if self.goal is Goal.UNTARGETED:
                m = -m
            if self.loss == "margin":
                o = m
            else:
                ce = F.cross_entropy(z, labels, reduction="none")
                o = -ce if self.goal is Goal.UNTARGETED else ce
            if margin is None:
                margin, objective, logits = m, o, z
            else:
                margin, objective, logits = margin + m, objective + o, logits + z
        k = float(self.eot_samples)
        if self.eot_samples > 1:
            margin, objective, logits = margin / k, objective / k, logits / k
        return margin, objective, logits


def validate_config(obj: Any, norms: tuple[Norm, ...], what: str) -> ThreatModel:
    """Validation shared by the score-based attacks (same messages as the gradient attacks):
    normalises ``obj.norm``, ``obj.eps`` and ``obj.bounds`` in place (a frozen dataclass) and
    returns the threat model."""
    object.__setattr__(obj, "norm", Norm.parse(obj.norm))
    if obj.norm not in norms:
        allowed = " or ".join(repr(n.value) for n in norms)
        raise ValueError(f"{what} supports norm {allowed}, got {obj.norm.value!r}")
    positive_int("eot_samples", obj.eot_samples)
    if obj.model_mode not in _MODES:
        raise ValueError(f"model_mode must be one of {_MODES}, got {obj.model_mode!r}")
    tm = ThreatModel(obj.norm, obj.eps, obj.bounds)  # validates eps and bounds
    object.__setattr__(obj, "eps", tm.eps)
    object.__setattr__(obj, "bounds", tm.bounds)
    if obj.seed is not None and (isinstance(obj.seed, bool) or not isinstance(obj.seed, int)):
        raise ValueError(f"seed must be an int or None, got {obj.seed!r}")
    return tm


def random_signs(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor
                 ) -> torch.Tensor:
    """Independent uniform ``+-1`` of ``shape``, in ``like``'s dtype and on its device."""
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return bits.to(like.dtype) * 2 - 1
