"""The compiled elementary paths (numerics/fe.py) are `elementary.compute`, bit for bit:
the table look-ups of narrow formats, the compiled exp of wide ones, and the compiled
sequential sum is `Arithmetic._sequential_sum`'s numpy loop."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from test_elementary import ALL, NAMES, adversarial

from precision_lab.numerics import elementary as el
from precision_lab.numerics import fastelem as fe
from precision_lab.numerics.arithmetic import Arithmetic
from precision_lab.numerics.formats import FORMATS, get_format

SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324, 1e-310,
                     2.0 ** -1022, 1.7976931348623157e308, -1.7976931348623157e308, 1.0, -1.0,
                     710.0, 711.0, -746.0, -747.0, 40.0, -40.0])
NAN_PAYLOAD = np.array([0x7FF0000000000001, 0xFFF8000000000123], dtype=np.uint64).view(np.float64)


def raw(v) -> np.ndarray:
    """The exact bit patterns (nan payloads and signs included)."""
    return np.ascontiguousarray(v, dtype=np.float64).view(np.uint64)


def values_of(fmt, rng) -> np.ndarray:
    """Every value of a format with a dtype of at most 16 bits, else a random sample of S."""
    dtype = getattr(fmt, "dtype", None)
    if dtype is not None and dtype.itemsize <= 2:
        codes = np.arange(1 << (8 * fmt.dtype.itemsize),
                          dtype=np.uint16 if fmt.dtype.itemsize == 2 else np.uint8)
        with np.errstate(invalid="ignore"):
            return codes.view(fmt.dtype).astype(np.float64)
    p = fmt.precision                    # m 2**(e - p + 1), m < 2**p: values of S, exactly
    m = rng.integers(0, 1 << p, 30000).astype(np.float64) * rng.choice([-1.0, 1.0], 30000)
    e = rng.integers(fmt.emin - p + 1, fmt.emax + 1, 30000)
    return np.ldexp(m, e - p + 1)


def _inputs(fmt, name, rng) -> np.ndarray:
    vals = values_of(fmt, rng)
    return np.concatenate([vals, SPECIALS, NAN_PAYLOAD, adversarial(name)[:3000],
                           rng.standard_normal(3000) * np.exp2(rng.integers(-60, 12, 3000)),
                           vals[:2000] * (1 + 2.0 ** -40)])          # just off the format


TABLED = [f for f in ALL if fe.table_size(f) <= fe.TABLE_MAX]


def test_which_formats_are_tabulated():
    names = {f.name for f in TABLED}
    assert {"bfloat16", "float16", "float8_e5m2", "float8_e4m3fn", "tf32"} <= names
    assert not {"float32", "float64"} & names


@pytest.mark.parametrize("fmt", TABLED, ids=[f.name for f in TABLED])
@pytest.mark.parametrize("name", NAMES)
def test_table_look_up_is_compute_bit_for_bit(name, fmt):
    rng = np.random.default_rng(3)
    x = _inputs(fmt, name, rng)
    got = fe.compute(name, x, fmt)
    assert np.array_equal(raw(got), raw(el.compute(name, x, fmt)[0]))
    assert fe.compute(name, x.reshape(-1, 1)[:40].reshape(4, 10), fmt).shape == (4, 10)


WIDE = [FORMATS["float32"], FORMATS["float64"], get_format("p=30,emin=-200,emax=300"),
        get_format("p=40,emin=-1000,emax=1000")]


@pytest.mark.parametrize("fmt", WIDE, ids=[f.name for f in WIDE])
def test_compiled_exp_is_compute_bit_for_bit(fmt):
    """Adversarial inputs (argument-reduction boundaries, near 1 - 2**-54, the overflow and
    underflow thresholds), every binade, specials, subnormal results, overflow."""
    rng = np.random.default_rng(5)
    lo, hi = np.log(fmt.min_subnormal), np.log(fmt.max_finite)
    x = np.concatenate([adversarial("exp"), SPECIALS, NAN_PAYLOAD,
                        rng.uniform(-1, 1, 20000) * np.exp2(rng.integers(-1074, 10, 20000)),
                        rng.uniform(lo - 2, lo + 30, 5000),             # subnormal results
                        rng.uniform(hi - 1, hi + 1, 3000),              # overflow
                        fmt.round(rng.normal(0, 30, 20000)),            # values of the format
                        fmt.round(-np.abs(rng.normal(0, 5, 20000)))])
    flat = np.ascontiguousarray(x)
    out = np.empty_like(flat)
    amb = np.zeros(flat.size, dtype=bool)
    n = fe._exp_kernel(flat, out, amb, fe._TH, fe._TL, fe._THH, fe._THL, fe._L1, fe._L2,
                       fe._L3, fe._INV_L, fe._EXP_BOUND, fmt.precision, fmt.emin,
                       fmt.max_finite)
    ref = el.compute("exp", x, fmt)[0]
    if fmt.precision == 53:
        assert n > 0                     # the settling path is exercised
    assert np.array_equal(raw(out[~amb]), raw(ref[~amb]))
    assert np.array_equal(raw(fe.compute("exp", x, fmt)), raw(ref))


@pytest.mark.parametrize("fmt", WIDE[:2], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ("log", "log1p", "expm1", "tanh"))
def test_other_functions_of_wide_formats_unchanged(name, fmt):
    x = adversarial(name)[:2000]
    assert np.array_equal(raw(fe.compute(name, x, fmt)), raw(el.compute(name, x, fmt)[0]))


@pytest.mark.parametrize("name", ["bfloat16", "float32", "float8_e4m3fn", "tf32",
                                  "float16,round=sr", "float64"])
def test_arithmetic_elementary_unchanged(name):
    """Arithmetic's correctly rounded functions go through fastelem: the same bits as through
    elementary.compute (stochastic formats keep their path)."""
    fmt = get_format(name)
    rng = np.random.default_rng(1)
    x = fmt.round(rng.normal(0, 4, (8, 300)))
    for fn in NAMES:
        a = getattr(Arithmetic(fmt), fn)(x)
        target = FORMATS["float64"] if fmt.rounding == "stochastic" else fmt
        ref = el.compute(fn, x, target)[0]
        ref = Arithmetic(fmt).round(ref) if target is not fmt else ref
        if target is fmt and np.isinf(ref).any():
            continue                           # the overflow step: checked by test_methods
        assert np.array_equal(raw(a), raw(ref)), fn


# --- the compiled sequential sum --------------------------------------------------------------

SUM_FORMATS = ["tf32", "float8_e4m3fn_sat", "float16_sat", "p=5,emin=-14,emax=15",
               "p=5,emin=-14,emax=15,overflow=saturate", "bfloat16_sat", "float8_e5m2_sat",
               "p=25,emin=-126,emax=127", "p=3,emin=-4,emax=5"]


def _sum_inputs(fmt, rng):
    big = fmt.max_finite
    rows = [fmt.round(rng.normal(0, 3, (6, 200))),
            fmt.round(np.abs(rng.normal(0, big / 50, (4, 200)))),          # one sign, overflow
            fmt.round(rng.normal(0, big / 30, (4, 200))),                  # mixed, overflow
            fmt.round(rng.uniform(0, 1, (4, 200)) * fmt.min_normal * 4),   # subnormal sums
            np.array([[0.0, -0.0, -0.0, 0.0] * 50, [-0.0] * 200, [np.nan] + [1.0] * 199,
                      [np.inf] + [-np.inf] + [1.0] * 198, [-big, big] * 100]),
            fmt.round(-np.abs(rng.normal(0, 1, (3, 200))))]
    return rows


@pytest.mark.parametrize("name", SUM_FORMATS)
def test_compiled_sum_is_the_numpy_loop(name):
    fmt = get_format(name)
    rng = np.random.default_rng(2)
    for v in _sum_inputs(fmt, rng):
        ar = Arithmetic(fmt)
        for k in (1, 2, v.shape[1]):
            a = ar._sequential_sum(v[:, :k], fmt)
            b = ar._sequential_sum(v[:, :k], fmt, compiled=False)
            assert np.array_equal(raw(a), raw(b)), (name, k)
    v3 = fmt.round(rng.normal(0, 3, (2, 3, 50)))
    assert Arithmetic(fmt)._sequential_sum(v3, fmt).shape == (2, 3)


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float8_e5m2", "float8_e4m3fn"])
def test_compiled_sum_equals_numpy_accumulate_for_native_formats(name):
    """For the native formats numpy's add.accumulate in the dtype (ml_dtypes: float32 adds,
    rounded to the format) is the same as one correct rounding per partial sum."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(4)
    for v in _sum_inputs(fmt, rng)[:4]:
        with np.errstate(over="ignore", invalid="ignore"):
            ref = np.add.accumulate(v.astype(fmt.dtype), axis=-1)[..., -1].astype(np.float64)
        one_sign = bool(np.all(v >= 0) or np.all(v <= 0))
        got = fe.sequential_sum(v, fmt, one_sign)
        assert np.array_equal(raw(got), raw(ref)), name


