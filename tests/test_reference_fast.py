"""The fast (arb + fixed-point) ground truth against the mpmath backend, at high precision."""

import mpmath
import numpy as np
import pytest

from precision_lab.numerics.formats import FORMATS, STANDARD_FORMATS
from precision_lab.truth.reference import (
    UncertifiedError,
    reference_loss,
    reference_mean,
    reference_truth,
    to_double_double,
)

BITS = 100


def _mpf_exact(v):
    return mpmath.mpf(v) if not isinstance(v, mpmath.mpf) else v


def _truth_600(x, t):
    """Plain mpmath at 600 bits with every term: an independent check for small rows."""
    out = []
    with mpmath.workprec(600):
        for row, ti in zip(x, t):
            if np.isnan(row).any():
                out.append(mp_nan())
                continue
            xs = [mpmath.mpf(float(v)) for v in row]
            fin = [v for v in xs if mpmath.isfinite(v)]
            if any(v == mpmath.inf for v in xs) or xs[ti] == -mpmath.inf:
                out.append(None)
                continue
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


@pytest.mark.parametrize("fmt", list(STANDARD_FORMATS), ids=str)
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
                  [0.0, inf, 1.0, 2.0],       # +inf not the target: nan (as torch)
                  [0.0, inf, 1.0, 2.0],       # +inf is the target: nan
                  [ninf, 1.0, 2.0, 3.0],      # -inf target: inf
                  [ninf, ninf, ninf, ninf],   # all masked: nan
                  [ninf, ninf, 5.0, ninf]])   # target the only live class: 0
    t = np.array([2, 0, 0, 1, 0, 0, 2])
    fast, slow = both(x, t)
    assert_close(fast, slow)
    assert mpmath.isnan(fast[1]) and mpmath.isnan(fast[2]) and mpmath.isnan(fast[3])
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
    with pytest.raises(UncertifiedError, match="precision cap of 64 bits"):
        reference_loss(x, [0, 1], bits=400, max_prec=64)   # refused before evaluating


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


# --- the vectorised fixed-point engine (fastref._vec): many rows, every route -----------------

from precision_lab.truth import fastref  # noqa: E402


def _kinds(x, t, bits=BITS):
    return fastref.certified_losses(np.asarray(x, dtype=np.float64), np.asarray(t), bits,
                                    1 << 15).kind


def _truth(row, ti, prec=900):
    """Plain mpmath with every term, at `prec` bits."""
    with mpmath.workprec(prec):
        xs = [mpmath.mpf(float(v)) for i, v in enumerate(row) if v != -np.inf and i != ti]
        xt = mpmath.mpf(float(row[ti]))
        a = max(xs + [xt])
        s = mpmath.fsum(mpmath.exp(v - a) for v in xs)
        if xt == a:
            return mpmath.log1p(s)
        return mpmath.log(s + mpmath.exp(xt - a)) + (a - xt)


@pytest.mark.parametrize("fmt", list(STANDARD_FORMATS), ids=str)
@pytest.mark.parametrize("scale", [1.0, 10.0, 1000.0], ids=lambda s: f"scale{s:g}")
def test_many_short_rows_match_mpmath(fmt, scale):
    """C = 10, 600 rows (a tenth with the target as the maximum: log1p of Z from about 1 down
    to exp(-600)), all through the vectorised engine, against the mpmath backend."""
    rng = np.random.default_rng(17)
    x = FORMATS[fmt].round(scale * rng.standard_normal((600, 10)))
    t = rng.integers(0, 10, 600)
    t[::7] = np.argmax(x[::7], axis=1)
    assert (_kinds(x, t) == fastref.FIXED).all()
    fast, slow = both(x, t)
    assert_close(fast, slow)


def test_float64_on_and_off_grid_values_mixed():
    """float64 rows mixing values on the 2**-31 grid (summed from the tables alone) and off it
    (the expm1(x_f) factor), tiny values of both signs (x_f = 2**-31 - |x| is no float), values
    just below and above grid points, and targets of every kind."""
    rng = np.random.default_rng(23)
    rows = []
    for _ in range(40):
        r = rng.standard_normal(16) * rng.choice([0.5, 3.0, 30.0])
        r[:5] = np.round(r[:5] * 2.0 ** 12) / 2.0 ** 12            # on the grid
        r[5] = rng.choice([1e-30, -1e-30, -2.0 ** -33, 2.0 ** -40, -5e-324, 0.0])
        r[6] = np.nextafter(r[0], np.inf)                           # just off a grid point
        r[7] = np.nextafter(r[1], -np.inf)
        r[8] = -2.0 ** -32 * (1 + rng.random())                     # floor(x 2**31) = -1
        rows.append(r)
    x = np.array(rows)
    t = rng.integers(0, 16, len(x))
    t[::3] = np.argmax(x[::3], axis=1)
    assert (_kinds(x, t) == fastref.FIXED).all()
    fast, slow = both(x, t)
    assert_close(fast, slow)


