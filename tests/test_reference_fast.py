"""The fast (arb + fixed-point) ground truth against the mpmath backend, at high precision."""
import math

import mpmath
import numpy as np
import pytest

from precision_lab.formats import FORMATS
from precision_lab.reference import (UncertifiedError, reference_loss, reference_mean,
                                     reference_truth)

BITS = 100


def _mpf_exact(v):
    return mpmath.mpf(v) if not isinstance(v, mpmath.mpf) else v


def _truth_600(x, t):
    """Plain mpmath at 600 bits with every term: an independent check for small rows."""
    out = []
    with mpmath.workprec(600):
        for row, ti in zip(x, t):
            if np.isnan(row).any():
                out.append(mp_nan()); continue
            xs = [mpmath.mpf(float(v)) for v in row]
            fin = [v for v in xs if mpmath.isfinite(v)]
            if any(v == mpmath.inf for v in xs) or xs[ti] == -mpmath.inf:
                out.append(None); continue
            a = max(fin)
            s = mpmath.fsum(mpmath.exp(v - a) for v in fin)
            out.append(mpmath.log(s) + (a - xs[ti]))
    return out


def mp_nan():
    return mpmath.mpf("nan")


def assert_close(fast, slow, bits=BITS):
    """Equal non-finite outcomes; finite values within 2**-(bits) relative (each is within
    2**-(bits+1) of the truth)."""
    for i, (f, s) in enumerate(zip(fast, slow)):
        if mpmath.isnan(s):
            assert mpmath.isnan(f), i
        elif mpmath.isinf(s):
            assert f == s, i
        elif s == 0:
            assert f == 0, i
        else:
            with mpmath.workprec(400):
                rel = abs((f - s) / s)
            assert rel <= mpmath.ldexp(1, -bits), (i, f, s, rel)


def both(x, t, bits=BITS):
    return (reference_loss(x, t, bits=bits, backend="arb"),
            reference_loss(x, t, bits=bits, backend="mpmath"))


@pytest.mark.parametrize("fmt", list(FORMATS), ids=str)
@pytest.mark.parametrize("scale", [1.0, 10.0, 1000.0], ids=lambda s: f"scale{s:g}")
def test_random_rows_match_mpmath(fmt, scale):
    rng = np.random.default_rng(7)
    c = 300
    x = FORMATS[fmt].round(scale * rng.standard_normal((4, c)))
    t = rng.integers(0, c, 4)
    t[0] = np.argmax(x[0])  # target is the maximum: log1p branch
    fast, slow = both(x, t)
    assert_close(fast, slow)


def test_adversarial_magnitudes():
    rng = np.random.default_rng(3)
    rows, targets = [], []
    for e in (-30, -10, 0, 5, 10, 30):
        mag = 10.0 ** e
        r = mag * rng.standard_normal(40)
        rows.append(r)
        targets.append(int(rng.integers(0, 40)))
    x = np.array(rows)
    fast, slow = both(x, targets)
    assert_close(fast, slow)


def test_float64_extremes():
    big = np.finfo(np.float64).max
    x = np.array([[big, -big, 0.0, 1.0],
                  [big, big, -big, 3.0],
                  [-big, -big, -big, -big],
                  [big, np.nextafter(big, 0), 0.0, -1.0]])
    t = np.array([1, 0, 2, 1])
    fast, slow = both(x, t)
    assert_close(fast, slow)
    with mpmath.workprec(300):
        two_big = 2 * mpmath.mpf(big)
        assert abs(fast[0] - two_big) <= two_big * mpmath.ldexp(1, -BITS)
        assert abs(fast[1] - mpmath.log(2)) <= mpmath.log(2) * mpmath.ldexp(1, -BITS)


def test_one_class_ties_and_confident_rows():
    x1 = np.array([[3.5]])
    assert reference_loss(x1, [0])[0] == 0
    ties = np.array([[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, -5.0, 0.5]])
    fast, slow = both(ties, [1, 0])
    assert_close(fast, slow)
    with mpmath.workprec(300):
        assert abs(fast[0] - mpmath.log(4)) <= mpmath.ldexp(1, -101) * mpmath.log(4)
    conf = np.array([[80.0, 0.0, -3.0], [700.0, 0.0, 1.0]])
    fast, slow = both(conf, [0, 0])
    assert_close(fast, slow)
    assert fast[0] <= 1e-30 and fast[1] < 1e-300 and fast[1] > 0


