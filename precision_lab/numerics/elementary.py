"""Correctly rounded exp, log, log1p, expm1 and tanh in any binary format, the same bits on
every CPU.

`exp(x, fmt)`, `log(x, fmt)`, `log1p(x, fmt)` take float64 arrays (any values) and return the
exactly rounded result (round to nearest, ties to even, overflow to +-inf, gradual underflow)
in `fmt`, carried in float64 like `Format.round`. Only `fmt.precision`, `fmt.emin`,
`fmt.emax` and `fmt.max_finite` are used, so any (p <= 53, emin, emax) format carried in
float64 works (float16, bfloat16, float32, float64, float8s, custom ones).

How: numpy's libm (`np.exp`, `np.log`) is never called. Each function is evaluated in
double-double with IEEE +, -, * only (Dekker's exact product via Veltkamp splitting, Knuth's
exact sum; numpy's basic ufuncs are correctly rounded and never fused into FMAs, so they are the
same on every CPU) plus exact operations (frexp, ldexp, floor, rint, table look-ups):

  exp:   x = n ln2/2048 + r, |r| <= ln2/4096, n = 2048 m + j; ln2/2048 is split in three
         (30 + 30 + 53 bits) so n*L1 and n*L2 are exact and x - n*L1 is exact (Sterbenz);
         exp(x) = 2**m T_j (1 + r + P(r)), T_j = 2**(j/2048) a double-double table from arb,
         P = r^2/2 + ... + r^5/120 in double (truncation < 2**-84); T_hi * r_hi exact.
  log:   x = 2**e y, y in [sqrt(1/2), sqrt(2)); c = rint(512 y)/512, R = 1/c rounded to double,
         z = y R - 1 exact as a double-double (|z| <= 2**-9.5), log x = e ln2 - log R +
         log1p(z), ln2 (42 + 53 bits) and -log R (double-double, arb) from tables, log1p(z) =
         z - z^2/2 (z^2 exact) + z^3 Q(z) in double, Q through z^8/8 (truncation < 2**-85).
  log1p: |x| < 2**-67: (x, -x^2/2); |x| < 2**-9.5: the series above with z = x; else
         1 + x = u_hi + u_lo exactly (two_sum), log1p x = log(u_hi) + u_lo / u_hi.

Accuracy argument. Every rounding in these evaluations is bounded (relative 2**-53 per
operation, the exact transformations exact): the dominant errors are the double-precision
evaluation of P (terms <= 2**-26, a few roundings: ~6 * 2**-78 for exp) and of z^3 Q(z)
(<= 2**-72 relative to the result for log and log1p: |z^3 Q| <= |z|^3/3 and
|log x| >= min(|z|, 2**-10.1)). The module uses bounds 2**-70 (exp) and 2**-66 (log, log1p),
at least 16 times the analysis; tests measure the error against mpmath on adversarial samples
and require it below 1/16 of the bound. Rounding: with the value (hi + lo) 2**k and its binade
taken from hi (one binade lower where hi is a power of two and lo < 0), the value is scaled
to the format's quantum (exact), the nearest integer is taken from the double-double, and
the result is certain unless the value lies within bound * |value| (+ 2**-50 quanta for the
rounding of that test) of a midpoint between two format values (this includes the midpoint
above max_finite, where rounding goes to inf, and the one between 0 and the smallest
subnormal). Those rare elements (a fraction ~2**-16 for float64 exp, ~2**-12 for float64
log, below 2**-30 for formats of 24 bits or fewer) are settled one by one with python-flint's
`arb` ball arithmetic at rising precision, comparing the ball with the exact midpoint; since
exp, log and log1p of a float other than 0 (or log of 1) are transcendental (Lindemann), the
true value is never a midpoint and the loop ends. The result is therefore the exact rounding,
which is unique: identical bits on every CPU, whatever numpy's SIMD dispatch.

  expm1: |x| < 2**-9.5: x + x^2/2 (exact square) + x^3 Q(x) in double; else exp(x) - 1
         from the exp evaluation, its bound turned relative per element (exp / |expm1|).
  tanh:  |x| < 2**-10.5: x + x^3 Q(x^2); else u / (u + 2), u = expm1(2|x|), divided in
         double-double; tanh's relative error is at most 2 / (u + 2) times u's.
  (expm1 and tanh were added after exp/log/log1p, for the gradients and the soft cap; their
  bounds are per element and derived from exp's, tested the same way.)

Specials: nan -> nan; exp: +inf -> inf, -inf -> 0, x > 710 -> inf, x < -746 -> +0 (beyond every
format carried in float64); log: x < 0 -> nan, +-0 -> -inf, +inf -> inf, 1 -> 0; log1p: x < -1
-> nan, -1 -> -inf, +inf -> inf, +-0 -> +-0; expm1: +-0 -> +-0, x > 710 -> inf, x < -746 ->
-1; tanh: +-0 -> +-0, |x| >= 40 -> +-1 (1 - tanh|x| < 2**-114).

Speed: `Arithmetic` calls these through numerics.fastelem, which returns `compute`'s bits
faster: a table of `compute` itself on every value of a narrow format (bfloat16, float16,
float8s, tf32), a numba port of `_exp_dd` and `_round` for the exp of wide ones (its uncertain
elements settled here), preceded for float32 by numerics.fast32's plain float64 exp (its
uncertain elements going to that port); tests/test_fastelem.py and tests/test_fast32.py check
them against `compute`.

`reference(name, x, fmt)` is an independent pure-Python path (mpmath at rising precision,
exact rational rounding) for cross-checks; it is slow (per element).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from fractions import Fraction

import mpmath
import numpy as np
from flint import arb, ctx

from ..errors import InputError

__all__ = ["exp", "log", "log1p", "expm1", "tanh", "FUNCTIONS", "BOUNDS", "compute", "reference",
           "round_rational", "check_format"]

# Relative error bounds of the double-double evaluations (see the module docstring).
BOUNDS = {"exp": 2.0 ** -70, "log": 2.0 ** -66, "log1p": 2.0 ** -66}
# expm1 and tanh carry a bound per element (from exp's; see `_expm1_dd`, `_tanh_dd`).
CHUNK = 1 << 14              # elements per vectorised pass (cache-sized temporaries)
MAX_PREC = 1 << 15           # arb precision cap of the settling loop (never reached: tested)
_SPLIT = 134217729.0         # 2**27 + 1 (Veltkamp)


# --- exact double-double building blocks ------------------------------------------------------

def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a, b):
    """Exact when |a| >= |b| or a == 0."""
    s = a + b
    return s, b - (s - a)


def _split(a):
    t = _SPLIT * a
    hi = t - (t - a)
    return hi, a - hi


def _two_prod(a, b, bsplit=None):
    """a b = p + e exactly (Dekker); `bsplit` = _split(b) when known."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b) if bsplit is None else bsplit
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


