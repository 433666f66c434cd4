"""The compiled per-row kernels (`fastref_rows`, `fastref.USE_ROWS_KERNEL`) against the numpy
path they mirror (`_log_fix`'s limbs, `elementary.log` for its y, `_vec`'s maxima and
below-the-maximum losses, `_max_rows`' shifts and small-Z series, `_dd_from_limbs`, the mean's
limb sums): the same limbs, the same radii, the same rows certified and sent to `arb`, the
same double-doubles and mean, bit for bit, on every format, short and wide rows,
target-is-max rows, tiny Z, masked classes, rows for `arb`, bits = 200."""
import numpy as np
import pytest

from precision_lab.numerics import elementary
from precision_lab.numerics.formats import FORMATS as ALL
from precision_lab.numerics.formats import get_format
from precision_lab.truth import fastref, fastref_rows


def _run(monkeypatch, x, t, rows, bits=100):
    monkeypatch.setattr(fastref, "USE_ROWS_KERNEL", rows)
    return fastref.certified_losses(np.asarray(x, dtype=np.float64), np.asarray(t), bits,
                                    1 << 15)


def _bits(a):
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def _same(a, b, bits):
    assert np.array_equal(a.kind, b.kind)                  # which rows are FIXED / BALL / ...
    assert np.array_equal(a.block, b.block) and np.array_equal(a.pos, b.pos)
    assert len(a.blocks) == len(b.blocks)
    for (v1, k1, f1, r1), (v2, k2, f2, r2) in zip(a.blocks, b.blocks):
        assert f1 == f2
        assert np.array_equal(v1, v2) and np.array_equal(k1, k2)   # midpoints, exponents
        assert np.array_equal(_bits(r1), _bits(r2))                 # radii, bit for bit
    assert a.balls.keys() == b.balls.keys()                # the rows the arb path took
    for i in a.balls:
        assert a.balls[i].mid() == b.balls[i].mid() and a.balls[i].rad() == b.balls[i].rad()
    fastref.USE_ROWS_KERNEL = False                        # (restored by the monkeypatch)
    h1, l1 = a.double_double()                             # the numpy path throughout
    m1 = a.mean(bits)
    fastref.USE_ROWS_KERNEL = True                         # the kernels throughout
    h2, l2 = b.double_double()
    m2 = b.mean(bits)
    assert np.array_equal(_bits(h1), _bits(h2)) and np.array_equal(_bits(l1), _bits(l2))
    if isinstance(m1, float):
        assert np.array_equal(_bits(m1), _bits(m2))
    else:
        assert m1.mid() == m2.mid() and m1.rad() == m2.rad()


def _check(monkeypatch, x, t, bits=100):
    a = _run(monkeypatch, x, t, False, bits)
    b = _run(monkeypatch, x, t, True, bits)
    _same(a, b, bits)
    return b


@pytest.mark.parametrize("fmt", list(ALL))
@pytest.mark.parametrize("shape", [(3000, 2), (2000, 10), (6, 1000), (2, 40000)])
def test_random_rows_every_format(monkeypatch, fmt, shape):
    rng = np.random.default_rng([21, *shape, list(ALL).index(fmt)])
    n, c = shape
    for scale in (1e-3, 1.0, 10.0, 1000.0):
        x = get_format(fmt).round(scale * rng.standard_normal((n, c)))
        t = rng.integers(0, c, n)
        _check(monkeypatch, x, t)


@pytest.mark.parametrize("bits", [100, 200])
def test_target_is_max_tiny_z_masked_and_arb_rows(monkeypatch, bits):
    rng = np.random.default_rng(22 + bits)
    for fmt, c in (("bfloat16", 10), ("float32", 3), ("float64", 40), ("float16", 3000)):
        n = 400
        x = get_format(fmt).round(3 * rng.standard_normal((n, c)))
        t = rng.integers(0, c, n)
        r = np.arange(n)
        mx = x.max(axis=1)
        x[r[:200], t[:200]] = mx[:200] + get_format(fmt).round(
            np.geomspace(1e-3, 3e4, 200))                  # target is the maximum, Z down to tiny
        x[200:210, :] = 1.5                                # ties: every class the maximum
        x[210:220][rng.random((10, c)) < 0.4] = -np.inf    # masked classes
        x[210:220, t[210:220]] = 0.25
        x[220, :] = -np.inf
        x[220, t[220]] = 2.0                               # the only live class: loss 0
        x[221:225] += 2.0 ** 41                            # |lead| >= 2**40: the arb path
        x[225, t[225]] = 2.0 ** 21 + mx[225]               # a - b > 2**20: the arb path
        x[226] = 0.0
        x[226, ::2] = -0.0                                 # signed zeros
        x[227, 0] = np.nan                                 # specials
        x[228, t[228]] = -np.inf
        x[229, 0] = np.inf
        x[230] = 5e-324 * np.arange(c)                     # subnormals
        _check(monkeypatch, x, t, bits)


