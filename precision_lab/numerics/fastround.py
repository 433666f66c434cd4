"""A compiled (numba) kernel for `formats.round_to_format`: the same one correct rounding,
bit for bit, without numpy's five float64 temporaries: a branch-free (vectorised) pass for values
whose magnitude is in [min_normal, DBL_MAX], then, where there are others, a second pass
for them.

Per value v of magnitude at least the format's smallest normal: the float64 bits rounded at
the format's last place, ties to even, by integer arithmetic (b + half - 1 + lsb, low bits
cleared; a carry moves into the exponent, the next binade), then +-inf beyond the format's
largest finite value. Below (results subnormal in the format, or zero), as the numpy path:
(m, e) = frexp(v); the format's quantum at v is 2**q with
q = max(e - p, emin - p + 1); v 2**-q is exact (a power-of-two scaling inside float64's
range), its round-to-nearest-even integer is (|s| + 2**52) - 2**52 (exact for |s| < 2**52, as
here: |s| < 2**p), and r 2**q is exact or overflows; beyond the format's largest finite value
the result is +-inf. NaN, +-inf and +-0 pass through. Exactly the steps of the numpy path
(np.frexp, np.ldexp, np.rint, the overflow test), so the results are identical bit for bit,
signs of zeros included; tests/test_fastround.py checks it on edge cases and random values of
every binade.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["round_compiled", "sub_compiled", "MIN_SIZE"]

MIN_SIZE = 1            # every non-empty array (even a few values: numpy's path costs more)
_MAGIC = 4503599627370496.0  # 2**52
_SIGN = np.uint64(1 << 63)
_DBL_MAX = 1.7976931348623157e308


@intrinsic
def _bits(typingctx, x):
    """The bits of float64 x as uint64 (a register bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.uint64(types.float64), codegen


@intrinsic
def _bits32(typingctx, x):
    """The bits of float32 x as uint32 (a register bitcast)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@intrinsic
def _float(typingctx, b):
    """The float64 whose bits are uint64 b."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.uint64), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _round_rare(v, p, qmin, max_finite):
    """The rounding of one finite nonzero float64 v below the format's smallest normal in
    magnitude (a subnormal or zero result), as the numpy path: (m, e) = frexp(v), quantum
    2**q with q = max(e - p, qmin), the round-to-nearest-even integer of v 2**-q, scaled
    back; +-inf beyond the largest finite value."""
    _, e = math.frexp(v)
    q = max(e - p, qmin)
    s = math.ldexp(v, -q)
    r = math.copysign((abs(s) + _MAGIC) - _MAGIC, s)
    y = math.ldexp(r, q)
    return math.copysign(math.inf, v) if abs(y) > max_finite else y


@numba.njit(cache=True, nogil=True)
def _kernel(x, bits, out, p, qmin, max_finite, min_normal):
    shift = np.uint64(53 - p)
    half = (np.uint64(1) << (shift - np.uint64(1))) - np.uint64(1)
    mask = ~((np.uint64(1) << shift) - np.uint64(1))
    one = np.uint64(1)
    n_slow = 0
    for i in range(x.size):
        # a normal result: round the float64 bits at the format's last place, ties to even
        # (a carry into the exponent is the next binade, as it should be); branch-free so
        # that the loop vectorises; the other values are redone below
        v = x[i]
        av = abs(v)
        b = bits[i]
        w = _float((b + half + ((b >> shift) & one)) & mask)
        out[i] = math.copysign(math.inf, v) if abs(w) > max_finite else w
        n_slow += 0 if (av >= min_normal and av <= _DBL_MAX) else 1
    if n_slow == 0:
        return
    for i in range(x.size):
        v = x[i]
        av = abs(v)
        if av >= min_normal and av <= _DBL_MAX:
            continue
        if v != v or v == 0.0 or math.isinf(v):
            out[i] = v
        else:
            out[i] = _round_rare(v, p, qmin, max_finite)


def round_compiled(x: np.ndarray, precision: int, emin: int, max_finite: float) -> np.ndarray:
    """`round_to_format` of float64 `x` for a format of `precision` < 53 bits (float64 out,
    the shape of x)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    _kernel(flat, flat.view(np.uint64), out, int(precision),
            int(emin - precision + 1), float(max_finite), float(2.0 ** emin))
    return out.reshape(np.shape(x))


_QUIET = np.uint64(1 << 51)


@numba.njit(cache=True, nogil=True)
def _sub_kernel(a, b, out, p, qmin, max_finite, min_normal):
    """out = round(a + (-b)) for a (N, C), b (N, 1) or (N, C): numpy's np.add(a, np.negative(b))
    then `_kernel`'s rounding, element by element. NaN as numpy's add makes it on x86: a's
    (quieted) if a is nan, else -b's (quieted)."""
    shift = np.uint64(53 - p)
    half = (np.uint64(1) << (shift - np.uint64(1))) - np.uint64(1)
    mask = ~((np.uint64(1) << shift) - np.uint64(1))
    one = np.uint64(1)
    n, c = a.shape
    bcol = b.shape[1] != 1
    slow = np.empty(c, dtype=np.bool_)
    for i in range(n):
        bi = b[i, 0]
        n_slow = 0
        for k in range(c):          # normal finite differences: branch-free, vectorises
            y = b[i, k] if bcol else bi
            v = a[i, k] - y
            av = abs(v)
            bits = _bits(v)
            w = _float((bits + half + ((bits >> shift) & one)) & mask)
            w = math.copysign(math.inf, v) if abs(w) > max_finite else w
            fast = av >= min_normal and av <= _DBL_MAX
            out[i, k] = w
            slow[k] = not fast
            n_slow += 0 if fast else 1
        if n_slow == 0:
            continue
        for k in range(c):          # the others: nan, zero, inf, subnormal-range results
            if not slow[k]:
                continue
            x = a[i, k]
            y = b[i, k] if bcol else bi
            if x != x or y != y:
                if x == x:          # -b's nan, quieted (LLVM may turn a + (-b) into a - b)
                    out[i, k] = _float((_bits(y) ^ _SIGN) | _QUIET)
                else:
                    out[i, k] = x - y   # a's nan, quieted (the first operand's)
                continue
            v = x - y
            if v == 0.0 or math.isinf(v):
                out[i, k] = v
            else:
                out[i, k] = _round_rare(v, p, qmin, max_finite)


def sub_compiled(a: np.ndarray, b: np.ndarray, precision: int, emin: int,
                 max_finite: float) -> np.ndarray:
    """`round_to_format(np.add(a, np.negative(b)))` for float64 a (N, C) and b (N, 1) or
    (N, C), a format of precision <= 25 (one rounding of the float64 difference), overflow
    to +-inf; float64 (N, C) out."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    out = np.empty_like(a)
    _sub_kernel(a, b, out, int(precision), int(emin - precision + 1), float(max_finite),
                float(2.0 ** emin))
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _round1(v, p, qmin, max_finite, min_normal):
    """`_kernel`'s rounding of one value."""
    if v != v or v == 0.0 or math.isinf(v):
        return v
    if abs(v) >= min_normal:
        shift = np.uint64(53 - p)
        half = (np.uint64(1) << (shift - np.uint64(1))) - np.uint64(1)
        mask = ~((np.uint64(1) << shift) - np.uint64(1))
        b = _bits(v)
        w = _float((b + half + ((b >> shift) & np.uint64(1))) & mask)
        return math.copysign(math.inf, v) if abs(w) > max_finite else w
    return _round_rare(v, p, qmin, max_finite)


@numba.njit(cache=True, nogil=True)
def _scaled_sum_kernel(scale, term, out, p, qmin, max_finite, min_normal):
    n, nb = scale.shape
    for i in range(n):
        s = 0.0
        for b in range(nb):
            s = _round1(_round1(s * scale[i, b], p, qmin, max_finite, min_normal)
                        + term[i, b], p, qmin, max_finite, min_normal)
        out[i] = s


def scaled_sum_compiled(scale: np.ndarray, term: np.ndarray, precision: int, emin: int,
                        max_finite: float) -> np.ndarray:
    """Per row i, s = 0 then s = round(round(s scale[i, b]) + term[i, b]) for each column b:
    the online softmax's running sum, each product and sum (float64) rounded once to a
    format of precision <= 25 overflowing to +-inf, as round_compiled rounds; float64 (N,)."""
    scale = np.ascontiguousarray(scale, dtype=np.float64)
    term = np.ascontiguousarray(term, dtype=np.float64)
    out = np.empty(scale.shape[0])
    _scaled_sum_kernel(scale, term, out, int(precision), int(emin - precision + 1),
                       float(max_finite), float(2.0 ** emin))
    return out
