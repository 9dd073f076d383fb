"""The one attack loop shared by FGSM, I-FGSM, PGD, MI-FGSM and NI-FGSM.

Every gradient attack in advlab is this loop with other defaults (Dong et al., CVPR 2018,
Algorithm 1, which contains the others as special cases)::

    x_0 = x                      (or a uniform random point of the eps-ball: PGD)
    g_0 = 0
    repeat T times:
        x_look = x_t + s * alpha * mu * g_t          (only with nesterov=True: NI-FGSM)
        grad   = E_noise[ grad_x J(x_look, label) ]   (EOT: mean of k gradients)
        g_t+1  = mu * g_t + grad / ||grad||_1         (per example; zero-safe)
        x_t+1  = Proj_{ball & box}( x_t + s * alpha * dir(g_t+1) )

with ``s = +1`` for an untargeted attack (ascend the loss of the true label) and ``s = -1``
for a targeted one (descend the loss of the target label), and ``dir`` the steepest
ascent direction of the norm (``sign`` for Linf, ``g / ||g||_2`` for L2). With ``mu = 0``
the division by ``||grad||_1`` is a positive per-example scale, so the step equals
I-FGSM's ``sign(grad)`` -- which is why I-FGSM *is* MI-FGSM with ``mu = 0`` here, bit for bit.

The loop never changes the caller's state: it runs the model in eval mode by default and
restores every module's mode, takes gradients only with respect to the input (no
``.grad`` on parameters), never writes into its inputs, never moves the model and draws
all randomness from a local ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from advlab.attacks.losses import Goal, get_loss
from advlab.threat import Norm, ThreatModel

__all__ = ["Attack", "AttackResult", "model_mode", "check_model_device"]

log = logging.getLogger(__name__)

_MODES = ("eval", "train", "keep")


@dataclass
class AttackResult:
    """What one attack run returns.

    Attributes:
        x_adv: adversarial examples, same shape/dtype/device as the input, no grad.
        loss: final per-example attack loss (of the label or the target), shape [N].
        logits: the model's scores on ``x_adv`` from the last evaluation (None when the run
            did not need a final forward pass).
        updates: with ``record=True``, the perturbation added at each step
            (``x_{t+1} - x_t``), a list of T tensors; used for the cosine-similarity study.
    """

    x_adv: torch.Tensor
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    updates: list[torch.Tensor] = field(default_factory=list)


@contextlib.contextmanager
def model_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Temporarily put ``model`` in ``"eval"`` or ``"train"`` mode (``"keep"``: unchanged),
    then restore the exact training flag of every submodule."""
    if mode not in _MODES:
        raise ValueError(f"model_mode must be one of {_MODES}, got {mode!r}")
    saved = [(m, m.training) for m in model.modules()]
    try:
        if mode == "eval":
            model.eval()
        elif mode == "train":
            model.train()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def check_model_device(model: nn.Module, x: torch.Tensor) -> None:
    """Raise if the model's parameters/buffers live on another device than ``x``."""
    for t in list(model.parameters(recurse=True))[:1] + list(model.buffers(recurse=True))[:1]:
        if t.device != x.device:
            raise ValueError(
                f"model is on {t.device} but the inputs are on {x.device}; move one of them "
                f"(advlab never moves your model)")


def _check_int_labels(name: str, y: Any, n: int) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} entries but x has {n} examples")
    return y.long()


def _check_labels_range(name: str, y: torch.Tensor, num_classes: int) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes - 1}] for a model with "
                         f"{num_classes} classes, got values in [{int(y.min())}, {int(y.max())}]")


def _l1_normalise(g: torch.Tensor) -> torch.Tensor:
    l1 = g.abs().reshape(g.shape[0], -1).sum(dim=1)
    l1 = torch.where(l1 > 0, l1, torch.ones_like(l1))
    return g / l1.reshape(-1, *([1] * (g.ndim - 1)))


