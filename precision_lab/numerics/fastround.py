"""A compiled (numba) kernel for `formats.round_to_format`: the same one correct rounding,
bit for bit, in one pass without numpy's five float64 temporaries.

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

__all__ = ["round_compiled", "MIN_SIZE"]

MIN_SIZE = 1            # every non-empty array (even a few values: numpy's path costs more)
_MAGIC = 4503599627370496.0  # 2**52


@numba.njit(cache=True, nogil=True)
def _kernel(x, bits, out, obits, p, qmin, max_finite, min_normal):
    shift = np.uint64(53 - p)
    half = (np.uint64(1) << (shift - np.uint64(1))) - np.uint64(1)
    mask = ~((np.uint64(1) << shift) - np.uint64(1))
    one = np.uint64(1)
    for i in range(x.size):
        v = x[i]
        if v != v or v == 0.0 or math.isinf(v):
            out[i] = v
            continue
        if abs(v) >= min_normal:
            # a normal result: round the float64 bits at the format's last place, ties to
            # even (a carry into the exponent is the next binade, as it should be)
            b = bits[i]
            r = (b + half + ((b >> shift) & one)) & mask
            obits[i] = r
            if abs(out[i]) > max_finite:
                out[i] = math.copysign(math.inf, v)
            continue
        _, e = math.frexp(v)
        q = max(e - p, qmin)
        s = math.ldexp(v, -q)
        r = math.copysign((abs(s) + _MAGIC) - _MAGIC, s)
        y = math.ldexp(r, q)
        if abs(y) > max_finite:
            y = math.copysign(math.inf, v)
        out[i] = y


def round_compiled(x: np.ndarray, precision: int, emin: int, max_finite: float) -> np.ndarray:
    """`round_to_format` of float64 `x` for a format of `precision` < 53 bits (float64 out,
    the shape of x)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    out = np.empty_like(flat)
    _kernel(flat, flat.view(np.uint64), out, out.view(np.uint64), int(precision),
            int(emin - precision + 1), float(max_finite), float(2.0 ** emin))
    return out.reshape(np.shape(x))
