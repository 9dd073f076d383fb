"""Wilson intervals and the exact McNemar test against hand-computed values and scipy."""

from __future__ import annotations

import math

import numpy as np
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


# -- paired comparisons and verdicts ----------------------------------------------------------
def test_paired_bootstrap_by_hand():
    from advlab.stats import paired_bootstrap

    # every image moves its difference by the same +1: every resample's mean is 1
    iv = paired_bootstrap([1.0] * 50)
    assert (iv.estimate, iv.lo, iv.hi) == (1.0, 1.0, 1.0)
    # two images {0, 1}: resample means are 0, 1/2, 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5 % and 97.5 % quantiles of 2000 draws are 0 and 1
    iv = paired_bootstrap([0.0, 1.0], n_resamples=2000, seed=1)
    assert (iv.estimate, iv.lo, iv.hi) == (0.5, 0.0, 1.0)
    # the statistic sees the resample's column means: mean(col 0) - mean(col 1)
    m = np.array([[1, 0], [1, 0], [0, 0], [1, 1]], dtype=float)
    iv = paired_bootstrap(m, lambda c: c[:, 0] - c[:, 1], seed=0)
    assert iv.estimate == pytest.approx(0.5) and iv.lo >= 0.0 and iv.hi <= 1.0
    assert paired_bootstrap(m, seed=3) == paired_bootstrap(m, seed=3)  # deterministic


@pytest.mark.parametrize("n, p_a, p_b", [(1000, 0.6, 0.4), (300, 0.3, 0.25), (80, 0.5, 0.5)])
def test_paired_bootstrap_matches_scipy(n, p_a, p_b):
    from scipy.stats import bootstrap

    from advlab.stats import paired_bootstrap

    rng = np.random.default_rng(n)
    a = (rng.random(n) < p_a).astype(float)
    b = (rng.random(n) < p_b).astype(float)
    ours = paired_bootstrap(a - b, n_resamples=4000, seed=0)
    ref = bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True,
                    vectorized=True, method="percentile", n_resamples=20000,
                    random_state=0).confidence_interval
    half = (ref.high - ref.low) / 2
    assert ours.estimate == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert ours.lo == pytest.approx(ref.low, abs=0.08 * half + 1e-9)
    assert ours.hi == pytest.approx(ref.high, abs=0.08 * half + 1e-9)


def test_verdicts_three_ways():
    from advlab.stats import Interval, combine_verdicts, verdict

    assert verdict(Interval(0.2, 0.01, 0.4)) == "HELD"
    assert verdict(Interval(0.2, 0.0, 0.4)) == "INCONCLUSIVE"  # zero is not excluded
    assert verdict(Interval(-0.2, -0.4, -0.01)) == "NOT HELD"
    assert verdict(Interval(-0.2, -0.4, -0.01), direction=-1) == "HELD"
    assert combine_verdicts(["HELD", "HELD"]) == "HELD"
    assert combine_verdicts(["HELD", "INCONCLUSIVE"]) == "INCONCLUSIVE"
    assert combine_verdicts(["INCONCLUSIVE", "NOT HELD"]) == "NOT HELD"
    assert combine_verdicts(["NOT TESTABLE"]) == "NOT TESTABLE"
    with pytest.raises(ValueError, match="direction must be"):
        verdict(Interval(0, 0, 0), direction=0)
    with pytest.raises(ValueError, match="unknown verdicts"):
        combine_verdicts(["held"])
    with pytest.raises(ValueError, match="must hold its estimate"):
        Interval(2.0, 0.0, 1.0)


@pytest.mark.parametrize("values, message", [
    ([], "non-empty"), ([[float("nan")]], "finite"), (np.zeros((2, 2, 2)), "non-empty")])
def test_paired_bootstrap_rejects_bad_input(values, message):
    from advlab.stats import paired_bootstrap

    with pytest.raises(ValueError, match=message):
        paired_bootstrap(values)
