"""Compiled (numba) paths for `elementary.compute`: the same correctly rounded results, bit for
bit, much faster.

`compute(name, x, fmt)` returns exactly `elementary.compute(name, x, fmt)[0]`:

  narrow formats (at most TABLE_MAX tabulated inputs: bfloat16, float16, the float8s, tf32,
  small custom formats): a TABLE LOOK-UP. For (function, format) the table is built once,
  lazily, by calling `elementary.compute` itself on every float64 of the set S = {+-m 2**e:
  m has at most p bits, e in [emin - p + 1, emax]} (every value of the format is in S), plus
  +-0, +-inf and nan; so each entry is the correctly rounded result by construction. A float64
  input is looked up from its bits alone (sign, float64 exponent, top p - 1 fraction bits)
  when it is in S (its other fraction bits zero, its exponent in range) or special; any other
  input goes through `elementary.compute`. The table is exactly `elementary.compute` on S,
  so the output is the same bits whatever the input. bfloat16 (whose values are the float32s
  with 16 low zero bits) is looked up first in a 65536-entry float32 table indexed by the top
  16 bits of the input's float32 (built from the full table on those values: the same bits),
  the inputs that are not bfloat16 values and the nan results through the full table.

  wide formats (float32, float64, custom ones beyond the table): exp is `elementary._exp_dd`
  and `elementary._round` ported to a per-element numba kernel: the same IEEE +, -, *
  operations in the same order (numba without fastmath neither reassociates nor contracts
  into FMAs), the same tables and constants, the same rounding test; the elements whose
  rounding is uncertain (within the error bound of a midpoint: a fraction ~2**-16 for float64,
  far fewer for float32) are recomputed by `elementary.compute`, which settles them with arb.
  Correct rounding is unique, so these agree with the numpy path bit for bit; the tests check
  it on adversarial inputs, random values of every binade, specials, subnormal results and
  overflow. float32 (and every format of at most 24 bits within float32's range:
  `fast32.supports`) goes first through fast32's plain float64 evaluation (a proven error
  bound of 2**-51, rounding decided where the value is not within 2**-50 of a midpoint:
  all but ~2**-25 of the elements), the rest through the double-double kernel above
  (`exp_plain`); every float32 input has been checked against it (fast32_check). tanh of
  those formats (every logit under a soft cap) likewise goes through fast32's plain float64
  tanh, its uncertain elements through `elementary.compute` (`tanh_plain`). `sub_exp` is
  exp(round(a - b)) for them in one pass (the methods' shifted exponentials). log of float32
  (every class's -log p in softmax_eps under options) through fast32's too (`log_plain`).
  The other functions of wide formats (log1p, expm1; per-row work in the methods) and tanh
  and log of float64 use `elementary.compute` unchanged.

`sequential_sum(v, fmt, one_sign)`: the round-to-nearest sequential sum of
`Arithmetic._sequential_sum` for formats of p <= 25 (float64 partial sums rounded once to the
format, double rounding being innocuous at 53 >= 2p + 2), compiled: per row, s = t + v_k in
float64, rounded by the frexp / ldexp / round-half-even steps of the numpy loop, the format's
overflow applied at every step (or at the end where every term has one sign, as there).
"""
from __future__ import annotations

import math
import threading

import numba
import numpy as np

from . import elementary, fast32, fastround
from .fastround import _bits, _bits32, _float

__all__ = ["compute", "table_size", "TABLE_MAX", "sequential_sum", "exp_compiled", "exp_plain",
           "tanh_plain", "log_plain", "sub_exp", "accumulate_native", "any_inf"]

TABLE_MAX = 1 << 20          # entries of the largest table built (tf32: 540,677; 4.3 MB)
_TABLES: dict = {}
_LOCK = threading.Lock()
_FRAC = (1 << 52) - 1


def table_size(fmt) -> int:
    """Entries of `fmt`'s table: both signs of every (exponent, top p - 1 bits) pair of S,
    then +0, -0, +inf, -inf, nan."""
    return 2 * (fmt.emax - fmt.emin + fmt.precision) * (1 << (fmt.precision - 1)) + 5


def _key(fmt):
    return (fmt.precision, fmt.emin, fmt.emax, fmt.max_finite)