def test_huge_and_small_scales_off_grid(monkeypatch):
    rng = np.random.default_rng(23)
    c = 50
    x = rng.standard_normal((300, c))
    x[:50] *= 1e4
    x[50:100] *= 1e-9                                     # every logit off the grid
    x[100:150] = x[100:150] * 1e3 + 1e9
    x[150:, 0] = 40.0                                     # a wide gap, target below
    t = rng.integers(0, c, 300)
    t[200:250] = 0                                        # target the maximum, gap ~40
    _check(monkeypatch, x, t)
    _check(monkeypatch, x, t, bits=200)


def test_log_floor31_is_elementarys_log(monkeypatch):
    """`log_floor31` gives floor(log(v) 2**31) - 1 with elementary's correctly rounded float64
    log, including values whose log lies next to a rounding midpoint (decided when both
    candidates floor alike, sent back otherwise) and values out of its range."""
    rng = np.random.default_rng(24)
    f64 = get_format("float64")
    grid = np.arange(1, 50001) * 2.0 ** -31 * 104729.0     # log v near multiples of 2**-31
    v = np.concatenate([1 + rng.random(50000) * 30, 2.0 ** (rng.random(50000) * 30),
                        1 + rng.random(5000) * 1e-12, np.nextafter(1.0, 2.0) + np.arange(50) *
                        2.0 ** -52, elementary.exp(grid, f64),
                        [1.0, 0.5, 0.0, -1.0, np.inf, np.nan, 2.0 ** 30, 2.0 ** 1000, 1e300]])
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.floor(elementary.log(v, f64) * 2.0 ** 31) - 1.0
    out = np.empty_like(v)
    amb = np.zeros(v.size, dtype=np.bool_)
    e = elementary
    n = fastref_rows.log_floor31(v, out, amb, e._RJ, e._RJ_SPLIT[0], e._RJ_SPLIT[1], e._LH,
                                 e._LL, e._LN2H, e._LN2L, e._SQRT_HALF, float(e.LOG_GRID),
                                 float(e._LOG_LO), e.BOUNDS["log"])
    assert n == amb.sum() >= 9                             # the out-of-range ones at least
    assert np.array_equal(_bits(out[~amb]), _bits(want[~amb]))
    for flag in (False, True):
        monkeypatch.setattr(fastref, "USE_ROWS_KERNEL", flag)
        assert np.array_equal(_bits(fastref._log_y(v)), _bits(want))


def test_dd_from_limbs_the_numpy_operations(monkeypatch):
    rng = np.random.default_rng(25)
    for k in (3, 6, 9, 27):
        v = rng.integers(0, 1 << 26, (k, 3000)).astype(np.int64)
        v[:, :100] = 0                                     # all zero
        v[-1, 100:1000] = 0
        v[-3:, 1000:1500] = 0                              # tops of different heights
        v[:, 1500] = 0
        v[0, 1500] = 1
        e0 = rng.integers(-1200, 20, 3000)                  # into the subnormal range too
        monkeypatch.setattr(fastref, "USE_ROWS_KERNEL", False)
        h1, l1 = fastref._dd_from_limbs(v, e0)
        monkeypatch.setattr(fastref, "USE_ROWS_KERNEL", True)
        h2, l2 = fastref._dd_from_limbs(v, e0)
        assert np.array_equal(_bits(h1), _bits(h2)) and np.array_equal(_bits(l1), _bits(l2))


def test_row_max_the_numpy_maxima():
    rng = np.random.default_rng(26)
    x = np.round(rng.standard_normal((500, 7)) * 4) / 4   # many ties
    x[rng.random(x.shape) < 0.3] = -np.inf
    x[:5] = -np.inf
    t = rng.integers(0, 7, 500)
    x[:3, t[:3]] = 1.0
    xt, a, lead = np.empty(500), np.empty(500), np.empty(500)
    fastref_rows.row_max(x, t, xt, a, lead)
    assert np.array_equal(a, x.max(axis=1)) and np.array_equal(xt, x[np.arange(500), t])
    xm = x.copy()
    xm[np.arange(500), t] = -np.inf
    assert np.array_equal(lead, np.where(xt == a, xm.max(axis=1), a))


def test_the_flag_switches_the_kernels(monkeypatch):
    """USE_ROWS_KERNEL routes `_log_fix`, `_vec` and `_dd_from_limbs` through the kernels,
    and False keeps them out."""
    called = []
    names = {"log_q", "log_series", "log_floor31", "row_max", "below_max", "dd_from_limbs",
             "shift_right", "small_z", "limb_sums", "max_terms"}
    for name in names:
        f = getattr(fastref_rows, name)
        monkeypatch.setattr(fastref_rows, name,
                            lambda *a, _f=f, _n=name: called.append(_n) or _f(*a))
    x = get_format("bfloat16").round(np.random.default_rng(27).standard_normal((50, 10)))
    t = np.arange(50) % 10
    x[:5, 0], t[:5] = 30.0, 0                              # target the maximum: Z small
    x[5:10, 0], t[5:10] = 3.0, 0                           # ... and not small
    r = _run(monkeypatch, x, t, False)
    r.double_double(), r.mean(100)
    assert called == []
    r = _run(monkeypatch, x, t, True)
    r.double_double(), r.mean(100)
    assert set(called) == names
