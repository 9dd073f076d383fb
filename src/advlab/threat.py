"""Threat models: the set of allowed perturbations, as a typed value.

A :class:`ThreatModel` is a norm (:class:`Norm`), a radius ``eps`` (a float, or a tensor
with one radius per example) and the box of valid pixel values (default ``[0, 1]``).
It knows how to project onto the eps-ball intersected with the box, the steepest
ascent direction for its norm, and how to draw a uniform random start in the ball.

Example:
    >>> import torch
    >>> from advlab.threat import Norm, ThreatModel
    >>> tm = ThreatModel(Norm.LINF, eps=0.1)
    >>> x = torch.full((2, 1, 2, 2), 0.5)
    >>> x_adv = tm.project(x + 0.3, x)
    >>> float((x_adv - x).abs().max())  # doctest: +ELLIPSIS
    0.1...
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

__all__ = ["Norm", "ThreatModel", "per_example_norm"]

_TINY = 1e-12


class Norm(enum.Enum):
    """The Lp norm that bounds a perturbation."""

    LINF = "linf"
    L2 = "l2"
    L1 = "l1"

    @classmethod
    def parse(cls, value: Norm | str) -> Norm:
        """Accept a :class:`Norm` or one of ``"linf"``, ``"inf"``, ``"l2"``, ``"l1"``."""
        if isinstance(value, Norm):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            aliases = {"linf": cls.LINF, "inf": cls.LINF, "l_inf": cls.LINF,
                       "l2": cls.L2, "2": cls.L2, "l1": cls.L1, "1": cls.L1}
            if key in aliases:
                return aliases[key]
        raise ValueError(f"norm must be one of 'linf', 'l2', 'l1' (or a Norm), got {value!r}")


def _view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-example vector [N] so it broadcasts against an [N, ...] batch."""
    return v.reshape(v.shape[0], *([1] * (ndim - 1)))


