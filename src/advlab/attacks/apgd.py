"""APGD: Auto-PGD, a step-size-free PGD with momentum (and its DLR and targeted variants).

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020 (arXiv:2003.01690), Algorithm 1 and Sec. 3-4. The attack
*maximises* an objective ``f`` (the cross-entropy of the label, the DLR loss, or for a
targeted run the negated loss of the target) inside the eps-ball and the pixel box ``P``::

    x_0 = a random point at distance eps from x (or x itself with random_start=False)
    eta = 2 eps (per example),  a_0 = 1,  a_k = momentum = 0.75 for k >= 1
    repeat T times (k = 0 .. T-1):
        z_{k+1} = P(x_k + eta * dir(grad f(x_k)))                 (dir: sign or g / ||g||_2)
        x_{k+1} = P(x_k + a_k (z_{k+1} - x_k) + (1 - a_k)(x_k - x_{k-1}))
        at a checkpoint w_j (see :func:`checkpoints`), per example, halve eta and go back to
        the best point found so far (and its gradient) when
          (1) f rose in fewer than rho * (w_j - w_{j-1}) of the steps since w_{j-1}, or
          (2) eta was not halved at w_{j-1} and the best f did not improve since then.

Each example returns the first point that fooled the model (its prediction left the label, or
reached the target) or, if none did, the point of highest objective; both lie in the ball and
the box. Examples the model already gets wrong on the clean input are not attacked and come
back unchanged (as in the authors' code), which saves their passes.

Presets: :class:`APGD` (cross-entropy, APGD-CE), :class:`APGDDLR` (the DLR loss,
:func:`dlr`, APGD-DLR) and :class:`APGDT` (APGD-T: the targeted DLR loss,
:func:`dlr_targeted`, towards each of the ``n_target_classes`` most likely other classes in
turn, as in AutoAttack). Linf and L2 only. Every other field of
:class:`~advlab.attacks.base.Attack` keeps its meaning (``restarts``, ``eot_samples``,
``model_mode``, ``amp``, ``channels_last``, ``compile`` ...); ``alpha``, ``decay`` and
``nesterov`` have none here and are refused, as is ``clip=False``. The random starts are
drawn for the examples attacked, so they depend on which examples the clean input already
fools (with ``random_start=False`` a batch of N gives what N batches of one give).

Where this follows the authors' code rather than the paper's text: condition (2) is not
checked at the first checkpoint (there was no previous one), the integer schedule of
:func:`checkpoints` is the code's, and after going back to the best point the momentum term
``x_k - x_{k-1}`` uses the best point and the iterate before the checkpoint's step. Where it
follows the text: condition (1) is a strict ``<`` (the code halves at ``<=``), the first
step's rise is measured against the loss at ``x_0`` (the code's loss history starts at 0),
and after going back to the best point the next rise is measured against that point's loss.

Each iteration is one forward and one backward pass (``eot_samples`` of each with EOT); the
logits that track success come from the same forward pass.

Example:
    >>> import torch
    >>> from advlab.attacks.apgd import APGD
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> x_adv = APGD(eps=0.1, steps=20)(model, x, y)
    >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all()), bool(x_adv.min() >= 0)
    (True, True)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from advlab._check import positive_int
from advlab.attacks.base import Attack, AttackResult, _Oracle
from advlab.attacks.losses import Goal
from advlab.threat import Norm, ThreatModel

__all__ = ["APGD", "APGDDLR", "APGDT", "APGDResult", "checkpoints", "dlr", "dlr_targeted"]

log = logging.getLogger(__name__)

_TINY = 1e-12  # the DLR denominators' guard, as in the paper
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# -- losses ---------------------------------------------------------------------------------
def _need_classes(logits: torch.Tensor, k: int, what: str) -> None:
    if logits.ndim != 2 or logits.shape[1] < k:
        shape = tuple(logits.shape)
        raise ValueError(f"{what} needs logits [N, C] with at least {k} classes, got shape "
                         f"{shape}")


def dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein, ICML 2020, Eq. 6), per example.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with ``pi`` the classes sorted by
    decreasing logit. Like every advlab loss it is high when the model is wrong about the
    label: positive exactly when another class beats ``y``. Invariant to shifting and (positive)
    scaling of the logits. Needs at least 3 classes.

    Example:
        >>> import torch
        >>> z = torch.tensor([[4.0, 1.0, 3.0, 0.0]])
        >>> round(float(dlr(z, torch.tensor([0]))), 4)  # -(4 - 3) / (4 - 1)
        -0.3333
    """
    _need_classes(logits, 3, "the DLR loss")
    top = logits.topk(3, dim=1).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    # the strongest other class: the runner-up where y is on top (ties included), else the top
    other = torch.where(z_y >= top[:, 0], top[:, 1], top[:, 0])
    return (other - z_y) / (top[:, 0] - top[:, 2] + _TINY)


