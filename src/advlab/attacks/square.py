"""Square Attack: a gradient-free, score-based attack by random search.

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020 (arXiv:1912.00049).

The attack only reads the model's scores, never its gradients, so gradient masking does not
stop it: it is the audit's check that a defence is not hiding behind broken gradients. Each
iteration proposes one change of a random square window and keeps it only if it lowers the
loss (random search). For every example still to be fooled:

* **Linf** (Algorithm 2 of the paper). Start from *vertical stripes*: every column of every
  channel moves by ``+eps`` or ``-eps`` (one random sign per column). A proposal sets a random
  ``s x s`` window of every channel to ``x +- eps`` (one random sign per channel and window),
  so the perturbation always sits on a vertex of the eps-ball; a proposal that would not
  change the current point is redrawn.
* **L2** (Algorithm 3). Start from a 5 x 5 grid of "pseudo-Gaussian" bumps with random signs,
  rescaled to norm eps. A proposal moves the perturbation mass of a second random window into
  the first one, adds a new bump there and rescales the whole perturbation to norm eps.

The window side is ``s = round(sqrt(p * H * W))`` where the fraction ``p`` follows the paper's
piecewise-constant schedule (:func:`p_schedule`): ``p_init`` halved at 10, 50, 200, 500, 1000,
2000, 4000, 6000 and 8000 iterations out of 10000, rescaled to the query budget (the break
points of the authors' reference code). The default ``p_init`` is the paper's choice for
standard models: 0.05 for Linf and 0.1 for L2; robust models need larger values (the authors
use 0.3 to 0.8 on robust MNIST models, AutoAttack uses 0.8).

The loss is the margin on the logits: ``z_y - max_{j != y} z_j`` for an untargeted attack
(minimised until it is negative, i.e. the prediction changed) and ``max_{j != t} z_j - z_t``
for a targeted one (until the target wins). ``loss="ce"`` minimises the cross-entropy of the
target instead (the paper's choice for targeted attacks) or the negative cross-entropy of the
label. An example stops being queried as soon as it is fooled. For randomised models
``eot_samples = k`` averages the loss over ``k`` forward passes per query.

The attack never changes the caller's state (DESIGN rule 6): it runs the model in eval mode
by default and restores every module's mode, never asks for gradients, never writes into its
inputs, never moves the model and draws all randomness from a local ``torch.Generator``.

Example:
    >>> import torch
    >>> from advlab.attacks.square import SquareAttack
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    >>> x_adv = SquareAttack(eps=0.1, n_queries=50)(model, x, y)
    >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all()), bool(x_adv.min() >= 0)
    (True, True)
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advlab._check import positive_int
from advlab._progress import progress as _progress
from advlab.attacks._score import (
    ScoreQueries,
    batch_view,
    random_signs,
    validate_config,
)
from advlab.attacks.base import AttackResult, model_mode, prepare_run, probe_model
from advlab.attacks.losses import Goal
from advlab.threat import Norm, ThreatModel

__all__ = ["SquareAttack", "SquareResult", "p_schedule", "DEFAULT_P_INIT"]

log = logging.getLogger(__name__)

#: The paper's ``p_init`` for standard (not adversarially trained) models.
DEFAULT_P_INIT = {Norm.LINF: 0.05, Norm.L2: 0.1}

# Iterations (out of 10000) after which p is halved once more (authors' reference code).
_HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_MAX_REDRAWS = 10  # Linf: redraw the signs of a proposal that would change nothing
_UNCHANGED = 1e-7
_TINY = 1e-12
_LOSSES = ("margin", "ce")


def p_schedule(p_init: float, iteration: int, n_iters: int) -> float:
    """The fraction of pixels changed at ``iteration`` (0-based) of ``n_iters``.

    ``p_init`` is halved each time ``iteration / n_iters * 10000`` passes one of
    10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 (Andriushchenko et al., ECCV 2020).

    Example:
        >>> [p_schedule(0.8, i, 10000) for i in (0, 11, 51, 9000)]
        [0.8, 0.4, 0.2, 0.0015625]
    """
    t = int(iteration / max(n_iters, 1) * 10000)
    halvings = sum(t > b for b in _HALVING_POINTS)
    return p_init / 2**halvings


@dataclass
class SquareResult(AttackResult):
    """An :class:`~advlab.attacks.base.AttackResult` with the query bookkeeping.

    Attributes:
        queries: model queries spent per example after the clean check (the initialisation
            counts as one; each query is ``eot_samples`` forward passes), shape [N].
        success: whether each example is fooled (by the averaged margin), shape [N].
        margin: final margin per example (negative = fooled), shape [N].
    """

    queries: torch.Tensor | None = None
    success: torch.Tensor | None = None
    margin: torch.Tensor | None = None


def _pyramid(rows: int, cols: int) -> torch.Tensor:
    """Nested rectangles around the centre, ring ``k`` weighted ``sum_{j>=k} 1/(j+1)^2``."""
    if rows < 1 or cols < 1:
        return torch.zeros(max(rows, 0), max(cols, 0), dtype=torch.float64)
    ci, cj = rows // 2, cols // 2
    ring = torch.maximum((torch.arange(rows)[:, None] - ci).abs(),
                         (torch.arange(cols)[None, :] - cj).abs())
    n_rings = max(ci, cj) + 1
    weights = 1.0 / torch.arange(1, n_rings + 1, dtype=torch.float64) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{j >= k} w_j
    return tail[ring]


def l2_bump(s: int) -> torch.Tensor:
    """The L2 update shape of side ``s`` (unit L2 norm, float64): the top half a centred
    pyramid, the bottom half its negative (Andriushchenko et al. 2020, Sec. 3.2).

    Example:
        >>> b = l2_bump(5)
        >>> round(float(b.norm()), 6), bool(b[:2].min() > 0), bool(b[2:].max() < 0)
        (1.0, True, True)
    """
    if s < 2:
        return torch.ones(max(s, 1), max(s, 1), dtype=torch.float64)
    top = _pyramid(s // 2, s)
    bottom = -_pyramid(s - s // 2, s)
    top = top / top.norm()
    bottom = bottom / bottom.norm()
    bump = torch.cat([top, bottom], dim=0)
    return bump / bump.norm()


def _window_index(r: torch.Tensor, c: torch.Tensor, s: int, channels: int):
    """Advanced-indexing tuple selecting an ``s x s`` window at per-example corners."""
    m = r.shape[0]
    ar = torch.arange(s, device=r.device)
    bi = torch.arange(m, device=r.device)[:, None, None, None]
    ci = torch.arange(channels, device=r.device)[None, :, None, None]
    ri = (r[:, None] + ar)[:, None, :, None]
    ki = (c[:, None] + ar)[:, None, None, :]
    return bi, ci, ri, ki


def _window_mask(r: torch.Tensor, c: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    rows = torch.arange(h, device=r.device)[None, :]
    cols = torch.arange(w, device=r.device)[None, :]
    in_r = (rows >= r[:, None]) & (rows < r[:, None] + s)
    in_c = (cols >= c[:, None]) & (cols < c[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]  # [m, 1, h, w]


@dataclass(frozen=True, eq=False)
class SquareAttack:
    """Square Attack (Andriushchenko et al., ECCV 2020): random search over square windows.

    Args:
        eps: radius of the threat model (float >= 0, or a 1-D tensor of per-example radii).
        norm: ``"linf"`` (default) or ``"l2"``.
        n_queries: query budget per example after the clean check (the initialisation is the
            first query); examples stop being queried once fooled.
        p_init: initial fraction of pixels changed per query; None means the paper's default
            for standard models (0.05 for Linf, 0.1 for L2). Use larger values (0.3--0.8)
            against robust models.
        loss: ``"margin"`` (default; logit margin) or ``"ce"`` (cross-entropy).
        eot_samples: forward passes averaged per query (for randomised models).
        seed: seed of the local generator (None: nondeterministic).
        bounds: valid pixel range (default ``(0, 1)``).
        model_mode: ``"eval"`` (default), ``"train"`` or ``"keep"``; restored afterwards.

    Inputs must be image batches ``[N, C, H, W]`` with ``H, W >= 2``.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
        >>> res = SquareAttack(eps=0.5, norm="l2", n_queries=20, seed=1).run(model, x, y)
        >>> bool(((res.x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all())
        True
    """

    eps: float | torch.Tensor
    norm: Norm | str = Norm.LINF
    n_queries: int = 1000
    p_init: float | None = None
    loss: str = "margin"
    eot_samples: int = 1
    seed: int | None = 0
    bounds: tuple[float, float] = (0.0, 1.0)
    model_mode: str = "eval"

    name: ClassVar[str] = "square"
    #: ``run`` takes ``generator=`` (the attack protocol of :mod:`advlab.attacks`).
    accepts_generator: ClassVar[bool] = True

    def __post_init__(self) -> None:
        tm = validate_config(self, (Norm.LINF, Norm.L2), "the Square Attack")
        positive_int("n_queries", self.n_queries)
        if self.p_init is not None:
            p = self.p_init
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
                raise ValueError(f"p_init must be a number in (0, 1], got {p!r}")
            object.__setattr__(self, "p_init", float(p))
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {list(_LOSSES)}, got {self.loss!r}")
        if tm.norm is Norm.L2:
            eps = tm.eps
            inf = bool(torch.isinf(eps).any()) if isinstance(eps, torch.Tensor) \
                else math.isinf(eps)
            if inf:
                raise ValueError("eps must be finite for the L2 Square Attack, got inf")

    # -- public API ---------------------------------------------------------------------
    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(self.norm, self.eps, self.bounds)

    @property
    def p_start(self) -> float:
        """``p_init`` with the norm's default filled in."""
        return self.p_init if self.p_init is not None else DEFAULT_P_INIT[self.norm]

    def replace(self, **changes: Any) -> SquareAttack:
        """A copy with some fields changed (configs are frozen)."""
        return dataclasses.replace(self, **changes)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial examples for ``x``; untargeted on labels ``y`` unless ``target``."""
        return self.run(model, x, y, target=target).x_adv

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None = None, *, generator: torch.Generator | None = None,
            progress: bool = False) -> SquareResult:
        """Run the attack and return a :class:`SquareResult`.

        Args:
            model: classifier mapping ``[N, C, H, W]`` to logits ``[N, K]``.
            x: inputs inside ``bounds``; never modified.
            y: true labels ``[N]``.
            target: target labels ``[N]`` for a targeted attack, else None.
            generator: a ``torch.Generator`` on ``x``'s device (overrides ``seed``).
            progress: show a progress bar over the queries.
        """
        x, labels, goal, checks, generator = prepare_run(self, model, x, y, target, generator)
        if x.ndim != 4 or x.shape[-1] < 2 or x.shape[-2] < 2:
            raise ValueError(f"the Square Attack needs image batches [N, C, H, W] with H, W >= 2, "
                             f"got shape {tuple(x.shape)}")
        with model_mode(model, self.model_mode):
            probe_model(model, x, checks)
            return self._search(model, x, labels, goal, generator, progress)

    # -- the random search --------------------------------------------------------------
    def _search(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor, goal: Goal,
                generator: torch.Generator, progress: bool) -> SquareResult:
        n = x.shape[0]
        tm = self.threat
        eps = tm.eps_tensor(x)
        query = ScoreQueries(model, goal, self.loss, self.eot_samples)

        # clean check: examples already fooled are returned unchanged
        margin, best_obj, best_logits = query(x, labels)
        x_best = x.clone()
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        active = (margin >= 0).nonzero().squeeze(1)
        if active.numel():
            xa, ea = x[active], eps[active]
            init = self._init_linf(xa, ea, generator) if self.norm is Norm.LINF \
                else self._init_l2(xa, ea, generator)
            m0, o0, z0 = query(init, labels[active])
            x_best[active], margin[active] = init, m0
            best_obj[active], best_logits[active] = o0, z0
            queries[active] += 1

        n_iters = self.n_queries
        steps = _progress(range(1, n_iters), enabled=progress, desc="square",
                          total=n_iters - 1)
        for it in steps:
            active = (margin >= 0).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            p = p_schedule(self.p_start, it - 1, n_iters)
            xa, xb, ea = x[active], x_best[active], eps[active]
            if self.norm is Norm.LINF:
                cand = self._propose_linf(xa, xb, ea, p, generator)
            else:
                cand = self._propose_l2(xa, xb, ea, p, generator)
            m, o, z = query(cand, labels[active])
            queries[active] += 1
            take = (o < best_obj[active]) | (m < 0)
            idx = active[take]
            x_best[idx], margin[idx] = cand[take], m[take]
            best_obj[idx], best_logits[idx] = o[take], z[take]
            if log.isEnabledFor(logging.DEBUG) and it % 100 == 0:
                log.debug("square query %d/%d: %d of %d examples still to fool", it, n_iters,
                          int((margin >= 0).sum()), n)
        x_adv = tm.project(x_best, x).detach()
        return SquareResult(x_adv=x_adv, loss=best_obj, logits=best_logits, queries=queries,
                            success=margin < 0, margin=margin)

    @staticmethod
    def _side(p: float, h: int, w: int) -> int:
        s = int(round(math.sqrt(p * h * w)))
        return min(max(s, 1), min(h, w) - 1)

    @staticmethod
    def _corners(m: int, s: int, h: int, w: int, generator: torch.Generator,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        r = torch.randint(0, h - s + 1, (m,), generator=generator, device=device)
        c = torch.randint(0, w - s + 1, (m,), generator=generator, device=device)
        return r, c

    # Linf ----------------------------------------------------------------------------------
    def _init_linf(self, x: torch.Tensor, eps: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
        """Vertical stripes: one random sign per (example, channel, column)."""
        m, c, _, w = x.shape
        stripes = random_signs((m, c, 1, w), generator, x) * batch_view(eps, 4)
        return (x + stripes).clamp(*self.bounds)

    def _propose_linf(self, x: torch.Tensor, x_best: torch.Tensor, eps: torch.Tensor,
                      p: float, generator: torch.Generator) -> torch.Tensor:
        m, c, h, w = x.shape
        s = self._side(p, h, w)
        r, col = self._corners(m, s, h, w, generator, x.device)
        mask = _window_mask(r, col, s, h, w)
        delta = x_best - x
        e = batch_view(eps, 4)
        signs = random_signs((m, c, 1, 1), generator, x)
        cand = (x + torch.where(mask, signs * e, delta)).clamp(*self.bounds)
        redo = torch.arange(m, device=x.device)
        for _ in range(_MAX_REDRAWS):
            # a proposal equal to the current point inside its window wastes a query: redraw
            same = (((cand[redo] - x_best[redo]).abs() < _UNCHANGED) | ~mask[redo])
            redo = redo[same.flatten(1).all(dim=1)]
            if redo.numel() == 0:
                break
            fresh = random_signs((redo.numel(), c, 1, 1), generator, x) * e[redo]
            cand[redo] = (x[redo] + torch.where(mask[redo], fresh, delta[redo])
                          ).clamp(*self.bounds)
        return cand

    # L2 ------------------------------------------------------------------------------------
    def _init_l2(self, x: torch.Tensor, eps: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        """A grid of (up to) 5 x 5 bumps with random signs per channel, norm eps."""
        m, c, h, w = x.shape
        t = max(min(h, w) // 5, 1)
        bump = l2_bump(t).to(x)
        n_r, n_c = min(5, h // t), min(5, w // t)
        r0, c0 = (h - t * n_r) // 2, (w - t * n_c) // 2
        delta = torch.zeros_like(x)
        for i in range(n_r):
            for j in range(n_c):
                signs = random_signs((m, c, 1, 1), generator, x)
                rs, cs = r0 + i * t, c0 + j * t
                delta[:, :, rs:rs + t, cs:cs + t] += bump * signs
        return self._to_sphere(x, delta, eps)

    def _to_sphere(self, x: torch.Tensor, delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``clip(x + eps * delta / ||delta||)``, shrunk toward ``x`` if rounding overshoots."""
        norms = delta.flatten(1).norm(dim=1).clamp_min(_TINY)
        out = (x + delta * batch_view(eps / norms, 4)).clamp(*self.bounds)
        dist = (out - x).flatten(1).norm(dim=1)
        shrink = torch.where(dist > eps, eps / dist.clamp_min(_TINY), torch.ones_like(dist))
        return x + (out - x) * batch_view(shrink, 4)

    def _propose_l2(self, x: torch.Tensor, x_best: torch.Tensor, eps: torch.Tensor,
                    p: float, generator: torch.Generator) -> torch.Tensor:
        m, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s += 1 - s % 2  # odd side
        s = max(min(s, min(h, w) - 1), 1)
        r1, c1 = self._corners(m, s, h, w, generator, x.device)
        r2, c2 = self._corners(m, s, h, w, generator, x.device)
        mask1 = _window_mask(r1, c1, s, h, w)
        mask2 = _window_mask(r2, c2, s, h, w)
        delta = (x_best - x).clone()
        win1 = _window_index(r1, c1, s, c)
        old = delta[win1]  # [m, c, s, s]
        norm_img = delta.flatten(1).norm(dim=1)  # [m]
        norm_old = old.flatten(2).norm(dim=2)  # [m, c]
        norm_union = (delta * (mask1 | mask2)).flatten(2).norm(dim=2)  # [m, c]

        bump = l2_bump(s).to(x)
        flip = torch.rand((m,), generator=generator, device=x.device) < 0.5
        bumps = torch.where(flip[:, None, None], bump.t()[None], bump[None])  # [m, s, s]
        signs = random_signs((m, c, 1, 1), generator, x)
        new = bumps[:, None] * signs + old / (norm_old[..., None, None] + 1e-10)
        budget = ((eps**2 - norm_img**2).clamp_min(0)[:, None] / c + norm_union**2).sqrt()
        new = new / new.flatten(2).norm(dim=2).clamp_min(_TINY)[..., None, None] \
            * budget[..., None, None]
        delta = torch.where(mask2, torch.zeros_like(delta), delta)
        delta[win1] = new
        return self._to_sphere(x, delta, eps)