def _inputs(fmt) -> np.ndarray:
    """The float64 inputs of the table, in index order: sign s, exponent e in
    [emin - p + 1, emax], top fraction bits j: index (s * n_e + (e - elo)) 2**(p-1) + j."""
    p = fmt.precision
    elo = fmt.emin - p + 1
    ne = fmt.emax - elo + 1
    e = np.arange(ne, dtype=np.uint64) + np.uint64(elo + 1023)
    j = np.arange(1 << (p - 1), dtype=np.uint64) << np.uint64(53 - p)
    mag = ((e[:, None] << np.uint64(52)) | j[None, :]).reshape(-1)
    bits = np.concatenate([mag, mag | np.uint64(1 << 63)])
    x = bits.view(np.float64)
    return np.concatenate([x, [0.0, -0.0, np.inf, -np.inf, np.nan]])


def _table(name: str, fmt) -> np.ndarray:
    key = (name, _key(fmt))
    tab = _TABLES.get(key)
    if tab is None:
        with _LOCK:
            tab = _TABLES.get(key)
            if tab is None:
                tab = np.ascontiguousarray(elementary.compute(name, _inputs(fmt), fmt)[0])
                tab.setflags(write=False)
                _TABLES[key] = tab
    return tab


@numba.njit(cache=True, nogil=True)
def _lookup(bits, obits, miss, table, p, elo, ehi):
    """obits[i] = the table's bits for input bits[i]; miss[i] where the input is not in S.
    Returns the number of misses. A first, branch-free pass (it vectorises: the index by
    integer arithmetic, a gather) serves the inputs of S with a nonzero exponent in range;
    a second pass, only where there are others, serves +-0, +-inf, nan and the misses."""
    shift = np.uint64(53 - p)
    low = (np.uint64(1) << shift) - np.uint64(1)
    frac = np.uint64(_FRAC)
    ne = ehi - elo + 1
    half = ne << (p - 1)
    special = 2 * half
    others = 0
    for i in range(bits.size):
        b = bits[i]
        e = np.int64((b >> np.uint64(52)) & np.uint64(0x7FF)) - 1023
        f = b & frac
        ok = e >= elo and e <= ehi and (f & low) == np.uint64(0)
        k = np.int64(b >> np.uint64(63)) * half + ((e - elo) << (p - 1)) + np.int64(f >> shift)
        obits[i] = table[k if ok else 0]
        others += 0 if ok else 1
    if others == 0:
        return 0
    misses = 0
    for i in range(bits.size):
        b = bits[i]
        neg = b >> np.uint64(63)
        ebits = np.int64((b >> np.uint64(52)) & np.uint64(0x7FF))
        f = b & frac
        e = ebits - 1023
        if e >= elo and e <= ehi and (f & low) == np.uint64(0):
            continue
        if ebits == 0x7FF:
            k = special + 4 if f != np.uint64(0) else special + 2 + np.int64(neg)
        elif ebits == 0 and f == np.uint64(0):
            k = special + np.int64(neg)
        else:
            miss[i] = True
            misses += 1
            continue
        obits[i] = table[k]
    return misses


def _lookup_table(name: str, flat: np.ndarray, fmt) -> np.ndarray:
    """`compute` of a narrow format by its table (flat float64 in and out)."""
    tab = _table(name, fmt)
    out = np.empty_like(flat)
    miss = np.zeros(flat.size, dtype=np.bool_)
    p = int(fmt.precision)
    if _lookup(flat.view(np.uint64), out.view(np.uint64), miss, tab.view(np.uint64), p,
               int(fmt.emin - p + 1), int(fmt.emax)):
        idx = np.flatnonzero(miss)
        out[idx] = elementary.compute(name, flat[idx], fmt)[0]
    return out


# bfloat16's values are the float32 values whose low 16 bits are zero (the same exponent
# range, subnormals included): the top 16 bits of a value's float32 index a 65536-entry
# float32 table (256 KB: each result is a bfloat16 value, exact in float32), built by
# `_lookup_table` itself on those 65536 values, so its entries are the table's bits.


def _is_top16(fmt) -> bool:
    return (fmt.precision, fmt.emin, fmt.emax) == (8, -126, 127) and fmt.overflow == "inf"