def per_example_norm(t: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The norm of each example of a batch ``t`` of shape [N, ...]; returns shape [N]."""
    flat = t.reshape(t.shape[0], -1)
    if norm is Norm.LINF:
        return flat.abs().amax(dim=1)
    if norm is Norm.L2:
        return flat.norm(p=2, dim=1)
    return flat.abs().sum(dim=1)


def _project_l1_ball(delta: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``delta`` onto the L1 ball of radius ``eps``.

    Duchi, Shalev-Shwartz, Singer and Chandra, "Efficient projections onto the l1-ball for
    learning in high dimensions", ICML 2008 (the sort-based algorithm).
    """
    n = delta.shape[0]
    flat = delta.reshape(n, -1)
    absd = flat.abs()
    inside = absd.sum(dim=1) <= eps
    mu, _ = absd.sort(dim=1, descending=True)
    cums = mu.cumsum(dim=1)
    ks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    cond = mu - (cums - eps[:, None]) / ks > 0
    rho = cond.to(flat.dtype).mul(ks).argmax(dim=1)  # last index where cond holds
    theta = (cums.gather(1, rho[:, None]).squeeze(1) - eps) / (rho + 1).to(flat.dtype)
    theta = theta.clamp_min(0)
    proj = flat.sign() * (absd - theta[:, None]).clamp_min(0)
    out = torch.where(inside[:, None], flat, proj)
    return out.reshape(delta.shape)


@dataclass(frozen=True)
class ThreatModel:
    """An Lp ball of radius ``eps`` around each input, intersected with a pixel box.

    Args:
        norm: :class:`Norm` (or ``"linf"``, ``"l2"``, ``"l1"``).
        eps: radius, a float >= 0 or a 1-D tensor of per-example radii (all >= 0).
            ``math.inf`` means unbounded (only the box constrains).
        bounds: ``(low, high)`` of valid pixel values; default ``(0.0, 1.0)``.

    The paper's headline Linf budget for ImageNet is ``eps = 16/255`` (Dong et al., CVPR 2018).
    """

    norm: Norm
    eps: float | torch.Tensor
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", Norm.parse(self.norm))
        eps = self.eps
        if isinstance(eps, torch.Tensor):
            if eps.ndim != 1:
                raise ValueError(
                    f"eps tensor must be 1-D with one radius per example, got shape "
                    f"{tuple(eps.shape)}")
            if not torch.isfinite(eps).all() and not (eps == math.inf).any():
                raise ValueError(f"eps must not contain NaN, got {eps}")
            if (eps < 0).any() or torch.isnan(eps).any():
                raise ValueError(f"eps must be >= 0 everywhere, got min {float(eps.min())}")
        else:
            if isinstance(eps, bool) or not isinstance(eps, (int, float)):
                raise TypeError(f"eps must be a float or a 1-D tensor, got {type(eps).__name__}")
            if math.isnan(eps) or eps < 0:
                raise ValueError(f"eps must be >= 0, got {eps}")
            object.__setattr__(self, "eps", float(eps))
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ValueError(f"bounds must be finite with low < high, got {self.bounds}")
        object.__setattr__(self, "bounds", (float(lo), float(hi)))

    # -- helpers -----------------------------------------------------------------------
    def eps_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """The radius per example, shape [N], on ``x``'s device and dtype."""
        n = x.shape[0]
        if isinstance(self.eps, torch.Tensor):
            if self.eps.shape[0] != n:
                raise ValueError(
                    f"eps has {self.eps.shape[0]} per-example radii but the batch has {n} "
                    f"examples")
            return self.eps.to(device=x.device, dtype=x.dtype)
        return torch.full((n,), self.eps, device=x.device, dtype=x.dtype)

    def with_eps(self, eps: float | torch.Tensor) -> ThreatModel:
        """The same threat model with another radius."""
        return ThreatModel(self.norm, eps, self.bounds)

    def norm_of(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-example norm of a perturbation batch, shape [N]."""
        return per_example_norm(delta, self.norm)

    # -- geometry ----------------------------------------------------------------------
    def clip_box(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp to the valid pixel box."""
        return x.clamp(self.bounds[0], self.bounds[1])

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project ``x_adv`` onto {x' : ||x' - x|| <= eps} intersected with the box.

        For Linf the two sets are boxes, so clamping to both is the exact projection; for
        L2 and L1 the ball projection is followed by the box clamp, which never leaves the
        ball because ``x`` itself lies in the box (every coordinate moves toward ``x``).
        """
        eps = self.eps_tensor(x)
        if self.norm is Norm.LINF:
            e = _view(eps, x.ndim)
            out = torch.maximum(torch.minimum(x_adv, x + e), x - e)
            return self.clip_box(out)
        delta = x_adv - x
        if self.norm is Norm.L2:
            n = per_example_norm(delta, Norm.L2)
            factor = torch.where(n > eps, eps / n.clamp_min(_TINY), torch.ones_like(n))
            delta = delta * _view(factor, x.ndim)
        else:
            finite = torch.isfinite(eps)
            if finite.any():
                proj = _project_l1_ball(delta, torch.where(finite, eps, torch.zeros_like(eps)))
                delta = torch.where(_view(finite, x.ndim), proj, delta)
        return self.clip_box(x + delta)

    def step_direction(self, g: torch.Tensor, at: torch.Tensor | None = None,
                       sign: float = 1.0) -> torch.Tensor:
        """Unit-norm steepest ascent direction of ``g`` for this norm (per example).

        Linf: ``sign(g)``; L2: ``g / ||g||_2`` (zero where ``g`` is zero); L1: the signed
        one-hot vector at the largest ``|g|`` coordinate (the exact L1 steepest ascent).

        ``at`` (L1 only): the point the step ``sign * alpha * direction`` starts from. The
        L1 direction then picks the largest ``|g|`` among the coordinates that can still move
        that way -- a pixel already at the box edge the step pushes against is skipped, as
        the box clamp would cancel the whole step there and the attack would stall on it.
        """
        if self.norm is Norm.LINF:
            return g.sign()
        if self.norm is Norm.L2:
            # Rescale by the largest |g| first: the squares of a tiny gradient (a confident
            # example under cross-entropy) would underflow and shorten the step.
            dims = tuple(range(1, g.ndim))
            top = g.abs().amax(dim=dims, keepdim=True)
            u = g / torch.where(top > 0, top, torch.ones_like(top))
            n = torch.linalg.vector_norm(u, dim=dims, keepdim=True)
            return u / torch.where(n > 0, n, torch.ones_like(n))
        flat = g.reshape(g.shape[0], -1)
        score = flat.abs()
        if at is not None:
            lo, hi = self.bounds
            up = (flat * sign) > 0  # the step raises this coordinate
            a = at.reshape(at.shape[0], -1)
            blocked = (up & (a >= hi)) | (~up & (a <= lo))
            score = score.masked_fill(blocked, -1.0)  # below every free |g| (which is >= 0)
        idx = score.argmax(dim=1, keepdim=True)
        out = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx).sign())
        return out.reshape(g.shape)

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A point drawn uniformly from the eps-ball around ``x``, then clamped to the box.

        Linf: independent uniform coordinates; L2: Gaussian direction with radius
        ``eps * U^(1/d)``; L1: Laplace-free construction from d+1 exponentials (a uniform
        point of the simplex) with random signs. Unbounded radii start at ``x``.
        """
        n = x.shape[0]
        d = x[0].numel()
        eps = self.eps_tensor(x)
        eps = torch.where(torch.isfinite(eps), eps, torch.zeros_like(eps))
        kw = {"device": x.device, "dtype": x.dtype, "generator": generator}
        if self.norm is Norm.LINF:
            u = torch.rand(x.shape, **kw) * 2 - 1
            delta = u * _view(eps, x.ndim)
        elif self.norm is Norm.L2:
            v = torch.randn(x.shape, **kw)
            v = v / _view(per_example_norm(v, Norm.L2).clamp_min(_TINY), x.ndim)
            r = torch.rand((n,), **kw).pow(1.0 / d) * eps
            delta = v * _view(r, x.ndim)
        else:
            e = -torch.log(torch.rand((n, d + 1), **kw).clamp_min(1e-30))
            simplex = e[:, :d] / e.sum(dim=1, keepdim=True)
            signs = torch.randint(0, 2, (n, d), device=x.device, generator=generator)
            delta = (simplex * (signs.to(x.dtype) * 2 - 1)).reshape(x.shape)
            delta = delta * _view(eps, x.ndim)
        return self.clip_box(x + delta)
