"""The checks that compare attacks: iterative vs single-step, white-box vs transfer, gradient
attacks vs the gradient-free Square Attack and random noise, accuracy along an eps sweep,
at a large eps and without a bound, and convergence. Each ``_flag_*`` builder takes an audit
session (shared by :func:`audit`); each public ``check_*`` builds a one-off session around it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from advlab.evaluate.audit.outcome import _Outcome
from advlab.evaluate.audit.session import _Session, _session
from advlab.evaluate.audit.types import Flag, _bad, _ok, _r
from advlab.evaluate.audit.worst_case import _per_example_best, _worst_case

__all__ = ["check_iterative_vs_single_step", "check_whitebox_vs_transfer",
           "check_gradient_free", "check_random_noise", "check_eps_sweep", "check_large_eps",
           "check_unbounded", "check_convergence"]


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


def _flag_single_step(s: _Session) -> Flag:
    eps = s.eps
    f, p, m, a = s.fgsm(eps), s.pgd(eps), s.mifgsm(eps), s.apgd(eps)
    tol = s.widen(s.thresholds.single_step_tol, f, p, m, a)
    nums = dict(fgsm=_r(f.success), pgd=_r(p.success), mifgsm=_r(m.success),
                apgd=_r(a.success), tolerance=_r(tol))
    weak = [name for name, o in (("PGD", p), ("MI-FGSM", m), ("APGD-CE", a))
            if o.success < f.success - tol]
    txt = (f"success at eps={eps:g}: FGSM {f.success:.3f}, PGD {p.success:.3f}, "
           f"MI-FGSM {m.success:.3f}, APGD-CE {a.success:.3f}")
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
    return s.clean() if e == 0 else s.apgd(e)


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
                    f"APGD accuracy rises with eps at {where} (eps: accuracy = {curve}): the "
                    f"attack does not use its larger budget", **nums)
    return _ok("accuracy_falls_with_eps", f"APGD accuracy falls with eps ({curve})", **nums)


def _flag_large(s: _Session) -> Flag:
    big = s.large_eps()
    o = s.apgd(big)
    chance = 1.0 / s.num_classes
    limit = s.widen(s.thresholds.chance_margin, o) + chance
    nums = dict(eps=_r(big), accuracy=_r(o.accuracy), accuracy_std=_r(o.accuracy_std),
                chance=_r(chance), limit=_r(limit))
    txt = (f"APGD accuracy at eps={big:.3g} (every image can be turned mid-gray) is "
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


def check_iterative_vs_single_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                                   eps: float, **kw: Any) -> Flag:
    """(b) PGD (with restarts), MI-FGSM and APGD-CE must succeed at least as often as FGSM."""
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
    """(e) APGD accuracy must not rise along ``0 < ... < eps < ... < large eps``."""
    return _flag_sweep(_session(model, x, y, eps, **kw))


def check_large_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> Flag:
    """(e) At the radius that reaches the mid-gray image (Linf 0.5 for [0, 1] pixels,
    ``0.5 sqrt(d)`` for L2) APGD accuracy must be at most chance plus ``chance_margin``."""
    return _flag_large(_session(model, x, y, kw.pop("eps", 0.1), **kw))


def check_unbounded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> Flag:
    """(f) An unbounded attack (eps = inf, many steps) must fool (almost) every example."""
    return _flag_unbounded(_session(model, x, y, kw.pop("eps", 0.1), **kw))


def check_convergence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                      **kw: Any) -> Flag:
    """(h) Doubling PGD's steps or restarts must not raise success by more than a few
    points."""
    return _flag_convergence(_session(model, x, y, eps, **kw))
