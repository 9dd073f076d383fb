"""The sound worst case over attacks: min over attacks per example, then mean over examples,
never reported above the best single attack (:func:`worst_case_accuracy`; the audit's
``robust_accuracy`` and its checks use the same estimator, :func:`_worst_choice`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from advlab.attacks.base import check_inputs, check_labels
from advlab.evaluate.audit.outcome import _evaluate, _Outcome, outputs_differ
from advlab.evaluate.audit.types import WorstCaseResult

__all__ = ["worst_case_accuracy"]


def _worst_choice(outcomes: Mapping[str, _Outcome]) -> tuple[_Outcome, str]:
    """The estimator of :func:`_per_example_best`, with its name (``"per-example"`` or
    ``"single:<attack>"``)."""
    names = list(outcomes)
    select = torch.stack([outcomes[k].select for k in names])  # [attacks, S, n]
    score = torch.stack([outcomes[k].correct for k in names])  # [attacks, D, n]
    hits = select.sum(dim=1)  # [attacks, n]: selection draws classified correctly
    total = hits.sum(dim=1)  # [attacks]: overall selection accuracy (times S * n)
    # rank 0 = the strongest attack (fewest correct selection draws overall), then input order
    order = sorted(range(len(names)), key=lambda a: (int(total[a]), a))
    rank = torch.empty(len(names), dtype=torch.long, device=hits.device)
    rank[order] = torch.arange(len(names), device=hits.device)
    lowest = hits == hits.min(dim=0, keepdim=True).values
    best = torch.where(lowest, rank[:, None], len(names)).argmin(dim=0)  # [n], ranks unique
    idx = torch.arange(hits.shape[1], device=hits.device)
    chosen = _Outcome(None, score[best, :, idx].t(), select[best, :, idx].t())
    single = min(names, key=lambda k: outcomes[k].accuracy)  # first of equals
    if outcomes[single].accuracy < chosen.accuracy:
        o = outcomes[single]
        return _Outcome(None, o.correct, o.select), f"single:{single}"
    return chosen, "per-example"


def _per_example_best(outcomes: Mapping[str, _Outcome]) -> _Outcome:
    """The worst case over ``outcomes``, never above the best single attack.

    1. Per example, choose the attack whose adversarial input the model classifies
       correctly in the fewest of the selection draws (``select``); ties go to the attack
       with the lowest selection accuracy over all examples (the strongest attack), then
       to the one listed first.
    2. Score the chosen inputs on the scoring draws (``correct``). For a randomised model
       these are fresh forward passes, disjoint from the selection draws, so the choice
       does not bias the measurement.
    3. If the best single attack's scoring accuracy is lower than that, return it instead.

    For a deterministic model (one pass, ``select is correct``) step 1 picks an attack that
    fooled the example whenever any did, so the result is the exact per-example minimum
    ("fooled by any attack") and step 3 never applies. The attacker submits one input per
    example: counting "any attack fooled it in this draw" instead would turn every extra
    attack into an extra roll of a randomised model's dice.
    """
    return _worst_choice(outcomes)[0]


def _worst_case(outcomes: Mapping[str, _Outcome], randomized: bool) -> WorstCaseResult:
    names = list(outcomes)
    best, estimator = _worst_choice(outcomes)
    per_draw = best.correct.float().mean(dim=1)
    return WorstCaseResult(
        n=best.correct.shape[1],
        draws=best.draws,
        randomized=randomized,
        accuracy=float(per_draw.mean()),
        accuracy_std=float(per_draw.std()) if per_draw.numel() > 1 else 0.0,
        per_attack={k: outcomes[k].accuracy for k in names},
        per_attack_std={k: outcomes[k].accuracy_std for k in names},
        robust=best.correct.float().mean(dim=0).cpu(),
        selection_draws=best.select.shape[0],
        estimator=estimator,
    )


def _attack_names(attacks: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, Any]]:
    if isinstance(attacks, Mapping):
        items = [(str(k), v) for k, v in attacks.items()]
    else:
        items = []
        seen: dict[str, int] = {}
        for a in attacks:
            base = str(getattr(a, "name", type(a).__name__))
            seen[base] = seen.get(base, 0) + 1
            items.append((base if seen[base] == 1 else f"{base}#{seen[base]}", a))
    if not items:
        raise ValueError("attacks must contain at least one attack, got none")
    for name, a in items:
        if not callable(a):
            raise TypeError(f"attack {name!r} must be callable as attack(model, x, y), got "
                            f"{type(a).__name__}")
    if any(name == "clean" for name, _ in items):
        raise ValueError("'clean' is reserved for the unperturbed inputs; rename that attack")
    return items


def worst_case_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                        attacks: Mapping[str, Any] | Sequence[Any], *,
                        eval_draws: int | None = None, include_clean: bool = True,
                        batch_size: int = 256) -> WorstCaseResult:
    """Per-example worst case over ``attacks``: min over attacks, then mean over examples.

    Every attack is run once on ``(x, y)`` (untargeted). An example counts as robust only if
    the model classifies it correctly under every attack (and, with ``include_clean``, on the
    clean input too). The estimator (Carlini et al. 2019; Athalye et al. 2018; Croce and Hein
    2020), with ``D = eval_draws``:

    * Deterministic model (``D = 1`` by default): one forward pass per input; the result is
      the exact per-example minimum, the fraction of examples no attack fooled.
    * Randomised model (or ``D > 1``): every input (clean and each attack's) is evaluated in
      ``2 D`` forward passes; the first ``D`` are selection draws, the last ``D`` fresh
      scoring draws. Per example the attacker submits one input: that of the attack the
      model classified correctly in the fewest selection draws, ties going to the attack
      with the lowest selection accuracy overall (the strongest), then to the one listed
      first. The submitted inputs are scored on the scoring draws only, so the choice does
      not bias the measurement. If the best single attack's scoring accuracy is lower, that
      is reported instead (``estimator`` says which), so the worst case is never above any
      single attack. ``accuracy`` and ``per_attack`` are means over the scoring draws,
      ``accuracy_std`` and ``per_attack_std`` their standard deviations over those draws.

    Args:
        model: the classifier (returns logits).
        x, y: a (small) batch of examples and their labels.
        attacks: ``{name: attack}`` or a sequence of attacks (named by their ``name``
            attribute); each is called as ``attack(model, x, y)``.
        eval_draws: scoring draws ``D`` per input (None: 20 if the outputs are random, else
            1); with more than one, ``D`` more selection draws are run before them.
        include_clean: count the clean input as one more "attack".
        batch_size: examples per attack call and per evaluation pass.

    Example:
        >>> import torch
        >>> from advlab.attacks import FGSM, PGD
        >>> m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(6, 1, 2, 2), torch.randint(0, 3, (6,))
        >>> r = worst_case_accuracy(m, x, y, [FGSM(eps=0.1), PGD(eps=0.1, steps=3)])
        >>> sorted(r.per_attack), r.accuracy <= min(r.per_attack.values())
        (['clean', 'fgsm', 'pgd'], True)
    """
    items = _attack_names(attacks)
    x = check_inputs(model, x)  # the default box (0, 1) of every attack
    y = check_labels("y", y, x.shape[0]).to(x.device)
    if eval_draws is not None and (isinstance(eval_draws, bool) or not isinstance(eval_draws, int)
                                   or eval_draws < 1):
        raise ValueError(f"eval_draws must be an integer >= 1, got {eval_draws!r}")
    randomized, _ = outputs_differ(model, x)
    draws = eval_draws if eval_draws is not None else (20 if randomized else 1)
    fresh = randomized or draws > 1
    outcomes: dict[str, _Outcome] = {}
    if include_clean:
        outcomes["clean"] = _evaluate(model, x, y, draws, fresh, batch_size)
    for name, atk in items:
        x_adv = torch.cat([atk(model, x[i:i + batch_size], y[i:i + batch_size])
                           for i in range(0, x.shape[0], batch_size)])
        outcomes[name] = _evaluate(model, x_adv, y, draws, fresh, batch_size)
    return _worst_case(outcomes, randomized)