def test_target_max_every_gap():
    """Target the maximum with a - b from 0 (ties) through the log1p/series switch (Z near
    2**-20) to 600 (loss near exp(-600)): rows [a, a - g, a - g - 1.5, ...]."""
    gaps = [0.0, 2.0 ** -20, 0.3, 5.0, 13.0, 13.7, 14.2, 15.0, 20.0, 45.0, 90.0, 91.5, 300.0,
            599.0]
    rows = []
    for g in gaps:
        for a in (0.0, 7.25, -1234.5, 1.0 / 3.0):
            rows.append([a, a - g, a - g - 1.5, a - g - 2.0 ** -30, a - g - 700.0])
    x = np.array(rows)
    t = np.zeros(len(x), dtype=np.int64)
    assert (_kinds(x, t) == fastref.FIXED).all()
    fast, slow = both(x, t)
    assert_close(fast, slow)
    with mpmath.workprec(400):
        for i, row in enumerate(x):
            s = _truth(row, 0)
            assert abs(fast[i] - s) <= s * mpmath.ldexp(1, -BITS - 1), (i, row)
    a = reference_truth(x, t, cache=False)
    hi, lo = to_double_double(slow)
    assert np.array_equal(a.hi, hi)
    assert np.all(np.abs(a.lo - lo) <= np.abs(hi) * 2.0 ** -100)
    g = np.repeat(gaps, 4)
    assert np.all(a.hi[g == 5000.0] == 0.0) and np.all(a.hi[g == 700.0] > 0.0)
    assert np.all(a.lo[g == 700.0] != 0.0)   # exp(-700): hi and lo both normal


@pytest.mark.parametrize("bits", [BITS, 200], ids=lambda b: f"bits{b}")
def test_vectorised_radius_contains_the_truth(bits):
    """For rows of the vectorised engine, the certified midpoint lies within its radius of a
    900-bit evaluation with every term (the radius is a proven bound; this checks its
    bookkeeping), and the radius is at most 2**-(bits+2) of the loss."""
    rng = np.random.default_rng(29)
    for fmt in STANDARD_FORMATS:
        for scale in (1e-6, 1.0, 30.0):
            x = FORMATS[fmt].round(scale * rng.standard_normal((12, 24)) + rng.choice([0, 3.5]))
            t = rng.integers(0, 24, 12)
            t[:4] = np.argmax(x[:4], axis=1)
            res = fastref.certified_losses(x, t, bits, 1 << 15)
            assert (res.kind == fastref.FIXED).all()
            for i in range(len(t)):
                man, ex = res.man_exp(i)
                rad = res.blocks[res.block[i]][3][res.pos[i]]
                with mpmath.workprec(900):
                    mid = mpmath.mpf(man)
                    err = abs(mid - _truth(x[i], t[i]) * mpmath.ldexp(1, -ex))
                    assert err <= rad, (fmt, scale, i)
                    assert rad <= mid * mpmath.ldexp(1, -bits - 2)


def test_truth_and_mean_many_rows_with_exponents():
    """reference_truth over rows of the vectorised engine of every kind (losses near 1 and near
    exp(-300), whose mean needs the exact float sums) against the mpmath backend."""
    rng = np.random.default_rng(31)
    x = FORMATS["float32"].round(rng.standard_normal((60, 8)) * 3)
    x[::2, 0] += 300.0                     # confident rows: loss ~ exp(-300) when t = 0
    t = rng.integers(0, 8, 60)
    t[::2] = 0
    a = reference_truth(x, t, cache=False)
    slow = reference_loss(x, t, backend="mpmath")
    with mpmath.workprec(300):
        for i in range(60):
            va = mpmath.mpf(a.hi[i]) + a.lo[i]
            assert abs(va - slow[i]) <= slow[i] * mpmath.ldexp(1, -BITS), i
            assert a.hi[i] == float(va)   # hi is hi + lo rounded to nearest
        ma = mpmath.mpf(a.mean_hi) + a.mean_lo
        mb = reference_mean(slow)
        assert abs(ma - mb) <= mb * mpmath.ldexp(1, -BITS)


def test_large_batch_of_short_rows_against_sampled_truth():
    """20000 rows of C = 10 (several passes of the per-row part), a sample checked against
    plain mpmath at 300 bits."""
    rng = np.random.default_rng(37)
    x = rng.standard_normal((20000, 10)) * 4
    t = rng.integers(0, 10, 20000)
    t[::5] = np.argmax(x[::5], axis=1)
    a = reference_truth(x, t, cache=False)
    for i in rng.choice(20000, 40, replace=False).tolist() + [0, 5, 19995]:
        with mpmath.workprec(300):
            s = _truth(x[i], t[i], prec=300)
            assert abs(mpmath.mpf(a.hi[i]) + a.lo[i] - s) <= s * mpmath.ldexp(1, -BITS), i
