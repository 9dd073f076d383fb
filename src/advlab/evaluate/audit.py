"""The trustworthy-evaluation checklist, as pure functions that return data.

A robustness number is only as good as the attacks behind it. This module runs the sanity
checks of Carlini et al., "On Evaluating Adversarial Robustness" (2019), Athalye, Carlini and
Wagner, "Obfuscated Gradients Give a False Sense of Security" (ICML 2018), Tramer et al., "On
Adaptive Attacks to Adversarial Example Defenses" (NeurIPS 2020) and the automatic checks of
AutoAttack (Croce and Hein, ICML 2020) and reports each as a :class:`Flag`:

=============================  =============================================================
flag name                      fails (or warns) when
=============================  =============================================================
``randomized_output``          info: two identical calls in eval mode differ; the audit then
                               uses EOT for every gradient attack and reports accuracy as mean
                               and spread over several draws (warns if ``eot_samples == 1``)
``logits_not_probabilities``   the outputs are rows of probabilities instead of logits
``clean_accuracy``             warn: clean accuracy is within ``chance_margin`` of chance
``gradients_finite_nonzero``   some input gradients are NaN/inf (the evidence names the
                               fraction of NaN/inf entries), or more than 5 % of the examples
                               have an all-zero gradient (warn: any zero gradient)
``budget_used``                FGSM at ``eps`` leaves its budget unused: the median
                               per-example perturbation norm is below
                               ``budget_min_fraction * eps``, or the median fraction of movable
                               pixels it moves is below ``budget_min_pixels`` (see
                               :func:`check_budget_used`)
``iterative_beats_single_step`` PGD (with restarts) or MI-FGSM succeeds less often than FGSM
                               (by more than 3 points)
``whitebox_beats_transfer``    PGD transferred from a surrogate beats the white-box gradient
                               attacks (per-example best) by more than 3 points
``gradient_free_below_gradient`` Square Attack beats the gradient attacks (per-example best
                               of FGSM, PGD, PGD-CW, MI-FGSM) by more than 10 points (warn:
                               more than 3 points) -- gradient masking
``noise_below_gradient``       random sign noise beats the gradient attacks by > 3 points
``accuracy_falls_with_eps``    accuracy rises by more than 3 points somewhere along an eps sweep
``chance_at_large_eps``        at the eps that can turn any image gray (Linf 0.5) accuracy stays
                               above chance + 10 points
``unbounded_reaches_100``      an unbounded attack (eps = inf, many steps) succeeds on fewer
                               than 99 % of the examples
``converged``                  doubling PGD's steps or restarts raises the per-example success
                               of the gradient attacks (FGSM, PGD, PGD-CW, MI-FGSM) by more
                               than 5 points (warn: raises PGD's own success that much)
=============================  =============================================================

All thresholds live in :class:`Thresholds`. For randomised models every comparison is widened
by ``noise_z`` standard errors of the compared means over the evaluation draws. An
:class:`AuditReport` is ``trustworthy`` when no flag fails (warnings do not count).

:func:`worst_case_accuracy` is the per-example worst case over a set of attacks ("min over
attacks, then mean over examples"): an example counts as robust only if it survives every
attack (and is classified correctly when clean). For randomised models the worst attack per
example is chosen on selection draws and scored on fresh, disjoint scoring draws, and the
result is never reported above the best single attack (see :func:`worst_case_accuracy`).

Every gradient attack the audit runs is built with ``nonfinite="warn"``: on a model whose
input gradient has NaN/inf entries the audit still runs (those entries count as 0, as
``torch.sign(NaN) = 0`` does in a naive evaluation) and reports what such an evaluation
sees, while ``gradients_finite_nonzero`` and ``budget_used`` fail; the attacks' warnings are
silenced inside the audit.

Everything runs on the tensors the caller passes: give a small subset (a few hundred examples
on a CPU). Nothing prints; nothing changes the model's state (modes are restored, no
parameter gradients are left behind, the model is never moved).

Example:
    >>> import torch
    >>> from advlab.evaluate.audit import check_logits
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> check_logits(model, torch.rand(5, 1, 2, 2)).passed
    True
    >>> soft = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    >>> check_logits(soft, torch.rand(5, 1, 2, 2)).severity
    'fail'
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import (
    Attack,
    NonFiniteGradientWarning,
    _check_int_labels,
    _check_labels_range,
    model_mode,
)
from advlab.attacks.noise import RandomSignNoise
from advlab.attacks.presets import FGSM, MIFGSM, PGD
from advlab.attacks.square import SquareAttack
from advlab.models.registry import is_randomized
from advlab.threat import Norm

__all__ = [
    "Flag",
    "AuditReport",
    "Thresholds",
    "WorstCaseResult",
    "audit",
    "worst_case_accuracy",
    "outputs_differ",
    "input_gradient",
    "check_randomness",
    "check_logits",
    "check_clean_accuracy",
    "check_gradients",
    "check_budget_used",
    "check_iterative_vs_single_step",
    "check_whitebox_vs_transfer",
    "check_gradient_free",
    "check_random_noise",
    "check_eps_sweep",
    "check_large_eps",
    "check_unbounded",
    "check_convergence",
    "SEVERITIES",
]

log = logging.getLogger(__name__)

SEVERITIES = ("fail", "warn", "info")

#: Settings of the two audit profiles (any of them can be overridden by a keyword).
PROFILES: dict[str, dict[str, Any]] = {
    "quick": dict(steps=10, restarts=1, n_queries=300, noise_trials=10, unbounded_steps=50,
                  eval_draws=8, sweep=(0.5, 1.0, 2.0)),
    "full": dict(steps=50, restarts=3, n_queries=1000, noise_trials=20, unbounded_steps=200,
                 eval_draws=20, sweep=(0.25, 0.5, 1.0, 2.0)),
}


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Flag:
    """One check's verdict.

    Attributes:
        name: the check (see the module docstring).
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
        flags: one :class:`Flag` per check, in the order of the module docstring.
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