# --- tables, computed once with arb (deterministic) ------------------------------------------

@contextmanager
def _prec(p: int):
    old = ctx.prec
    ctx.prec = int(p)
    try:
        yield
    finally:
        ctx.prec = old


def _exact(v: arb) -> Fraction:
    man, ex = v.mid().man_exp()
    return Fraction(int(man)) * Fraction(2) ** int(ex)


def _dd(q: Fraction) -> tuple[float, float]:
    hi = float(q)
    return hi, float(q - Fraction(hi))


def _truncate(q: Fraction, bits: int) -> float:
    """q (> 0) truncated to `bits` significant bits (a float64)."""
    e = math.frexp(float(q))[1]
    return math.ldexp(math.floor(q * Fraction(2) ** (bits - e)), e - bits)


EXP_BITS = 11
_N = 1 << EXP_BITS
LOG_GRID = 512
_LOG_LO = 362                # rint(512 sqrt(1/2))
_SQRT_HALF = math.sqrt(0.5)

with _prec(320):
    _ln2 = _exact(arb(2).log())
    _T = [_dd(_exact(arb(2) ** (arb(j) / _N))) for j in range(_N)]
    _R = [float(Fraction(LOG_GRID, i)) for i in range(_LOG_LO, 2 * _LOG_LO + 1)]
    _LR = [_dd(-_exact(arb(r).log())) for r in _R]
_TH = np.array([t[0] for t in _T])
_TL = np.array([t[1] for t in _T])
_TH_SPLIT = _split(_TH)
_RJ = np.array(_R)
_RJ_SPLIT = _split(_RJ)
_LH = np.array([t[0] for t in _LR])
_LL = np.array([t[1] for t in _LR])
_L = _ln2 / _N
_L1 = _truncate(_L, 30)
_L2 = _truncate(_L - Fraction(_L1), 30)
_L3 = float(_L - Fraction(_L1) - Fraction(_L2))
_INV_L = float(1 / _L)
_LN2H = _truncate(_ln2, 42)
_LN2L = float(_ln2 - Fraction(_LN2H))


