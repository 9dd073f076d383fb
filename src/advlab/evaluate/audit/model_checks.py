"""The checks of the model itself: randomised outputs, logits rather than probabilities,
clean accuracy above chance, finite and non-zero input gradients, and whether FGSM uses its
budget. Each ``_flag_*`` builder takes an audit session (shared by :func:`audit`); each
public ``check_*`` builds a one-off session around it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab.attacks.base import model_mode
from advlab.evaluate.audit.outcome import _Outcome
from advlab.evaluate.audit.session import _Session, _session
from advlab.evaluate.audit.types import Flag, _bad, _ok, _r
from advlab.models.registry import is_randomized
from advlab.threat import Norm

__all__ = ["check_randomness", "check_logits", "check_clean_accuracy", "check_gradients",
           "check_budget_used"]


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
