"""The input checks every attack shares (the gradient attacks, the Square Attack, random
noise) and the audit reuses, so that all of them reject bad inputs with the same messages.

* :func:`check_inputs`: the model and the batch ``x`` (type, dtype, shape, finite values
  inside the box, per-example radii, device);
* :func:`check_labels`: class indices ``y`` (or targets) of a batch;
* :func:`check_labels_range`: their range, once the number of classes is known;
* :func:`probe_model`: one forward pass on one example: logits of shape ``[1, C]``, labels in
  range, and a warning when the outputs look like probabilities;
* :func:`check_model_device`: the model lives on the inputs' device.

All of them are re-exported by :mod:`advlab.attacks.base`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from advlab.attacks.losses import Goal

__all__ = ["prepare_run", "check_inputs", "check_labels", "check_labels_range",
           "check_model_device",
           "probe_model"]


def check_model_device(model: nn.Module, x: torch.Tensor) -> None:
    """Raise if the model's parameters/buffers live on another device than ``x``."""
    # the first parameter and the first buffer (without listing all of them)
    for t in (next(model.parameters(), None), next(model.buffers(), None)):
        if t is not None and t.device != x.device:
            raise ValueError(
                f"model is on {t.device} but the inputs are on {x.device}; move one of them "
                f"(advlab never moves your model)")


def check_inputs(model: nn.Module, x: Any, bounds: tuple[float, float] = (0.0, 1.0),
                 eps: float | torch.Tensor | None = None) -> torch.Tensor:
    """Validate an attack's model and input batch; return ``x`` detached.

    Raises ``TypeError`` unless ``model`` is an ``nn.Module`` and ``x`` a floating-point
    tensor, and ``ValueError`` unless ``x`` is a non-empty batch ``[N, ...]`` of finite
    values inside ``bounds``, ``eps`` (when a per-example 1-D tensor) has ``N`` radii, and
    the model lives on ``x``'s device. Every attack (gradient, Square, random noise) and the
    audit validate with it, so they all fail with the same messages.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor of pixels, got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"x must be a batch [N, ...] with at least 2 dimensions, got shape "
                         f"{tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (0 examples)")
    # one pass: NaN propagates into min and max, +-inf shows in one of them
    xmin, xmax = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(xmin) and math.isfinite(xmax)):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"x contains {bad} NaN or infinite values; expected finite pixels")
    lo, hi = bounds
    if xmin < lo or xmax > hi:
        raise ValueError(f"x must lie in the box [{lo}, {hi}], got values in "
                         f"[{xmin:.6g}, {xmax:.6g}] (normalise inside the model, "
                         f"not before the attack)")
    if isinstance(eps, torch.Tensor) and eps.shape[0] != x.shape[0]:
        raise ValueError(f"eps has {eps.shape[0]} per-example radii but x has "
                         f"{x.shape[0]} examples")
    check_model_device(model, x)
    return x.detach()


def check_labels(name: str, y: Any, n: int) -> torch.Tensor:
    """Validate the class indices ``y`` (called ``name`` in the messages) of a batch of ``n``
    examples and return them as int64: a 1-D integer tensor of ``n`` entries, else a
    ``TypeError`` or ``ValueError``. The range is checked by :func:`check_labels_range` once
    the number of classes is known."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but x has {n} examples")
    return y.long()


def check_labels_range(name: str, y: torch.Tensor, num_classes: int) -> None:
    """Raise a ``ValueError`` unless every class index in ``y`` lies in
    ``[0, num_classes - 1]``."""
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes - 1}] for a model with "
                         f"{num_classes} classes, got values in [{int(y.min())}, {int(y.max())}]")


@torch.no_grad()
def probe_model(model: nn.Module, x: torch.Tensor, checks: dict[str, torch.Tensor]) -> None:
    """Check the model's output and the labels on one example before the real work.

    Runs ``model(x[:1])`` (no gradients): raises a ``ValueError`` unless it returns logits of
    shape ``[1, C]`` and every label tensor in ``checks`` (``{name: labels}``, e.g.
    ``{"y": y}``) lies in ``[0, C - 1]``; warns (``UserWarning``) when the row looks like
    probabilities. Call it directly from an attack's ``run`` (the warning points at the
    caller of ``run``)."""
    scores = model(x[:1])
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.shape[0] != 1:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
        raise ValueError(f"model output must be logits of shape [N, C]; for a batch of 1 "
                         f"expected [1, C], got {shape}")
    for name, lab in checks.items():
        check_labels_range(name, lab, scores.shape[1])
    s = scores.detach()
    if s.shape[1] > 1 and (s >= 0).all() and \
            torch.allclose(s.sum(dim=1), torch.ones_like(s[:, 0]), atol=1e-4):
        warnings.warn(
            "model outputs look like probabilities (non-negative rows summing to 1); "
            "attacks expect logits — return logits or the loss gradient will be "
            "weak/vanishing", UserWarning, stacklevel=4)


def prepare_run(obj: Any, model: nn.Module, x: Any, y: Any, target: Any,
                generator: torch.Generator | None):
    """What every attack does first: check the inputs (:func:`check_inputs`,
    :func:`check_labels`), then derive the goal, the labels to attack, the label checks for
    :func:`probe_model` and the local generator (``obj.seed`` unless ``generator`` is given):
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
