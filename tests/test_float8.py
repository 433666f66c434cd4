"""Exhaustive rounding tests of the 8-bit formats: every value, every tie between neighbours,
the doubles on either side of every tie, and the overflow and underflow edges, against the
exact definition (fractions), ml_dtypes' casts (where their semantics agree: float32 inputs,
since ml_dtypes casts float64 through float32 and so rounds twice) and gfloat, an independent
emulator (a test-only dependency)."""
import math
from fractions import Fraction

import numpy as np
import pytest
from test_formats import exact_round

from precision_lab import FORMATS, Arithmetic, custom_format

gfloat = pytest.importorskip("gfloat")
from gfloat.formats import format_info_ocp_e4m3, format_info_ocp_e5m2  # noqa: E402

FLOAT8 = {"float8_e5m2": format_info_ocp_e5m2, "float8_e4m3fn": format_info_ocp_e4m3}


def codes_values(fmt):
    """Every finite value of the format, decoded from all 256 codes by ml_dtypes."""
    with np.errstate(invalid="ignore"):
        v = np.arange(256, dtype=np.uint8).view(fmt.dtype).astype(np.float64)
    return np.unique(v[np.isfinite(v)])


def edge_points(fmt):
    """Every value, every midpoint, the doubles just either side of each, and the edges."""
    v = codes_values(fmt)
    mids = (v[:-1] + v[1:]) / 2  # exact: a float8 midpoint has 5 significant bits
    top = fmt.max_finite + fmt.ulp(fmt.max_finite) / 2  # the overflow tie
    tiny = fmt.min_subnormal / 2  # the underflow tie (to 0)
    edges = np.array([top, 2 * top, 1e300, tiny, 1.5 * tiny, 3 * tiny])
    edges = np.concatenate([edges, -edges])
    pts = np.concatenate([v, mids, edges])
    return np.concatenate([pts, np.nextafter(pts, np.inf), np.nextafter(pts, -np.inf)])


def same(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return ((a == b) & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b))


@pytest.mark.parametrize("name", list(FLOAT8) + ["float8_e4m3fn_sat"])
def test_every_value_tie_and_edge_against_exact_definition(name):
    f = FORMATS[name]
    pts = edge_points(f)
    want = [exact_round(float(x), f.precision, f.emin, f.emax, f.top_nan_codes, f.overflow)
            for x in pts]
    got = f.round(pts)
    assert same(got, want).all(), pts[~same(got, want)][:5]
    values = codes_values(f)
    assert same(f.round(values), values).all()  # every value rounds to itself
    assert len(values) == 2 ** f.bits - f.nan_encodings - 2 * f.infinities - 1  # one zero


@pytest.mark.parametrize("name", list(FLOAT8))
def test_ties_go_to_even_and_overflow_as_specified(name):
    f = FORMATS[name]
    v = codes_values(f)
    v = v[v > 0]
    mids = (v[:-1] + v[1:]) / 2
    got = f.round(mids)
    # the even neighbour: an even integer significand at the format's spacing
    sig = np.ldexp(got, -np.maximum(np.frexp(got)[1] - f.precision, f.emin - f.precision + 1))
    assert (sig % 2 == 0).all()
    top_tie = f.max_finite + float(f.ulp(f.max_finite)) / 2
    if name == "float8_e5m2":  # IEEE: the overflow tie rounds to inf (2**16 has an even
        assert f.round(top_tie) == np.inf  # significand), inf stays inf
    else:  # e4m3fn: 464 is a tie between 448 (even) and 480 (a NaN code): 448; beyond: NaN
        assert top_tie == 464 and f.round(464.0) == 448
        assert np.isnan(f.round(np.nextafter(464.0, np.inf)))
        assert np.isnan(f.round(np.inf)) and FORMATS["float8_e4m3fn_sat"].round(-np.inf) == -448


@pytest.mark.parametrize("name", list(FLOAT8))
def test_against_ml_dtypes_casts_of_float32(name):
    """ml_dtypes casts float32 to float8 with one rounding: the same as ours on every edge
    point that float32 holds exactly (from float64 it rounds twice, via float32)."""
    f = FORMATS[name]
    pts = edge_points(f)
    with np.errstate(over="ignore", invalid="ignore"):
        pts = pts[pts.astype(np.float32).astype(np.float64) == pts]
        pts = np.concatenate([pts, np.nextafter(pts.astype(np.float32), np.float32(np.inf))
                              .astype(np.float64)])
        theirs = pts.astype(np.float32).astype(f.dtype).astype(np.float64)
    assert same(f.round(pts), theirs).all()