@dataclass(frozen=True, eq=False)
class Attack:
    """A gradient attack: the shared loop above with a set of defaults.

    Use the presets (:class:`~advlab.attacks.FGSM`, :class:`~advlab.attacks.IFGSM`,
    :class:`~advlab.attacks.PGD`, :class:`~advlab.attacks.MIFGSM`,
    :class:`~advlab.attacks.NIFGSM`) rather than this class directly.

    Args:
        eps: radius of the threat model (float >= 0 or a per-example 1-D tensor).
        norm: :class:`~advlab.threat.Norm` or ``"linf"`` / ``"l2"`` / ``"l1"``.
        steps: number of iterations T (>= 1).
        alpha: step size; ``None`` means the preset's default (``eps / T`` for I-FGSM and
            MI-FGSM, ``eps`` for FGSM, ``2.5 * eps / T`` for PGD).
        decay: momentum decay factor mu (>= 0); 0 disables momentum.
        random_start: start from a uniform random point of the ball (PGD).
        restarts: number of runs; the worst case per example is kept (>= 1).
        nesterov: evaluate the gradient at the look-ahead point (NI-FGSM).
        loss: ``"ce"`` (default), ``"cw"`` or a callable ``(logits, labels) -> [N]``.
        eot_samples: gradients averaged per step (expectation over transformation, for
            models whose output is random; Athalye et al., ICML 2018).
        model_mode: ``"eval"`` (default), ``"train"`` or ``"keep"``; restored afterwards.
        bounds: valid pixel range (default ``(0, 1)``).
        seed: seed of the local generator for random starts (None: nondeterministic).
        clip: clip to ``bounds`` after every step (default True). ``False`` exists only to
            reproduce flawed evaluations that forgot to clip; the eps-ball still holds.
    """

    eps: float | torch.Tensor
    norm: Norm | str = Norm.LINF
    steps: int = 10
    alpha: float | None = None
    decay: float = 0.0
    random_start: bool = False
    restarts: int = 1
    nesterov: bool = False
    loss: Any = "ce"
    eot_samples: int = 1
    model_mode: str = "eval"
    bounds: tuple[float, float] = (0.0, 1.0)
    seed: int | None = 0
    clip: bool = True

    name: ClassVar[str] = "attack"
    alpha_factor: ClassVar[float] = 1.0  # default alpha = alpha_factor * eps / steps

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", Norm.parse(self.norm))
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) \
                or self.restarts < 1:
            raise ValueError(f"restarts must be an integer >= 1, got {self.restarts!r}")
        if isinstance(self.eot_samples, bool) or not isinstance(self.eot_samples, int) \
                or self.eot_samples < 1:
            raise ValueError(f"eot_samples must be an integer >= 1, got {self.eot_samples!r}")
        if not isinstance(self.decay, (int, float)) or math.isnan(self.decay) or self.decay < 0:
            raise ValueError(f"decay must be >= 0, got {self.decay!r}")
        if self.model_mode not in _MODES:
            raise ValueError(f"model_mode must be one of {_MODES}, got {self.model_mode!r}")
        get_loss(self.loss)
        # Validates eps and bounds (raises with the bad value).
        tm = ThreatModel(self.norm, self.eps, self.bounds)
        object.__setattr__(self, "eps", tm.eps)
        if self.alpha is not None:
            if not isinstance(self.alpha, (int, float)) or not (self.alpha > 0) \
                    or not math.isfinite(self.alpha):
                raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        elif isinstance(tm.eps, float) and math.isinf(tm.eps):
            raise ValueError("alpha must be given explicitly when eps is unbounded (inf)")

    # -- public API ---------------------------------------------------------------------
    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(self.norm, self.eps, self.bounds)

    def replace(self, **changes: Any) -> Attack:
        """A copy with some fields changed (configs are frozen)."""
        return dataclasses.replace(self, **changes)

    def step_size(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example step size alpha, shape [N]."""
        if self.alpha is not None:
            return torch.full((x.shape[0],), float(self.alpha), device=x.device, dtype=x.dtype)
        return self.threat.eps_tensor(x) * (self.alpha_factor / self.steps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial examples for ``x``; untargeted on labels ``y`` unless ``target``."""
        return self.run(model, x, y, target=target).x_adv

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None = None, *, record: bool = False,
            generator: torch.Generator | None = None) -> AttackResult:
        """Run the attack and return an :class:`AttackResult`.

        Args:
            model: classifier mapping ``x`` to logits ``[N, C]``, or an
                :class:`~advlab.attacks.Ensemble`.
            x: inputs ``[N, ...]`` inside ``bounds``; never modified.
            y: true labels ``[N]`` (integers).
            target: target labels ``[N]`` for a targeted attack, else None.
            record: keep the per-step perturbation updates.
            generator: a ``torch.Generator`` on ``x``'s device (overrides ``seed``).
        """
        x = self._check_inputs(model, x)
        y = _check_int_labels("y", y, x.shape[0])
        if target is not None:
            target = _check_int_labels("target", target, x.shape[0])
        goal = Goal.TARGETED if target is not None else Goal.UNTARGETED
        labels = (target if target is not None else y).to(x.device)
        checks = {"y": y} if target is None else {"y": y, "target": target}
        if generator is None:
            generator = torch.Generator(device=x.device)
            if self.seed is None:
                generator.seed()
            else:
                generator.manual_seed(self.seed)

        with model_mode(model, self.model_mode):
            self._probe(model, x, checks)
            best: AttackResult | None = None
            for _ in range(self.restarts):
                res = self._run_once(model, x, labels, goal, generator, record)
                if self.restarts == 1:
                    return res
                res = self._final_eval(model, res, labels)
                best = res if best is None else self._keep_best(best, res, labels, goal)
            return best

    # -- the loop -----------------------------------------------------------------------
    def _check_inputs(self, model: nn.Module, x: Any) -> torch.Tensor:
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
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"x contains {bad} NaN or infinite values; expected finite pixels")
        lo, hi = self.bounds
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo or xmax > hi:
            raise ValueError(f"x must lie in the box [{lo}, {hi}], got values in "
                             f"[{xmin:.6g}, {xmax:.6g}] (normalise inside the model, "
                             f"not before the attack)")
        if isinstance(self.eps, torch.Tensor) and self.eps.shape[0] != x.shape[0]:
            raise ValueError(f"eps has {self.eps.shape[0]} per-example radii but x has "
                             f"{x.shape[0]} examples")
        check_model_device(model, x)
        return x.detach()

    def _loss_and_scores(self, model: nn.Module, x: torch.Tensor,
                         labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss_fn = get_loss(self.loss)
        hook = getattr(model, "attack_loss", None)
        if hook is not None:
            return hook(x, labels, loss_fn)
        scores = model(x)
        return loss_fn(scores, labels), scores

    @torch.no_grad()
    def _probe(self, model: nn.Module, x: torch.Tensor, checks: dict[str, torch.Tensor]) -> None:
        """Check the model's output and the labels on one example before the real work."""
        scores = model(x[:1])
        if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.shape[0] != 1:
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise ValueError(f"model output must be logits of shape [N, C]; for a batch of 1 "
                             f"expected [1, C], got {shape}")
        for name, lab in checks.items():
            _check_labels_range(name, lab, scores.shape[1])
        with torch.no_grad():
            s = scores.detach()
            if s.shape[1] > 1 and (s >= 0).all() and \
                    torch.allclose(s.sum(dim=1), torch.ones_like(s[:, 0]), atol=1e-4):
                warnings.warn(
                    "model outputs look like probabilities (non-negative rows summing to 1); "
                    "attacks expect logits — return logits or the loss gradient will be "
                    "weak/vanishing", UserWarning, stacklevel=4)

    def _gradient(self, model: nn.Module, x_in: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad = None
        loss_sum = None
        for _ in range(self.eot_samples):
            xi = x_in.detach().requires_grad_(True)
            with torch.enable_grad():
                loss, scores = self._loss_and_scores(model, xi, labels)
                (g,) = torch.autograd.grad(loss.sum(), xi)
            grad = g if grad is None else grad + g
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        if self.eot_samples > 1:
            grad = grad / self.eot_samples
            loss_sum = loss_sum / self.eot_samples
        return grad, loss_sum

    def _run_once(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, goal: Goal,
                  generator: torch.Generator, record: bool) -> AttackResult:
        tm = self.threat
        nd = x.ndim
        alpha = self.step_size(x).reshape(-1, *([1] * (nd - 1)))
        s = goal.sign
        x_adv = tm.random_init(x, generator) if self.random_start else x.clone()
        if not self.clip:
            # unclipped protocol: only the ball applies (reproduces flawed evaluations)
            tm = ThreatModel(self.norm, self.eps, (-1e30, 1e30))
        g = torch.zeros_like(x)
        updates: list[torch.Tensor] = []
        loss = None
        for _ in range(self.steps):
            x_look = x_adv + (s * self.decay) * alpha * g if self.nesterov else x_adv
            grad, loss = self._gradient(model, x_look, labels)
            g = self.decay * g + _l1_normalise(grad)
            x_new = tm.project(x_adv + s * alpha * tm.step_direction(g), x)
            if record:
                updates.append((x_new - x_adv).detach())
            x_adv = x_new
        return AttackResult(x_adv=x_adv.detach(), loss=loss, updates=updates)

    def _final_eval(self, model: nn.Module, res: AttackResult,
                    labels: torch.Tensor) -> AttackResult:
        with torch.no_grad():
            loss, scores = self._loss_and_scores(model, res.x_adv, labels)
        return dataclasses.replace(res, loss=loss, logits=scores)

    @staticmethod
    def _keep_best(best: AttackResult, new: AttackResult, labels: torch.Tensor,
                   goal: Goal) -> AttackResult:
        pred_b, pred_n = best.logits.argmax(1), new.logits.argmax(1)
        if goal is Goal.UNTARGETED:
            ok_b, ok_n = pred_b != labels, pred_n != labels
        else:
            ok_b, ok_n = pred_b == labels, pred_n == labels
        better_loss = goal.sign * new.loss > goal.sign * best.loss
        take = (ok_n & ~ok_b) | ((ok_n == ok_b) & better_loss)
        nd = best.x_adv.ndim
        sel = take.reshape(-1, *([1] * (nd - 1)))
        return AttackResult(
            x_adv=torch.where(sel, new.x_adv, best.x_adv),
            loss=torch.where(take, new.loss, best.loss),
            logits=torch.where(take[:, None], new.logits, best.logits),
            updates=new.updates if take.all() else best.updates,
        )