# --------------------------------------------------------------------------- helpers


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


@contextlib.contextmanager
def _quiet_nonfinite() -> Iterator[None]:
    """Silence the attacks' ``nonfinite="warn"`` warnings (the audit reports NaN/inf
    gradients in its own flags)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteGradientWarning)
        yield


def _r(v: float) -> float:
    return round(float(v), 4)


class _Frozen(nn.Module):
    """Wraps a randomised model so that its noise is fixed to one draw (via the
    ``frozen_noise(seed)`` context of every submodule that has one, e.g. VOneBlock)."""

    def __init__(self, model: nn.Module, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with contextlib.ExitStack() as stack:
            for m in self.model.modules():
                fn = getattr(m, "frozen_noise", None)
                if callable(fn):
                    stack.enter_context(fn(self.seed))
            return self.model(x)


def _supports_frozen_noise(model: nn.Module) -> bool:
    return any(callable(getattr(m, "frozen_noise", None)) for m in model.modules())


def _large_eps(norm: Norm, bounds: tuple[float, float], d: int) -> float:
    """The radius within which every image reaches the mid-gray image of the box."""
    half = (bounds[1] - bounds[0]) / 2
    return half if norm is Norm.LINF else half * math.sqrt(d)


class _Session:
    """Shared state of one audit: the examples, the resolved settings and a cache of attack
    outcomes, so that checks sharing an attack run it once."""

    def __init__(self, model: nn.Module, x: Any, y: Any, eps: float, *, norm: Norm | str,
                 eot_samples: int, eval_draws: int | None, steps: int | None,
                 restarts: int | None, n_queries: int | None, noise_trials: int | None,
                 unbounded_steps: int | None, square_p_init: float, seed: int,
                 quick: bool, bounds: tuple[float, float], batch_size: int,
                 thresholds: Thresholds | None) -> None:
        norm = Norm.parse(norm)
        if norm not in (Norm.LINF, Norm.L2):
            raise ValueError(f"the audit supports norm 'linf' or 'l2', got {norm.value!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0 \
                or not math.isfinite(eps):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        # Validate exactly like the attacks do, before any work.
        probe = PGD(eps=float(eps), norm=norm, bounds=bounds)
        x = Attack._check_inputs(probe, model, x)
        y = _check_int_labels("y", y, x.shape[0]).to(x.device)
        with torch.no_grad(), model_mode(model, "eval"):
            out = model(x[:1])
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)
            raise ValueError(f"model output must be logits of shape [N, C], got {shape}")
        _check_labels_range("y", y, out.shape[1])
        profile = dict(PROFILES["quick" if quick else "full"])
        given = dict(steps=steps, restarts=restarts, n_queries=n_queries,
                     noise_trials=noise_trials, unbounded_steps=unbounded_steps,
                     eval_draws=eval_draws)
        for k, v in given.items():
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"{k} must be an integer >= 1, got {v!r}")
                profile[k] = v
        if isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1:
            raise ValueError(f"eot_samples must be an integer >= 1, got {eot_samples!r}")
        self.model, self.x, self.y = model, x, y
        self.norm, self.eps, self.bounds = norm, float(eps), probe.bounds
        self.seed, self.batch_size, self.quick = seed, batch_size, quick
        self.square_p_init = square_p_init
        self.settings = profile
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        self.num_classes = int(out.shape[1])
        self.randomized, self.max_diff = outputs_differ(model, x)
        self.requested_eot = eot_samples
        self.eot = eot_samples if self.randomized else 1
        self.draws = profile["eval_draws"] if self.randomized else 1
        self.settings.update(eot_samples=self.eot, eval_draws=self.draws,
                             square_p_init=square_p_init, seed=seed)
        self._cache: dict[tuple, _Outcome] = {}
        self._surrogates: dict[int, bool] = {}
        self._grad: torch.Tensor | None = None

    # -- running attacks ---------------------------------------------------------------
    def evaluate(self, x_adv: torch.Tensor, draws: int | None = None,
                 model: nn.Module | None = None) -> torch.Tensor:
        return _correct(self.model if model is None else model, x_adv, self.y,
                        self.draws if draws is None else draws, self.batch_size)

    def outcome(self, x_adv: torch.Tensor) -> _Outcome:
        """``x_adv`` on the model: ``draws`` scoring draws and, for a randomised model,
        ``draws`` fresh selection draws before them."""
        return _evaluate(self.model, x_adv, self.y, self.draws, self.randomized,
                         self.batch_size)

    def run(self, key: tuple, attack: Any, source: nn.Module | None = None) -> _Outcome:
        """Outcome of ``attack`` crafted on ``source`` (default: the model), evaluated on the
        model over the evaluation draws; cached under ``key``."""
        if key in self._cache:
            return self._cache[key]
        log.info("audit: running %s", key[0] if len(key) == 1 else key)
        src = self.model if source is None else source
        bs = self.batch_size
        with _quiet_nonfinite():
            x_adv = torch.cat([attack(src, self.x[i:i + bs], self.y[i:i + bs])
                               for i in range(0, self.x.shape[0], bs)])
        out = self.outcome(x_adv)
        self._cache[key] = out
        return out

    def clean(self) -> _Outcome:
        key = ("clean",)
        if key not in self._cache:
            self._cache[key] = self.outcome(self.x)
        return self._cache[key]

    def gradient(self) -> torch.Tensor:
        """:func:`input_gradient` at the clean inputs, computed once per session."""
        if self._grad is None:
            self._grad = input_gradient(self.model, self.x, self.y, self.batch_size)
        return self._grad

    def fgsm(self, eps: float) -> _Outcome:
        atk = FGSM(eps=eps, norm=self.norm, eot_samples=self.eot, bounds=self.bounds,
                   seed=self.seed, nonfinite="warn")
        return self.run(("fgsm", eps), atk)

    def pgd(self, eps: float, *, steps: int | None = None, restarts: int | None = None,
            loss: str = "ce") -> _Outcome:
        steps = self.settings["steps"] if steps is None else steps
        restarts = self.settings["restarts"] if restarts is None else restarts
        atk = PGD(eps=eps, norm=self.norm, steps=steps, restarts=restarts, loss=loss,
                  eot_samples=self.eot, bounds=self.bounds, seed=self.seed + 1,
                  nonfinite="warn")
        return self.run(("pgd", eps, steps, restarts, loss), atk)

    def mifgsm(self, eps: float) -> _Outcome:
        atk = MIFGSM(eps=eps, norm=self.norm, steps=self.settings["steps"],
                     eot_samples=self.eot, bounds=self.bounds, seed=self.seed + 2,
                     nonfinite="warn")
        return self.run(("mifgsm", eps), atk)

    def square(self, eps: float) -> _Outcome:
        atk = SquareAttack(eps=eps, norm=self.norm, n_queries=self.settings["n_queries"],
                           p_init=self.square_p_init, eot_samples=self.eot,
                           bounds=self.bounds, seed=self.seed + 3)
        return self.run(("square", eps), atk)

    def noise(self, eps: float) -> _Outcome:
        atk = RandomSignNoise(eps=eps, norm=self.norm, trials=self.settings["noise_trials"],
                              eot_samples=self.eot, bounds=self.bounds, seed=self.seed + 4)
        return self.run(("random-noise", eps), atk)

    def transfer(self, eps: float, surrogate: nn.Module) -> _Outcome:
        sid = id(surrogate)
        if sid not in self._surrogates:
            self._surrogates[sid] = outputs_differ(surrogate, self.x)[0]
        eot = self.requested_eot if self._surrogates[sid] else 1
        atk = PGD(eps=eps, norm=self.norm, steps=self.settings["steps"],
                  restarts=self.settings["restarts"], eot_samples=eot, bounds=self.bounds,
                  seed=self.seed + 5, nonfinite="warn")
        return self.run(("transfer", eps, sid), atk, source=surrogate)

    def unbounded(self) -> _Outcome:
        steps = self.settings["unbounded_steps"]
        lo, hi = self.bounds
        atk = PGD(eps=math.inf, norm=Norm.LINF, steps=steps, alpha=2.5 * (hi - lo) / steps,
                  loss="cw", random_start=False, eot_samples=self.eot, bounds=self.bounds,
                  seed=self.seed + 6, nonfinite="warn")
        return self.run(("unbounded",), atk)

    def gradient_attacks(self, eps: float) -> dict[str, _Outcome]:
        return {"fgsm": self.fgsm(eps), "pgd": self.pgd(eps), "pgd-cw": self.pgd(eps, loss="cw"),
                "mifgsm": self.mifgsm(eps)}

    # -- statistics --------------------------------------------------------------------
    def widen(self, tol: float, *outcomes: _Outcome) -> float:
        """``tol`` plus ``noise_z`` standard errors of a difference of means over draws."""
        if self.draws <= 1:
            return tol
        var = sum(o.accuracy_std**2 / o.draws for o in outcomes)
        return tol + self.thresholds.noise_z * math.sqrt(var)

    def large_eps(self) -> float:
        return _large_eps(self.norm, self.bounds, self.x[0].numel())


# --------------------------------------------------------------------------- flag builders
# Each builder takes a session, so that audit() shares attack runs between checks; the
# public check_* functions below build a one-off session around them.


def _flag_randomness(s: _Session) -> Flag:
    clean = s.clean()
    nums = dict(randomized=s.randomized, max_abs_diff=_r(s.max_diff),
                declared_randomized=is_randomized(s.model), eot_samples=s.eot,
                eval_draws=s.draws, clean_accuracy=_r(clean.accuracy),
                clean_accuracy_std=_r(clean.accuracy_std))
    if not s.randomized:
        return _ok("randomized_output", "two identical calls in eval mode return identical "
                   "outputs: the model is deterministic", **nums)
    acc = f"clean accuracy {clean.accuracy:.3f} +- {clean.accuracy_std:.3f} over {s.draws} draws"
    if s.eot <= 1:
        return _bad("randomized_output", "warn",
                    f"outputs differ between identical calls (max |diff| {s.max_diff:.3g}) but "
                    f"eot_samples=1: gradients come from single noise draws; {acc}", **nums)
    return _ok("randomized_output",
               f"outputs differ between identical calls (max |diff| {s.max_diff:.3g}): every "
               f"gradient attack averages {s.eot} gradients per step (EOT) and accuracy is "
               f"the mean over {s.draws} draws; {acc}", **nums)


@torch.no_grad()
def _flag_logits(model: nn.Module, x: torch.Tensor, batch: int = 64) -> Flag:
    with model_mode(model, "eval"):
        z = model(x[:batch])
    nonneg = bool((z >= 0).all())
    sums = z.sum(dim=1)
    probs = z.shape[1] > 1 and nonneg and bool(torch.allclose(sums, torch.ones_like(sums),
                                                              atol=1e-4))
    logprobs = z.shape[1] > 1 and bool((z <= 0).all()) and bool(torch.allclose(
        torch.logsumexp(z, dim=1), torch.zeros_like(sums), atol=1e-4))
    nums = dict(probabilities=probs, log_probabilities=logprobs, min=_r(z.min()),
                max=_r(z.max()))
    if probs:
        return _bad("logits_not_probabilities", "fail",
                    "the model returns probabilities (non-negative rows summing to 1): "
                    "cross-entropy on them has weak/vanishing gradients; return logits",
                    **nums)
    if logprobs:
        return _ok("logits_not_probabilities", "the model returns log-probabilities, which "
                   "are logits up to a per-row shift: fine for the attacks", **nums)
    return _ok("logits_not_probabilities", "the model returns unnormalised scores (logits)",
               **nums)


def _flag_clean(s: _Session) -> Flag:
    clean = s.clean()
    chance = 1.0 / s.num_classes
    nums = dict(clean_accuracy=_r(clean.accuracy), clean_accuracy_std=_r(clean.accuracy_std),
                chance=_r(chance))
    if clean.accuracy <= chance + s.thresholds.chance_margin:
        return _bad("clean_accuracy", "warn",
                    f"clean accuracy {clean.accuracy:.3f} is near chance ({chance:.3f}): "
                    f"robustness numbers on this model mean little", **nums)
    return _ok("clean_accuracy", f"clean accuracy {clean.accuracy:.3f} (chance {chance:.3f})",
               **nums)


def _flag_gradients(s: _Session) -> Flag:
    flat = s.gradient().flatten(1)
    finite_entries = torch.isfinite(flat)
    finite = finite_entries.all(dim=1)
    n, total = flat.shape[0], flat.numel()
    bad_entries = total - int(finite_entries.sum())
    nonfinite = int((~finite).sum())
    zero = int((finite & (flat == 0).all(dim=1)).sum())
    norms_t = flat[finite].norm(dim=1)
    zf, nf, ef = zero / n, nonfinite / n, bad_entries / total if total else 0.0
    nums = dict(zero_fraction=_r(zf), nonfinite_fraction=_r(nf),
                nonfinite_entry_fraction=float(f"{ef:.4g}"), nonfinite_entries=bad_entries,
                n=n, median_norm=float(norms_t.median()) if norms_t.numel() else float("nan"))
    t = s.thresholds.zero_grad_fail_fraction
    if nonfinite:
        return _bad("gradients_finite_nonzero", "fail",
                    f"{100 * ef:.3g} % of input-gradient entries are NaN/inf ({nonfinite} of "
                    f"{n} examples affected): the backward pass is not finite (e.g. sqrt at 0 "
                    f"without epsilon); sign(NaN) = 0 leaves those pixels unperturbed", **nums)
    if zf > t:
        return _bad("gradients_finite_nonzero", "fail",
                    f"{zero} of {n} examples ({zf:.1%}) have an all-zero input gradient of the "
                    f"loss (> {t:.0%}): gradients are masked (shattered or saturated)", **nums)
    if zero:
        return _bad("gradients_finite_nonzero", "warn",
                    f"{zero} of {n} examples have an all-zero input gradient", **nums)
    return _ok("gradients_finite_nonzero", f"input gradients are finite and non-zero on all "
               f"{n} examples", **nums)


def _could_move(s: _Session) -> torch.Tensor:
    """``[N, ...]`` bool: the pixels a single untargeted step of the threat model's steepest
    ascent can move. Excluded are only the pixels that sit on a bound of the box (within
    1e-12) while the clean input gradient of the loss there is finite and points out of the
    box (``x = lo`` and ``g < 0``, or ``x = hi`` and ``g > 0``): the box clamp undoes their
    step. Pixels whose gradient is 0 or NaN/inf count as movable -- a usable gradient would
    move them, and their not moving is exactly what ``budget_used`` detects."""
    lo, hi = s.bounds
    g = s.gradient()
    out_low = (s.x <= lo + 1e-12) & (g < 0)  # NaN compares False: stays movable
    out_high = (s.x >= hi - 1e-12) & (g > 0)
    return ~(out_low | out_high)


def _budget_stats(s: _Session, o: _Outcome, movable: torch.Tensor) -> dict[str, float]:
    """Medians over examples of one attack's perturbation ``x_adv - x``: its norm in the
    threat model's norm and in Linf, and the fraction of movable pixels it changed; and the
    fraction of images it left exactly unchanged."""
    delta = (o.x_adv - s.x).flatten(1)
    linf = delta.abs().amax(dim=1)
    size = linf if s.norm is Norm.LINF else delta.norm(dim=1)
    mov = movable.flatten(1)
    n_mov = mov.sum(dim=1)
    hit = ((delta != 0) & mov).sum(dim=1)
    # an image with no movable pixel cannot be perturbed at all: nothing to hold against it
    frac = torch.where(n_mov > 0, hit.double() / n_mov.clamp_min(1).double(),
                       torch.ones_like(hit, dtype=torch.float64))
    return dict(median_norm=float(size.double().quantile(0.5)),
                median_linf=float(linf.double().quantile(0.5)),
                median_moved_fraction=float(frac.quantile(0.5)),
                unchanged_images_fraction=float((delta == 0).all(dim=1).double().mean()))


def _flag_budget(s: _Session) -> Flag:
    eps, th = s.eps, s.thresholds
    movable = _could_move(s)
    f = _budget_stats(s, s.fgsm(eps), movable)
    p = _budget_stats(s, s.pgd(eps), movable)
    sym = "Linf" if s.norm is Norm.LINF else "L2"
    nums = dict(norm=s.norm.value, eps=_r(eps), median_norm=_r(f["median_norm"]),
                median_linf=_r(f["median_linf"]),
                median_moved_fraction=_r(f["median_moved_fraction"]),
                unchanged_images_fraction=_r(f["unchanged_images_fraction"]),
                movable_fraction=_r(movable.double().mean()),
                pgd_median_norm=_r(p["median_norm"]),
                pgd_unchanged_images_fraction=_r(p["unchanged_images_fraction"]),
                min_fraction=_r(th.budget_min_fraction), min_pixels=_r(th.budget_min_pixels))
    txt = (f"FGSM at eps={eps:g}: median {sym} perturbation {f['median_norm']:.4g} "
           f"({f['median_norm'] / eps:.1%} of eps), median {f['median_moved_fraction']:.1%} "
           f"of the movable pixels moved, {f['unchanged_images_fraction']:.1%} of the images "
           f"unchanged; PGD: median {sym} perturbation {p['median_norm']:.4g}")
    short_norm = f["median_norm"] < th.budget_min_fraction * eps
    few_pixels = f["median_moved_fraction"] < th.budget_min_pixels
    if short_norm or few_pixels:
        why = []
        if short_norm:
            why.append(f"median {sym} {f['median_norm']:.4g} < {th.budget_min_fraction:g} x "
                       f"eps")
        if few_pixels:
            why.append(f"median moved fraction {f['median_moved_fraction']:.1%} < "
                       f"{th.budget_min_pixels:.0%}")
        return _bad("budget_used", "fail",
                    f"the attack leaves its budget unused ({'; '.join(why)}; {txt}): its "
                    f"input gradient is zero or NaN/inf on those pixels (sign(NaN) = 0), so "
                    f"the robustness it reports is not earned", **nums)
    return _ok("budget_used", txt, **nums)


def _flag_single_step(s: _Session) -> Flag:
    eps = s.eps
    f, p, m = s.fgsm(eps), s.pgd(eps), s.mifgsm(eps)
    tol = s.widen(s.thresholds.single_step_tol, f, p, m)
    nums = dict(fgsm=_r(f.success), pgd=_r(p.success), mifgsm=_r(m.success), tolerance=_r(tol))
    weak = [name for name, o in (("PGD", p), ("MI-FGSM", m)) if o.success < f.success - tol]
    txt = (f"success at eps={eps:g}: FGSM {f.success:.3f}, PGD {p.success:.3f}, "
           f"MI-FGSM {m.success:.3f}")
    if weak:
        return _bad("iterative_beats_single_step", "fail",
                    f"{' and '.join(weak)} succeed less often than single-step FGSM ({txt}): "
                    f"the iterative attacks are broken or the loss surface is masked", **nums)
    return _ok("iterative_beats_single_step", txt, **nums)


def _resolve_surrogate(s: _Session, surrogate: nn.Module | None
                       ) -> tuple[nn.Module | None, str]:
    if surrogate is not None:
        return surrogate, "the given surrogate"
    if s.randomized and _supports_frozen_noise(s.model):
        return _Frozen(s.model, seed=s.seed), "the same model with its noise fixed"
    return None, ""


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


def _best_gradient(s: _Session, eps: float) -> tuple[str, _Outcome]:
    """The gradient attacks' worst case (:func:`_per_example_best`, hence never weaker than
    the best single attack) and the name of the best single attack."""
    atks = s.gradient_attacks(eps)
    name = max(atks, key=lambda k: atks[k].success)
    return name, _per_example_best(atks)


def _flag_transfer(s: _Session, surrogate: nn.Module | None) -> Flag:
    sur, what = _resolve_surrogate(s, surrogate)
    if sur is None:
        why = ("the model is randomised but has no frozen_noise() to fix its noise"
               if s.randomized else "no surrogate given and the model is deterministic")
        return _ok("whitebox_beats_transfer", f"skipped: {why} (pass surrogate=...)",
                   skipped=True)
    eps = s.eps
    t = s.transfer(eps, sur)
    name, best = _best_gradient(s, eps)
    tol = s.widen(s.thresholds.transfer_tol, t, best)
    nums = dict(transfer=_r(t.success), whitebox=_r(best.success), best_single_attack=name,
                tolerance=_r(tol), surrogate=what, skipped=False)
    if isinstance(sur, _Frozen):
        fixed = s.evaluate(t.x_adv, draws=1, model=sur)
        nums["fixed_noise_success"] = _r(1 - float(fixed.float().mean()))
    txt = (f"PGD transferred from {what}: {t.success:.3f}; white-box gradient attacks "
           f"(per-example best; strongest single: {name}): {best.success:.3f}")
    if t.success > best.success + tol:
        return _bad("whitebox_beats_transfer", "fail",
                    f"a transfer attack beats the white-box attacks ({txt}): the white-box "
                    f"gradients are masked or the attack is not adapted", **nums)
    return _ok("whitebox_beats_transfer", txt, **nums)


def _flag_square(s: _Session) -> Flag:
    eps = s.eps
    sq = s.square(eps)
    name, best = _best_gradient(s, eps)
    th = s.thresholds
    warn_tol, fail_tol = s.widen(th.square_warn_gap, sq, best), s.widen(th.square_fail_gap,
                                                                         sq, best)
    grad = s.gradient_attacks(eps)
    broke_sq = (~sq.correct).float().mean(0) > 0.5
    broke_grad = (~best.correct).float().mean(0) > 0.5
    only = float((broke_sq & ~broke_grad).float().mean())
    gap = sq.success - best.success
    nums = dict(square=_r(sq.success), gradient=_r(best.success), best_single_attack=name,
                best_single=_r(grad[name].success), gap=_r(gap), square_only_fraction=_r(only),
                warn_gap=_r(warn_tol), fail_gap=_r(fail_tol), n_queries=s.settings["n_queries"])
    txt = (f"Square Attack success {sq.success:.3f} vs gradient attacks {best.success:.3f} "
           f"(per-example best of FGSM, PGD, PGD-CW, MI-FGSM); Square alone fools "
           f"{only:.1%} of the examples")
    if gap > fail_tol:
        return _bad("gradient_free_below_gradient", "fail",
                    f"the gradient-free attack beats the gradient attacks ({txt}): gradient "
                    f"masking, or gradient attacks far too weak for this model", **nums)
    if gap > warn_tol:
        return _bad("gradient_free_below_gradient", "warn",
                    f"the gradient-free attack is somewhat stronger ({txt}): strengthen the "
                    f"gradient attacks (steps, restarts, loss) and check for masking", **nums)
    return _ok("gradient_free_below_gradient", txt, **nums)


def _flag_noise(s: _Session) -> Flag:
    eps = s.eps
    nz = s.noise(eps)
    name, best = _best_gradient(s, eps)
    tol = s.widen(s.thresholds.noise_tol, nz, best)
    nums = dict(noise=_r(nz.success), gradient=_r(best.success), best_single_attack=name,
                tolerance=_r(tol), trials=s.settings["noise_trials"])
    txt = (f"random sign noise success {nz.success:.3f} vs gradient attacks "
           f"{best.success:.3f} (per-example best)")
    if nz.success > best.success + tol:
        return _bad("noise_below_gradient", "fail",
                    f"random noise beats the gradient attacks ({txt}): gradient masking",
                    **nums)
    return _ok("noise_below_gradient", txt, **nums)


def _sweep_eps(s: _Session) -> list[float]:
    big = s.large_eps()
    grid = {0.0, big}
    grid.update(f * s.eps for f in s.settings["sweep"] if f * s.eps < big)
    return sorted(grid)


def _sweep_outcome(s: _Session, e: float) -> _Outcome:
    return s.clean() if e == 0 else s.pgd(e)


def _flag_sweep(s: _Session) -> Flag:
    grid = _sweep_eps(s)
    outs = [_sweep_outcome(s, e) for e in grid]
    accs = [o.accuracy for o in outs]
    rises = []
    for i in range(1, len(grid)):
        tol = s.widen(s.thresholds.monotone_tol, outs[i - 1], outs[i])
        if accs[i] > accs[i - 1] + tol:
            rises.append((grid[i - 1], grid[i], accs[i] - accs[i - 1]))
    nums = dict(eps=[_r(e) for e in grid], accuracy=[_r(a) for a in accs],
                accuracy_std=[_r(o.accuracy_std) for o in outs],
                tolerance=_r(s.thresholds.monotone_tol))
    curve = ", ".join(f"{e:.3g}: {a:.3f}" for e, a in zip(grid, accs))
    if rises:
        where = "; ".join(f"{a:.3g} -> {b:.3g} (+{d:.3f})" for a, b, d in rises)
        return _bad("accuracy_falls_with_eps", "fail",
                    f"PGD accuracy rises with eps at {where} (eps: accuracy = {curve}): the "
                    f"attack does not use its larger budget", **nums)
    return _ok("accuracy_falls_with_eps", f"PGD accuracy falls with eps ({curve})", **nums)


def _flag_large(s: _Session) -> Flag:
    big = s.large_eps()
    o = s.pgd(big)
    chance = 1.0 / s.num_classes
    limit = s.widen(s.thresholds.chance_margin, o) + chance
    nums = dict(eps=_r(big), accuracy=_r(o.accuracy), accuracy_std=_r(o.accuracy_std),
                chance=_r(chance), limit=_r(limit))
    txt = (f"PGD accuracy at eps={big:.3g} (every image can be turned mid-gray) is "
           f"{o.accuracy:.3f}; chance is {chance:.3f}")
    if o.accuracy > limit:
        return _bad("chance_at_large_eps", "fail", f"{txt}: the attack cannot even reach "
                    f"chance, its gradients are not usable", **nums)
    return _ok("chance_at_large_eps", txt, **nums)


def _flag_unbounded(s: _Session) -> Flag:
    o = s.unbounded()
    need = s.thresholds.unbounded_min_success
    limit = need - (s.widen(0.0, o) if s.draws > 1 else 0.0)
    nums = dict(success=_r(o.success), success_std=_r(o.accuracy_std), required=_r(need),
                steps=s.settings["unbounded_steps"])
    txt = (f"unbounded PGD (eps=inf, {s.settings['unbounded_steps']} steps, margin loss) "
           f"succeeds on {o.success:.3f} of the examples")
    if o.success < limit:
        return _bad("unbounded_reaches_100", "fail",
                    f"{txt} (< {need:.2f}): with no bound any input can be changed into any "
                    f"other, so the attack's gradients do not lead anywhere", **nums)
    return _ok("unbounded_reaches_100", txt, **nums)


def _flag_convergence(s: _Session) -> Flag:
    eps = s.eps
    steps, restarts = s.settings["steps"], s.settings["restarts"]
    grad = s.gradient_attacks(eps)
    base = grad["pgd"]
    longer = s.pgd(eps, steps=2 * steps)
    more = s.pgd(eps, restarts=2 * restarts)
    before = _worst_case(grad, s.randomized)
    after = _worst_case({**grad, "pgd-2x-steps": longer, "pgd-2x-restarts": more},
                        s.randomized)
    gain_all = before.accuracy - after.accuracy
    gain_pgd = max(longer.success, more.success) - base.success
    tol = s.widen(s.thresholds.convergence_tol, base, longer, more)
    nums = dict(base=_r(base.success), double_steps=_r(longer.success),
                double_restarts=_r(more.success), steps=steps, restarts=restarts,
                worst_case_before=_r(1 - before.accuracy),
                worst_case_after=_r(1 - after.accuracy), tolerance=_r(tol))
    txt = (f"PGD success {base.success:.3f} ({steps} steps, {restarts} restart(s)); "
           f"{2 * steps} steps: {longer.success:.3f}; {2 * restarts} restarts: "
           f"{more.success:.3f}; success of the best gradient attack per example "
           f"{1 - before.accuracy:.3f} -> {1 - after.accuracy:.3f} with both")
    if gain_all > tol:
        return _bad("converged", "fail", f"more effort still raises success ({txt}): the "
                    f"attacks have not converged, robust accuracy is overestimated", **nums)
    if gain_pgd > tol:
        return _bad("converged", "warn", f"PGD alone has not converged ({txt}), although the "
                    f"other gradient attacks cover the difference", **nums)
    return _ok("converged", txt, **nums)


# --------------------------------------------------------------------------- public checks


def _session(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kw: Any
             ) -> _Session:
    opts = dict(norm="linf", eot_samples=8, eval_draws=None, steps=None, restarts=None,
                n_queries=None, noise_trials=None, unbounded_steps=None, square_p_init=0.8,
                seed=0, quick=False, bounds=(0.0, 1.0), batch_size=256, thresholds=None)
    opts.update(kw)
    return _Session(model, x, y, eps, **opts)


def check_randomness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> Flag:
    """(a) Randomised outputs: do two identical calls in eval mode differ?

    Informative (``info``) when they do and EOT is in use; ``warn`` if ``eot_samples=1``.
    Keyword arguments are those of :func:`audit`.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> check_randomness(m, torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 2])).numbers[
        ...     "randomized"]
        False
    """
    return _flag_randomness(_session(model, x, y, kw.pop("eps", 0.1), **kw))


def check_logits(model: nn.Module, x: torch.Tensor) -> Flag:
    """(i) Fails when the model returns probabilities (softmax) instead of logits."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    return _flag_logits(model, x)


