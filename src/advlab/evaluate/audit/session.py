"""One audit's shared state (:class:`_Session`): the validated examples, the resolved settings
(the ``quick`` and ``full`` :data:`PROFILES`) and a cache of attack outcomes, so that checks
sharing an attack run it once. Every gradient attack runs with ``nonfinite="warn"`` and its
warnings silenced (the checks report NaN/inf gradients themselves).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from advlab.attacks.apgd import APGD
from advlab.attacks.base import (
    NonFiniteGradientWarning,
    check_inputs,
    check_labels,
    check_labels_range,
    model_mode,
)
from advlab.attacks.noise import RandomSignNoise
from advlab.attacks.presets import FGSM, MIFGSM, PGD
from advlab.attacks.square import SquareAttack
from advlab.evaluate.audit.outcome import (
    _correct,
    _evaluate,
    _Outcome,
    input_gradient,
    outputs_differ,
)
from advlab.evaluate.audit.types import Thresholds
from advlab.threat import Norm

__all__ = ["PROFILES"]

log = logging.getLogger("advlab.evaluate.audit")  # the package's logger, one for all modules

#: Settings of the two audit profiles (any of them can be overridden by a keyword).
PROFILES: dict[str, dict[str, Any]] = {
    "quick": dict(steps=10, restarts=1, n_queries=300, noise_trials=10, unbounded_steps=50,
                  eval_draws=8, sweep=(0.5, 1.0, 2.0)),
    "full": dict(steps=50, restarts=3, n_queries=1000, noise_trials=20, unbounded_steps=200,
                 eval_draws=20, sweep=(0.25, 0.5, 1.0, 2.0)),
}


@contextlib.contextmanager
def _quiet_nonfinite() -> Iterator[None]:
    """Silence the attacks' ``nonfinite="warn"`` warnings (the audit reports NaN/inf
    gradients in its own flags)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteGradientWarning)
        yield


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
        x = check_inputs(model, x, probe.bounds, probe.eps)
        y = check_labels("y", y, x.shape[0]).to(x.device)
        with torch.no_grad(), model_mode(model, "eval"):
            out = model(x[:1])
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)
            raise ValueError(f"model output must be logits of shape [N, C], got {shape}")
        check_labels_range("y", y, out.shape[1])
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

    def _budget(self, steps: int | None, restarts: int | None) -> tuple[int, int]:
        """PGD's (and APGD's) steps and restarts: the given ones, else the profile's."""
        return (self.settings["steps"] if steps is None else steps,
                self.settings["restarts"] if restarts is None else restarts)

    def pgd(self, eps: float, *, steps: int | None = None, restarts: int | None = None,
            loss: str = "ce") -> _Outcome:
        steps, restarts = self._budget(steps, restarts)
        atk = PGD(eps=eps, norm=self.norm, steps=steps, restarts=restarts, loss=loss,
                  eot_samples=self.eot, bounds=self.bounds, seed=self.seed + 1,
                  nonfinite="warn")
        return self.run(("pgd", eps, steps, restarts, loss), atk)

    def apgd(self, eps: float, *, loss: str = "ce", steps: int | None = None,
             restarts: int | None = None) -> _Outcome:
        """APGD (Croce and Hein, ICML 2020) with the cross-entropy or the DLR loss, at PGD's
        budget (steps, restarts, EOT)."""
        steps, restarts = self._budget(steps, restarts)
        atk = APGD(eps=eps, norm=self.norm, steps=steps, restarts=restarts, loss=loss,
                   eot_samples=self.eot, bounds=self.bounds, seed=self.seed + 7,
                   nonfinite="warn")
        return self.run(("apgd", eps, steps, restarts, loss), atk)

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
        out = {"fgsm": self.fgsm(eps), "pgd": self.pgd(eps), "pgd-cw": self.pgd(eps, loss="cw"),
               "mifgsm": self.mifgsm(eps), "apgd-ce": self.apgd(eps)}
        if self.num_classes >= 3:  # the DLR loss needs the third-largest logit
            out["apgd-dlr"] = self.apgd(eps, loss="dlr")
        return out

    # -- statistics --------------------------------------------------------------------
    def widen(self, tol: float, *outcomes: _Outcome) -> float:
        """``tol`` plus ``noise_z`` standard errors of a difference of means over draws."""
        if self.draws <= 1:
            return tol
        var = sum(o.accuracy_std**2 / o.draws for o in outcomes)
        return tol + self.thresholds.noise_z * math.sqrt(var)

    def large_eps(self) -> float:
        return _large_eps(self.norm, self.bounds, self.x[0].numel())


def _session(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kw: Any
             ) -> _Session:
    """A session with :func:`~advlab.evaluate.audit.audit`'s defaults; the public ``check_*``
    functions pass their keyword arguments (those of ``audit``) through."""
    opts = dict(norm="linf", eot_samples=8, eval_draws=None, steps=None, restarts=None,
                n_queries=None, noise_trials=None, unbounded_steps=None, square_p_init=0.8,
                seed=0, quick=False, bounds=(0.0, 1.0), batch_size=256, thresholds=None)
    opts.update(kw)
    return _Session(model, x, y, eps, **opts)
