"""Stochastic rounding into a format, with random bits from a counter-based generator.

Stochastic rounding (SR) of x, lying between adjacent format values a < x < b, gives b with
probability (x - a) / (b - a) and a otherwise, so E[SR(x)] = x exactly (no bias, unlike round
to nearest, whose errors pile up in long sums); one rounding errs by less than an ulp (2u).
The probability is exact: the fraction (x - a) / (b - a) of a float64 x is a multiple of
2**-53, compared with a uniform 53-bit integer.

Random bits are a pure function, never global state: `random_bits(seed, stream, index, x)` is
a SplitMix64 hash of the seed, the operation's stream number (its position in the method's
sequence of roundings), the element's index along the class axis, and the float64 bits of the
value being rounded. A sequential sum keys the bits of its step k by
(seed, stream, k, a hash of the whole row of terms: `row_keys`) instead, so they are drawn for
all steps at once. So the same seed gives the same bytes whatever the process, the worker
count, the chunking of rows or their order: a row's result depends on the row and the seed.
(Rows whose intermediate values coincide at the same operation and column share those
rounding decisions; rows with equal inputs give equal results.)
"""
from __future__ import annotations

import numpy as np

from .formats import Format, overflow_to_format, quantum_exponent

__all__ = ["random_bits", "keyed_bits", "row_keys", "round_stochastic", "uniform53"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (a bijection on 64-bit integers with full avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def random_bits(seed: int, stream: int, index, x) -> np.ndarray:
    """64 random bits per element of float64 `x` (uint64, x's shape): a hash of (seed,
    stream, index, the bits of x); `index` broadcasts against x (the column of each element)."""
    x = np.asarray(x, dtype=np.float64)
    x = x if x.flags.c_contiguous else x.copy()
    return keyed_bits(seed, stream, index, x.view(np.uint64))


def keyed_bits(seed: int, stream: int, index, key) -> np.ndarray:
    """64 random bits per element of the uint64 array `key`: a hash of (seed, stream, index,
    key), `index` and `key` broadcast against each other."""
    key, idx = np.broadcast_arrays(np.asarray(key, dtype=np.uint64),
                                   np.asarray(index, dtype=np.uint64))
    with np.errstate(over="ignore"):
        k0 = _mix(np.uint64(seed) * _GOLDEN + np.uint64(stream))
        h = _mix(k0 + _GOLDEN * (idx + np.uint64(1)))
        return _mix(h ^ (key + _GOLDEN))


def row_keys(v: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of float64 `v` (over its last axis, every value and its
    position): the key of a sequential sum's rounding bits, a function of the row alone."""
    v = np.ascontiguousarray(v, dtype=np.float64)
    with np.errstate(over="ignore"):
        cols = _GOLDEN * (np.arange(v.shape[-1], dtype=np.uint64) + np.uint64(1))
        return _mix(_mix(v.view(np.uint64) ^ cols)).sum(axis=-1, dtype=np.uint64)


def uniform53(bits: np.ndarray) -> np.ndarray:
    """Uniform floats k * 2**-53, k in [0, 2**53), from 64-bit integers (their top 53 bits)."""
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def round_stochastic(x, fmt: Format, bits) -> np.ndarray:
    """Stochastic rounding of float64 `x` into `fmt` using 64-bit random integers `bits`.

    With x = (f + frac) * 2**q (f an integer, 0 <= frac < 1, 2**q the format's spacing at x),
    the result is (f + 1) * 2**q when uniform53(bits) < frac, else f * 2**q: probability frac
    exactly. Values past the largest finite one follow `fmt.overflow` (a value between
    max_finite and the next power of two overflows with probability its distance over one
    ulp); NaN stays NaN, and +-inf is treated as rounding does.
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        q = quantum_exponent(x, fmt)
        scaled = np.ldexp(x, -q)
        f = np.floor(scaled)
        up = uniform53(np.asarray(bits, dtype=np.uint64)) < (scaled - f)
        y = np.ldexp(f + up, q)
        y = np.where(np.isfinite(x), y, x)
        y = np.where(y == 0, np.copysign(0.0, x), y)  # -0.3 ulp that rounds to 0 stays -0
    return overflow_to_format(y, x, fmt)
