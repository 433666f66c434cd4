"""fast32's plain float64 exp (numerics/fast32.py) is `elementary.compute`'s correctly rounded
exp, bit for bit, for float32 and the other formats it serves; its error bound holds; the
float32 methods go through it. (The exhaustive check over every float32 input is
`python -m precision_lab.numerics.fast32_check`; a slice of it runs here.)"""
from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest
from test_elementary import adversarial

from precision_lab.numerics import elementary as el
from precision_lab.numerics import fast32, fast32_check, fastelem, fastshift
from precision_lab.numerics.arithmetic import Arithmetic
from precision_lab.numerics.formats import FORMATS, get_format
from precision_lab.numerics.methods import METHODS
from precision_lab.numerics.options import LossOptions

F32 = FORMATS["float32"]
SERVED = [F32, get_format("p=20,emin=-126,emax=127"), get_format("p=24,emin=-60,emax=63"),
          get_format("p=16,emin=-140,emax=120")]
NAN_PAYLOAD = np.array([0x7FF0000000000001, 0xFFF8000000000123], dtype=np.uint64).view(np.float64)


def raw(v) -> np.ndarray:
    return np.ascontiguousarray(v, dtype=np.float64).view(np.uint64)


def f32_ulps(v, k: int) -> np.ndarray:
    """The float32 values within k float32 ulps of each float32 value of v."""
    b = np.asarray(v, dtype=np.float32).view(np.int32).astype(np.int64)
    codes = (b[:, None] + np.arange(-k, k + 1)[None, :]).reshape(-1)
    return codes.astype(np.uint32).view(np.float32).astype(np.float64)


def float32_inputs(rng) -> np.ndarray:
    """Specials, the thresholds' neighbourhoods, every binade, values just off float32."""
    lo, hi = fast32.limits(F32)
    thresholds = [lo, hi, np.log(F32.max_finite), np.log(2.0 ** 128 - 2.0 ** 103),
                  np.log(2.0 ** -150), np.log(2.0 ** -149), np.log(2.0 ** -126), 0.0,
                  np.log(2.0), -np.log(2.0), 2.0 ** -24, -(2.0 ** -25), 2.0 ** -25]
    x = [np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324, 1.0, -1.0,
                   lo, hi, np.nextafter(lo, -1), np.nextafter(hi, 1000), 710.0, -746.0,
                   1e300, -1e300, fast32.XMAX, -fast32.XMAX]),
         NAN_PAYLOAD,
         f32_ulps(thresholds, 300), f32_ulps(-np.abs(thresholds), 300),
         F32.round(rng.uniform(-1, 1, 40000) * np.exp2(rng.integers(-150, 8, 40000))),
         F32.round(rng.uniform(-110, 95, 40000)),
         F32.round(rng.uniform(-104, -87, 20000)),          # subnormal results
         (np.arange(-150, 129) * np.log(2.0)),              # results near powers of two
         rng.uniform(-110, 95, 5000),                       # not float32 values
         F32.round(rng.uniform(-30, 30, 3000)) * (1 + 2.0 ** -40),
         adversarial("exp")]
    return np.concatenate([np.asarray(v, dtype=np.float64) for v in x])


def test_the_derived_bound_and_the_kernels_bound():
    ab = fast32.analysis_bound()
    assert isinstance(ab, Fraction) and 0 < ab < Fraction(1, 1 << 51)
    assert 2 * ab <= Fraction(fast32.BOUND) <= 4 * ab     # a power of two: twice the analysis
    assert fast32.BOUND == 2.0 ** -50


