import math

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mpmath import mp
from tolerances import CHECK_PREC, REFERENCE_BITS

from precision_lab import reference_loss, reference_mean, to_double_double


def direct(row, t, prec=CHECK_PREC):
    """The textbook formula log(sum exp x_i) - x_t, at a precision far above the cancellation."""
    with mpmath.workprec(prec):
        return mp.log(mp.fsum(mp.exp(v) for v in row if v != -math.inf)) - mp.mpf(row[t])


def assert_bits(got, want, bits=REFERENCE_BITS):
    with mpmath.workprec(CHECK_PREC):
        assert abs(got - want) <= abs(want) * mp.ldexp(1, -bits), (got, want)


ADVERSARIAL = [
    ([1e-30, -2e-30, 3e-30], 0),                      # tiny magnitudes
    ([1e30, -1e30, 5e29], 2),                         # huge magnitudes
    ([1e30, 1e30 + 2.0**50, 1e30 - 2.0**51], 0),      # huge, close together
    ([1.7976931348623157e308, -1.7976931348623157e308], 1),  # float64 extremes
    ([1.7976931348623157e308, 1.7976931348623157e308, 0.0], 0),
    ([5e-324, -5e-324, 2.2250738585072014e-308], 2),  # subnormals
    ([0.0, -69.07755278982137], 0),                   # confidently correct: loss ~ 1e-30
    ([0.0, -1000.0, -1200.0], 0),                     # loss ~ exp(-1000) ~ 5e-435
    ([12.0, 12.0, 12.0, -700.0], 1),                  # ties at the maximum
    ([0.0, -math.inf, 1.0], 2),                       # a masked class
    ([3.0, -math.inf, -math.inf], 0),                 # only the target left: exactly 0
]


@pytest.mark.parametrize("row,t", ADVERSARIAL, ids=[str(i) for i in range(len(ADVERSARIAL))])
def test_reference_against_direct_formula_at_far_higher_precision(row, t):
    got = reference_loss(np.array([row]), np.array([t]))[0]
    want = direct(row, t)
    if want == 0:
        assert got == 0
    else:
        assert_bits(got, want)


def test_confident_loss_below_1e_minus_30_keeps_100_bits():
    gap = 2000.0  # loss = log1p(exp(-gap)): far below float64's range, still 100 bits
    got = reference_loss(np.array([[gap, 0.0]]), np.array([0]))[0]
    with mpmath.workprec(400):
        want = mp.log1p(mp.exp(-mp.mpf(gap)))
    assert got < mp.mpf("1e-800")
    assert_bits(got, want)


@pytest.mark.parametrize("c", [1, 2, 7, 1000, 262144])
def test_equal_logits_give_log_c(c):
    got = reference_loss(np.full((1, c), 3.25), np.array([c - 1]))[0]
    if c == 1:
        assert got == 0
    else:
        with mpmath.workprec(300):
            assert_bits(got, mp.log(c))


def test_largest_class_count_closed_form():
    c = 262144  # zeros and a target logit of 1: loss = log(C - 1 + e) - 1
    x = np.zeros((1, c))
    x[0, 5] = 1.0
    with mpmath.workprec(300):
        want = mp.log(c - 1 + mp.e) - 1
    assert_bits(reference_loss(x, np.array([5]))[0], want)


@given(d=st.floats(-1e6, 1e6), xt=st.floats(-1e3, 1e3))
def test_two_classes_are_softplus(d, xt):
    """C = 2: loss = softplus(x_other - x_target) = log1p(exp(d))."""
    xo = xt + d
    got = reference_loss(np.array([[xt, xo]]), np.array([0]))[0]
    with mpmath.workprec(CHECK_PREC):
        dd = mp.mpf(xo) - mp.mpf(xt)
        want = mp.log1p(mp.exp(dd))
    assert_bits(got, want)


def test_same_result_at_two_precisions():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 50)) * 30
    t = rng.integers(0, 50, 4)
    lo = reference_loss(x, t, bits=100)
    hi = reference_loss(x, t, bits=300)
    for a, b in zip(lo, hi):
        assert_bits(a, b, 100)


def test_non_finite_policy():
    x = np.array([[np.nan, 0.0], [-np.inf, 0.0], [-np.inf, -np.inf], [np.inf, 0.0],
                  [np.inf, 0.0], [0.0, np.inf]])
    t = np.array([1, 0, 0, 0, 1, 0])
    out = reference_loss(x, t)
    assert mp.isnan(out[0])          # nan propagates
    assert out[1] == mp.inf          # the target class is masked
    assert mp.isnan(out[2])          # every class masked
    assert mp.isnan(out[3])          # inf - inf
    assert mp.isnan(out[4]) and mp.isnan(out[5])   # any +inf: nan, as torch


@given(st.lists(st.floats(-50, 50), min_size=1, max_size=6), st.integers(0, 5),
       st.integers(0, 5))
def test_loss_is_zero_only_when_every_other_class_is_masked(vals, t, masked):
    t = t % len(vals)
    row = np.array(vals)
    others = np.arange(len(vals)) != t
    row[others & (np.arange(len(vals)) >= masked)] = -np.inf
    loss = reference_loss(row[None, :], np.array([t]))[0]
    assert loss >= 0
    assert (loss == 0) == bool(np.all(row[others] == -np.inf))


def test_batch_mean():
    x = np.array([[0.0, 0.0], [0.0, math.log(3.0)]])
    losses = reference_loss(x, np.array([0, 1]))
    with mpmath.workprec(300):
        x1 = mp.mpf(math.log(3.0))
        want = (mp.log(2) + mp.log1p(mp.exp(-x1))) / 2
    assert_bits(reference_mean(losses), want)


def test_double_double_is_round_to_nearest_plus_rest():
    with mpmath.workprec(200):
        v = mp.mpf(1) / 3
        hi, lo = to_double_double([v])
        assert hi[0] == 1 / 3
        assert abs((mp.mpf(hi[0]) + lo[0]) - v) < mp.ldexp(v, -104)
    hi, lo = to_double_double([mp.inf, mp.mpf(0), mp.mpf("1e-400")])
    assert hi[0] == np.inf and hi[1] == 0 and hi[2] == 0