# --- the double-double evaluations ------------------------------------------------------------

def _exp_dd(x):
    """exp(x) = (hi + lo) 2**m for finite |x| <= 746, relative error <= BOUNDS['exp']."""
    n = np.rint(x * _INV_L)
    r0 = x - n * _L1                      # exact (Sterbenz), n * L1 exact
    rh, rl = _two_sum(r0, -(n * _L2))     # n * L2 exact
    rh, rl = _two_sum(rh, rl - n * _L3)
    ni = n.astype(np.int64)
    j = ni & (_N - 1)
    m = (ni - j) >> EXP_BITS
    th, tl = _TH[j], _TL[j]
    p = rh * rh * (0.5 + rh * (1 / 6 + rh * (1 / 24 + rh * (1 / 120))))
    ah, al = _two_prod(rh, th, (_TH_SPLIT[0][j], _TH_SPLIT[1][j]))
    sh, sl = _two_sum(th, ah)
    lo = sl + (al + (th * (rl + p) + (tl + tl * rh)))
    hi, lo = _fast_two_sum(sh, lo)
    return hi, lo, m


def _log_sum(e, lh, ll, zh, zl, extra):
    """e ln2 + (lh + ll) + log1p(zh + zl) + extra as a double-double, |z| <= 2**-9.5."""
    sqh, sql = _two_prod(zh, zh)
    q = sqh * zh * (1 / 3 + zh * (-0.25 + zh * (0.2 + zh * (-1 / 6 + zh * (1 / 7 - zh / 8)))))
    s, t1 = _two_sum(e * _LN2H, lh)
    s, t2 = _two_sum(s, zh)
    s, t3 = _two_sum(s, -0.5 * sqh)
    lo = (t1 + t2 + t3) + ((e * _LN2L + ll) + (zl - 0.5 * sql - zh * zl + q) + extra)
    return _two_sum(s, lo)


def _log_dd(x, extra=0.0):
    """log(x) + extra for finite x > 0 (extra a small correction, |extra| <= 2**-53)."""
    sub = x < 2.0 ** -1022
    f, e = np.frexp(np.where(sub, x * 2.0 ** 54, x))
    low = f < _SQRT_HALF
    y = np.where(low, 2.0 * f, f)
    e = (e - np.where(sub, 54, 0) - low).astype(np.float64)
    k = (np.rint(y * LOG_GRID) - _LOG_LO).astype(np.intp)
    ph, pl = _two_prod(y, _RJ[k], (_RJ_SPLIT[0][k], _RJ_SPLIT[1][k]))
    zh, zl = _fast_two_sum(ph - 1.0, pl)  # exact: y R - 1
    return _log_sum(e, _LH[k], _LL[k], zh, zl, extra)


def _log1p_dd(x):
    """log1p(x) for finite x > -1, x != 0."""
    ax = np.abs(x)
    hi, lo = np.empty_like(x), np.empty_like(x)
    tiny = ax < 2.0 ** -67                # log1p x = x - x^2/2 (+ x^3/3 < 2**-134 x)
    hi[tiny] = x[tiny]
    lo[tiny] = np.where(ax[tiny] >= 2.0 ** -500, -0.5 * x[tiny] * x[tiny], 0.0)
    small = ~tiny & (ax < 2.0 ** -9.5)    # the series with z = x
    zs = x[small]
    zero = np.zeros_like(zs)
    hi[small], lo[small] = _log_sum(zero, zero, zero, zs, zero, 0.0)
    rest = ~(tiny | small)                # log(u_hi) + log1p(u_lo / u_hi), 1 + x = u_hi + u_lo
    uh, ul = _two_sum(1.0, x[rest])
    hi[rest], lo[rest] = _log_dd(uh, ul / uh)
    return hi, lo