def check_clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> Flag:
    """Warns when clean accuracy is within ``chance_margin`` of chance."""
    return _flag_clean(_session(model, x, y, kw.pop("eps", 0.1), **kw))


def check_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> Flag:
    """(g) Input gradients of the cross-entropy must be finite and not all zero.

    Example:
        >>> import torch
        >>> class Rounded(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = torch.nn.Linear(4, 3)
        ...     def forward(self, x):
        ...         return self.lin(torch.round(x * 4).flatten(1) / 4)
        >>> x, y = torch.rand(8, 1, 2, 2), torch.randint(0, 3, (8,))
        >>> check_gradients(Rounded(), x, y).severity
        'fail'
    """
    return _flag_gradients(_session(model, x, y, kw.pop("eps", 0.1), **kw))


def check_budget_used(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                      **kw: Any) -> Flag:
    """FGSM at ``eps`` must use its budget: a model whose input gradient is NaN/inf (or 0)
    on many pixels leaves them unperturbed (``sign(NaN) = 0``) and looks robust.

    Per example, with ``delta = FGSM(x) - x`` (the audit runs it with ``nonfinite="warn"``,
    i.e. NaN/inf gradient entries count as 0):

    * the perturbation norm ``||delta||`` in the threat model's norm (Linf or L2);
    * the moved fraction: the share of the *movable* pixels with ``delta != 0``. Movable is
      every pixel except those on a bound of the box (within 1e-12) whose finite clean input
      gradient points out of the box (``x = lo, g < 0`` or ``x = hi, g > 0``): the clamp
      keeps those in place on any model. Pixels with a zero or NaN/inf gradient are movable.
      An image without movable pixels counts as moved fraction 1.

    Fails when the median norm over examples is below ``budget_min_fraction * eps`` (default
    0.5) or the median moved fraction is below ``budget_min_pixels`` (default 0.25). The
    numbers include ``median_linf``, ``median_norm``, ``eps``, ``median_moved_fraction``,
    ``unchanged_images_fraction`` (images with ``delta`` exactly 0) and PGD's median norm
    (for information: PGD's random start moves every pixel, so it does not decide).
    Keyword arguments are those of :func:`audit`.
    """
    return _flag_budget(_session(model, x, y, eps, **kw))