def test_measured_error_is_within_a_quarter_of_the_bound():
    """|y / exp(x) - 1| of the unrounded float64 evaluation, against mpmath at 120 bits, on
    random arguments of the whole range, the argument-reduction boundaries (r = +-ln2/2) and
    tiny arguments."""
    rng = np.random.default_rng(11)
    k = rng.integers(-250, 250, 400).astype(np.float64)
    edges = (k + 0.5) * np.log(2.0)
    x = np.concatenate([rng.uniform(-fast32.XMAX, fast32.XMAX, 3000),
                        np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
                        rng.uniform(-1, 1, 500) * np.exp2(rng.integers(-60, 0, 500))])
    x = x[np.abs(x) <= fast32.XMAX]
    y = fast32.exp_values(x)
    worst = 0.0
    with mpmath.workprec(120):
        for xi, yi in zip(x, y):
            e = mpmath.exp(mpmath.mpf(float(xi)))
            worst = max(worst, float(abs(mpmath.mpf(float(yi)) / e - 1)))
    assert worst < fast32.BOUND / 4, worst
    assert worst > fast32.BOUND / 64                          # measured, not vacuous


def test_which_formats_it_serves():
    assert all(fast32.supports(f) for f in SERVED)
    for name in ("float64", "p=30,emin=-200,emax=300", "p=24,emin=-300,emax=127",
                 "p=25,emin=-126,emax=127"):
        assert not fast32.supports(get_format(name)), name
    assert fast32.limits(F32) == (-104.0, 89.0)


@pytest.mark.parametrize("fmt", SERVED, ids=[f.name for f in SERVED])
def test_plain_exp_is_compute_bit_for_bit(fmt):
    rng = np.random.default_rng(7)
    x = float32_inputs(rng)
    lo, hi = fast32.limits(fmt)
    x = np.concatenate([x, f32_ulps([lo, hi], 50), fmt.round(rng.uniform(lo - 2, hi + 2, 20000))])
    ref = el.compute("exp", x, fmt)[0]
    assert np.array_equal(raw(fastelem.exp_plain(x, fmt)), raw(ref))
    assert np.array_equal(raw(fastelem.compute("exp", x, fmt)), raw(ref))
    out = np.empty_like(x)                                   # the kernel alone, where certain
    idx = fast32.exp_f32(x, fmt, out)
    sure = np.ones(x.size, dtype=bool)
    if idx is not None:
        sure[idx] = False
    assert np.array_equal(raw(out[sure]), raw(ref[sure]))
    assert fastelem.exp_plain(x[:70].reshape(10, 7), fmt).shape == (10, 7)


def _near_midpoints(n: int) -> np.ndarray:
    """float32 inputs whose exp lies closest to a float32 midpoint: the uncertain ones of a
    scan of a few million float32 values around 1 and in the subnormal range, plus the tiny
    arguments whose exp is within 2**-50 of 1 -+ half an ulp."""
    found = []
    for start in (0x3F800000, 0x40A00000, 0xBF800000, 0xC2B00000, 0x33000000, 0xB3000000):
        x = fast32_check._inputs(start, start + (1 << 21))
        out = np.empty_like(x)
        idx = fast32.exp_f32(x, F32, out)
        if idx is not None:
            found.append(x[idx])
    found.append(f32_ulps([2.0 ** -24, -(2.0 ** -25)], 3))
    return np.concatenate(found)[:n]


def test_uncertain_elements_are_settled_exactly():
    """The inputs the kernel cannot decide (results within 2**-49 of a midpoint) exist, are
    reported, and the fall-back gives compute's bits; the kernel's own guess is not trusted."""
    x = _near_midpoints(200)
    out = np.empty_like(x)
    idx = fast32.exp_f32(x, F32, out)
    assert idx is not None and idx.size >= 3
    ref = el.compute("exp", x, F32)[0]
    assert np.array_equal(raw(fastelem.exp_plain(x, F32)), raw(ref))
    lo = x[idx]
    # each is within the test's window of a float32 midpoint, by the exact reference
    with mpmath.workprec(200):
        for v in lo[:20]:
            e = mpmath.exp(mpmath.mpf(float(v)))
            m, ex = mpmath.frexp(e)
            ulp = mpmath.ldexp(1, max(int(ex) - 24, -149))
            frac = e / ulp - mpmath.floor(e / ulp)
            assert abs(frac - mpmath.mpf(0.5)) * ulp <= 4 * fast32.BOUND * e


