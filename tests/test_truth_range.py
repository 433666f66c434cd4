"""The certified truth beyond float64's range: a loss above 2**1024 or below 2**-1075 is carried
as (hi + lo) 2**exp, and the metrics stay right at both ends."""
from __future__ import annotations

import mpmath
import numpy as np
import pytest

from precision_lab.analysis.evaluate import evaluate
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.metrics import errors
from precision_lab.truth.reference import reference_loss, reference_truth

HUGE = (np.array([[1e308, -1e308]]), np.array([1]))      # loss = 2e308 + log1p(e^-2e308)
TINY = (np.array([[0.0, -1000.0]]), np.array([0]))       # loss = log1p(e^-1000) = 5.08e-435
SMALL = (np.array([[0.0, -700.0]]), np.array([0]))       # loss = 9.86e-305, inside the range


def _value(tr, i=0):
    with mpmath.workprec(200):
        return (mpmath.mpf(tr.hi[i]) + mpmath.mpf(tr.lo[i])) * mpmath.ldexp(1, int(tr.exp[i]))


@pytest.mark.parametrize("backend", ["arb", "mpmath"])
@pytest.mark.parametrize("case", [HUGE, TINY], ids=["huge", "tiny"])
def test_truth_carries_an_exponent_beyond_float64(case, backend):
    x, t = case
    tr = reference_truth(x, t, backend=backend, cache=False)
    exact = reference_loss(x, t, backend="mpmath")[0]
    assert tr.exp[0] != 0 and 1 <= tr.hi[0] <= 2
    with mpmath.workprec(200):
        assert abs(_value(tr) - exact) <= abs(exact) * mpmath.ldexp(1, -100)
    assert tr.mean_exp == tr.exp[0] and tr.mean_hi == tr.hi[0]


def test_truth_inside_the_range_keeps_exponent_zero():
    x, t = SMALL
    tr = reference_truth(x, t, cache=False)
    assert tr.exp[0] == 0 and tr.hi[0] == pytest.approx(9.8596765437597709e-305, rel=1e-15)


def test_cache_keeps_the_exponent(tmp_path):
    x, t = TINY
    first = reference_truth(x, t, cache=tmp_path)
    again = reference_truth(x, t, cache=tmp_path)
    assert list(tmp_path.iterdir()) and again.exp[0] == first.exp[0] < 0
    assert again.hi[0] == first.hi[0] and again.mean_exp == first.mean_exp


def test_a_returned_zero_scores_the_same_below_and_inside_float64():
    """0 against 5e-435 and against 9.9e-305: relative error 1, outcome zero, both."""
    x = np.vstack([TINY[0], SMALL[0]])
    t = np.array([0, 0])
    df = evaluate(x, t, formats=["float64"], methods=["logsumexp"], accumulators=("working",),
                  mean=False, cache=False)
    assert (df["computed"] == 0).all()
    assert df["rel_err"].tolist() == [1.0, 1.0]
    assert df["outcome"].tolist() == ["zero", "zero"]
    assert df["truth"].iloc[0] == 0.0          # the float64 column: below the range
    # returning 0 is the correct rounding of 5e-435 (bits 0, under half an ulp), not of 9.9e-305
    assert df["bits_err"].iloc[0] == 0 and df["ulp_err"].iloc[0] < 0.5
    assert df["bits_err"].iloc[1] > 50


def test_evaluate_beyond_float64_does_not_crash_and_scores_right():
    x, t = HUGE
    df = evaluate(x, t, formats=["float64"], methods=["logsumexp"], accumulators=("working",),
                  cache=False)
    assert np.isinf(df["truth"]).all()
    row = df[df["reduction"] == "none"].iloc[0]
    assert row["outcome"] == "+inf" and row["bits_err"] == 0   # inf is RN of 2e308


def test_finite_result_against_a_huge_truth_has_the_right_relative_error():
    tr = reference_truth(*HUGE, cache=False)
    f64 = FORMATS["float64"]
    c = np.array([f64.max_finite, 1e308, np.inf])
    e = errors(c, np.repeat(tr.hi, 3), np.repeat(tr.lo, 3), f64, np.repeat(tr.exp, 3))
    with mpmath.workprec(200):
        err = [abs(mpmath.mpf(v) - _value(tr)) for v in c[:2]]
        rel = [float(d / _value(tr)) for d in err]
        ulp = [float(d / mpmath.ldexp(1, 1024 - 52)) for d in err]  # the truth's binade: 2**1024
    assert e["rel_err"].iloc[:2].tolist() == pytest.approx(rel, rel=1e-12)
    assert e["ulp_err"].iloc[:2].tolist() == pytest.approx(ulp, rel=1e-12)
    assert e["abs_err"].iloc[:2].tolist() == pytest.approx([float(d) for d in err], rel=1e-12)
    assert e["outcome"].tolist() == ["finite", "finite", "+inf"]
    assert (e["bits_err"].iloc[:2] == 64).all() and e["bits_err"].iloc[2] == 0


def test_truth_far_beyond_any_exponent_is_capped():
    """log1p(exp(-4.2e37)): an exponent of -6e37 is recorded as -2**52; metrics as for 5e-435."""
    x, t = np.array([[4.23691424e37, 0.0]]), np.array([0])
    tr = reference_truth(x, t, cache=False)
    assert tr.exp[0] == -(2**52) and tr.hi[0] == 1.0
    df = evaluate(x, t, formats=["float32"], methods=["log1p"], accumulators=("working",),
                  mean=False, cache=False)
    assert df["rel_err"].iloc[0] == 1.0 and df["outcome"].iloc[0] == "zero"
