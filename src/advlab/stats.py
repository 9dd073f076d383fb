"""Uncertainty of the rates advlab reports.

Every accuracy or success rate measured on ``n`` examples is a binomial proportion; it is
reported with a 95 % Wilson score interval (Wilson 1927; Brown, Cai & DasGupta 2001 show it
keeps close to its nominal coverage for small ``n`` and rates near 0 or 1, where the textbook
``p +- 1.96 sqrt(p(1-p)/n)`` collapses to a point).

Example:
    >>> lo, hi = wilson_interval(0, 200)
    >>> (lo, round(hi, 4))
    (0.0, 0.0188)
    >>> format_rate(0.934, 500)
    '93.4 [90.9, 95.3]'

Comparisons of two attacks on the same images are *paired*: the exact McNemar test on the
discordant pairs (:func:`mcnemar_exact`) and a paired bootstrap interval on the difference
of (means of) rates (:func:`paired_bootstrap`: images are resampled with replacement, every
column of an image moves with it). A claim about a difference ends in one of three verdicts
(:func:`verdict`): HELD when the interval excludes zero in the claimed direction, NOT HELD
when it excludes zero in the other direction, INCONCLUSIVE when it holds zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["wilson_interval", "format_rate", "mcnemar_exact", "z_value", "Interval",
           "paired_bootstrap", "verdict", "combine_verdicts", "HELD", "NOT_HELD",
           "INCONCLUSIVE", "NOT_TESTABLE", "VERDICTS"]

HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTABLE = "HELD", "NOT HELD", "INCONCLUSIVE", "NOT TESTABLE"
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, NOT_TESTABLE)


def z_value(confidence: float = 0.95) -> float:
    """Two-sided standard-normal quantile for ``confidence`` (1.959964 for 0.95)."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``successes / n``, as fractions.

    ``successes`` may be fractional (a mean over noise draws times ``n``); it must lie in
    ``[0, n]``.

    Example:
        >>> [round(v, 4) for v in wilson_interval(8, 10)]
        [0.4902, 0.9433]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(successes, bool) or not isinstance(successes, (int, float)) \
            or not 0 <= successes <= n:
        raise ValueError(f"successes must be a number in [0, n={n}], got {successes!r}")
    z = z_value(confidence)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    # the interval always holds p (rounding can put centre - half a hair above 0 when p = 0)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def format_rate(rate: float, n: int, confidence: float = 0.95, digits: int = 1) -> str:
    """``rate`` (a fraction) as ``"93.4 [90.9, 95.3]"``: percent with its Wilson interval."""
    lo, hi = wilson_interval(rate * n, n, confidence)
    return f"{100 * rate:.{digits}f} [{100 * lo:.{digits}f}, {100 * hi:.{digits}f}]"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes.

    ``b`` and ``c`` are the discordant counts (examples right under A and wrong under B, and
    the reverse); under the null hypothesis each discordant example falls either way with
    probability 1/2, so ``p = min(1, 2 * P[Binomial(b + c, 1/2) <= min(b, c)])``.

    Example:
        >>> round(mcnemar_exact(2, 10), 4)
        0.0386
        >>> mcnemar_exact(0, 0)
        1.0
    """
    for name, v in (("b", b), ("c", c)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer count, got {v!r}")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # exact integers, then one division
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval ``[lo, hi]`` (same units)."""

    estimate: float
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not self.lo <= self.estimate <= self.hi and not math.isnan(self.estimate):
            raise ValueError(f"an interval must hold its estimate, got {self.estimate!r} "
                             f"outside [{self.lo!r}, {self.hi!r}]")

    def scaled(self, factor: float) -> Interval:
        """The interval in other units (``factor`` > 0), e.g. 100 for percent."""
        return Interval(self.estimate * factor, self.lo * factor, self.hi * factor)

    def text(self, digits: int = 1, unit: str = "") -> str:
        """``"+12.3 [8.1, 16.4]"`` (signed: it is usually a difference)."""
        return (f"{self.estimate:+.{digits}f}{unit} [{self.lo:+.{digits}f}, "
                f"{self.hi:+.{digits}f}]")


