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

from advlab.attacks.base import _MODES
from advlab.attacks.losses import Goal, cw_margin
from advlab.attacks.validation import check_inputs, check_labels
from advlab.threat import Norm, ThreatModel

__all__ = ["ScoreQueries", "batch_view", "positive_int", "prepare_run", "random_signs",
           "validate_config"]


def positive_int(name: str, value: Any) -> int:
    """``value`` when it is an integer >= 1 (not a bool), else a ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


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


def prepare_run(obj: Any, model: nn.Module, x: Any, y: Any, target: Any,
                generator: torch.Generator | None):
    """Input checks of the gradient attacks (:func:`~advlab.attacks.validation.check_inputs`,
    :func:`~advlab.attacks.validation.check_labels`), goal, labels, the label checks for
    :func:`~advlab.attacks.validation.probe_model` and the local generator:
    ``(x, labels, goal, checks, generator)``."""
    x = check_inputs(model, x, obj.bounds, obj.eps)
    y = check_labels("y", y, x.shape[0])
    if target is not None:
        target = check_labels("target", target, x.shape[0])
    goal = Goal.TARGETED if target is not None else Goal.UNTARGETED
    labels = (target if target is not None else y).to(x.device)
    checks = {"y": y} if target is None else {"y": y, "target": target}
    if generator is None:
        generator = torch.Generator(device=x.device)
        if obj.seed is None:
            generator.seed()
        else:
            generator.manual_seed(obj.seed)
    return x, labels, goal, checks, generator


def random_signs(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor
                 ) -> torch.Tensor:
    """Independent uniform ``+-1`` of ``shape``, in ``like``'s dtype and on its device."""
    bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return bits.to(like.dtype) * 2 - 1
