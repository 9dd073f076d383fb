"""Evaluation that returns data: accuracy, robust accuracy, attack success, norms.

Nothing here prints or writes files; the report layer does that.

Definitions (for ``n`` examples with labels ``y``):

* clean accuracy: ``mean(pred(x) == y)``;
* robust accuracy: ``mean(pred(x_adv) == y)``;
* success rate, untargeted: ``mean(pred(x_adv) != y)``; targeted: ``mean(pred(x_adv) == t)``;
* success rate on correct: the same, over the examples the model classifies correctly
  on clean input (the count most papers report; Dong et al. report over all images).

Example:
    >>> import torch
    >>> from advlab.attacks import FGSM
    >>> from advlab.evaluate import evaluate_attack
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
    >>> r = evaluate_attack(model, FGSM(eps=0.1), (x, y), progress=False)
    >>> 0.0 <= r.robust_accuracy <= 1.0
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from advlab._progress import progress
from advlab.attacks.base import Attack, check_model_device, model_mode
from advlab.threat import Norm, per_example_norm

__all__ = ["RobustnessResult", "PerExample", "predict", "clean_accuracy", "evaluate_attack",
           "iterate_batches"]

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]] | tuple[torch.Tensor, torch.Tensor]


def iterate_batches(data: Batches, batch_size: int = 256) -> Iterable[tuple[torch.Tensor,
                                                                              torch.Tensor]]:
    """Yield ``(x, y)`` batches from a DataLoader-like iterable or an ``(x, y)`` tensor pair."""
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor)
                                                          for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
        for i in range(0, x.shape[0], batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise TypeError("each batch must be an (x, y) pair, got "
                            f"{type(batch).__name__}")
        yield batch[0], batch[1]


def _num_batches(data: Batches, batch_size: int) -> int | None:
    if isinstance(data, tuple):
        return math.ceil(data[0].shape[0] / batch_size)
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes (argmax of the model's scores) of ``x``, in eval mode."""
    check_model_device(model, x)
    with model_mode(model, "eval"):
        outs = [model(x[i:i + batch_size]).argmax(dim=1) for i in range(0, x.shape[0],
                                                                          batch_size)]
    return torch.cat(outs) if outs else torch.empty(0, dtype=torch.long, device=x.device)


@dataclass(frozen=True)
class PerExample:
    """Per-example outcomes of an evaluation (CPU tensors, aligned with the data order)."""

    label: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    target: torch.Tensor | None
    norm: torch.Tensor


@dataclass(frozen=True)
class RobustnessResult:
    """Summary of an attack evaluated on a data set (fractions in [0, 1])."""

    n: int
    clean_accuracy: float
    robust_accuracy: float
    success_rate: float
    success_rate_on_correct: float
    n_correct: int
    mean_norm: float
    max_norm: float
    norm: str
    eps: float | None
    targeted: bool
    attack: str
    per_example: PerExample | None = None

    def as_dict(self) -> dict:
        """JSON-ready summary (without the per-example tensors)."""
        d = asdict(self)
        d.pop("per_example")
        return d


def clean_accuracy(model: nn.Module, data: Batches, *, device: str | torch.device | None = None,
                   batch_size: int = 512, progress_bar: bool = True) -> float:
    """Accuracy of ``model`` on ``data`` (an ``(x, y)`` pair or a DataLoader)."""
    correct = total = 0
    for x, y in progress(iterate_batches(data, batch_size), enabled=progress_bar,
                         total=_num_batches(data, batch_size), desc="clean"):
        if device is not None:
            x, y = x.to(device), y.to(device)
        correct += int((predict(model, x) == y.to(x.device)).sum())
        total += y.shape[0]
    if total == 0:
        raise ValueError("data is empty: no examples to evaluate")
    return correct / total


TargetFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def random_targets(seed: int = 0) -> TargetFn:
    """A target function drawing a uniformly random wrong class per example (seeded)."""
    gen = torch.Generator().manual_seed(seed)

    def fn(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        off = torch.randint(1, num_classes, y.shape, generator=gen)
        return ((y.cpu() + off) % num_classes).to(y.device)

    return fn


def evaluate_attack(model: nn.Module, attack: Attack | None, data: Batches, *,
                    targets: TargetFn | None = None, eval_model: nn.Module | None = None,
                    device: str | torch.device | None = None, batch_size: int = 256,
                    keep_per_example: bool = False, progress: bool = True,
                    label_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    ) -> RobustnessResult:
    """Attack ``model`` on every batch of ``data`` and measure the outcome.

    Args:
        model: the model the attack differentiates (the source).
        attack: an :class:`~advlab.attacks.Attack`, or None for clean evaluation only.
        data: an ``(x, y)`` tensor pair or an iterable of ``(x, y)`` batches.
        targets: for a targeted attack, ``fn(x, y, num_classes) -> target``.
        eval_model: the model whose predictions are counted (default ``model``; another
            model measures transfer, i.e. a black-box success rate).
        device: move each batch there (the model must already be there).
        label_fn: ``fn(x, y) -> labels`` given to the attack instead of ``y`` (e.g. the
            source's clean prediction, as in the momentum paper's code); accuracy and
            success are still counted against the true ``y``.
    """
    target_model = eval_model if eval_model is not None else model
    rows = {"label": [], "clean": [], "adv": [], "target": [], "norm": []}
    norm = attack.norm if attack is not None else Norm.LINF
    it = iterate_batches(data, batch_size)
    for x, y in _progress_iter(it, progress, _num_batches(data, batch_size)):
        if device is not None:
            x, y = x.to(device), y.to(device)
        y = y.to(x.device).long()
        clean_pred = predict(target_model, x)
        if attack is None:
            x_adv = x
            tgt = None
        else:
            num_classes = _num_classes(target_model, x)
            tgt = targets(x, y, num_classes) if targets is not None else None
            atk_labels = label_fn(x, y) if label_fn is not None else y
            x_adv = attack(model, x, atk_labels, target=tgt)
        adv_pred = clean_pred if attack is None else predict(target_model, x_adv)
        rows["label"].append(y.cpu())
        rows["clean"].append(clean_pred.cpu())
        rows["adv"].append(adv_pred.cpu())
        rows["norm"].append(per_example_norm(x_adv - x, norm).cpu())
        if tgt is not None:
            rows["target"].append(tgt.cpu())
    if not rows["label"]:
        raise ValueError("data is empty: no examples to evaluate")
    label = torch.cat(rows["label"])
    clean = torch.cat(rows["clean"])
    adv = torch.cat(rows["adv"])
    norms = torch.cat(rows["norm"])
    target = torch.cat(rows["target"]) if rows["target"] else None
    return summarize(label, clean, adv, norms, target=target, attack=attack,
                     keep_per_example=keep_per_example)


def _progress_iter(it, enabled, total):
    return progress(it, enabled=enabled, total=total, desc="attack")


@torch.no_grad()
def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    with model_mode(model, "eval"):
        return int(model(x[:1]).shape[1])


def summarize(label: torch.Tensor, clean: torch.Tensor, adv: torch.Tensor,
              norms: torch.Tensor, *, target: torch.Tensor | None = None,
              attack: Attack | None = None, keep_per_example: bool = False) -> RobustnessResult:
    """Turn per-example predictions into a :class:`RobustnessResult`."""
    n = label.shape[0]
    correct = clean == label
    success = (adv == target) if target is not None else (adv != label)
    n_correct = int(correct.sum())
    eps = None
    if attack is not None and not isinstance(attack.eps, torch.Tensor):
        eps = float(attack.eps)
    return RobustnessResult(
        n=n,
        clean_accuracy=float(correct.float().mean()),
        robust_accuracy=float((adv == label).float().mean()),
        success_rate=float(success.float().mean()),
        success_rate_on_correct=(float(success[correct].float().mean()) if n_correct
                                 else float("nan")),
        n_correct=n_correct,
        mean_norm=float(norms.double().mean()),
        max_norm=float(norms.double().max()),
        norm=(attack.norm.value if attack is not None else "none"),
        eps=eps,
        targeted=target is not None,
        attack=(attack.name if attack is not None else "none"),
        per_example=(PerExample(label, clean, adv, target, norms) if keep_per_example
                     else None),
    )
