import math

import numpy as np
import pandas as pd
import pytest
from tolerances import CORRECTLY_ROUNDED_ULP

from precision_lab import FORMATS, aggregate, errors
from precision_lab.numerics.metrics import ordinal, round_truth

NAMES = list(FORMATS)


@pytest.mark.parametrize("name", NAMES)
def test_ordinal_counts_format_values(name):
    f = FORMATS[name]
    nxt = 1.0 + float(f.ulp(1.0))
    o = ordinal(np.array([1.0, float(nxt), -1.0, 0.0, -0.0, f.min_subnormal]), f)
    assert o[1] - o[0] == 1
    assert o[2] == -o[0]
    assert o[3] == o[4] == 0 and o[5] == 1


@pytest.mark.parametrize("name", NAMES)
def test_errors_of_correct_rounding_and_one_ulp_off(name):
    f = FORMATS[name]
    truth_hi, truth_lo = np.array([math.pi, math.e]), np.array([1.2246467991473532e-16, 0.0])
    rounded = round_truth(truth_hi, truth_lo, f)
    df = errors(rounded, truth_hi, truth_lo, f)
    assert (df.bits_err == 0).all()
    assert (df.ulp_err <= CORRECTLY_ROUNDED_ULP).all()
    assert (df.outcome == "finite").all()
    off = rounded + f.ulp(rounded)
    df = errors(off, truth_hi, truth_lo, f)
    assert np.allclose(df.bits_err, 1.0)
    assert (df.ulp_err > CORRECTLY_ROUNDED_ULP).all() and (df.ulp_err <= 1.5).all()
    assert np.allclose(df.rel_err, np.abs(off - math.pi * np.array([1, 0]) -
                                          math.e * np.array([0, 1])) / truth_hi, rtol=1e-6)


def test_double_rounding_of_truth_is_avoided():
    f = FORMATS["float16"]
    mid = 1 + 2**-11  # a float16 midpoint, exactly a float64
    assert round_truth([mid], [1e-30], f)[0] == 1 + 2**-10
    assert round_truth([mid], [-1e-30], f)[0] == 1.0
    assert round_truth([mid], [0.0], f)[0] == 1.0  # a true tie: to even


def test_outcomes_and_full_width_for_special_values():
    f = FORMATS["float32"]
    c = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, np.inf])
    hi = np.array([1.0, 1.0, 1.0, 1e-50, 1.0, np.inf])
    df = errors(c, hi, np.zeros(6), f)
    assert df.outcome.tolist() == ["nan", "+inf", "-inf", "zero", "finite", "+inf"]
    assert df.bits_err.tolist()[:3] == [32.0, 32.0, 32.0]
    assert df.bits_err.iloc[4] == 0 and df.bits_err.iloc[5] == 0
    assert df.rel_err.iloc[3] == 1.0


def test_aggregate_counts_nonfinite_rows_apart():
    f = FORMATS["float16"]
    df = errors(np.array([1.0, np.inf, np.nan, 1.0009765625]), np.ones(4), np.zeros(4), f)
    df["group"] = "g"
    agg = aggregate(df, ["group"]).iloc[0]
    assert agg["count"] == 4 and agg["n_+inf"] == 1 and agg["n_nan"] == 1
    assert agg["nonfinite_frac"] == 0.5
    assert agg["rel_err_max"] == 2**-10          # over the finite rows only
    assert agg["bits_err_mean"] == pytest.approx((0 + 16 + 16 + 1) / 4)
    assert isinstance(agg, pd.Series)