def _expm1_dd(x):
    """expm1(x) for finite x in [-746, 710], x != 0: (hi, lo, relative error bound per
    element). Small |x|: the series (x^2 exact); else exp(x) - 1 from `_exp_dd`, whose
    absolute error BOUNDS['exp'] exp(x) becomes BOUNDS['exp'] exp(x) / |expm1(x)| relative."""
    ax = np.abs(x)
    hi, lo = np.empty_like(x), np.empty_like(x)
    bound = np.full(x.shape, 2.0 ** -70)
    tiny = ax < 2.0 ** -60                # x + x^2/2 (+ x^3/6 < 2**-121 x)
    hi[tiny] = x[tiny]
    lo[tiny] = np.where(ax[tiny] >= 2.0 ** -500, 0.5 * x[tiny] * x[tiny], 0.0)
    small = ~tiny & (ax < 2.0 ** -9.5)    # x + x^2/2 + x^3 Q(x), Q through x^7/5040
    z = x[small]
    sqh, sql = _two_prod(z, z)
    q = sqh * z * (1 / 6 + z * (1 / 24 + z * (1 / 120 + z * (1 / 720 + z / 5040))))
    h, t = _two_sum(z, 0.5 * sqh)
    hi[small], lo[small] = _two_sum(h, t + (0.5 * sql + q))
    bound[small] = 2.0 ** -66             # the rounding of x^3 Q: ~2**-72.6 relative
    rest = ~(tiny | small)
    eh, el, m = _exp_dd(x[rest])
    m = m.astype(np.int32)
    big_h, big_l = np.ldexp(eh, m), np.ldexp(el, m)   # exp(x), inf past float64's range
    h, t = _two_sum(big_h, -1.0)
    h, t = _two_sum(h, t + big_l)
    hi[rest], lo[rest] = np.where(np.isinf(big_h), big_h, h), np.where(np.isinf(big_h), 0.0, t)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound[rest] = 2.0 ** -69 * np.abs(big_h / hi[rest]) + 2.0 ** -90  # + exp underflow
    return hi, lo, bound


def _tanh_dd(x):
    """tanh(x) for finite x, 0 < |x| < 40: (hi, lo, relative error bound per element).
    Small |x|: the series; else tanh|x| = u / (u + 2), u = expm1(2|x|), a double-double
    division; tanh's relative error is at most 2 / (u + 2) times u's."""
    ax = np.abs(x)
    hi, lo = np.empty_like(x), np.empty_like(x)
    bound = np.full(x.shape, 2.0 ** -70)
    tiny = ax < 2.0 ** -30                # x - x^3/3 (+ 2 x^5/15 < 2**-120 x)
    hi[tiny] = x[tiny]
    lo[tiny] = np.where(ax[tiny] >= 2.0 ** -340, -x[tiny] * x[tiny] * x[tiny] / 3, 0.0)
    small = ~tiny & (ax < 2.0 ** -10.5)   # x + x^3 Q(x^2), Q through 62 x^8 / 2835
    z = x[small]
    sq = z * z
    q = z * sq * (-1 / 3 + sq * (2 / 15 + sq * (-17 / 315 + sq * (62 / 2835))))
    hi[small], lo[small] = _fast_two_sum(z, q)
    bound[small] = 2.0 ** -66             # the rounding of x^3 Q: ~2**-74 relative
    rest = ~(tiny | small)
    a = ax[rest]
    uh, ul, ub = _expm1_dd(2.0 * a)
    dh, dl = _two_sum(2.0, uh)
    dl = dl + ul
    q0 = uh / dh
    ph, pl = _two_prod(q0, dh)
    q1 = (((uh - ph) - pl) + ul - q0 * dl) / dh
    qh, ql = _fast_two_sum(q0, q1)
    sgn = np.sign(x[rest])
    hi[rest], lo[rest] = sgn * qh, sgn * ql
    bound[rest] = ub * (2.0 / (uh + 2.0)) + 2.0 ** -90
    return hi, lo, bound


# --- rounding a double-double into a format ---------------------------------------------------

def check_format(fmt) -> None:
    """InputError unless `fmt` can be carried in float64 (what this module rounds into)."""
    if not (2 <= fmt.precision <= 53 and fmt.emax <= 1023
            and fmt.emin - fmt.precision + 1 >= -1074):
        raise InputError(f"format {getattr(fmt, 'name', fmt)!r} (p={fmt.precision}, "
                         f"emin={fmt.emin}, emax={fmt.emax}) is not carried in float64")