def test_float32_methods_use_it(monkeypatch):
    """The float32 methods' exponentials go through fast32: by `fastshift`'s fused pass (on by
    default) or, with it off, the shifted ones through fast32's fused kernel (methods ->
    Arithmetic.exp_sub -> fastelem.sub_exp) and the others' exp through exp_plain
    (Arithmetic -> fastelem.compute); the losses are those of the double-double path with
    the subtraction and exp unfused, either way."""
    rng = np.random.default_rng(2)
    x = F32.round(3 * rng.standard_normal((4, 700)))
    t = rng.integers(0, 700, 4)
    names = ("naive", "logsumexp", "softmax_eps", "log1p", "online")
    calls = []
    for mod, fn in ((fast32, "exp_f32"), (fast32, "sub_exp_f32"), (fastshift, "shifted_sums")):
        real = getattr(mod, fn)
        monkeypatch.setattr(mod, fn, lambda *a, fn=fn, real=real, **k: calls.append(fn)
                            or real(*a, **k))
    now = {}
    for fused in (True, False):
        monkeypatch.setattr(fastshift, "ENABLED", fused)
        for m in names:
            calls.clear()
            now[m, fused] = METHODS[m](x, t, F32)
            want = "shifted_sums" if fused else ("exp_f32" if m == "naive" else "sub_exp_f32")
            assert want in calls, (m, fused)
            assert np.array_equal(raw(now[m, fused]), raw(now[m, True])), m
    now = {m: now[m, True] for m in names}
    monkeypatch.undo()
    monkeypatch.setattr(fastshift, "ENABLED", False)
    monkeypatch.setattr(fastelem, "exp_plain", fastelem.exp_compiled)   # the old path
    monkeypatch.setattr(Arithmetic, "exp_sub", lambda self, a, b: self.exp(self.sub(a, b)))
    for m in names:
        assert np.array_equal(raw(METHODS[m](x, t, F32)), raw(now[m])), m


def test_exhaustive_check_on_a_slice():
    """The exhaustive tool on 2**20 patterns around 1.0 and the subnormal-result range: no
    disagreement, and its counts add up."""
    c = fast32_check.check(0x3F800000 - (1 << 19), 0x3F800000 + (1 << 19), chunk_bits=18)
    assert c["checked"] == 1 << 20 and c["disagree"] == 0
    c = fast32_check.check(0xC2CF0000, 0xC2D10000, chunk_bits=16)       # -103.5 .. -104.5
    assert c["disagree"] == 0 and 0 < c["outside_or_nan"] < c["checked"]


# --- tanh ---------------------------------------------------------------------------------

def tanh_inputs(rng, fmt=F32) -> np.ndarray:
    """Specials, the thresholds (the tiny one, 40, where k changes, where tanh rounds to 1),
    every binade, subnormals, values just off the format, adversarial ones."""
    qmin = fmt.emin - fmt.precision + 1
    tiny = 2.0 ** (qmin - 2)
    k = np.arange(-120, 1)
    edges = -(k + 0.5) * np.log(2.0) / 2                    # -2a at a reduction boundary
    marks = np.concatenate([[tiny, 2 * tiny, 2.0 ** qmin, 1.5 * 2.0 ** qmin, 2.0 ** fmt.emin,
                             40.0, 9.0, 9.01, 2.0 ** -12, 2.0 ** -13, 0.5, 0.55], edges[edges > 0]])
    x = [np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324, 1e-300,
                   tiny, np.nextafter(tiny, 0), -tiny, np.nextafter(40.0, 0), 40.0, -40.0,
                   1e300, -1e300]),
         NAN_PAYLOAD,
         f32_ulps(marks[marks >= 2.0 ** -149], 200), -f32_ulps(marks[marks >= 2.0 ** -149], 200),
         np.nextafter(marks, 0), np.nextafter(marks, 1e9),
         fmt.round(rng.uniform(-1, 1, 40000) * np.exp2(rng.integers(qmin - 3, 7, 40000))),
         fmt.round(rng.normal(0, 3, 30000)), rng.uniform(-45, 45, 5000),
         rng.uniform(-1, 1, 5000) * np.exp2(rng.integers(-160, 6, 5000)),   # not fmt values
         adversarial("tanh")]
    return np.concatenate([np.asarray(v, dtype=np.float64) for v in x])