def test_non_finite_policy_matches_mpmath():
    ninf, inf, nan = -np.inf, np.inf, np.nan
    x = np.array([[0.0, ninf, 1.0, ninf],     # masked classes
                  [0.0, 1.0, nan, 2.0],       # nan anywhere: nan
                  [0.0, inf, 1.0, 2.0],       # +inf not the target: inf
                  [0.0, inf, 1.0, 2.0],       # +inf is the target: nan
                  [ninf, 1.0, 2.0, 3.0],      # -inf target: inf
                  [ninf, ninf, ninf, ninf],   # all masked: nan
                  [ninf, ninf, 5.0, ninf]])   # target the only live class: 0
    t = np.array([2, 0, 0, 1, 0, 0, 2])
    fast, slow = both(x, t)
    assert_close(fast, slow)
    assert mpmath.isnan(fast[1]) and fast[2] == mpmath.inf and mpmath.isnan(fast[3])
    assert fast[4] == mpmath.inf and mpmath.isnan(fast[5]) and fast[6] == 0


@pytest.mark.parametrize("fmt", ["float16", "bfloat16", "float32", "float64"], ids=str)
def test_large_c_against_plain_mpmath(fmt):
    """C = 262144: one row, checked against a plain mpmath sum over its largest terms (terms
    far below cannot change 110 bits), at 200 bits."""
    rng = np.random.default_rng(11)
    c = 262144
    x = FORMATS[fmt].round(10.0 * rng.standard_normal((1, c)))
    t = np.array([int(rng.integers(0, c))])
    fast = reference_loss(x, t, bits=BITS)[0]
    row = x[0]
    a = row.max()
    keep = np.sort(row[row - a > -110.0])   # exp(-110) * 2**18 < 2**-140
    with mpmath.workprec(200):
        s = mpmath.fsum(mpmath.exp(mpmath.mpf(float(v)) - a) for v in keep.tolist())
        slow = mpmath.log(s) + (a - mpmath.mpf(float(row[t[0]])))
        assert abs(fast - slow) <= slow * mpmath.ldexp(1, -BITS)


def test_higher_bits_and_small_rows_against_600_bit_truth():
    rng = np.random.default_rng(5)
    x = FORMATS["float32"].round(rng.standard_normal((6, 12)) * 4)
    t = rng.integers(0, 12, 6)
    fast = reference_loss(x, t, bits=200)
    for f, s in zip(fast, _truth_600(x, t)):
        with mpmath.workprec(600):
            assert abs(f - s) <= s * mpmath.ldexp(1, -200)


def test_uncertified_names_the_row():
    x = np.array([[0.0, 1.0], [0.5, 0.25]])
    with pytest.raises(UncertifiedError, match="row"):
        reference_loss(x, [0, 1], bits=400, max_prec=64)


def test_truth_double_double_and_mean_agree_between_backends():
    rng = np.random.default_rng(2)
    x = FORMATS["bfloat16"].round(3 * rng.standard_normal((5, 64)))
    t = rng.integers(0, 64, 5)
    a = reference_truth(x, t, cache=False)
    b = reference_truth(x, t, cache=False, backend="mpmath")
    with mpmath.workprec(300):
        for i in range(5):
            va = mpmath.mpf(a.hi[i]) + a.lo[i]
            vb = mpmath.mpf(b.hi[i]) + b.lo[i]
            assert abs(va - vb) <= vb * mpmath.ldexp(1, -BITS)
        ma = mpmath.mpf(a.mean_hi) + a.mean_lo
        mb = reference_mean(reference_loss(x, t, backend="mpmath"))
        assert abs(ma - mb) <= mb * mpmath.ldexp(1, -BITS)
    assert np.all(a.lo != 0)  # the double-double carries bits beyond float64


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        reference_loss(np.zeros((1, 2)), [0], backend="gpu")


def test_does_not_change_global_precision():
    from flint import ctx
    before_flint, before_mp = ctx.prec, mpmath.mp.prec
    reference_loss(np.array([[0.0, 1.0, 2.0]]), [1])
    assert ctx.prec == before_flint and mpmath.mp.prec == before_mp