def _round(hi, lo, k, fmt, bound):
    """Round (hi + lo) 2**k into fmt. Returns (values, ambiguous, base, qe): where ambiguous, the
    value lies within the error bound of the midpoint (base + 1/2) 2**qe, base an integer
    (signed as the value) below 2**53 carried in float64."""
    p = fmt.precision
    sgn = np.where(hi < 0, -1.0, 1.0)
    ah, al = hi * sgn, lo * sgn
    fr, e = np.frexp(ah)
    big = (e.astype(np.int64) - 1 + k - ((fr == 0.5) & (al < 0))).astype(np.int64)
    qe = np.maximum(big - p + 1, fmt.emin - p + 1)
    sc = (k - qe).astype(np.int32)        # |k - qe| < 2300: exp's 2**k <= 2**1100
    sh, sl = np.ldexp(ah, sc), np.ldexp(al, sc)
    n0 = np.floor(sh)
    f = (sh - n0) + sl                    # in [-0.5, 1.5): |sl| <= half an ulp of sh <= 1/2
    fl = np.floor(f)
    amb = np.abs(f - (fl + 0.5)) <= 2.0 * bound * sh + 2.0 ** -50
    base = n0 + fl                        # the nearest midpoint is base + 1/2 quanta
    n = n0 + fl + (f - fl > 0.5)
    val = np.ldexp(n, qe.astype(np.int32))
    val = np.where(val > fmt.max_finite, np.inf, val)
    return sgn * val, amb, sgn * base, qe


_ARB = {"exp": arb.exp, "log": arb.log, "log1p": arb.log1p, "expm1": arb.expm1,
        "tanh": arb.tanh}


def _settle(name: str, x: float, base: float, qe: int, fmt) -> float:
    """The exact rounding of f(x) next to the midpoint (|base| + 1/2) 2**qe (with base's
    sign): decided with arb."""
    m2 = (2 * abs(int(base)) + 1) * (-1 if math.copysign(1.0, base) < 0 else 1)
    mid = arb((m2, int(qe) - 1))
    prec = 128
    while prec <= MAX_PREC:
        with _prec(prec):
            d = _ARB[name](arb(x)) - mid
            above = d > 0
            if above or d < 0:
                n = (m2 + (1 if above else -1)) // 2
                if abs(Fraction(n) * Fraction(2) ** int(qe)) > Fraction(fmt.max_finite):
                    return math.copysign(math.inf, n)
                return math.ldexp(float(n), int(qe))
        prec *= 2
    raise ArithmeticError(f"{name}({x!r}) not settled at {MAX_PREC} bits")


# --- the public functions ---------------------------------------------------------------------

def _specials(name, x):
    """(mask of elements answered directly, their values: nan where not special)."""
    with np.errstate(invalid="ignore"):
        if name == "exp":
            special = ~((x >= -746) & (x <= 710))
        elif name == "log":
            special = ~((x > 0) & (x < np.inf)) | (x == 1)
        elif name == "log1p":
            special = ~((x > -1) & (x < np.inf)) | (x == 0)
        elif name == "expm1":
            special = ~((x >= -746) & (x <= 710)) | (x == 0)
        else:
            special = ~(np.abs(x) < 40) | (x == 0)
        out = np.full(x.shape, np.nan)
        if special.any():
            v = x[special]
            if name == "exp":
                res = np.where(v > 710, np.inf, np.where(v < -746, 0.0, np.nan))
            elif name == "log":
                res = np.where(v == 0, -np.inf, np.where(v == np.inf, np.inf,
                                                         np.where(v == 1, 0.0, np.nan)))
            elif name == "log1p":
                res = np.where(v == -1, -np.inf, np.where(v == np.inf, np.inf,
                                                          np.where(v == 0, v, np.nan)))
            elif name == "expm1":        # below -746: -1 + exp(x), exp(x) < 2**-1076
                res = np.where(v > 710, np.inf, np.where(v < -746, -1.0,
                                                         np.where(v == 0, v, np.nan)))
            else:                        # |x| >= 40: 1 - tanh|x| < 2**-114
                res = np.where(v == 0, v, np.where(np.isnan(v), np.nan, np.sign(v)))
            out[special] = res
    return special, out