def test_tanh_derived_bound():
    ab = fast32.tanh_analysis_bound()
    assert 0 < ab < Fraction(1, 1 << 48)
    assert 2 * ab <= Fraction(fast32.TANH_BOUND) <= 4 * ab
    assert fast32.TANH_BOUND == 2.0 ** -47


def test_tanh_measured_error_within_a_quarter_of_the_bound():
    rng = np.random.default_rng(12)
    k = np.arange(-115, 0)
    edges = -(k + 0.5) * np.log(2.0) / 2
    a = np.concatenate([rng.uniform(0, 40, 2000), np.exp2(rng.uniform(-151, 5, 1000)),
                        np.nextafter(edges, 0), np.nextafter(edges, 100),
                        rng.uniform(0.17, 0.18, 300)])             # k = -1 begins: |U| smallest
    a = a[(a >= 2.0 ** -151) & (a < 40)]
    y = fast32.tanh_values(a)
    worst = 0.0
    with mpmath.workprec(140):
        for ai, yi in zip(a, y):
            t = mpmath.tanh(mpmath.mpf(float(ai)))
            worst = max(worst, float(abs(mpmath.mpf(float(yi)) / t - 1)))
    assert worst < fast32.TANH_BOUND / 4, worst
    assert worst > fast32.TANH_BOUND / 256


@pytest.mark.parametrize("fmt", SERVED, ids=[f.name for f in SERVED])
def test_plain_tanh_is_compute_bit_for_bit(fmt):
    x = tanh_inputs(np.random.default_rng(8), fmt)
    ref = el.compute("tanh", x, fmt)[0]
    assert np.array_equal(raw(fastelem.tanh_plain(x, fmt)), raw(ref))
    assert np.array_equal(raw(fastelem.compute("tanh", x, fmt)), raw(ref))
    out = np.empty_like(x)
    idx = fast32.tanh_f32(x, fmt, out)
    sure = np.ones(x.size, dtype=bool)
    if idx is not None:
        sure[idx] = False
    assert np.array_equal(raw(out[sure]), raw(ref[sure]))


def test_tanh_uncertain_elements_are_settled_exactly():
    found = []
    for start in (0x3F000000, 0x3E000000, 0xBF000000):
        x = fast32_check._inputs(start, start + (1 << 22))
        out = np.empty_like(x)
        idx = fast32.tanh_f32(x, F32, out)
        if idx is not None:
            found.append(x[idx])
    x = np.concatenate(found)
    assert x.size >= 2
    assert np.array_equal(raw(fastelem.tanh_plain(x, F32)), raw(el.compute("tanh", x, F32)[0]))


def test_softcap_losses_use_the_plain_tanh(monkeypatch):
    """Under a soft cap every logit goes through tanh: the float32 losses are the same
    through fast32 as through elementary.compute, and fast32 runs."""
    rng = np.random.default_rng(4)
    x = F32.round(20 * rng.standard_normal((4, 600)))
    t = rng.integers(0, 600, 4)
    opts = LossOptions(softcap=30.0, reduction="none")
    calls = []
    real = fast32.tanh_f32
    monkeypatch.setattr(fast32, "tanh_f32", lambda *a: calls.append(1) or real(*a))
    got = {m: METHODS[m].loss(x, t, F32, options=opts) for m in ("logsumexp", "online")}
    assert calls
    monkeypatch.setattr(fastelem, "tanh_plain", lambda v, f: el.compute("tanh", v, f)[0])
    for m, v in got.items():
        assert np.array_equal(raw(METHODS[m].loss(x, t, F32, options=opts)), raw(v)), m


# --- exp(round(a - b)) fused ------------------------------------------------------------