def _table16(name: str, fmt) -> np.ndarray:
    key = ("top16", name, _key(fmt))
    tab = _TABLES.get(key)
    if tab is None:
        v = (np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)).view(np.float32)
        with np.errstate(invalid="ignore"):
            res = _lookup_table(name, v.astype(np.float64), fmt)
        tab = res.astype(np.float32)
        ok = np.isnan(res) | (tab.astype(np.float64) == res)
        if not ok.all():               # cannot happen: every result is a bfloat16 value
            raise ArithmeticError("a bfloat16 result not exact in float32")
        tab.setflags(write=False)
        with _LOCK:
            _TABLES.setdefault(key, tab)
    return _TABLES[key]


@numba.njit(cache=True, nogil=True)
def _lookup16(x, out, table):
    """out[i] = table[top 16 bits of float32(x[i])] where float32(x[i]) == x[i] and its low 16
    bits are zero (x[i] a bfloat16 value: +-0, subnormals, +-inf included), else nan (the
    caller looks those up, and nan inputs, in the full table). Branch-free. Returns the
    number of nan outputs."""
    n_nan = 0
    for i in range(x.size):
        v = x[i]
        f = np.float32(v)
        b = _bits32(f)
        ok = np.float64(f) == v and (b & np.uint32(0xFFFF)) == np.uint32(0)
        y = np.float64(table[np.int64(b >> np.uint32(16))])
        y = y if ok else np.nan
        out[i] = y
        n_nan += 0 if y == y else 1
    return n_nan


# --- exp of wide formats: elementary._exp_dd and elementary._round, per element --------------

_SPLIT = 134217729.0
_C6, _C24, _C120 = 1 / 6, 1 / 24, 1 / 120
_MAGIC = 6755399441055744.0  # 1.5 * 2**52: (y + M) - M = rint(y) for |y| < 2**51
_TH, _TL = elementary._TH, elementary._TL
_THH, _THL = elementary._TH_SPLIT
_L1, _L2, _L3, _INV_L = elementary._L1, elementary._L2, elementary._L3, elementary._INV_L
_EXP_BOUND = elementary.BOUNDS["exp"]
_EB = elementary.EXP_BITS
_NM = (1 << elementary.EXP_BITS) - 1


@numba.njit(cache=True, nogil=True, inline="always")
def _pow2(q):
    """2.0**q exactly, -1074 <= q <= 1023 (from its bits)."""
    normal = _float(np.uint64(max(q, -1022) + 1023) << np.uint64(52))
    sub = _float(np.uint64(1) << np.uint64(min(max(q + 1074, 0), 63)))
    return normal if q >= -1022 else sub


_CH = 512                    # elements per chunk of the compiled exp (scratch in L1)


