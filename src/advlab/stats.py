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
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["wilson_interval", "format_rate", "mcnemar_exact", "z_value"]


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