@pytest.mark.parametrize("fmt", SERVED[:2], ids=[f.name for f in SERVED[:2]])
def test_fused_exp_sub_is_exp_of_sub(fmt, monkeypatch):
    """Arithmetic.exp_sub is exp(sub(a, b)) bit for bit, with the same operation count: shifted
    logits, edge differences (zeros, subnormal, overflowing, nan payloads, +-inf), b a column
    or the same shape, 3-D blocks; and it takes the fused kernel."""
    rng = np.random.default_rng(9)
    edge = np.concatenate([[0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-40, -1e-40,
                            2.0 ** -126, 3.4e38, -3.4e38, 88.72, 89.0, -103.97, -104.0, 1e-300,
                            2.0 ** -149, 1.5 * 2.0 ** -149, 2.0 ** -25, -(2.0 ** -25)],
                           NAN_PAYLOAD])
    a = np.concatenate([fmt.round(rng.normal(0, 30, (6, 1500))), np.resize(edge, (2, 1500)),
                        rng.normal(0, 30, (2, 1500)) * np.exp2(rng.integers(-140, 3, (2, 1500))),
                        fmt.round(rng.uniform(-110, 95, (2, 1500)))])
    near = _near_midpoints(40)                 # exp within the window of a midpoint: unfused
    a[-1, :near.size] = near
    cases = [(a, a.max(axis=1, keepdims=True)), (a, np.resize(edge, (12, 1))),
             (a, a[::-1].copy()), (a, fmt.round(rng.normal(0, 30, a.shape))),
             (a, np.zeros((12, 1))), (a.reshape(3, 4, 1500), a.max(axis=1).reshape(3, 4, 1))]
    long = np.resize(np.concatenate([near, fmt.round(rng.normal(0, 9, 300))]), (3, 9000))
    cases += [(long, np.zeros((3, 1))), (long, np.zeros((3, 9000)))]   # chunked rows, and
    #                                                 more than 64 uncertain elements
    calls = []
    real = fast32.sub_exp_f32
    monkeypatch.setattr(fast32, "sub_exp_f32", lambda *v: calls.append(1) or real(*v))
    for x, b in cases:
        with np.errstate(all="ignore"):
            ar1, ar2 = Arithmetic(fmt), Arithmetic(fmt)
            ref = ar1.exp(ar1.sub(x, b))
            got = ar2.exp_sub(x, b)
        assert np.array_equal(raw(got), raw(ref)) and ar1.ops == ar2.ops
        assert got.shape == x.shape
    assert len(calls) == len(cases)


def test_exp_sub_elsewhere_is_exp_of_sub():
    """Formats fast32 does not serve, stochastic rounding and libm keep exp(sub(a, b))."""
    rng = np.random.default_rng(3)
    for name, variant in (("bfloat16", None), ("float64", None), ("float32,round=sr", None),
                          ("float32", "libm")):
        fmt = get_format(name)
        x = fmt.round(rng.normal(0, 5, (3, 200)))
        m = x.max(axis=1, keepdims=True)
        ar1, ar2 = Arithmetic(fmt, elementary=variant), Arithmetic(fmt, elementary=variant)
        assert np.array_equal(raw(ar2.exp_sub(x, m)), raw(ar1.exp(ar1.sub(x, m)))), name


# --- log ----------------------------------------------------------------------------------

def log_inputs(rng, fmt=F32) -> np.ndarray:
    """Specials, around 1 and the m-interval's ends (sqrt2 and its half, times powers of two),
    every binade of the format and of float64 (subnormals too), values off the format."""
    sq = np.array([np.sqrt(2.0), np.sqrt(0.5), 1.0, 2.0, 0.5])
    marks = (sq[:, None] * np.exp2(np.arange(-140, 128, 9.0))[None, :]).reshape(-1)
    x = [np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, -np.nan, 5e-324, -5e-324,
                   2.0 ** -1022, 1.7976931348623157e308, 1 + 2.0 ** -52, 1 - 2.0 ** -53]),
         NAN_PAYLOAD, f32_ulps(marks, 40), 1 + np.arange(1, 400) * 2.0 ** -23,
         1 - np.arange(1, 400) * 2.0 ** -24,
         np.abs(fmt.round(rng.uniform(-1, 1, 40000) * np.exp2(rng.integers(-150, 128, 40000)))),
         np.exp(rng.uniform(-744, 709, 5000)), rng.uniform(0.5, 2, 5000), adversarial("log")]
    return np.concatenate([np.asarray(v, dtype=np.float64) for v in x])