@numba.njit(cache=True, nogil=True)
def _exp_kernel(x, out, amb, th_, tl_, thh_, thl_, l1, l2, l3, inv_l, bound, p, emin,
                max_finite):
    """out[i] = exp(x[i]) rounded into the format (p, emin, max_finite); amb[i] where the
    rounding is uncertain (then out[i] is to be recomputed). Returns the number uncertain.
    Per chunk: the argument reduction, the table loads, then the rest, each a loop of its
    own without branches (selects), so that the two arithmetic loops vectorise; elements
    outside [-746, 710] are evaluated at 0 and their results replaced."""
    n_amb = 0
    qmin = emin - p + 1
    rh_ = np.empty(_CH)
    rl_ = np.empty(_CH)
    m_ = np.empty(_CH, dtype=np.int64)
    j_ = np.empty(_CH, dtype=np.int64)
    th = np.empty(_CH)
    tl = np.empty(_CH)
    bh = np.empty(_CH)
    bl = np.empty(_CH)
    for c0 in range(0, x.size, _CH):
        nc = min(_CH, x.size - c0)
        for i in range(nc):                  # _exp_dd: the argument reduction
            x0 = x[c0 + i]
            inside = x0 >= -746.0 and x0 <= 710.0
            v = x0 if inside else 0.0
            n = (v * inv_l + _MAGIC) - _MAGIC
            r0 = v - n * l1
            b2 = -(n * l2)
            s = r0 + b2
            bb = s - r0
            rl = (r0 - (s - bb)) + (b2 - bb)
            rh = s
            b2 = rl - n * l3
            s = rh + b2
            bb = s - rh
            rl_[i] = (rh - (s - bb)) + (b2 - bb)
            rh_[i] = s
            ni = np.int64(n)
            jj = ni & _NM
            j_[i] = jj
            m_[i] = (ni - jj) >> _EB
        for i in range(nc):                  # the table loads
            jj = j_[i]
            th[i] = th_[jj]
            tl[i] = tl_[jj]
            bh[i] = thh_[jj]
            bl[i] = thl_[jj]
        for i in range(nc):                  # the rest of _exp_dd, then _round
            x0 = x[c0 + i]
            inside = x0 >= -746.0 and x0 <= 710.0
            rh = rh_[i]
            rl = rl_[i]
            m = m_[i]
            t_h = th[i]
            pp = rh * rh * (0.5 + rh * (_C6 + rh * (_C24 + rh * _C120)))
            ap = rh * t_h
            t = _SPLIT * rh
            rhh = t - (t - rh)
            rhl = rh - rhh
            al = ((rhh * bh[i] - ap) + rhh * bl[i] + rhl * bh[i]) + rhl * bl[i]
            sh = t_h + ap
            bb = sh - t_h
            sl = (t_h - (sh - bb)) + (ap - bb)
            lo = sl + (al + (t_h * (rl + pp) + (tl[i] + tl[i] * rh)))
            hi = sh + lo
            lo = lo - (hi - sh)
            # _round(hi, lo, m, fmt, bound); hi > 1/2 here, so frexp(hi) comes from its
            # bits: fr == 0.5 exactly where its fraction bits are zero
            neg = hi < 0
            sgn = -1.0 if neg else 1.0
            ah = hi * sgn
            al = lo * sgn
            hb = _bits(ah)
            e = np.int64((hb >> np.uint64(52)) & np.uint64(0x7FF)) - 1022
            fr_half = (hb & np.uint64(_FRAC)) == np.uint64(0)
            big = e - 1 + m - (1 if (fr_half and al < 0) else 0)
            qe = max(big - p + 1, qmin)
            sc = m - qe              # in [-1022, 1023]: 2**sc is a normal double, and
            s2 = _pow2(sc)           # ldexp(y, sc) = y * 2**sc, both one correct rounding
            shh = ah * s2
            sll = al * s2
            n0 = np.floor(shh)
            f = (shh - n0) + sll
            fl = np.floor(f)
            a = inside and abs(f - (fl + 0.5)) <= 2.0 * bound * shh + 2.0 ** -50
            amb[c0 + i] = a
            n_amb += 1 if a else 0
            nn = n0 + fl + (1.0 if f - fl > 0.5 else 0.0)
            val = nn * _pow2(qe)     # = ldexp(nn, qe): exact, or inf past float64's range
            val = np.inf if val > max_finite else val
            res = sgn * val
            special = np.inf if x0 > 710.0 else (0.0 if x0 < -746.0 else np.nan)
            out[c0 + i] = res if inside else special
    return n_amb


def exp_compiled(x: np.ndarray, fmt) -> np.ndarray:
    """exp correctly rounded into fmt by the compiled port of the double-double evaluation,
    uncertain elements settled by `elementary.compute` (float64 of x's shape)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    amb = np.zeros(flat.size, dtype=np.bool_)
    if _exp_kernel(flat, out, amb, _TH, _TL, _THH, _THL, _L1, _L2, _L3, _INV_L, _EXP_BOUND,
                   int(fmt.precision), int(fmt.emin), float(fmt.max_finite)):
        idx = np.flatnonzero(amb)
        out[idx] = elementary.compute("exp", flat[idx], fmt)[0]
    return out.reshape(np.shape(x))


def _plain(x: np.ndarray, fmt, kernel, settle) -> np.ndarray:
    """fast32's plain float64 `kernel` on x (float64 of x's shape), the elements whose
    rounding it leaves uncertain settled by `settle`."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    idx = kernel(flat, fmt, out)
    if idx is not None:
        out[idx] = settle(flat[idx], fmt)
    return out.reshape(np.shape(x))