def test_bfloat16_accumulate_is_float32_then_bfloat16():
    """ml_dtypes' bfloat16 add (what add.accumulate does) is float32 addition rounded to
    bfloat16, checked on every pair of a sample: the premise of the test above."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 1 << 16, 200000).astype(np.uint16).view(ml_dtypes.bfloat16)
    b = rng.integers(0, 1 << 16, 200000).astype(np.uint16).view(ml_dtypes.bfloat16)
    with np.errstate(all="ignore"):
        s = (a + b).astype(np.float64)
        ref = FORMATS["bfloat16"].round(a.astype(np.float64) + b.astype(np.float64))
    ok = ~np.isnan(ref)
    assert np.array_equal(np.isnan(s), ~ok)
    assert np.array_equal(raw(s[ok]), raw(ref[ok]))


@pytest.mark.parametrize("name", ["bfloat16", "float16", "float8_e5m2", "float8_e4m3fn",
                                  "float32"])
def test_compiled_accumulate_is_numpy_accumulate(name):
    """fe.accumulate_native is numpy's add.accumulate in the dtype, bit for bit, or
    declines (None: non-finite inputs or sums, inputs that are not values of the format)."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(6)
    rows = _sum_inputs(fmt, rng) + [rng.normal(0, 3, (3, 100)),
                                    np.array([NAN_PAYLOAD.tolist() + [1.0] * 98])]
    declined = 0
    for v in rows:
        with np.errstate(over="ignore", invalid="ignore"):
            ref = np.add.accumulate(v.astype(fmt.dtype), axis=-1)[..., -1].astype(np.float64)
        got = fe.accumulate_native(v, fmt)
        if got is None:
            declined += 1
            continue
        assert np.array_equal(raw(got), raw(ref)), name
    assert declined < len(rows)
    ar = Arithmetic(fmt)
    v = fmt.round(rng.normal(0, 3, (13, 257)))
    assert np.array_equal(raw(ar.sum(v)), raw(fe.accumulate_native(v, fmt)))


