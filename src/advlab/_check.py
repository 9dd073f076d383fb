"""One validation rule per concept, one message everywhere.

Every config, attack and command checks its integers, budgets and learning rates with these,
so a bad value gets the same sentence wherever it is typed: the name, what was expected, and
the value given. They raise before any work (call them in ``__post_init__`` or at the top).

    >>> positive_int("epochs", 0)
    Traceback (most recent call last):
    ...
    ValueError: epochs must be an integer >= 1, got 0
    >>> pixel_budget("eps", 16 / 255) == 16 / 255
    True
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["positive_int", "pixel_budget", "positive_number"]


def positive_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """``value`` if it is an integer >= 1 (or None when ``allow_none``), else ValueError."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return value


def pixel_budget(name: str, value: Any) -> float:
    """``value`` if it is a perturbation budget in (0, 1] for pixels in [0, 1], else
    ValueError (NaN, inf, 0, negatives, > 1 and non-numbers are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or math.isnan(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1] (pixels in [0, 1]), got {value!r}")
    return value


def positive_number(name: str, value: Any) -> Any:
    """``value`` if it is a finite number > 0 (a learning rate, a weight), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value