def exp_plain(x: np.ndarray, fmt) -> np.ndarray:
    """exp correctly rounded into fmt (`fast32.supports(fmt)`: float32) by fast32's plain
    float64 evaluation, its uncertain elements settled by `exp_compiled`."""
    return _plain(x, fmt, fast32.exp_f32, exp_compiled)


def tanh_plain(x: np.ndarray, fmt) -> np.ndarray:
    """tanh correctly rounded into fmt (`fast32.supports(fmt)`: float32) by fast32's plain
    float64 evaluation, its uncertain elements settled by `elementary.compute`."""
    return _plain(x, fmt, fast32.tanh_f32, lambda v, f: elementary.compute("tanh", v, f)[0])


def log_plain(x: np.ndarray, fmt) -> np.ndarray:
    """log correctly rounded into fmt (`fast32.log_supports(fmt)`: float32) by fast32's plain
    float64 evaluation, its uncertain elements settled by `elementary.compute`."""
    return _plain(x, fmt, fast32.log_f32, lambda v, f: elementary.compute("log", v, f)[0])


def sub_exp(a: np.ndarray, b: np.ndarray, fmt) -> tuple[np.ndarray, bool]:
    """(`compute("exp", round(a - b), fmt)`, whether any element is +inf) for float64 a (N, C)
    and b (N, 1) or (N, C), `fast32.supports(fmt)`, the difference rounded as
    `fastround.sub_compiled` (round to nearest, overflow to inf): fast32's fused kernel, its
    uncertain elements recomputed unfused (the difference rounded by fastround, then
    `exp_compiled`)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    out = np.empty_like(a)
    idx, inf = fast32.sub_exp_f32(a, b, fmt, out)
    if idx is not None:
        flat = out.reshape(-1)
        rows, cols = np.divmod(idx, a.shape[1])
        v = a.reshape(-1)[idx] - b[rows, cols if b.shape[1] != 1 else 0]
        d = fastround.round_compiled(v, fmt.precision, fmt.emin, fmt.max_finite)
        flat[idx] = exp_compiled(d, fmt)
    if inf:                  # some guess was +inf: whether the results have one
        inf = any_inf(out)
    return out, bool(inf)


def compute(name: str, x, fmt) -> np.ndarray:
    """`elementary.compute(name, x, fmt)[0]`, bit for bit: a table look-up for narrow formats,
    the compiled exp for wide ones (fast32's plain float64 exp, tanh and log for float32),
    `elementary.compute` otherwise."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or name not in elementary.FUNCTIONS:
        return elementary.compute(name, x, fmt)[0]
    elementary.check_format(fmt)
    if table_size(fmt) <= TABLE_MAX:
        flat = np.ascontiguousarray(x).reshape(-1)
        if _is_top16(fmt):            # bfloat16: the float32 bits' top half indexes
            out = np.empty_like(flat)
            if _lookup16(flat, out, _table16(name, fmt)):
                idx = np.flatnonzero(np.isnan(out))   # inputs not bfloat16 values, or nan
                out[idx] = _lookup_table(name, flat[idx], fmt)
            return out.reshape(x.shape)
        return _lookup_table(name, flat, fmt).reshape(x.shape)
    if name == "exp":
        return exp_plain(x, fmt) if fast32.supports(fmt) else exp_compiled(x, fmt)
    if name == "tanh" and fast32.supports(fmt):
        return tanh_plain(x, fmt)
    if name == "log" and fast32.log_supports(fmt):
        return log_plain(x, fmt)
    return elementary.compute(name, x, fmt)[0]


@numba.njit(cache=True, nogil=True)
def _any_inf(x):
    for i in range(x.size):
        if math.isinf(x[i]):
            return True
    return False


def any_inf(x: np.ndarray) -> bool:
    """np.isinf(x).any(), in one pass without a temporary."""
    return bool(_any_inf(np.ascontiguousarray(x, dtype=np.float64).reshape(-1)))


@numba.njit(cache=True, nogil=True)
def _sum_kernel(v, out, p, qmin, max_finite, overflow, one_sign):
    """Rows of v (N, C): s = t + v_k, t = round(s) (frexp / ldexp / rint steps); overflow:
    0 inf, 1 nan, 2 saturate (overflow_to_format), per step or, if one_sign, at the end."""
    for r in range(v.shape[0]):
        t = v[r, 0]
        for k in range(1, v.shape[1]):
            s = t + v[r, k]
            if s != s or s == 0.0 or math.isinf(s):
                y = s           # frexp of 0, inf, nan: ldexp(rint(s 2**-q), q) is s
            else:
                _, e = math.frexp(s)
                q = max(e - p, qmin)
                y = math.ldexp(np.rint(math.ldexp(s, -q)), q)
            if not one_sign:
                y = _overflow(y, s, max_finite, overflow)
            t = y
        if one_sign:
            t = _overflow(t, t, max_finite, overflow)
        out[r] = t


@numba.njit(cache=True, nogil=True)
def _overflow(y, x, max_finite, overflow):
    if abs(y) > max_finite:     # false for nan
        if overflow == 0:
            if not math.isinf(x) and x == x:
                return math.copysign(np.inf, x)
            return y
        if overflow == 1:
            return np.nan
        return math.copysign(max_finite, x)
    return y


_OVERFLOW = {"inf": 0, "nan": 1, "saturate": 2}


def sequential_sum(v: np.ndarray, fmt, one_sign: bool) -> np.ndarray:
    """Round-to-nearest sequential sums of the rows of float64 `v` (..., C) in fmt (p <= 25),
    as `Arithmetic._sequential_sum`'s loop (float64 of v's leading shape)."""
    lead = v.shape[:-1]
    v2 = np.ascontiguousarray(v, dtype=np.float64).reshape(-1, v.shape[-1])
    out = np.empty(v2.shape[0])
    _sum_kernel(v2, out, int(fmt.precision), int(fmt.emin - fmt.precision + 1),
                float(fmt.max_finite), _OVERFLOW[fmt.overflow], bool(one_sign))
    return out.reshape(lead)


# --- numpy's add.accumulate in a native dtype, compiled ----------------------------------------

_BLOCK = 8                   # rows summed side by side (independent chains: instruction-level
#                              parallelism; each row's order of additions is unchanged)


@numba.njit(cache=True, nogil=True, inline="always")
def _round_bits(s, p, min_normal, qmin, max_finite):
    """Round float64 s to p bits, nearest-even (fastround's steps), quantum at least 2**qmin:
    +-inf past max_finite."""
    if s != s or s == 0.0 or math.isinf(s):
        return s
    if abs(s) >= min_normal:
        shift = np.uint64(53 - p)
        half = (np.uint64(1) << (shift - np.uint64(1))) - np.uint64(1)
        b = _bits(s)
        r = _float((b + half + ((b >> shift) & np.uint64(1))) & ~((np.uint64(1) << shift)
                                                                  - np.uint64(1)))
        return math.copysign(np.inf, s) if abs(r) > max_finite else r
    _, e = math.frexp(s)
    q = max(e - p, qmin)
    y = math.ldexp(np.rint(math.ldexp(s, -q)), q)
    return math.copysign(np.inf, s) if abs(y) > max_finite else y


@numba.njit(cache=True, nogil=True, inline="always")
def _is_value(x, low, p, min_normal, qmin, max_finite):
    """x is a finite value of the format (a normal one: no bits below its last place)."""
    if abs(x) >= min_normal:
        return (_bits(x) & low) == np.uint64(0) and abs(x) <= max_finite
    return _round_bits(x, p, min_normal, qmin, max_finite) == x


@numba.njit(cache=True, nogil=True)
def _accumulate_native(v, out, p, min_normal, qmin, max_finite):
    """Row sums of v (N, C), every partial sum correctly rounded to the format (p bits,
    quantum at least 2**qmin): s = t + v_k in float64 (exact or within 2**-53; 53 >= 2p + 2,
    so the rounding of it to p bits is the correct rounding of the exact sum; the rounding is
    fastround's, tested equal to round_to_format). Returns False (out unusable) where an input
    is not a finite value of the format or a sum is not finite: the caller then runs numpy
    (whose nan and overflow encodings it keeps)."""
    n, c = v.shape
    shift = np.uint64(53 - p)
    low = (np.uint64(1) << shift) - np.uint64(1)
    half = (np.uint64(1) << (shift - np.uint64(1))) - np.uint64(1)
    flat = v.reshape(-1)
    odd = 0                     # inputs not normal values of the format: branch-free count
    for i in range(flat.size):
        x = flat[i]
        ax = abs(x)
        ok = ax >= min_normal and ax <= max_finite and (_bits(x) & low) == np.uint64(0)
        odd += 0 if ok else 1
    if odd:                     # zeros and subnormals are values too: check the others
        for i in range(flat.size):
            if not _is_value(flat[i], low, p, min_normal, qmin, max_finite):
                return False
    t = np.empty(_BLOCK)
    for r0 in range(0, n, _BLOCK):
        nb = min(_BLOCK, n - r0)
        for b in range(nb):
            t[b] = v[r0 + b, 0]
        for k in range(1, c):
            for b in range(nb):
                y = t[b] + v[r0 + b, k]
                if abs(y) >= min_normal:       # and finite: inputs and partial sums are
                    bb = _bits(y)
                    y = _float((bb + half + ((bb >> shift) & np.uint64(1))) & ~low)
                    if abs(y) > max_finite:
                        return False
                else:
                    y = _round_bits(y, p, min_normal, qmin, max_finite)
                t[b] = y
        for b in range(nb):
            out[r0 + b] = t[b]
    return True


@numba.njit(cache=True, nogil=True)
def _accumulate_float32(v, out):
    """numpy's add.accumulate(v.astype(float32)) along rows, last column: float32 casts and
    float32 additions (the same IEEE operations), rows side by side: blocks of 8 rows in 8
    scalar accumulators (registers: independent chains), the remaining rows in a block of
    their own. Returns False where a sum is not finite (numpy's nan encodings are its own:
    the caller runs numpy)."""
    n, c = v.shape
    r0 = 0
    while r0 + 8 <= n:
        a0, a1, a2, a3 = v[r0], v[r0 + 1], v[r0 + 2], v[r0 + 3]
        a4, a5, a6, a7 = v[r0 + 4], v[r0 + 5], v[r0 + 6], v[r0 + 7]
        t0, t1 = np.float32(a0[0]), np.float32(a1[0])
        t2, t3 = np.float32(a2[0]), np.float32(a3[0])
        t4, t5 = np.float32(a4[0]), np.float32(a5[0])
        t6, t7 = np.float32(a6[0]), np.float32(a7[0])
        for k in range(1, c):
            t0 = t0 + np.float32(a0[k])
            t1 = t1 + np.float32(a1[k])
            t2 = t2 + np.float32(a2[k])
            t3 = t3 + np.float32(a3[k])
            t4 = t4 + np.float32(a4[k])
            t5 = t5 + np.float32(a5[k])
            t6 = t6 + np.float32(a6[k])
            t7 = t7 + np.float32(a7[k])
        for b, tb in enumerate((t0, t1, t2, t3, t4, t5, t6, t7)):
            if math.isinf(tb) or tb != tb:
                return False
            out[r0 + b] = np.float64(tb)
        r0 += 8
    nb = n - r0
    t = np.empty(_BLOCK, dtype=np.float32)
    for b in range(nb):
        t[b] = np.float32(v[r0 + b, 0])
    for k in range(1, c):
        for b in range(nb):
            t[b] = t[b] + np.float32(v[r0 + b, k])
    for b in range(nb):
        if math.isinf(t[b]) or t[b] != t[b]:
            return False
        out[r0 + b] = np.float64(t[b])
    return True


def accumulate_native(v: np.ndarray, fmt):
    """`np.add.accumulate(v.astype(fmt.dtype), axis=-1)[..., -1]` as float64, compiled, for
    float32 and the native formats of p <= 25; None where the compiled path declines (then
    numpy's is to run)."""
    lead = v.shape[:-1]
    v2 = np.ascontiguousarray(v, dtype=np.float64).reshape(-1, v.shape[-1])
    out = np.empty(v2.shape[0])
    if fmt.name == "float32":
        return out.reshape(lead) if _accumulate_float32(v2, out) else None
    if _accumulate_native(v2, out, int(fmt.precision), float(fmt.min_normal),
                          int(fmt.emin - fmt.precision + 1), float(fmt.max_finite)):
        return out.reshape(lead)
    return None