@pytest.mark.parametrize("name", list(FLOAT8))
def test_against_gfloat(name):
    f, fi = FORMATS[name], FLOAT8[name]
    pts = edge_points(f)
    assert same(f.round(pts), gfloat.round_ndarray(fi, pts)).all()
    sat = FORMATS["float8_e4m3fn_sat"] if name == "float8_e4m3fn" else None
    if sat is not None:
        assert same(sat.round(pts), gfloat.round_ndarray(fi, pts, sat=True)).all()


@pytest.mark.parametrize("p,emin,emax", [(11, -126, 127), (5, -14, 15), (3, -2, 3),
                                         (7, -30, 31)])
def test_custom_formats_against_gfloat(p, emin, emax):
    """tf32 and custom IEEE-style formats, as gfloat describes them (bias = 1 - emin)."""
    f = custom_format(p, emin, emax)
    k = f.bits
    fi = gfloat.FormatInfo(f"p{p}", k, p, bias=1 - emin, is_signed=True,
                           domain=gfloat.Domain.Extended, has_nz=True,
                           num_high_nans=2 ** (p - 1) - 1, has_subnormals=True,
                           is_twos_complement=False)
    rng = np.random.default_rng(p)
    x = np.ldexp(rng.uniform(0.5, 1, 5000), rng.integers(emin - p - 2, emax + 3, 5000))
    x = np.concatenate([x, -x, f.round(x), [f.max_finite + float(f.ulp(f.max_finite)) / 2]])
    assert same(f.round(x), gfloat.round_ndarray(fi, x)).all()
    if (p, emin, emax) == (11, -126, 127):
        assert same(FORMATS["tf32"].round(x), f.round(x)).all()


@pytest.mark.parametrize("name", list(FLOAT8))
def test_every_pair_adds_correctly_rounded_in_ml_dtypes(name):
    """Why sums may use numpy's add.accumulate in the float8 dtypes (Format.native): every one
    of the 2**16 pairs of codes adds to the correct rounding of the exact sum."""
    f = FORMATS[name]
    with np.errstate(invalid="ignore"):
        v = np.arange(256, dtype=np.uint8).view(f.dtype)
        a, b = np.meshgrid(v, v)
        with np.errstate(over="ignore"):
            theirs = (a + b).astype(np.float64)
        exact = a.astype(np.float64) + b.astype(np.float64)  # exact: 3-4 bit operands
    assert same(theirs, f.round(exact)).all()


@pytest.mark.parametrize("name", list(FLOAT8) + ["p5_emin-14_emax15"])
def test_sequential_sum_is_one_rounding_per_partial_sum(name):
    f = FORMATS[name]
    rng = np.random.default_rng(1)
    v = f.round(rng.standard_normal((4, 300)) * 3)
    got = Arithmetic(f).sum(v)
    for row, g in zip(v, got):
        s = 0.0
        for x in row:
            s = exact_round(Fraction(s) + Fraction(float(x)), f.precision, f.emin, f.emax,
                            f.top_nan_codes, f.overflow)
            if math.isnan(s):
                break
        assert same(g, s)


@pytest.mark.parametrize("name", ["p4_emin-2_emax3", "p4_emin-2_emax3_sat", "float8_e4m3fn",
                                  "float8_e4m3fn_sat", "p30_emin-20_emax20"])
def test_sequential_sum_overflows_as_the_format_does(name):
    """Mixed signs (an overflow mid-sum must stick) and one sign (checked at the end)."""
    f = FORMATS[name]
    rng = np.random.default_rng(2)
    big = f.max_finite / 3
    rows = [f.round(rng.uniform(-1, 1, 40) * big), f.round(np.abs(rng.uniform(-1, 1, 40)) * big),
            f.round(np.array([big, big, big, big, -big, -big, -big, -big])),
            f.round(rng.standard_normal(40) * 1e-3 * big)]
    for row in rows:
        got = Arithmetic(f).sum(row[None, :])[0]
        s = 0.0
        for x in row:
            s = exact_round(Fraction(s) + Fraction(float(x)), f.precision, f.emin, f.emax,
                            f.top_nan_codes, f.overflow) if math.isfinite(s) else s
        assert same(got, s), (name, row, got, s)
