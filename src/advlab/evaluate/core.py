"""Evaluation that returns data: accuracy, robust accuracy, attack success, norms.

Nothing here prints or writes files; the report layer does that.

Definitions (for ``n`` examples with labels ``y``):

* clean accuracy: ``mean(pred(x) == y)``;
* robust accuracy: ``mean(pred(x_adv) == y)``;
* success rate, untargeted: ``mean(pred(x_adv) != y)``; targeted: ``mean(pred(x_adv) == t)``;
* success rate on correct: the same, over the examples the model classifies correctly
  on clean input (the count most papers report; Dong et al. report over all images).

Randomness: the attack on the batch that starts at global example ``offset`` draws from a
generator seeded with :func:`batch_seed` ``(attack.seed, offset)`` (``attack.seed`` itself for
the first batch), so a result depends on the data, the batch size and the seed only -- not on
which process evaluated which batch (see
:func:`advlab.evaluate.distributed.sharded_evaluate_attack`).

Cost: every forward pass runs in ``torch.inference_mode``; per batch, the clean logits of each
evaluated model are computed once (they also give the number of classes), the attack runs
once, and each evaluated model sees the adversarial batch once. :func:`transfer_matrix`
shares the clean passes and the attacks across a whole sources x attacks x models table.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from advlab._progress import progress
from advlab.attacks.base import Attack, check_model_device, model_mode
from advlab.threat import Norm, per_example_norm

__all__ = ["RobustnessResult", "PerExample", "predict", "clean_accuracy", "evaluate_attack",
           "iterate_batches", "summarize", "batch_seed", "transfer_matrix", "random_targets"]

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


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's scores on ``x`` in eval mode and inference mode (an inference tensor)."""
    check_model_device(model, x)
    with torch.inference_mode(), model_mode(model, "eval"):
        outs = [model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        return torch.cat(outs) if len(outs) != 1 else outs[0]


def _argmax(scores: torch.Tensor) -> torch.Tensor:
    # computed in inference mode, returned as a normal tensor (usable later as attack labels)
    with torch.inference_mode():
        pred = scores.argmax(dim=1)
    return pred.clone()


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes (argmax of the model's scores) of ``x``, in eval mode."""
    if x.shape[0] == 0:
        check_model_device(model, x)
        return torch.empty(0, dtype=torch.long, device=x.device)
    return _argmax(_logits(model, x, batch_size))


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


def batch_seed(seed: int, offset: int) -> int:
    """Seed of the attack generator for the batch starting at global example ``offset``.

    ``seed`` itself for ``offset == 0`` (so one batch matches a direct call of the attack),
    a well-spread 64-bit value otherwise.

    Example:
        >>> batch_seed(7, 0)
        7
        >>> batch_seed(7, 256) != batch_seed(7, 512)
        True
    """
    return (int(seed) + int(offset) * 0x9E3779B97F4A7C15) % (1 << 64)


def _batch_generator(attack: Any, offset: int, device: torch.device) -> torch.Generator | None:
    """The batch's generator, for an attack whose ``run`` takes ``generator=`` (the attack
    protocol of :mod:`advlab.attacks`: ``accepts_generator = True``) and has a seed."""
    seed = getattr(attack, "seed", None)
    if seed is None or not getattr(attack, "accepts_generator", False):
        return None
    return torch.Generator(device=device).manual_seed(batch_seed(seed, offset))


def _run_attack(attack: Any, model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                target: torch.Tensor | None, offset: int) -> torch.Tensor:
    gen = _batch_generator(attack, offset, x.device)
    if gen is None:
        return attack(model, x, labels, target=target)
    return attack.run(model, x, labels, target=target, generator=gen).x_adv


def _evaluate_batch(model: nn.Module, attack: Any, target_model: nn.Module, x: torch.Tensor,
                    y: torch.Tensor, offset: int, targets: TargetFn | None,
                    label_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
                    ) -> dict[str, torch.Tensor | None]:
    """One batch of :func:`evaluate_attack`: per-example CPU rows."""
    clean_logits = _logits(target_model, x)
    clean_pred = _argmax(clean_logits)
    norm = attack.norm if attack is not None else Norm.LINF
    tgt = None
    if attack is None:
        x_adv, adv_pred = x, clean_pred
    else:
        if targets is not None:
            tgt = targets(x, y, int(clean_logits.shape[1]))
        atk_labels = label_fn(x, y) if label_fn is not None else y
        x_adv = _run_attack(attack, model, x, atk_labels, tgt, offset)
        adv_pred = predict(target_model, x_adv)
    return {"label": y.cpu(), "clean": clean_pred.cpu(), "adv": adv_pred.cpu(),
            "norm": per_example_norm(x_adv - x, norm).cpu(),
            "target": tgt.cpu() if tgt is not None else None}


def _summarize_rows(rows: list[dict[str, torch.Tensor | None]], attack: Any,
                    keep_per_example: bool) -> RobustnessResult:
    if not rows:
        raise ValueError("data is empty: no examples to evaluate")
    cat = {k: torch.cat([r[k] for r in rows]) for k in ("label", "clean", "adv", "norm")}
    has_t = [r["target"] is not None for r in rows]
    target = torch.cat([r["target"] for r in rows]) if all(has_t) else None
    return summarize(cat["label"], cat["clean"], cat["adv"], cat["norm"], target=target,
                     attack=attack, keep_per_example=keep_per_example)


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

    The attack on the batch starting at example ``offset`` uses a generator seeded with
    ``batch_seed(attack.seed, offset)`` (module docstring); ``attack.seed = None`` stays
    nondeterministic.
    """
    target_model = eval_model if eval_model is not None else model
    rows = []
    offset = 0
    for x, y in _attack_batches(data, batch_size, device, progress):
        rows.append(_evaluate_batch(model, attack, target_model, x, y, offset, targets,
                                    label_fn))
        offset += x.shape[0]
    return _summarize_rows(rows, attack, keep_per_example)


def transfer_matrix(sources: Mapping[str, nn.Module], attacks: Mapping[str, Attack],
                    eval_models: Mapping[str, nn.Module], data: Batches, *,
                    targets: TargetFn | None = None,
                    device: str | torch.device | None = None, batch_size: int = 256,
                    keep_per_example: bool = False, progress: bool = True,
                    label_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                    ) -> dict[tuple[str, str, str], RobustnessResult]:
    """A transfer table: every attack crafted on every source, counted on every model.

    Each adversarial batch is crafted once per (source, attack) and the clean predictions of
    each evaluated model are computed once per batch, so the table costs its necessary passes
    only (``bench/pipeline.py`` measures it). Entry ``(source, attack, model)`` equals
    ``evaluate_attack(sources[source], attacks[attack], data, eval_model=eval_models[model])``.

    Args:
        sources: name -> the model each attack differentiates.
        attacks: name -> attack.
        eval_models: name -> the model whose predictions are counted (include the sources
            for the white-box entries).
        targets: for targeted attacks, ``fn(x, y, num_classes)``, called once per batch (the
            same targets for every source and attack).
        label_fn: as in :func:`evaluate_attack`, ``fn(x, y) -> labels``, called once per
            batch (the same attack labels for every source).

    Example:
        >>> import torch
        >>> from advlab.attacks import FGSM
        >>> a = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> b = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
        >>> t = transfer_matrix({"a": a}, {"fgsm": FGSM(eps=0.1)}, {"a": a, "b": b}, (x, y),
        ...                     progress=False)
        >>> sorted(t)
        [('a', 'fgsm', 'a'), ('a', 'fgsm', 'b')]
    """
    if not sources or not attacks or not eval_models:
        raise ValueError("sources, attacks and eval_models must each name at least one entry")
    rows: dict[tuple[str, str, str], list] = {(s, a, m): [] for s in sources for a in attacks
                                              for m in eval_models}
    offset = 0
    for x, y in _attack_batches(data, batch_size, device, progress):
        clean = {}
        num_classes = None
        for m, model in eval_models.items():
            logits = _logits(model, x)
            num_classes = int(logits.shape[1])
            clean[m] = _argmax(logits).cpu()
        tgt = targets(x, y, num_classes) if targets is not None else None
        atk_labels = label_fn(x, y) if label_fn is not None else y
        for s, source in sources.items():
            for a, attack in attacks.items():
                x_adv = _run_attack(attack, source, x, atk_labels, tgt, offset)
                norms = per_example_norm(x_adv - x, attack.norm).cpu()
                for m, model in eval_models.items():
                    rows[(s, a, m)].append({
                        "label": y.cpu(), "clean": clean[m],
                        "adv": predict(model, x_adv).cpu(), "norm": norms,
                        "target": tgt.cpu() if tgt is not None else None})
        offset += x.shape[0]
    return {key: _summarize_rows(r, attacks[key[1]], keep_per_example)
            for key, r in rows.items()}


def _attack_batches(data: Batches, batch_size: int, device: str | torch.device | None,
                    enabled: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``data`` on ``device`` (if given), labels as int64 on the images' device,
    behind an "attack" progress bar."""
    it = iterate_batches(data, batch_size)
    for x, y in progress(it, enabled=enabled, total=_num_batches(data, batch_size),
                         desc="attack"):
        if device is not None:
            x, y = x.to(device), y.to(device)
        yield x, y.to(x.device).long()


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