def compute(name: str, x, fmt) -> tuple[np.ndarray, int]:
    """(f(x) correctly rounded into fmt, as float64 of x's shape; how many elements arb
    settled)."""
    if name not in _ARB:
        raise InputError(f"unknown elementary function {name!r}; valid: {', '.join(_ARB)}")
    check_format(fmt)
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1)
    special, out = _specials(name, flat)
    idx = np.flatnonzero(~special)
    if idx.size == 0:
        return out.reshape(x.shape), 0
    hard = []
    for start in range(0, idx.size, CHUNK):
        i = idx[start:start + CHUNK]
        v = flat[i]
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            k, bound = 0, BOUNDS.get(name)
            if name == "exp":
                hi, lo, k = _exp_dd(v)
            elif name in ("log", "log1p"):
                hi, lo = (_log_dd(v) if name == "log" else _log1p_dd(v))
            else:
                hi, lo, bound = (_expm1_dd(v) if name == "expm1" else _tanh_dd(v))
            val, amb, base, qe = _round(hi, lo, k, fmt, bound)
            out[i] = np.where(np.isinf(hi), hi, val)     # expm1 past exp's float64 range
            amb &= np.isfinite(hi)
        hard += [(int(i[j]), float(v[j]), float(base[j]), int(qe[j]))
                 for j in np.flatnonzero(amb)]
    for j, v, b, qe in hard:
        out[j] = _settle(name, v, b, qe, fmt)
    return out.reshape(x.shape), len(hard)


def exp(x, fmt) -> np.ndarray:
    """exp(x) correctly rounded into fmt (float64 carrier)."""
    return compute("exp", x, fmt)[0]


def log(x, fmt) -> np.ndarray:
    """log(x) correctly rounded into fmt (float64 carrier)."""
    return compute("log", x, fmt)[0]


def log1p(x, fmt) -> np.ndarray:
    """log(1 + x) correctly rounded into fmt (float64 carrier)."""
    return compute("log1p", x, fmt)[0]


def expm1(x, fmt) -> np.ndarray:
    """exp(x) - 1 correctly rounded into fmt (float64 carrier)."""
    return compute("expm1", x, fmt)[0]


def tanh(x, fmt) -> np.ndarray:
    """tanh(x) correctly rounded into fmt (float64 carrier)."""
    return compute("tanh", x, fmt)[0]


FUNCTIONS = {"exp": exp, "log": log, "log1p": log1p, "expm1": expm1, "tanh": tanh}


# --- an independent pure-Python path: mpmath and exact rationals ------------------------------

def round_rational(q: Fraction, fmt) -> float:
    """The exact rational q rounded to nearest (ties to even) into fmt, as a float."""
    if q == 0:
        return 0.0
    sign = -1.0 if q < 0 else 1.0
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1                        # now 2**e <= a < 2**(e+1)
    qe = max(e - fmt.precision + 1, fmt.emin - fmt.precision + 1)
    s = a / Fraction(2) ** qe
    n = math.floor(s)
    rest = s - n
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2 == 1):
        n += 1
    v = Fraction(n) * Fraction(2) ** qe
    return sign * (math.inf if v > Fraction(fmt.max_finite) else float(v))


_MP = {"exp": mpmath.exp, "log": mpmath.log, "log1p": mpmath.log1p,
       "expm1": mpmath.expm1, "tanh": mpmath.tanh}


def _reference_one(name: str, x: float, fmt) -> float:
    special, out = _specials(name, np.array([x]))
    if special[0]:
        return float(out[0])
    prec = 96
    while True:
        with mpmath.workprec(prec):
            sign, man, ex, _ = _MP[name](mpmath.mpf(x))._mpf_
        q = (-1) ** sign * Fraction(int(man)) * Fraction(2) ** int(ex)
        err = abs(q) * Fraction(1, 2 ** (prec - 8))   # mpmath: a few ulps at prec bits
        lo, hi = round_rational(q - err, fmt), round_rational(q + err, fmt)
        if lo == hi:
            return lo
        prec *= 2
        if prec > MAX_PREC:
            raise ArithmeticError(f"{name}({x!r}) not settled at {MAX_PREC} bits")


def reference(name: str, x, fmt) -> np.ndarray:
    """f(x) rounded into fmt by mpmath and exact rationals, element by element (slow)."""
    check_format(fmt)
    x = np.asarray(x, dtype=np.float64)
    out = np.array([_reference_one(name, float(v), fmt) for v in x.reshape(-1)])
    return out.reshape(x.shape)