def test_log_derived_bound():
    ab = fast32.log_analysis_bound()
    assert 0 < ab < Fraction(1, 1 << 50)
    assert 2 * ab <= Fraction(fast32.LOG_BOUND) <= 4 * ab
    assert fast32.LOG_BOUND == 2.0 ** -49
    assert fast32.log_supports(F32) and not fast32.log_supports(get_format("float64"))
    assert not fast32.log_supports(get_format("p=20,emin=-30,emax=31"))   # 2**-54 subnormal


def test_log_measured_error_within_a_quarter_of_the_bound():
    rng = np.random.default_rng(13)
    x = np.concatenate([np.exp(rng.uniform(-744, 709, 1500)), rng.uniform(0.5, 2, 1000),
                        1 + rng.uniform(-1, 1, 300) * np.exp2(rng.integers(-52, -1, 300)),
                        np.sqrt(2.0) * np.exp2(rng.integers(-1070, 1020, 200)),
                        np.nextafter(np.sqrt(0.5) * np.exp2(rng.integers(-1000, 1000, 200)), 0),
                        [5e-324, 2.0 ** -1022 * 0.75, 1.7976931348623157e308]])
    x = x[(x > 0) & (x != 1) & (x < np.inf)]
    y = fast32.log_values(x)
    worst = 0.0
    with mpmath.workprec(140):
        for xi, yi in zip(x, y):
            t = mpmath.log(mpmath.mpf(float(xi)))
            worst = max(worst, float(abs(mpmath.mpf(float(yi)) / t - 1)))
    assert worst < fast32.LOG_BOUND / 4, worst
    assert worst > fast32.LOG_BOUND / 256


@pytest.mark.parametrize("fmt", [F32, get_format("p=20,emin=-126,emax=127")],
                         ids=["float32", "p20"])
def test_plain_log_is_compute_bit_for_bit(fmt):
    x = log_inputs(np.random.default_rng(10), fmt)
    ref = el.compute("log", x, fmt)[0]
    assert np.array_equal(raw(fastelem.log_plain(x, fmt)), raw(ref))
    assert np.array_equal(raw(fastelem.compute("log", x, fmt)), raw(ref))
    out = np.empty_like(x)
    idx = fast32.log_f32(x, fmt, out)
    sure = np.ones(x.size, dtype=bool)
    if idx is not None:
        sure[idx] = False
    assert np.array_equal(raw(out[sure]), raw(ref[sure]))


def test_log_uncertain_elements_are_settled_exactly():
    x = fast32_check._inputs(0x3F800000, 0x3F800000 + (1 << 23))      # [1, 2)
    out = np.empty_like(x)
    idx = fast32.log_f32(x, F32, out)
    assert idx is not None and idx.size >= 1
    v = x[idx]
    assert np.array_equal(raw(fastelem.log_plain(v, F32)), raw(el.compute("log", v, F32)[0]))


def test_softmax_eps_under_options_uses_the_plain_log(monkeypatch):
    """softmax_eps under options takes every class's -log(p + eps): through fast32's log, the
    same losses as through elementary.compute."""
    rng = np.random.default_rng(5)
    x = F32.round(5 * rng.standard_normal((4, 500)))
    t = rng.integers(0, 500, 4)
    opts = LossOptions(label_smoothing=0.1, reduction="none")
    calls = []
    real = fast32.log_f32
    monkeypatch.setattr(fast32, "log_f32", lambda *a: calls.append(a[0].size) or real(*a))
    got = METHODS["softmax_eps"].loss(x, t, F32, options=opts)
    assert max(calls) >= x.size
    monkeypatch.setattr(fastelem, "log_plain", lambda v, f: el.compute("log", v, f)[0])
    assert np.array_equal(raw(METHODS["softmax_eps"].loss(x, t, F32, options=opts)), raw(got))
