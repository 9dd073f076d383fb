"""The audit's data types: one check's :class:`Flag`, the tolerances (:class:`Thresholds`),
the per-example worst case (:class:`WorstCaseResult`) and the whole :class:`AuditReport`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["SEVERITIES", "Flag", "Thresholds", "WorstCaseResult", "AuditReport"]

SEVERITIES = ("fail", "warn", "info")


@dataclass(frozen=True)
class Flag:
    """One check's verdict.

    Attributes:
        name: the check (see :mod:`advlab.evaluate.audit`).
        passed: False when the check found a problem.
        severity: ``"fail"`` (the evaluation cannot be trusted), ``"warn"`` (suspicious,
            look closer) or ``"info"`` (passed, skipped or informative).
        evidence: one or two sentences with the numbers behind the verdict.
        numbers: the measured values (JSON-ready: floats, ints, bools, strings, lists).
    """

    name: str
    passed: bool
    severity: str
    evidence: str
    numbers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """Tolerances of the checks (fractions of examples, i.e. 0.03 = 3 points).

    Attributes:
        single_step_tol: iterative success may fall below FGSM's by at most this.
        transfer_tol: transfer success may exceed white-box success by at most this.
        square_warn_gap, square_fail_gap: Square Attack success above the best gradient
            attack's by more than this warns / fails. (Random search over the vertices of a
            small Linf ball can beat a short PGD run on an honest model by a few points, so
            only a large gap is taken as proof of masking.)
        noise_tol: random-noise success may exceed the best gradient attack's by this.
        monotone_tol: accuracy may rise by at most this from one eps to the next larger one.
        chance_margin: at the large eps, accuracy must be <= 1/C + this.
        unbounded_min_success: success rate the unbounded attack must reach.
        zero_grad_fail_fraction: more examples than this with an all-zero gradient fail.
        convergence_tol: doubling steps or restarts may raise success by at most this.
        budget_min_fraction: FGSM's median per-example perturbation norm must reach this
            fraction of eps (``budget_used``).
        budget_min_pixels: FGSM must move at least this median fraction of the pixels it
            could move (``budget_used``).
        noise_z: for randomised models, comparisons are widened by this many standard
            errors of the difference of two means over the evaluation draws.
    """

    single_step_tol: float = 0.03
    transfer_tol: float = 0.03
    square_warn_gap: float = 0.03
    square_fail_gap: float = 0.10
    noise_tol: float = 0.03
    monotone_tol: float = 0.03
    chance_margin: float = 0.10
    unbounded_min_success: float = 0.99
    zero_grad_fail_fraction: float = 0.05
    convergence_tol: float = 0.05
    budget_min_fraction: float = 0.5
    budget_min_pixels: float = 0.25
    noise_z: float = 2.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")


@dataclass(frozen=True)
class WorstCaseResult:
    """Per-example worst case over several attacks.

    Attributes:
        n: number of examples.
        draws: scoring draws: evaluation passes per adversarial example on which every
            reported accuracy (``accuracy`` and ``per_attack``) is measured (1 for a
            deterministic model).
        randomized: whether the model's outputs were found to be random.
        accuracy: robust accuracy, never above any single attack's: see
            :func:`worst_case_accuracy`. For a deterministic model: the fraction of examples
            that survive every attack.
        accuracy_std: standard deviation of that accuracy over the scoring draws (0 with
            one draw).
        per_attack: mean accuracy over the scoring draws under each attack (``"clean"``
            included).
        per_attack_std: its standard deviation over the scoring draws.
        robust: per example, the fraction of scoring draws in which it survived the input
            the estimator submitted for it, [n].
        selection_draws: evaluation passes on which the worst attack per example is chosen;
            for a randomised model they are disjoint from (fresh with respect to) the scoring
            draws; for a deterministic model with one draw it is the same pass.
        estimator: ``"per-example"`` (the per-example choice) or ``"single:<name>"`` when
            the best single attack scored lower than the per-example choice and is reported
            instead.
    """

    n: int
    draws: int
    randomized: bool
    accuracy: float
    accuracy_std: float
    per_attack: dict[str, float]
    per_attack_std: dict[str, float]
    robust: torch.Tensor
    selection_draws: int = 1
    estimator: str = "per-example"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["robust"] = self.robust.tolist()
        return d


@dataclass(frozen=True)
class AuditReport:
    """The checklist's result.

    Attributes:
        flags: one :class:`Flag` per check, in the order of :mod:`advlab.evaluate.audit`.
        trustworthy: True when no flag has severity ``"fail"``.
        n, norm, eps, num_classes: the examples and threat model audited.
        randomized: outputs differ between identical calls.
        eot_samples, eval_draws: EOT gradients per step and evaluation draws actually used.
        clean_accuracy, clean_accuracy_std: mean and spread over draws.
        robust_accuracy, robust_accuracy_std: worst case over every attack run at ``eps``.
        accuracies: mean accuracy at ``eps`` under each attack run (and ``"clean"``).
        settings: the resolved profile (steps, restarts, queries, ...).
    """

    flags: list[Flag]
    trustworthy: bool
    n: int
    norm: str
    eps: float
    num_classes: int
    randomized: bool
    eot_samples: int
    eval_draws: int
    clean_accuracy: float
    clean_accuracy_std: float
    robust_accuracy: float
    robust_accuracy_std: float
    accuracies: dict[str, float]
    settings: dict[str, Any]

    def flag(self, name: str) -> Flag:
        """The flag called ``name``."""
        for f in self.flags:
            if f.name == name:
                return f
        raise KeyError(f"no flag named {name!r}; flags: {[f.name for f in self.flags]}")

    @property
    def failures(self) -> list[Flag]:
        return [f for f in self.flags if f.severity == "fail"]

    @property
    def warnings(self) -> list[Flag]:
        return [f for f in self.flags if f.severity == "warn"]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["flags"] = [f.as_dict() for f in self.flags]
        return d


def _ok(name: str, evidence: str, **numbers: Any) -> Flag:
    return Flag(name, True, "info", evidence, numbers)


def _bad(name: str, severity: str, evidence: str, **numbers: Any) -> Flag:
    return Flag(name, False, severity, evidence, numbers)


def _r(v: float) -> float:
    """A measured value as a flag's ``numbers`` hold it (4 decimals)."""
    return round(float(v), 4)