def check_iterative_vs_single_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                                   eps: float, **kw: Any) -> Flag:
    """(b) PGD (with restarts) and MI-FGSM must succeed at least as often as FGSM."""
    return _flag_single_step(_session(model, x, y, eps, **kw))


def check_whitebox_vs_transfer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                               *, surrogate: nn.Module | None = None, **kw: Any) -> Flag:
    """(c) White-box attacks must beat PGD transferred from ``surrogate``.

    Without a surrogate, a randomised model that has ``frozen_noise()`` (e.g. a VOneNet) is
    attacked through a copy-free wrapper with its noise fixed; otherwise the check is
    skipped (an ``info`` flag).
    """
    return _flag_transfer(_session(model, x, y, eps, **kw), surrogate)


def check_gradient_free(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                        **kw: Any) -> Flag:
    """(d) The Square Attack must not beat the best gradient attack (gradient masking)."""
    return _flag_square(_session(model, x, y, eps, **kw))


def check_random_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                       **kw: Any) -> Flag:
    """(d) Random sign noise must not beat the best gradient attack."""
    return _flag_noise(_session(model, x, y, eps, **kw))


def check_eps_sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    **kw: Any) -> Flag:
    """(e) PGD accuracy must not rise along ``0 < ... < eps < ... < large eps``."""
    return _flag_sweep(_session(model, x, y, eps, **kw))


