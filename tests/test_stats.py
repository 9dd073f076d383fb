"""Wilson intervals and the exact McNemar test against hand-computed values and scipy."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest

from advlab.stats import format_rate, mcnemar_exact, wilson_interval, z_value


def test_wilson_by_hand():
    # p = 0.8, n = 10, z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.71669...
    z = z_value()
    assert z == pytest.approx(1.959963985, abs=1e-9)
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    assert wilson_interval(8, 10) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert wilson_interval(8, 10) == pytest.approx((0.4901625, 0.9433178), abs=1e-7)


@given(st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.9, 0.95, 0.99]))
def test_wilson_matches_scipy(kn, confidence):
    k, n = kn
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = wilson_interval(k, n, confidence)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_is_not_degenerate_at_the_edges():
    lo, hi = wilson_interval(0, 200)
    assert lo == 0.0 and hi == pytest.approx(0.01884, abs=1e-5)
    lo, hi = wilson_interval(200, 200)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.01884, abs=1e-5)
    assert format_rate(0.934, 500) == "93.4 [90.9, 95.3]"


@given(st.integers(0, 300), st.integers(0, 300))
def test_mcnemar_matches_scipy_binomial(b, c):
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_mcnemar_by_hand_and_large_counts():
    # b = 2, c = 10: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096
    assert mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096, abs=1e-15)
    assert 0.0 <= mcnemar_exact(0, 5000) < 1e-300 or mcnemar_exact(0, 5000) == 0.0
    assert mcnemar_exact(2500, 2500) == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda: wilson_interval(3, 0), "n must be an integer >= 1, got 0"),
    (lambda: wilson_interval(11, 10), r"successes must be a number in \[0, n=10\], got 11"),
    (lambda: wilson_interval(1, 10, 1.5), "confidence must be a number in"),
    (lambda: mcnemar_exact(-1, 3), "b must be a non-negative integer count, got -1"),
    (lambda: mcnemar_exact(1, 2.5), "c must be a non-negative integer count, got 2.5"),
])
def test_bad_input_names_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