def test_float32_accumulate_in_blocks_of_eight_rows():
    """float32's compiled accumulate (8-row blocks in registers, then the remaining rows) is
    numpy's add.accumulate in float32, bit for bit, for row counts around multiples of 8; a
    non-finite sum in a full block or in the remainder declines."""
    fmt = FORMATS["float32"]
    rng = np.random.default_rng(8)
    for n in (1, 7, 8, 9, 16, 19, 24):
        v = fmt.round(rng.normal(0, 3, (n, 301)) * np.exp2(rng.integers(-30, 30, (n, 1))))
        ref = np.add.accumulate(v.astype(np.float32), axis=-1)[..., -1].astype(np.float64)
        assert np.array_equal(raw(fe.accumulate_native(v, fmt)), raw(ref)), n
        for row in (0, n - 1):
            w = v.copy()
            w[row, 5] = np.inf
            assert fe.accumulate_native(w, fmt) is None


# --- the online method's block-at-once pass ---------------------------------------------------

@pytest.mark.parametrize("name", ["bfloat16", "float16", "float32", "float64", "tf32",
                                  "float8_e4m3fn", "float8_e5m2", "float16_sat",
                                  "p=30,emin=-60,emax=60"])
def test_online_blocks_is_the_block_loop(name):
    """methods._online_ms_blocks (every block's elementwise work at once) gives the loop's
    bits: row lengths below, at and past multiples of the block, +-inf and nan logits,
    overflowing sums, every accumulator."""
    from precision_lab.numerics import methods as me
    from precision_lab.numerics.arithmetic import accumulators_for
    fmt = get_format(name)
    rng = np.random.default_rng(8)
    b = me.ONLINE_BLOCK
    for c in (1, 5, b, b + 1, 3 * b, 3 * b + 77):
        x = fmt.round(rng.normal(0, 4, (6, c)))
        x[1] = fmt.round(rng.normal(0, 1, c) + np.log(fmt.max_finite))   # sums overflow
        x[2, 0] = np.inf
        x[3, -1] = -np.inf
        x[4, c // 2] = np.nan
        x[5] = -np.inf
        for acc in accumulators_for(fmt):
            ar = Arithmetic(fmt, acc)
            assert me._online_vectorisable(ar)
            m1, s1 = me._online_ms_blocks(ar, x)
            m2, s2 = me._online_ms_loop(Arithmetic(fmt, acc), x)
            assert np.array_equal(raw(m1), raw(m2)) and np.array_equal(raw(s1), raw(s2)), \
                (name, c, acc)
    assert not me._online_vectorisable(Arithmetic(get_format("float16,round=sr")))
    assert not me._online_vectorisable(Arithmetic(FORMATS["float16"], "working_sr"))
    assert not me._online_vectorisable(Arithmetic(FORMATS["float16"], elementary="libm"))


@pytest.mark.parametrize("name", ["exp", "log", "log1p", "expm1", "tanh"])
def test_bfloat16_top16_lookup_equals_the_full_table(name):
    """bfloat16's 65536-entry look-up (the float32 bits' top half) gives the full table's
    bits on every input: bfloat16 values, float32 values that are not bfloat16 values,
    float64 values beyond float32 (huge, tiny), signed zeros, infinities, nan payloads."""
    fmt = FORMATS["bfloat16"]
    rng = np.random.default_rng(11)
    every = (np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)).view(np.float32)
    f32 = rng.standard_normal(4000).astype(np.float32)
    f64 = np.concatenate([rng.standard_normal(2000) * 30, [1e300, -1e300, 1e-300, -1e-300,
                          5e-324, 2.0 ** -149, 2.0 ** -150, 3.4e38, 3.5e38, -0.0, 0.0]])
    nans = (np.uint64(0x7FF0000000000001) + np.arange(0, 1 << 40, 1 << 33,
                                                      dtype=np.uint64)).view(np.float64)
    with np.errstate(invalid="ignore"):      # float32 signalling nans, quieted
        x = np.concatenate([every.astype(np.float64), f32.astype(np.float64), f64, nans,
                            -nans])
    got = fe.compute(name, x, fmt)
    assert ("top16", name, fe._key(fmt)) in fe._TABLES        # the path was taken
    want = fe._lookup_table(name, x, fmt)
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