def check_large_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> Flag:
    """(e) At the radius that reaches the mid-gray image (Linf 0.5 for [0, 1] pixels,
    ``0.5 sqrt(d)`` for L2) PGD accuracy must be at most chance plus ``chance_margin``."""
    return _flag_large(_session(model, x, y, kw.pop("eps", 0.1), **kw))


def check_unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> Flag:
    """(f) An unbounded attack (eps = inf, many steps) must fool (almost) every example."""
    return _flag_unbounded(_session(model, x, y, kw.pop("eps", 0.1), **kw))


def check_convergence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                      **kw: Any) -> Flag:
    """(h) Doubling PGD's steps or restarts must not raise success by more than a few
    points."""
    return _flag_convergence(_session(model, x, y, eps, **kw))


# --------------------------------------------------------------------------- worst case


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
    probe = PGD(eps=0.0)
    x = Attack._check_inputs(probe, model, x)
    y = _check_int_labels("y", y, x.shape[0]).to(x.device)
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


# --------------------------------------------------------------------------- the audit


def audit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
          norm: Norm | str = "linf", eot_samples: int = 8, steps: int | None = None,
          restarts: int | None = None, seed: int = 0, quick: bool = False,
          surrogate: nn.Module | None = None, n_queries: int | None = None,
          noise_trials: int | None = None, unbounded_steps: int | None = None,
          eval_draws: int | None = None, square_p_init: float = 0.8,
          bounds: tuple[float, float] = (0.0, 1.0), batch_size: int = 256,
          thresholds: Thresholds | None = None,
          progress: Callable[[str], None] | None = None) -> AuditReport:
    """Run the whole checklist on ``(x, y)`` at radius ``eps`` and return an
    :class:`AuditReport` (see the module docstring for the checks and thresholds).

    Args:
        model: the classifier (logits out, pixels in ``bounds`` in).
        x, y: the examples to audit: a small subset (every check attacks all of them).
        eps: the threat model's radius.
        norm: ``"linf"`` or ``"l2"``.
        eot_samples: gradients averaged per step when the outputs are random (ignored for
            deterministic models).
        steps, restarts: PGD's budget (MI-FGSM uses ``steps`` too); None = the profile's.
        seed: base seed of every attack's local generator.
        quick: the ``"quick"`` profile (10 steps, 1 restart, 300 Square queries, 8 draws)
            instead of ``"full"`` (50 steps, 3 restarts, 1000 queries, 20 draws).
        surrogate: model for the transfer check (default: see
            :func:`check_whitebox_vs_transfer`).
        n_queries, noise_trials, unbounded_steps, eval_draws: override the profile.
        square_p_init: Square Attack's ``p_init`` (0.8, AutoAttack's choice for robustness
            evaluation).
        bounds: valid pixel range.
        batch_size: examples per attack call.
        thresholds: tolerances (:class:`Thresholds`).
        progress: optional callback receiving the name of each check as it starts.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
        >>> rep = audit(m, x, y, eps=0.1, quick=True, n_queries=20, unbounded_steps=20)
        >>> [f.name for f in rep.flags][:3]
        ['randomized_output', 'logits_not_probabilities', 'clean_accuracy']
    """
    s = _Session(model, x, y, eps, norm=norm, eot_samples=eot_samples, eval_draws=eval_draws,
                 steps=steps, restarts=restarts, n_queries=n_queries,
                 noise_trials=noise_trials, unbounded_steps=unbounded_steps,
                 square_p_init=square_p_init, seed=seed, quick=quick, bounds=bounds,
                 batch_size=batch_size, thresholds=thresholds)
    builders: list[tuple[str, Callable[[], Flag]]] = [
        ("randomized_output", lambda: _flag_randomness(s)),
        ("logits_not_probabilities", lambda: _flag_logits(s.model, s.x)),
        ("clean_accuracy", lambda: _flag_clean(s)),
        ("gradients_finite_nonzero", lambda: _flag_gradients(s)),
        ("budget_used", lambda: _flag_budget(s)),
        ("iterative_beats_single_step", lambda: _flag_single_step(s)),
        ("whitebox_beats_transfer", lambda: _flag_transfer(s, surrogate)),
        ("gradient_free_below_gradient", lambda: _flag_square(s)),
        ("noise_below_gradient", lambda: _flag_noise(s)),
        ("accuracy_falls_with_eps", lambda: _flag_sweep(s)),
        ("chance_at_large_eps", lambda: _flag_large(s)),
        ("unbounded_reaches_100", lambda: _flag_unbounded(s)),
        ("converged", lambda: _flag_convergence(s)),
    ]
    flags = []
    for name, build in builders:
        if progress is not None:
            progress(name)
        log.info("audit check: %s", name)
        flags.append(build())

    at_eps = {"clean": s.clean(), **s.gradient_attacks(s.eps), "square": s.square(s.eps),
              "random-noise": s.noise(s.eps)}
    sur, _ = _resolve_surrogate(s, surrogate)
    if sur is not None:
        at_eps["transfer"] = s.transfer(s.eps, sur)
    worst = _worst_case(at_eps, s.randomized)
    clean = s.clean()
    return AuditReport(
        flags=flags,
        trustworthy=not any(f.severity == "fail" for f in flags),
        n=s.x.shape[0],
        norm=s.norm.value,
        eps=s.eps,
        num_classes=s.num_classes,
        randomized=s.randomized,
        eot_samples=s.eot,
        eval_draws=s.draws,
        clean_accuracy=clean.accuracy,
        clean_accuracy_std=clean.accuracy_std,
        robust_accuracy=worst.accuracy,
        robust_accuracy_std=worst.accuracy_std,
        accuracies=dict(worst.per_attack),
        settings=dict(s.settings, sweep=list(s.settings["sweep"]), quick=quick,
                      thresholds=asdict(s.thresholds)),
    )