def paired_bootstrap(values: Sequence[float] | np.ndarray,
                     statistic: Callable[[np.ndarray], np.ndarray] | None = None, *,
                     n_resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> Interval:
    """Percentile bootstrap interval of a statistic of per-image column means.

    Args:
        values: ``[n]`` or ``[n, k]``: one row per image, e.g. the per-image difference of
            two attacks' success (0/1 each, so -1, 0 or 1), or k success columns that a
            ``statistic`` combines. Rows are resampled with replacement, whole: the
            columns of an image stay paired.
        statistic: maps the column means of each resample, ``[B, k]``, to ``[B]``
            (default: the first column's mean). It also gives the point estimate, on the
            column means of the data.
        n_resamples, confidence, seed: ``B``, the level, and the seed of the resampling
            (the interval is a deterministic function of the data and the seed).

    Example:
        >>> iv = paired_bootstrap([1, 1, 0, 1, 0, 1, 1, 1], seed=0)
        >>> iv.estimate, 0 <= iv.lo <= iv.estimate <= iv.hi <= 1
        (0.75, True)
    """
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"values must be a non-empty [n] or [n, k] array, got shape "
                         f"{tuple(np.shape(values))}")
    if not np.isfinite(a).all():
        raise ValueError("values must be finite (got nan or inf)")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
    z_value(confidence)  # validates confidence
    stat = statistic if statistic is not None else (lambda m: m[:, 0])
    n = a.shape[0]
    estimate = float(np.asarray(stat(a.mean(axis=0, keepdims=True))).reshape(-1)[0])
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    step = max(1, min(n_resamples, 2_000_000 // max(n, 1)))  # bound the [b, n] count matrix
    for s in range(0, n_resamples, step):
        b = min(step, n_resamples - s)
        idx = rng.integers(0, n, size=(b, n))
        flat = (idx + (np.arange(b) * n)[:, None]).reshape(-1)
        counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        draws[s:s + b] = np.asarray(stat(counts @ a / n)).reshape(-1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(draws, [tail, 1 - tail])
    # a percentile interval need not hold the estimate for a non-linear statistic; widen it
    return Interval(estimate, float(min(lo, estimate)), float(max(hi, estimate)))


def verdict(interval: Interval, direction: int = 1) -> str:
    """HELD if ``interval`` excludes zero on the claimed side (``direction`` +1: the
    difference is claimed positive, -1: negative), NOT HELD if it excludes zero on the
    other side, else INCONCLUSIVE.

    Example:
        >>> verdict(Interval(2.0, 0.5, 3.0)), verdict(Interval(1.0, -0.2, 2.0))
        ('HELD', 'INCONCLUSIVE')
        >>> verdict(Interval(-2.0, -3.0, -1.0)), verdict(Interval(-2.0, -3.0, -1.0), -1)
        ('NOT HELD', 'HELD')
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    lo, hi = (interval.lo, interval.hi) if direction == 1 else (-interval.hi, -interval.lo)
    if math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if lo > 0:
        return HELD
    if hi < 0:
        return NOT_HELD
    return INCONCLUSIVE


def combine_verdicts(parts: Sequence[str]) -> str:
    """The verdict of a claim made of parts that must all hold: NOT HELD if any part is,
    HELD if every part is, else INCONCLUSIVE (NOT TESTABLE if there is no part).

    Example:
        >>> combine_verdicts(["HELD", "INCONCLUSIVE"]), combine_verdicts(["HELD", "NOT HELD"])
        ('INCONCLUSIVE', 'NOT HELD')
    """
    bad = [p for p in parts if p not in VERDICTS]
    if bad:
        raise ValueError(f"unknown verdicts {bad}; expected some of {VERDICTS}")
    parts = [p for p in parts if p != NOT_TESTABLE]
    if not parts:
        return NOT_TESTABLE
    if NOT_HELD in parts:
        return NOT_HELD
    return HELD if all(p == HELD for p in parts) else INCONCLUSIVE
