"""exp, tanh and log correctly rounded into float32 (and every format of at most 24 bits carried in
float64 whose exponent range is float32's or narrower), evaluated in plain float64: the same
bits as `elementary.compute(name, x, fmt)`, at a fraction of the cost of its double-double
paths.

Evaluation (float64, IEEE +, -, * only, each correctly rounded; no libm, no FMA: numba
without fastmath neither contracts nor reassociates), for x in [XLO, XHI] (see below):

  k = rint(x / ln2)        as (x * L + M) - M, L = fl(1/ln2), M = 1.5 * 2**52 (exact rint
                           of fl(x L) for |x L| < 2**51): an integer, |k| < 2**8;
  r = (x - k C1) - k C2    C1 = ln2 truncated to 45 bits, so k C1 is exact, and x - k C1 is
                           exact: both are multiples of 2**-54 (|x| >= 1/4 where k != 0,
                           and C1 is a multiple of 2**-45), their difference is below 1/2,
                           so it has at most 53 bits; C2 = fl(ln2 - C1);
  P(r) = sum_{i<=13} c_i r^i by Horner, c_i = fl(1/i!) (the Taylor polynomial);
  y = P(r) 2**k            exact: 2**k from its bits, the product a normal double.

Error bound (the derivation; `analysis_bound()` evaluates it in exact rational arithmetic,
u = 2**-53, rho = ln2/2 + 2**-40 >= |r|):
  argument  |r - (x - k ln2)| <= u rho + u 2**-37 + 2**8 u 2**-45 (the subtraction, the
            product k C2, C2's own rounding): d_r ~ 0.35 u;
  Taylor    |exp(r) - T13(r)| <= rho**14 / 14! exp(rho) (Lagrange);
  coeffs    sum_{i=3..13} |c_i - 1/i!| rho**i <= u sum rho**i / i!;
  Horner    h_13 = c_13, h_i = c_i + r h_{i+1}: each step's two roundings give
            |e_i| <= u |h^_i| + u rho |h^_{i+1}| + rho |e_{i+1}|, so
            |e_0| <= u sum_i rho**i (H_i + rho H_{i+1}) (1 + u)**28, H_i = sum_{j>=i} c_j
            rho**(j-i) bounding |h^_i|;
  together  y = exp(x) (1 + eps), |eps| <= (1 + (T + C + H) exp(rho)) exp(d_r) - 1, the
            polynomial's absolute errors made relative by exp(r) >= exp(-rho).
The analysis gives |eps| <= 2**-51.07 (about 3.8 u, nearly all Horner's); the kernels use
E = BOUND, the power of two at least twice it (2**-50). The tests measure the error of y
against mpmath (below E / 4) and `analysis_bound() * 2 <= BOUND`.

Rounding (as `elementary._round`, for one double): the format's quantum at y is 2**q, q =
max(e - p + 1, qmin), e = y's binade (from its bits); s = y 2**-q (exact), n0 = floor(s),
f = s - n0 (exact); the result is certain unless |f - 1/2| <= 2 E s (the factor 2 covers
the relative error E/(1 - E) of s against the true value and the roundings of the test);
then it is (n0 + [f > 1/2]) 2**q, +inf past max_finite. A true value below a power of two
2**e whose y lies at or above it rounds to 2**e in either binade's grid (it is within E of
it), so the binade taken from y is safe. The midpoints tested include the one above
max_finite (overflow) and those of the subnormal range down to the one between 0 and the
smallest subnormal. The uncertain elements (a fraction about 3 E 2**(p-1) of the random
ones, 2**-25.4 for float32) go to the double-double path (`fastelem.exp_compiled`, then arb;
`elementary.compute` for tanh):
correct rounding is unique, so the results are `elementary.compute`'s bit for bit.

Outside [XLO, XHI] the result is certain: XHI = ceil((emax + 1) ln2), above which exp(x) >
2**(emax+1) (inf), XLO = floor((qmin - 1) ln2), below which exp(x) < 2**(qmin-1), half the
smallest subnormal (+0); nan stays nan (numpy's default nan, as `elementary.compute`'s).
For float32, [XLO, XHI] = [-104, 89].

tanh (`_tanh_y`, for a = |x| in [2**(qmin - 2), 40); below, tanh rounds to +-0, above to +-1):
U = expm1(t), t = -2a (exact), by exp's reduction t = k ln2 + r (k <= 0) and G, the Taylor
polynomial of expm1(r)/r through r**12/13! (Horner, c_i = fl(1/(i+1)!)): em = r G(r);
U = 2**k em + (2**k - 1) (k = 0: U = em, r = t exactly); y = -U / (2 + U). Bound
(`tanh_analysis_bound()`): G's truncation rho**13/14! e**rho, its coefficients and Horner
as for exp, made relative by |expm1(r)/r| >= (1 - e**-rho)/rho; one rounding for r G; for
k <= -1 the absolute error 2**k (|expm1 r| eps_em + e**rho d_r) plus the roundings of 2**k - 1
and of the sum, over |U| >= 1 - 2**-1/2 (1 + 2**-49); then 2 + U (|U|/(2 + U) <= 1: U's
relative error at most, plus one rounding) and the division (one more):
|eps| <= 2**-48.56; the kernels use TANH_BOUND = 2**-47. The result's sign is x's.

log (`_log_y`, finite x > 0, x != 1; 0 -> -inf, 1 -> 0, inf -> inf, x < 0 and nan -> nan):
x = 2**e m, m in [fl(sqrt2)/2, fl(sqrt2)) from the bits (subnormals scaled by 2**54 first),
f = m - 1 (exact: Sterbenz), s = f / (2 + f) (two roundings), log m = 2 atanh(s) = 2 s A(s**2),
A = sum_{i<11} w**i / (2i + 1) by Horner in w = s**2 (|s| <= sigma = (fl(sqrt2) - 1) /
(fl(sqrt2) + 1) + 2**-40; truncation w**11 / 23 / (1 - w)); y = e LN2_HI + (2 s A +
e LN2_LO), LN2_HI = ln2 to 42 bits (e LN2_HI exact, |e| <= 1075). Bound
(`log_analysis_bound()`): s, A (Horner, coefficients, truncation, w's rounding: A >= 1) and
the product give eps_L; e = 0: y = L; else the absolute errors of L, of e LN2_LO and of the
two sums over |log x| >= ln2/2 - 2**-50: |eps| <= 2**-50.40; the kernels use LOG_BOUND =
2**-49. Served where |log x| (at most 745, at least 2**-54) is normal in the format
(`log_supports`: float32).

Structure: each kernel runs a chunk of 1024 elements branch-free (it vectorises: AVX-512 on
the machines measured), counting the uncertain ones; a chunk with any is rescanned element by
element to record their positions (rare: a few per million).

`python -m precision_lab.numerics.fast32_check [--function tanh]` compares this path with the
one it replaces on every float32 input (all 2**32 bit patterns).
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction

import numba
import numpy as np

from . import elementary
from .fastround import _bits, _float

__all__ = ["BOUND", "XMAX", "supports", "exp_kernel", "exp_f32", "exp_values",
           "analysis_bound", "limits", "TANH_BOUND", "TANH_MAX", "tanh_kernel",
           "tanh_f32", "tanh_values", "tanh_analysis_bound", "LOG_BOUND", "log_supports",
           "log_kernel", "log_f32", "log_values", "log_analysis_bound", "sub_exp_kernel",
           "sub_exp_f32"]

_DEGREE = 13
_C1_BITS = 45
_K_BITS = 8                  # |k| < 2**8: |x| <= XMAX
XMAX = 176.0
_LN2 = elementary._ln2       # ln2, exact to 320 bits (a Fraction from arb)
_INV_LN2 = float(1 / _LN2)
_C1 = elementary._truncate(_LN2, _C1_BITS)
_C2 = float(_LN2 - Fraction(_C1))
_COEF = [float(Fraction(1, math.factorial(i))) for i in range(_DEGREE + 1)]
(_K0, _K1, _K2, _K3, _K4, _K5, _K6, _K7, _K8, _K9, _K10, _K11, _K12, _K13) = _COEF
_MAGIC = 6755399441055744.0  # 1.5 * 2**52


_U = Fraction(1, 1 << 53)
_RHO = _LN2 / 2 + Fraction(1, 1 << 40)          # |r| <= rho
# |r - (x - k ln2)|: the subtraction, the product k C2, C2's own rounding
_D_R = _U * _RHO + _U * Fraction(1, 1 << 37) + (1 << _K_BITS) * _U * Fraction(1, 1 << 45)


def _exp_up(t: Fraction) -> Fraction:
    """An upper bound of exp(t), 0 <= t <= 1: the series to t**29/29! and twice the next term."""
    s, term = Fraction(0), Fraction(1)
    for i in range(1, 30):
        s += term
        term *= t / i
    return s + 2 * term


def _exp_low(t: Fraction) -> Fraction:
    """A lower bound of exp(t), t >= 0: a partial sum of the series."""
    return sum(t ** i / math.factorial(i) for i in range(20))


def _horner_error(coef: list, rho: Fraction) -> Fraction:
    """Bound on |computed - exact| of the Horner evaluation of sum coef[i] r**i, |r| <= rho:
    u sum_i rho**i (H_i + rho H_{i+1}) (1 + u)**(2n + 2), H_i = sum_{j>=i} |c_j| rho**(j-i)."""
    c = [abs(Fraction(v)) for v in coef]
    n = len(c) - 1
    big_h = [sum(c[j] * rho ** (j - i) for j in range(i, n + 1)) for i in range(n + 1)]
    big_h.append(Fraction(0))
    return _U * sum(rho ** i * (big_h[i] + rho * big_h[i + 1]) for i in range(n)) \
        * (1 + _U) ** (2 * n + 2)


def analysis_bound() -> Fraction:
    """The derived bound on |y / exp(x) - 1| (module docstring), in exact rationals; exp(rho)
    and the other transcendental quantities bounded above by truncated series."""
    rho = _RHO
    c = [Fraction(v) for v in _COEF]
    trunc = rho ** (_DEGREE + 1) / math.factorial(_DEGREE + 1) * _exp_up(rho)
    coef = sum(abs(c[i] - Fraction(1, math.factorial(i))) * rho ** i
               for i in range(_DEGREE + 1))
    eps_p = (trunc + coef + _horner_error(_COEF, rho)) * _exp_up(rho)
    return (1 + eps_p) * _exp_up(_D_R) - 1


_AB = analysis_bound()
BOUND = 2.0 ** math.ceil(math.log2(float(2 * _AB)))  # a power of two >= twice the analysis

_G = [float(Fraction(1, math.factorial(i + 1))) for i in range(_DEGREE)]   # expm1(r) / r
(_G0, _G1, _G2, _G3, _G4, _G5, _G6, _G7, _G8, _G9, _G10, _G11, _G12) = _G
TANH_MAX = 40.0              # |x| >= 40: tanh rounds to +-1 (1 - tanh|x| < 2**-114)


def tanh_analysis_bound() -> Fraction:
    """The derived bound on |y / tanh|x| - 1| of `_tanh_y` (module docstring, tanh), in exact
    rationals."""
    u, rho = _U, _RHO
    g = [Fraction(v) for v in _G]
    g_min = (1 - 1 / _exp_low(rho)) / rho                  # |expm1(r) / r| >= g_min
    trunc = rho ** _DEGREE / math.factorial(_DEGREE + 1) * _exp_up(rho)
    coef = sum(abs(g[i] - Fraction(1, math.factorial(i + 1))) * rho ** i
               for i in range(_DEGREE))
    eps_g = (trunc + coef + _horner_error(_G, rho)) / g_min
    eps_em = (1 + eps_g) * (1 + u) - 1                    # em = r g: one more rounding
    # k <= -1: U = 2**k (1 + em) - 1, |U| >= 1 - 2**-1/2 e**(2**-50); 2**k <= 1/2
    u_min = 1 - Fraction(7071068, 10 ** 7) * (1 + Fraction(1, 1 << 49))
    e_rho = _exp_up(rho)
    abs_k = Fraction(1, 2) * ((e_rho - 1) * eps_em + e_rho * (_exp_up(_D_R) - 1))
    eps_u = max(eps_em, (abs_k + 2 * u) / u_min)          # + the roundings of 2**k - 1, the sum
    eps_d = (1 + eps_u) * (1 + u) - 1                     # 2 + U: |U| / (2 + U) <= 1
    return (1 + eps_u) * (1 + u) / (1 - eps_d) - 1        # -U / (2 + U), one more rounding


_TAB = tanh_analysis_bound()
TANH_BOUND = 2.0 ** math.ceil(math.log2(float(2 * _TAB)))


@functools.lru_cache(maxsize=None)
def _limits(precision: int, emin: int, emax: int) -> tuple[float, float]:
    qmin = emin - precision + 1
    return float(math.floor((qmin - 1) * _LN2)), float(math.ceil((emax + 1) * _LN2))


def limits(fmt) -> tuple[float, float]:
    """(XLO, XHI) of `fmt`: exp rounds to +0 below XLO and to +inf above XHI."""
    return _limits(int(fmt.precision), int(fmt.emin), int(fmt.emax))


def supports(fmt) -> bool:
    """This path serves `fmt` (its precision and range; the rounding is to nearest, as
    `elementary.compute`'s): at most 24 bits, and [XLO, XHI] inside [-XMAX, XMAX]
    (float32's exponent range or narrower)."""
    lo, hi = limits(fmt)
    return fmt.precision <= 24 and -XMAX <= lo and hi <= XMAX


@numba.njit(cache=True, nogil=True, inline="always")
def _exp_y(v):
    """y = exp(v) (1 + eps), |eps| <= BOUND / 2, for |v| <= XMAX: a normal double."""
    k = (v * _INV_LN2 + _MAGIC) - _MAGIC
    r = (v - k * _C1) - k * _C2
    h = _K13
    h = _K12 + r * h
    h = _K11 + r * h
    h = _K10 + r * h
    h = _K9 + r * h
    h = _K8 + r * h
    h = _K7 + r * h
    h = _K6 + r * h
    h = _K5 + r * h
    h = _K4 + r * h
    h = _K3 + r * h
    h = _K2 + r * h
    h = _K1 + r * h
    h = _K0 + r * h
    return h * _float(np.uint64(np.int64(k) + 1023) << np.uint64(52))


@numba.njit(cache=True, nogil=True, inline="always")
def _round_pos(y, p, qmin, max_finite, tol):
    """(y > 0, a normal double, rounded into the format (p, qmin, max_finite); whether a value
    within y (1 +- tol / 2) might round otherwise)."""
    e = np.int64(_bits(y) >> np.uint64(52)) - 1023    # y > 0, normal: its binade
    q = max(e - p + 1, qmin)
    s = y * _float(np.uint64(1023 - q) << np.uint64(52))
    n0 = np.floor(s)
    f = s - n0
    val = (n0 + (1.0 if f > 0.5 else 0.0)) * _float(np.uint64(q + 1023) << np.uint64(52))
    return (np.inf if val > max_finite else val), abs(f - 0.5) <= tol * s


@numba.njit(cache=True, nogil=True, inline="always")
def _exp1(x0, p, qmin, max_finite, xlo, xhi, tol):
    """(exp(x0) rounded into the format (p, qmin, max_finite), whether that is uncertain)."""
    inside = x0 >= xlo and x0 <= xhi        # false for nan
    val, near = _round_pos(_exp_y(x0 if inside else 0.0), p, qmin, max_finite, tol)
    a = inside and near
    special = np.inf if x0 > xhi else (0.0 if x0 < xlo else np.nan)
    return (val if inside else special), a


_CH = 1024                   # elements per chunk: a vectorised pass, rescanned if uncertain


@numba.njit(cache=True, nogil=True)
def exp_kernel(x, out, idx, p, qmin, max_finite, xlo, xhi, tol):
    """out[i] = exp(x[i]) rounded into the format (p, qmin, max_finite), x and out flat;
    idx[:n] = the positions of the n elements whose rounding is uncertain (their out is then
    to be recomputed); returns n. Per chunk, a branch-free pass (selects, so that it
    vectorises) that counts the uncertain ones, and a scalar rescan of the rare chunks that
    have some; elements outside [xlo, xhi] are evaluated at 0 and their results replaced."""
    n_amb = 0
    for c0 in range(0, x.size, _CH):
        nc = min(_CH, x.size - c0)
        xc = x[c0:c0 + nc]                  # views: indices from 0 (no wraparound selects)
        oc = out[c0:c0 + nc]
        m = 0
        for i in range(nc):
            v, a = _exp1(xc[i], p, qmin, max_finite, xlo, xhi, tol)
            oc[i] = v
            m += 1 if a else 0
        if m:
            for i in range(nc):
                if _exp1(xc[i], p, qmin, max_finite, xlo, xhi, tol)[1]:
                    idx[n_amb] = c0 + i
                    n_amb += 1
    return n_amb


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tanh_y(a):
    """y = tanh(a) (1 + eps), |eps| <= TANH_BOUND / 2, for 2**-252 <= a < TANH_MAX: U =
    expm1(-2a) (t = -2a = k ln2 + r as for exp; expm1(r) = r G(r), G the Taylor polynomial
    of expm1(r) / r; U = 2**k expm1(r) + (2**k - 1)), then y = -U / (2 + U)."""
    t = -2.0 * a
    k = (t * _INV_LN2 + _MAGIC) - _MAGIC
    r = (t - k * _C1) - k * _C2
    g = _G12
    g = _G11 + r * g
    g = _G10 + r * g
    g = _G9 + r * g
    g = _G8 + r * g
    g = _G7 + r * g
    g = _G6 + r * g
    g = _G5 + r * g
    g = _G4 + r * g
    g = _G3 + r * g
    g = _G2 + r * g
    g = _G1 + r * g
    g = _G0 + r * g
    em = r * g
    s = _float(np.uint64(np.int64(k) + 1023) << np.uint64(52))
    big_u = s * em + (s - 1.0)
    return -big_u / (2.0 + big_u)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tanh1(x0, p, qmin, max_finite, tiny, tol):
    """(tanh(x0) rounded into the format, whether that is uncertain)."""
    a = abs(x0)
    inside = a >= tiny and a < TANH_MAX     # false for nan
    val, near = _round_pos(_tanh_y(a if inside else 1.0), p, qmin, max_finite, tol)
    mag = val if inside else (1.0 if a >= TANH_MAX else 0.0)
    return (np.nan if x0 != x0 else math.copysign(mag, x0)), inside and near


@numba.njit(cache=True, nogil=True, error_model="numpy")
def tanh_kernel(x, out, idx, p, qmin, max_finite, tiny, tol):
    """out[i] = tanh(x[i]) rounded into the format, idx and the count as `exp_kernel`. Inputs
    below `tiny` (2**(qmin - 2)) round to +-0, those of magnitude at least 40 to +-1."""
    n_amb = 0
    for c0 in range(0, x.size, _CH):
        nc = min(_CH, x.size - c0)
        xc = x[c0:c0 + nc]                  # views: indices from 0 (no wraparound selects)
        oc = out[c0:c0 + nc]
        m = 0
        for i in range(nc):
            v, a = _tanh1(xc[i], p, qmin, max_finite, tiny, tol)
            oc[i] = v
            m += 1 if a else 0
        if m:
            for i in range(nc):
                if _tanh1(xc[i], p, qmin, max_finite, tiny, tol)[1]:
                    idx[n_amb] = c0 + i
                    n_amb += 1
    return n_amb


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _tanh_values(x, out):
    for i in range(x.size):
        out[i] = _tanh_y(x[i])


@numba.njit(cache=True, nogil=True)
def _values(x, out):
    for i in range(x.size):
        out[i] = _exp_y(x[i])


def exp_values(x: np.ndarray) -> np.ndarray:
    """The unrounded float64 evaluation y of exp(x) (|x| <= XMAX), for the tests of BOUND."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    if flat.size and not np.all(np.abs(flat) <= XMAX):
        raise ValueError(f"exp_values takes |x| <= {XMAX}")
    out = np.empty_like(flat)
    _values(flat, out)
    return out.reshape(np.shape(x))


def tanh_values(a: np.ndarray) -> np.ndarray:
    """The unrounded float64 evaluation y of tanh(a), 2**-252 <= a < 40, for the tests."""
    flat = np.ascontiguousarray(a, dtype=np.float64).reshape(-1)
    if flat.size and not np.all((flat >= 2.0 ** -252) & (flat < TANH_MAX)):
        raise ValueError("tanh_values takes 2**-252 <= a < 40")
    out = np.empty_like(flat)
    _tanh_values(flat, out)
    return out.reshape(np.shape(a))


def tanh_f32(flat: np.ndarray, fmt, out: np.ndarray) -> np.ndarray | None:
    """tanh of contiguous flat float64 `flat` into `out` for `fmt` (`supports(fmt)`), as
    `exp_f32`: the positions whose rounding is uncertain, or None."""
    qmin = int(fmt.emin - fmt.precision + 1)
    args = (int(fmt.precision), qmin, float(fmt.max_finite), 2.0 ** (qmin - 2),
            2.0 * TANH_BOUND)
    idx = np.empty(flat.size, dtype=np.int64)    # pages touched only where written
    n = tanh_kernel(flat, out, idx, *args)
    return idx[:n].copy() if n else None


def _args(fmt) -> tuple:
    lo, hi = limits(fmt)
    return (int(fmt.precision), int(fmt.emin - fmt.precision + 1), float(fmt.max_finite), lo,
            hi, 2.0 * BOUND)


def exp_f32(flat: np.ndarray, fmt, out: np.ndarray) -> np.ndarray | None:
    """exp of contiguous flat float64 `flat` into `out` for `fmt` (`supports(fmt)`); returns
    the positions whose rounding is uncertain (None if there are none): their out is to be
    recomputed by the double-double path."""
    idx = np.empty(flat.size, dtype=np.int64)    # pages touched only where written
    n = exp_kernel(flat, out, idx, *_args(fmt))
    return idx[:n].copy() if n else None


# --- exp(round(a - b)): the shifted exponentials, the subtraction's rounding fused in ----------

_DBL_MAX = 1.7976931348623157e308


@numba.njit(cache=True, nogil=True, inline="always")
def _sub_exp1(v, p, qmin, max_finite, min_normal, xlo, xhi, tol, shift, half, mask):
    """(exp(round(v)), uncertain?) for the float64 difference v (see `sub_exp_kernel`)."""
    av = abs(v)
    bits = _bits(v)
    w = _float((bits + half + ((bits >> shift) & np.uint64(1))) & mask)
    w = math.copysign(math.inf, v) if abs(w) > max_finite else w
    d = w if (av >= min_normal and av <= _DBL_MAX) else (0.0 if av < min_normal else v)
    return _exp1(d, p, qmin, max_finite, xlo, xhi, tol)


@numba.njit(cache=True, nogil=True, inline="always")
def _sub_exp_span(ac, bc, bi, bcol, oc, p, qmin, max_finite, min_normal, xlo, xhi, tol,
                  shift, half, mask):
    """oc = exp(round(ac - bc)) (bc if bcol, else the scalar bi), branch-free: (the number
    uncertain, the number of +inf results)."""
    m = 0
    n_inf = 0
    if bcol:
        for k in range(ac.size):
            y, u = _sub_exp1(ac[k] - bc[k], p, qmin, max_finite, min_normal, xlo, xhi, tol,
                             shift, half, mask)
            oc[k] = y
            m += 1 if u else 0
    else:
        for k in range(ac.size):
            y, u = _sub_exp1(ac[k] - bi, p, qmin, max_finite, min_normal, xlo, xhi, tol,
                             shift, half, mask)
            oc[k] = y
            m += 1 if u else 0
    for k in range(oc.size):
        n_inf += 1 if oc[k] == math.inf else 0
    return m, n_inf


@numba.njit(cache=True, nogil=True)
def sub_exp_kernel(a, b, out, idx, p, qmin, max_finite, min_normal, xlo, xhi, tol):
    """out = exp(round(a - b)) for a (N, C), b (N, 1) or (N, C): the difference in float64
    and its rounding as `fastround._sub_kernel`'s fast pass (the float64 bits rounded at the
    format's last place, ties to even; +-inf past max_finite), then `_exp1`. Where that pass
    does not apply: |a - b| below the smallest normal (zero included) rounds to a value of
    magnitude at most 2**emin, whose exp rounds to 1 = exp(0), so 0 is used; nan and +-inf
    differences pass as they are (exp: nan, inf, 0). Returns (the number n of uncertain
    elements, the number of +inf results); the flat positions of the first len(idx) uncertain
    ones are in idx (the caller reruns with a larger idx where n > len(idx)). Rows of at most
    4 * 1024 in one branch-free span, longer ones in chunks of 1024 (a row or chunk with an
    uncertain element is rescanned element by element); one loop for each shape of b."""
    shift = np.uint64(53 - p)
    half = (np.uint64(1) << (shift - np.uint64(1))) - np.uint64(1)
    mask = ~((np.uint64(1) << shift) - np.uint64(1))
    n, c = a.shape
    bcol = b.shape[1] != 1
    span = c if c <= 4 * _CH else _CH
    n_amb = 0
    n_inf = 0
    for i in range(n):
        ar = a[i]
        br = b[i]
        orow = out[i]
        bi = br[0]
        for c0 in range(0, c, span):
            nc = min(span, c - c0)
            if nc == c:
                m, ni = _sub_exp_span(ar, br, bi, bcol, orow, p, qmin, max_finite,
                                      min_normal, xlo, xhi, tol, shift, half, mask)
            else:
                m, ni = _sub_exp_span(ar[c0:c0 + nc], br[c0:c0 + nc] if bcol else br,
                                      bi, bcol, orow[c0:c0 + nc], p, qmin, max_finite,
                                      min_normal, xlo, xhi, tol, shift, half, mask)
            n_inf += ni
            if m:
                for k in range(nc):
                    v = ar[c0 + k] - (br[c0 + k] if bcol else bi)
                    if _sub_exp1(v, p, qmin, max_finite, min_normal, xlo, xhi, tol, shift,
                                 half, mask)[1]:
                        if n_amb < idx.size:
                            idx[n_amb] = i * c + c0 + k
                        n_amb += 1
    return n_amb, n_inf


def sub_exp_f32(a: np.ndarray, b: np.ndarray, fmt, out: np.ndarray):
    """`sub_exp_kernel` for float64 a (N, C) and b (N, 1) or (N, C), contiguous, into out
    (N, C): (the flat positions whose rounding is uncertain, or None; whether any result is
    +inf)."""
    lo, hi = limits(fmt)
    args = (int(fmt.precision), int(fmt.emin - fmt.precision + 1), float(fmt.max_finite),
            float(2.0 ** fmt.emin), lo, hi, 2.0 * BOUND)
    idx = np.empty(64, dtype=np.int64)
    n, n_inf = sub_exp_kernel(a, b, out, idx, *args)
    if n > idx.size:                   # more than 64 uncertain: once more, recording all
        idx = np.empty(n, dtype=np.int64)
        n, n_inf = sub_exp_kernel(a, b, out, idx, *args)
    return (idx[:n].copy() if n else None), bool(n_inf)


# --- log -------------------------------------------------------------------------------------

_LOG_TERMS = 11
_A = [float(Fraction(1, 2 * i + 1)) for i in range(_LOG_TERMS)]       # atanh(s) / s in s**2
(_A0, _A1, _A2, _A3, _A4, _A5, _A6, _A7, _A8, _A9, _A10) = _A
_LN2_HI = elementary._truncate(_LN2, 42)       # e * LN2_HI exact for |e| < 2**11
_LN2_LO = float(_LN2 - Fraction(_LN2_HI))
_SQRT2 = float(Fraction(14142135623730951, 10 ** 16))   # a double next to sqrt(2)
_FRAC_BITS = np.uint64((1 << 52) - 1)
_ONE_BITS = np.uint64(1023 << 52)


def log_analysis_bound() -> Fraction:
    """The derived bound on |y / log(x) - 1| of `_log_y` (module docstring, log), in exact
    rationals."""
    u = _U
    sq2 = Fraction(_SQRT2)
    # m in [fl(sqrt2)/2, fl(sqrt2)): f in [fl(sqrt2)/2 - 1, fl(sqrt2) - 1], s = f / (2 + f)
    # increasing in f: |s| <= sigma
    sigma = max((sq2 - 1) / (sq2 + 1), (1 - sq2 / 2) / (1 + sq2 / 2)) + Fraction(1, 1 << 40)
    w_max = sigma * sigma * (1 + u)
    eps_s = (1 + u) / (1 - u) - 1                      # 2 + f, then the division
    a = [Fraction(v) for v in _A]
    trunc = w_max ** _LOG_TERMS / (2 * _LOG_TERMS + 1) / (1 - w_max)
    coef = sum(abs(a[i] - Fraction(1, 2 * i + 1)) * w_max ** i for i in range(_LOG_TERMS))
    dw = sum(Fraction(i, 2 * i + 1) * w_max ** i for i in range(1, 30)) * (2 * u)  # w's and
    eps_a = trunc + coef + _horner_error(_A, w_max) + dw   # s's errors in A(w); A >= 1
    eps_l = (1 + eps_s) * (1 + eps_a) * (1 + u) - 1    # L = 2 (s q): one more rounding
    l_max = sigma * 2 * (1 + w_max / 3 / (1 - w_max))  # |L| = |2 atanh s| (and its error)
    lo_part = 2 * u * Fraction(1 << 11, 1 << 42)       # e LN2_LO: its rounding and LN2_LO's
    t_max = l_max * (1 + eps_l) + Fraction(1 << 11, 1 << 42)
    y_min = _LN2 / 2 - Fraction(1, 1 << 50)            # |log x| >= ln2/2 - log(fl(sqrt2) /
    #                                                    sqrt2) where e != 0
    eps_e = ((l_max * eps_l + lo_part + u * t_max) / y_min + u) * (1 + u)
    return max(eps_l, eps_e)


_LAB = log_analysis_bound()
LOG_BOUND = 2.0 ** math.ceil(math.log2(float(2 * _LAB)))


def log_supports(fmt) -> bool:
    """This path serves log into `fmt`: `supports(fmt)`, |log x| <= 745 finite in it
    (emax >= 10) and 2**-54 <= |log x| (x != 1) a normal value (emin <= -54)."""
    return supports(fmt) and fmt.emax >= 10 and fmt.emin <= -54


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _log_y(x):
    """y = log(x) (1 + eps), |eps| <= LOG_BOUND / 2, for finite x > 0, x != 1: x = 2**e m,
    m in [fl(sqrt2)/2, fl(sqrt2)) from the bits (a subnormal scaled by 2**54 first), f = m - 1
    (exact), s = f / (2 + f), log m = 2 atanh(s) = 2 s A(s**2) (A the series through
    s**20/21, Horner), y = e LN2_HI + (2 s A + e LN2_LO)."""
    sub = x < 2.0 ** -1022
    xs = x * 18014398509481984.0 if sub else x          # 2**54
    b = _bits(xs)
    e0 = np.int64(b >> np.uint64(52)) - (1023 + 54 if sub else 1023)
    m0 = _float((b & _FRAC_BITS) | _ONE_BITS)
    big = m0 >= _SQRT2
    m = m0 * 0.5 if big else m0
    e = np.float64(e0 + (1 if big else 0))
    f = m - 1.0
    s = f / (2.0 + f)
    w = s * s
    q = _A10
    q = _A9 + w * q
    q = _A8 + w * q
    q = _A7 + w * q
    q = _A6 + w * q
    q = _A5 + w * q
    q = _A4 + w * q
    q = _A3 + w * q
    q = _A2 + w * q
    q = _A1 + w * q
    q = _A0 + w * q
    t = 2.0 * (s * q) + e * _LN2_LO
    return e * _LN2_HI + t


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _log1(x0, p, qmin, max_finite, tol):
    """(log(x0) rounded into the format, whether that is uncertain)."""
    inside = x0 > 0.0 and x0 < math.inf and x0 != 1.0     # false for nan
    y = _log_y(x0 if inside else 2.0)
    val, near = _round_pos(abs(y), p, qmin, max_finite, tol)
    special = -math.inf if x0 == 0.0 else (math.inf if x0 == math.inf else (
        0.0 if x0 == 1.0 else np.nan))
    return (math.copysign(val, y) if inside else special), inside and near


@numba.njit(cache=True, nogil=True, error_model="numpy")
def log_kernel(x, out, idx, p, qmin, max_finite, tol):
    """out[i] = log(x[i]) rounded into the format, idx and the count as `exp_kernel`."""
    n_amb = 0
    for c0 in range(0, x.size, _CH):
        nc = min(_CH, x.size - c0)
        xc = x[c0:c0 + nc]
        oc = out[c0:c0 + nc]
        m = 0
        for i in range(nc):
            v, a = _log1(xc[i], p, qmin, max_finite, tol)
            oc[i] = v
            m += 1 if a else 0
        if m:
            for i in range(nc):
                if _log1(xc[i], p, qmin, max_finite, tol)[1]:
                    idx[n_amb] = c0 + i
                    n_amb += 1
    return n_amb


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _log_values(x, out):
    for i in range(x.size):
        out[i] = _log_y(x[i])


def log_values(x: np.ndarray) -> np.ndarray:
    """The unrounded float64 evaluation y of log(x), finite x > 0, x != 1, for the tests."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    if flat.size and not np.all((flat > 0) & (flat < np.inf) & (flat != 1)):
        raise ValueError("log_values takes finite x > 0, x != 1")
    out = np.empty_like(flat)
    _log_values(flat, out)
    return out.reshape(np.shape(x))


def log_f32(flat: np.ndarray, fmt, out: np.ndarray) -> np.ndarray | None:
    """log of contiguous flat float64 `flat` into `out` for `fmt` (`log_supports(fmt)`), as
    `exp_f32`: the positions whose rounding is uncertain, or None."""
    idx = np.empty(flat.size, dtype=np.int64)    # pages touched only where written
    n = log_kernel(flat, out, idx, int(fmt.precision), int(fmt.emin - fmt.precision + 1),
                   float(fmt.max_finite), 2.0 * LOG_BOUND)
    return idx[:n].copy() if n else None
