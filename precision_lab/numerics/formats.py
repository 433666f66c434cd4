"""The floating-point format registry and correct rounding of float64 values into a format.

Values of every format are carried in float64 arrays (every float16, bfloat16 and float32 value
is exactly a float64), so the methods can round each operation explicitly with `Format.round`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import torch

from ..errors import InputError
from . import fastround

__all__ = ["Format", "FORMATS", "get_format", "round_to_format"]


@dataclass(frozen=True)
class Format:
    """An IEEE-style binary format: `precision` significand bits (implicit bit included),
    normal exponents in [emin, emax]."""

    name: str
    dtype: np.dtype
    torch_dtype: torch.dtype
    precision: int
    emin: int
    emax: int

    @property
    def unit_roundoff(self) -> float:
        return 2.0 ** -self.precision

    @property
    def max_finite(self) -> float:
        return (2.0 - 2.0 ** (1 - self.precision)) * 2.0 ** self.emax

    @property
    def min_normal(self) -> float:
        return 2.0 ** self.emin

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.precision + 1)

    @property
    def overflow_logit(self) -> float:
        """The largest x for which exp(x) is finite in exact arithmetic: log(max_finite).

        A correctly rounded exp overflows slightly later (where exp(x) reaches max_finite plus
        half an ulp); this is the textbook threshold, e.g. log(65504) = 11.09 for float16.
        """
        return math.log(self.max_finite)

    def round(self, x) -> np.ndarray:
        """Round float64 values to this format once (round to nearest, ties to even).

        Returns float64 carrying the rounded values. Overflow gives +-inf, NaN stays NaN.
        """
        return round_to_format(x, self)

    def cast(self, x) -> np.ndarray:
        """Correctly round float64 values and return them in this format's numpy dtype."""
        return self.round(x).astype(self.dtype)

    def ulp(self, x) -> np.ndarray:
        """The spacing of this format at |x| (the gap to the next larger magnitude); inf at inf."""
        x = np.abs(np.asarray(x, dtype=np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            _, e = np.frexp(x)  # x = m * 2**e, 0.5 <= m < 1
        exponent = np.maximum(e.astype(np.int64) - 1, self.emin)
        out = np.where(x == 0, self.min_subnormal, np.ldexp(1.0, exponent - (self.precision - 1)))
        return np.where(np.isfinite(x), out, np.inf)


def round_to_format(x, fmt: Format) -> np.ndarray:
    """One correct rounding (round-to-nearest-even) of float64 `x` into `fmt`, as float64.

    Every product here is by a power of two and exact in float64, and `np.rint` rounds half to
    even, so the only rounding is the one `np.rint` makes at the format's quantum. This avoids
    ml_dtypes' float64 -> bfloat16 cast, which goes through float32 and so rounds twice.
    """
    x = np.asarray(x, dtype=np.float64)
    if fmt.precision >= 53:
        return x.copy()
    if x.size >= fastround.MIN_SIZE:  # the same rounding, compiled (numerics/fastround.py)
        return fastround.round_compiled(x, fmt.precision, fmt.emin, fmt.max_finite)
    return _round_numpy(x, fmt)


def _round_numpy(x: np.ndarray, fmt: Format) -> np.ndarray:
    """`round_to_format` in numpy operations (the definition the compiled kernel matches)."""
    with np.errstate(invalid="ignore", over="ignore"):
        _, e = np.frexp(x)
        # Quantum of the format at x: 2**(exponent - p + 1), floored at the subnormal quantum.
        q = np.maximum(e.astype(np.int64) - fmt.precision, fmt.emin - fmt.precision + 1)
        y = np.ldexp(np.rint(np.ldexp(x, -q)), q)
        overflow = np.abs(y) > fmt.max_finite
        y = np.where(overflow & np.isfinite(x), np.copysign(np.inf, x), y)
    return y


_F = [
    Format("float16", np.dtype(np.float16), torch.float16, 11, -14, 15),
    Format("bfloat16", np.dtype(ml_dtypes.bfloat16), torch.bfloat16, 8, -126, 127),
    Format("float32", np.dtype(np.float32), torch.float32, 24, -126, 127),
    Format("float64", np.dtype(np.float64), torch.float64, 53, -1022, 1023),
]
FORMATS: dict[str, Format] = {f.name: f for f in _F}


def get_format(name: str | Format) -> Format:
    """Look a format up by name; a clear error lists the valid names."""
    if isinstance(name, Format):
        return name
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown format {name!r}; valid formats: {', '.join(FORMATS)}") from None
