"""The whole checklist: :func:`audit` runs every check on one shared session, in the order
of the package docstring, and assembles the :class:`AuditReport`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from advlab.evaluate.audit.attack_checks import (
    _flag_convergence,
    _flag_large,
    _flag_noise,
    _flag_single_step,
    _flag_square,
    _flag_sweep,
    _flag_transfer,
    _flag_unbounded,
    _resolve_surrogate,
)
from advlab.evaluate.audit.model_checks import (
    _flag_budget,
    _flag_clean,
    _flag_gradients,
    _flag_logits,
    _flag_randomness,
)
from advlab.evaluate.audit.session import _Session
from advlab.evaluate.audit.types import AuditReport, Flag, Thresholds
from advlab.evaluate.audit.worst_case import _worst_case
from advlab.threat import Norm

__all__ = ["audit"]

log = logging.getLogger("advlab.evaluate.audit")  # the package's logger, one for all modules


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
    :class:`AuditReport` (see :mod:`advlab.evaluate.audit` for the checks and thresholds).

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