def dlr_targeted(logits: torch.Tensor, labels: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss (Croce & Hein, ICML 2020, Eq. 7), per example.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`` for the label ``y`` and the target
    ``t``: high when the target beats the label (the untargeted convention of
    :mod:`advlab.attacks.losses` for ``y``). Needs at least 4 classes.

    Example:
        >>> import torch
        >>> z = torch.tensor([[4.0, 1.0, 3.0, 0.0]])
        >>> float(dlr_targeted(z, torch.tensor([0]), torch.tensor([2])))  # -(4-3)/(4-0.5)
        -0.2857142984867096
    """
    _need_classes(logits, 4, "the targeted DLR loss")
    top = logits.topk(4, dim=1).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return (z_t - z_y) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY)


def _toward(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """APGD-T's objective for an explicit target: :func:`dlr_targeted` with the strongest
    class other than the target in the label's place. While the model predicts the true label
    that class *is* the label (the paper's objective); afterwards it keeps pushing the target
    past whichever class still beats it."""
    _need_classes(logits, 4, "the targeted DLR loss")
    with torch.no_grad():
        rival = logits.scatter(1, target[:, None], float("-inf")).argmax(dim=1)
    return dlr_targeted(logits, rival, target)


def _resolve_loss(loss: Any) -> Any:
    """``"dlr"`` names :func:`dlr` (the shared registry knows only ``"ce"`` and ``"cw"``)."""
    if isinstance(loss, str) and loss.strip().lower() == "dlr":
        return dlr
    return loss


# -- schedule -------------------------------------------------------------------------------
def _schedule_params(steps: int) -> tuple[int, int, int]:
    """``(first interval, its decrement, its minimum)`` of the authors' integer schedule."""
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


def checkpoints(steps: int) -> list[int]:
    """Iteration counts ``w_1 < w_2 < ...`` (<= ``steps``) at which APGD checks its step size.

    The paper's ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03,
    0.06)``, ``w_j = ceil(p_j T)``, in the authors' integer form: the first check after
    ``max(int(0.22 T), 1)`` iterations, then intervals shrinking by ``max(int(0.03 T), 1)``
    down to ``max(int(0.06 T), 1)``.

    Example:
        >>> checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    positive_int("steps", steps)
    interval, shrink, floor = _schedule_params(steps)
    out, w = [], 0
    while w + interval <= steps:
        w += interval
        out.append(w)
        interval = max(interval - shrink, floor)
    return out


def _halve_where(increases: torch.Tensor, interval: int, rho: float, best: torch.Tensor,
                 best_at_check: torch.Tensor, halved_at_check: torch.Tensor) -> torch.Tensor:
    """Which examples halve their step at a checkpoint (the paper's two conditions).

    ``increases``: steps since the last checkpoint at which the objective rose; ``interval``:
    how many steps that was; ``best`` / ``best_at_check``: the best objective now and at the
    last checkpoint; ``halved_at_check``: whether the step was halved there."""
    too_few_rises = increases < rho * interval
    stalled = ~halved_at_check & (best <= best_at_check)
    return too_few_rises | stalled


# -- result ---------------------------------------------------------------------------------
@dataclass
class APGDResult(AttackResult):
    """An :class:`~advlab.attacks.base.AttackResult` with APGD's bookkeeping (of the last
    restart; a run with ``restarts > 1`` returns a plain ``AttackResult``).

    Attributes:
        success: whether each example was fooled (already at the clean input, or by a point
            of the run), shape [N].
        step_size: each example's step size eta at the end of the run, shape [N] (``2 eps``
            halved once per checkpoint that called for it; ``nan`` for examples not attacked
            because the clean input already fooled the model).
    """

    success: torch.Tensor | None = None
    step_size: torch.Tensor | None = None


@dataclass
class _Run:
    """One APGD run on a (sub)batch: the returned points, their logits and objective, success
    and the final step size."""

    x: torch.Tensor
    logits: torch.Tensor
    objective: torch.Tensor
    fooled: torch.Tensor
    step: torch.Tensor
    updates: list[torch.Tensor]


def _success(goal: Goal) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if goal is Goal.UNTARGETED:
        return lambda z, labels: z.argmax(dim=1) != labels
    return lambda z, labels: z.argmax(dim=1) == labels


def _negated(fn: Objective) -> Objective:
    return lambda z, labels: -fn(z, labels)


@dataclass(frozen=True, eq=False)
class APGD(Attack):
    """Auto-PGD with the cross-entropy loss, APGD-CE (Croce & Hein, ICML 2020, Algorithm 1).

    PGD with momentum whose step size starts at ``2 eps`` and halves, per example, at
    checkpoints where progress stalled (see the module docstring). The paper's defaults:
    100 steps, ``rho = 0.75``, momentum 0.75.

    Args (besides those of :class:`~advlab.attacks.base.Attack`):
        steps: iterations T (default 100; one forward and one backward pass each).
        random_start: start from a random point at distance eps of ``x`` (default True:
            Linf ``x + eps t / max|t|``, ``t ~ U(-1, 1)^d``; L2 ``x + eps t / ||t||_2``,
            ``t ~ N(0, I)``; then clipped to the box). False starts at ``x``.
        rho: fraction of rising steps below which a checkpoint halves the step (0 < rho <= 1).
        momentum: weight ``a`` of the new step against the previous one (0 < a <= 1; 1 turns
            the momentum off). The first step never has momentum.
        loss: ``"ce"`` (default), ``"dlr"`` (:func:`dlr`), ``"cw"`` or a callable
            ``(logits, labels) -> [N]`` that is high when the model is wrong about the label.

    ``alpha``, ``decay`` and ``nesterov`` must keep their defaults (APGD sets its own step
    size and momentum) and ``clip`` must stay True (APGD always projects onto the box). The
    norm must be Linf or L2 and eps finite (the first step is ``2 eps``); eps may be a
    per-example 1-D tensor. Targeted calls (``target=...``) descend the loss of the target.

    Example:
        >>> import torch
        >>> from advlab.attacks.apgd import APGD
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
        >>> res = APGD(eps=0.5, norm="l2", steps=10).run(model, x, y)
        >>> bool(((res.x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all())
        True
        >>> res.step_size.shape, res.success.dtype
        (torch.Size([8]), torch.bool)
    """

    steps: int = 100
    random_start: bool = True
    rho: float = 0.75
    momentum: float = 0.75

    name: ClassVar[str] = "apgd"

    def __post_init__(self) -> None:
        what = type(self).__name__
        object.__setattr__(self, "loss", _resolve_loss(self.loss))
        norm = Norm.parse(self.norm)
        if norm not in (Norm.LINF, Norm.L2):
            raise ValueError(f"{what} supports norm 'linf' or 'l2', got {norm.value!r}")
        if self.alpha is not None:
            raise ValueError(f"{what} sets its own step size (2 eps, halved at checkpoints); "
                             f"alpha must be None, got {self.alpha!r}")
        if not isinstance(self.decay, (int, float)) or self.decay != 0:
            raise ValueError(f"{what} has its own momentum (the momentum field); decay must be "
                             f"0, got {self.decay!r}")
        if self.nesterov is not False:
            raise ValueError(f"{what} has no Nesterov look-ahead; nesterov must be False, got "
                             f"{self.nesterov!r}")
        if self.clip is not True:
            raise ValueError(f"{what} always projects onto the pixel box; clip must be True, "
                             f"got {self.clip!r}")
        eps = self.eps
        unbounded = bool(torch.isinf(eps).any()) if isinstance(eps, torch.Tensor) \
            else isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isinf(eps)
        if unbounded:
            raise ValueError(f"{what} needs a finite eps (its first step is 2 eps), got "
                             f"{eps!r}")
        for field_name in ("rho", "momentum"):
            v = getattr(self, field_name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise ValueError(f"{field_name} must be a number in (0, 1], got {v!r}")
            object.__setattr__(self, field_name, float(v))
        super().__post_init__()

    # -- one restart --------------------------------------------------------------------
    def _run_once(self, oracle: _Oracle, x: torch.Tensor, labels: torch.Tensor, goal: Goal,
                  generator: torch.Generator, record: bool) -> AttackResult:
        base = oracle.loss_fn
        objective = base if goal is Goal.UNTARGETED else _negated(base)
        with torch.no_grad():
            _, clean = oracle.loss_and_scores(x, labels)
        eps = self.threat.eps_tensor(x)
        run = self._attack_unfooled(oracle, x, labels, eps, clean, objective, goal,
                                    generator, record)
        return APGDResult(x_adv=run.x, loss=goal.sign * run.objective, logits=run.logits,
                          updates=run.updates, success=run.fooled, step_size=run.step)

    def _attack_unfooled(self, oracle: _Oracle, x: torch.Tensor, labels: torch.Tensor,
                         eps: torch.Tensor, clean: torch.Tensor, objective: Objective,
                         goal: Goal, generator: torch.Generator, record: bool) -> _Run:
        """Run APGD on the examples the clean input does not already fool; the others come
        back as they are (their objective evaluated on the clean logits)."""
        done = _success(goal)(clean, labels)
        if record or not bool(done.any()):
            return self._apgd(oracle, x, labels, eps, objective, goal, generator, record)
        todo = (~done).nonzero().squeeze(1)
        out = _Run(x=x.clone(), logits=clean.clone(),
                   objective=objective(clean, labels).detach(), fooled=done.clone(),
                   step=torch.full_like(eps, math.nan), updates=[])
        if todo.numel():
            sub = self._apgd(oracle, x[todo], labels[todo], eps[todo],
                             _subset_objective(objective, todo), goal, generator, False)
            out.x[todo] = sub.x
            out.logits[todo] = sub.logits
            out.objective[todo] = sub.objective
            out.fooled[todo] = sub.fooled
            out.step[todo] = sub.step
        return out

    # -- the APGD loop ------------------------------------------------------------------
    def _value_grad(self, oracle: _Oracle, x: torch.Tensor, labels: torch.Tensor,
                    objective: Objective) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(grad of objective.sum(), objective [N], logits [N, C])`` at ``x``: the means
        over ``eot_samples`` passes, from one forward and one backward pass each."""
        g, v, z = _pass(oracle, x, labels, objective)
        for _ in range(self.eot_samples - 1):
            g2, v2, z2 = _pass(oracle, x, labels, objective)
            # out of place: autograd may hand back an expanded (broadcast) gradient
            g, v, z = g + g2, v + v2, z + z2
        if self.eot_samples > 1:
            k = self.eot_samples
            g, v, z = g / k, v / k, z / k
        # one reduction decides the usual case: the sum is finite only if every entry is
        # (an overflowing sum of finite entries just takes the full check)
        if not bool(torch.isfinite(g.sum())):
            g = self._finite(g, oracle)
        return g, v, z

    def _start(self, x: torch.Tensor, e: torch.Tensor, generator: torch.Generator,
               project: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        dims = tuple(range(1, x.ndim))
        kw = {"device": x.device, "dtype": x.dtype, "generator": generator}
        if self.norm is Norm.LINF:
            t = torch.rand(x.shape, **kw).mul_(2).sub_(1)
            scale = t.abs().amax(dim=dims, keepdim=True)
        else:
            t = torch.randn(x.shape, **kw)
            scale = torch.linalg.vector_norm(t, dim=dims, keepdim=True)
        t.div_(scale.clamp_min_(_TINY)).mul_(e).add_(x)
        return project(t)

    def _apgd(self, oracle: _Oracle, x: torch.Tensor, labels: torch.Tensor,
              eps: torch.Tensor, objective: Objective, goal: Goal,
              generator: torch.Generator, record: bool) -> _Run:
        """Maximise ``objective`` from a start in the ball: the loop of the module docstring.
        All bookkeeping is in place in buffers allocated once."""
        n, nd = x.shape[0], x.ndim
        tm = ThreatModel(self.norm, eps, self.bounds)
        e = eps.reshape(-1, *([1] * (nd - 1)))
        if self.norm is Norm.LINF:
            # ball and box are both boxes: their intersection, once; each projection is a clamp
            lo, hi = self.bounds
            low, high = (x - e).clamp_min_(lo), (x + e).clamp_max_(hi)

            def project(z: torch.Tensor) -> torch.Tensor:
                return z.clamp_(low, high)
        else:
            def project(z: torch.Tensor) -> torch.Tensor:
                return tm.project(z, x)

        succeeded = _success(goal)
        x_k = self._start(x, e, generator, project)
        grad, obj, logits = self._value_grad(oracle, x_k, labels, objective)
        # best-objective point (and its gradient and logits); first fooling point
        best, x_best, g_best, z_best = obj.clone(), x_k.clone(), grad.clone(), logits.clone()
        fooled = succeeded(logits, labels)
        x_adv, z_adv, v_adv = x_k.clone(), logits.clone(), obj.clone()

        step = 2.0 * e
        checks = set(checkpoints(self.steps))
        last_check = 0
        rises = torch.zeros(n, dtype=torch.int64, device=x.device)
        best_at_check = best.clone()
        halved_at_check = torch.ones(n, dtype=torch.bool, device=x.device)  # (2) off at w_1
        x_prev, previous = x_k, obj
        updates: list[torch.Tensor] = []
        for k in range(self.steps):
            z_new = project(torch.addcmul(x_k, step, tm.step_direction(grad)))
            if k > 0 and self.momentum != 1.0:
                a = self.momentum
                # x_k + a (z - x_k) + (1 - a)(x_k - x_prev), in place in z's buffer
                z_new.mul_(a).add_(x_k, alpha=2.0 * (1.0 - a)).sub_(x_prev, alpha=1.0 - a)
                z_new = project(z_new)
            if record:
                updates.append(z_new - x_k)
            x_prev, x_k = x_k, z_new
            grad, obj, logits = self._value_grad(oracle, x_k, labels, objective)

            hit = succeeded(logits, labels)
            hit &= ~fooled
            if bool(hit.any()):
                fooled |= hit
                x_adv[hit] = x_k[hit]
                z_adv[hit] = logits[hit]
                v_adv[hit] = obj[hit]
            rises += obj > previous
            better = obj > best
            if bool(better.any()):
                best[better] = obj[better]
                x_best[better] = x_k[better]
                g_best[better] = grad[better]
                z_best[better] = logits[better]
            previous = obj

            if k + 1 in checks:
                halve = _halve_where(rises, k + 1 - last_check, self.rho, best, best_at_check,
                                     halved_at_check)
                last_check = k + 1
                halved_at_check = halve
                best_at_check.copy_(best)
                rises.zero_()
                if bool(halve.any()):
                    step[halve] *= 0.5
                    x_k[halve] = x_best[halve]
                    grad = torch.where(halve.reshape(e.shape), g_best, grad)
                    previous = torch.where(halve, best, previous)

        f = fooled.reshape(-1, *([1] * (nd - 1)))
        x_out = torch.where(f, x_adv, x_best)
        if nd == 4 and not x_out.is_contiguous() and x.is_contiguous():
            x_out = x_out.contiguous()  # NHWC (channels_last) -> the input's layout
        return _Run(x=x_out, logits=torch.where(fooled[:, None], z_adv, z_best),
                    objective=torch.where(fooled, v_adv, best), fooled=fooled,
                    step=step.reshape(-1), updates=updates)


def _rows(t: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    return t if idx is None else t[idx]


def _subset_objective(objective: Objective, idx: torch.Tensor) -> Objective:
    """An objective restricted to the examples ``idx`` (objectives that carry per-example
    data, like APGD-T's targets, expose it as ``subset``)."""
    subset = getattr(objective, "subset", None)
    return subset(idx) if subset is not None else objective


class _TargetedDLR:
    """APGD-T's untargeted-mode objective: :func:`dlr_targeted` towards fixed targets."""

    def __init__(self, target: torch.Tensor) -> None:
        self.target = target

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dlr_targeted(logits, labels, self.target)

    def subset(self, idx: torch.Tensor) -> _TargetedDLR:
        return _TargetedDLR(self.target[idx])


def _pass(oracle: _Oracle, x: torch.Tensor, labels: torch.Tensor, objective: Objective
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and one backward pass with the run's speed options: ``(grad, objective,
    logits)``."""
    return oracle.gradient_and_scores(x, labels, loss_fn=objective)


@dataclass(frozen=True, eq=False)
class APGDDLR(APGD):
    """APGD with the DLR loss, APGD-DLR (Croce & Hein, ICML 2020, Sec. 4): the loss is
    invariant to shifting and rescaling the logits, so a model cannot hide behind large or
    saturated logits. Needs at least 3 classes.

    Example:
        >>> import torch
        >>> from advlab.attacks.apgd import APGDDLR
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 3])
        >>> x_adv = APGDDLR(eps=0.1, steps=10)(model, x, y)
        >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
        True
    """

    loss: Any = dlr
    name: ClassVar[str] = "apgddlr"


@dataclass(frozen=True, eq=False)
class APGDT(APGD):
    """Targeted APGD with the targeted DLR loss, APGD-T (Croce & Hein, ICML 2020, Sec. 4;
    the AutoAttack version).

    Untargeted call (no ``target``): for each of the ``n_target_classes`` classes ranked
    highest by the clean logits after the label, in turn, run APGD ascending
    :func:`dlr_targeted` towards that class on the examples not fooled yet; each example keeps
    the first success, else the point of highest :func:`dlr` of its label over all targets.
    With ``restarts = R`` each target is tried R times. Call with ``target=``: one run towards
    the given targets, maximising :func:`dlr_targeted` with the strongest class other than the
    target in the label's place (the label itself while the model still predicts it).

    ``loss`` must stay :func:`dlr`: it scores the returned points (``AttackResult.loss``,
    the best of restarts); the attack itself always follows the targeted DLR loss. Needs at
    least 4 classes; with fewer than ``n_target_classes + 1`` classes every other class is
    a target once.

    Example:
        >>> import torch
        >>> from advlab.attacks.apgd import APGDT
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 3])
        >>> x_adv = APGDT(eps=0.1, steps=10, n_target_classes=3)(model, x, y)
        >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
        True
    """

    loss: Any = dlr
    n_target_classes: int = 9
    name: ClassVar[str] = "apgdt"

    def __post_init__(self) -> None:
        positive_int("n_target_classes", self.n_target_classes)
        if _resolve_loss(self.loss) is not dlr:
            raise ValueError(f"APGDT follows the targeted DLR loss and scores its points with "
                             f"dlr; loss must stay 'dlr', got {self.loss!r}")
        super().__post_init__()

    def _run_once(self, oracle: _Oracle, x: torch.Tensor, labels: torch.Tensor, goal: Goal,
                  generator: torch.Generator, record: bool) -> AttackResult:
        if goal is Goal.TARGETED:
            with torch.no_grad():
                _, clean = oracle.loss_and_scores(x, labels)
            eps = self.threat.eps_tensor(x)
            run = self._attack_unfooled(oracle, x, labels, eps, clean, _toward, goal,
                                        generator, record)
            return APGDResult(x_adv=run.x, loss=dlr(run.logits, labels), logits=run.logits,
                              updates=run.updates, success=run.fooled, step_size=run.step)
        if record:
            raise ValueError("record=True needs one run per example; APGDT without target "
                             "makes several (one per target class): pass target=... or use "
                             "APGD")
        with torch.no_grad():
            _, clean = oracle.loss_and_scores(x, labels)
        n_classes = clean.shape[1]
        if n_classes < 4:
            raise ValueError(f"APGDT needs a model with at least 4 classes (the targeted DLR "
                             f"loss), got {n_classes}")
        n_targets = min(self.n_target_classes, n_classes - 1)
        # targets: the other classes by decreasing clean logit (the label ranked last)
        ranked = clean.scatter(1, labels[:, None], float("-inf")).argsort(
            dim=1, descending=True)[:, :n_targets]
        eps = self.threat.eps_tensor(x)
        succeeded = _success(goal)
        fooled = succeeded(clean, labels)
        x_out, z_out = x.clone(), clean.clone()
        score = dlr(clean, labels)
        step = torch.full_like(eps, math.nan)
        for r in range(n_targets):
            todo = (~fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            rows = None if todo.numel() == x.shape[0] else todo
            lab = _rows(labels, rows)
            run = self._apgd(oracle, _rows(x, rows), lab, _rows(eps, rows),
                             _TargetedDLR(_rows(ranked[:, r], rows)), goal, generator, False)
            s = dlr(run.logits, lab)
            # among examples not fooled before: a success wins; otherwise a higher DLR
            take = run.fooled | (s > _rows(score, rows)) if r else torch.ones_like(run.fooled)
            idx = todo[take]
            x_out[idx] = run.x[take]
            z_out[idx] = run.logits[take]
            score[idx] = s[take]
            fooled[idx] = run.fooled[take]
            step[idx] = run.step[take]
        return APGDResult(x_adv=x_out, loss=score, logits=z_out, success=fooled,
                          step_size=step)
