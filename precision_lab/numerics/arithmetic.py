"""Arithmetic in a format: every elementwise operation evaluated in float64 and rounded once to
the working format, and sums accumulated sequentially in a chosen accumulator.

exp, log, log1p, expm1 and tanh are correctly rounded into the format (numerics.elementary: the same bits on
every CPU). `elementary` names the variant: "correct" (the default), "libm" (numpy's float64
functions rounded once to the format: within an ulp of float64, and machine-dependent, since
numpy picks SIMD kernels by CPU), or "mpmath" (the pure-Python reference path, slow; for
cross-checks). `elementary_variant(name)` sets the default within a block.

The accumulator is one concept, named `accumulator` everywhere:
  "working": every partial sum rounded to the working format (a float16 sum stalls at 2048 + ...);
  "float32": partial sums rounded to float32, the total then rounded to the working format
             (mixed precision, as PyTorch and fused kernels do for 16-bit formats); offered only
             for formats narrower than float32 (`accumulators_for`);
  "internal": the label of a method that does its own reductions (torch), never an argument
             of `Arithmetic`.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from ..errors import InputError
from . import elementary
from .formats import FORMATS, Format, get_format

__all__ = ["Arithmetic", "ACCUMULATORS", "WORKING", "FLOAT32", "OWN", "accumulator_format",
           "accumulators_for", "check_accumulators", "ELEMENTARY", "elementary_variant"]

WORKING, FLOAT32, OWN = "working", "float32", "internal"
ACCUMULATORS = (WORKING, FLOAT32)
ELEMENTARY = ("correct", "libm", "mpmath")
_ELEMENTARY: ContextVar[str] = ContextVar("elementary", default="correct")
_LIBM = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh}


def _check_elementary(name: str) -> str:
    if name not in ELEMENTARY:
        raise InputError(f"unknown elementary variant {name!r}; valid: {', '.join(ELEMENTARY)}")
    return name


@contextmanager
def elementary_variant(name: str):
    """Within the block, `Arithmetic` objects made without `elementary=` use this variant."""
    token = _ELEMENTARY.set(_check_elementary(name))
    try:
        yield
    finally:
        _ELEMENTARY.reset(token)


def check_accumulators(accumulators) -> tuple[str, ...]:
    """The requested accumulators as a tuple, each a valid name, or InputError."""
    if isinstance(accumulators, str):
        accumulators = (accumulators,)
    out = tuple(accumulators)
    for a in out:
        if a not in ACCUMULATORS:
            raise InputError(f"unknown accumulator {a!r}; valid: {', '.join(ACCUMULATORS)}")
    return out


def accumulator_format(fmt, accumulator: str) -> Format:
    """The format partial sums are rounded to: the working format, or float32 where float32 is
    wider than it."""
    fmt = get_format(fmt)
    check_accumulators((accumulator,))
    if accumulator == FLOAT32 and FORMATS["float32"].precision > fmt.precision:
        return FORMATS["float32"]
    return fmt


def accumulators_for(fmt, requested=ACCUMULATORS) -> list[str]:
    """The requested accumulators that differ in `fmt`: "working" always, "float32" only for
    formats narrower than float32 (elsewhere it would be the working format again, and a request
    for float32 alone runs as "working")."""
    fmt = get_format(fmt)
    requested = check_accumulators(requested)
    out = [a for a in requested if a == WORKING or accumulator_format(fmt, a) is not fmt]
    return out or ([WORKING] if requested else [])  # float32 in float32 is the working one


class Arithmetic:
    """Operations rounded to one format, with a chosen accumulator for sums."""

    def __init__(self, fmt: Format, accumulator: str = WORKING, elementary: str | None = None):
        self.fmt = fmt
        self.accumulator = accumulator
        self.acc_fmt = accumulator_format(fmt, accumulator)
        self.elementary = _check_elementary(elementary or _ELEMENTARY.get())

    def round(self, v):
        return self.fmt.round(v)

    def _elementary(self, name: str, v):
        if self.elementary == "libm":
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                return self.round(_LIBM[name](v))
        if self.elementary == "correct":
            out = elementary.compute(name, v, self.fmt)[0]
        else:
            out = elementary.reference(name, v, self.fmt)
        inf = np.isinf(out)
        if inf.any():  # an overflow (or an infinite result) as the format's rounding treats it
            with np.errstate(over="ignore"):
                beyond = np.ldexp(1.0, self.fmt.emax + 1)
            out = self.round(np.where(inf, np.copysign(beyond, out), out))
        return out

    def exp(self, v):
        return self._elementary("exp", v)

    def log(self, v):
        return self._elementary("log", v)

    def expm1(self, v):
        return self._elementary("expm1", v)

    def log1p(self, v):
        return self._elementary("log1p", v)

    def add(self, a, b):
        with np.errstate(invalid="ignore", over="ignore"):
            return self.round(np.add(a, b))

    def sub(self, a, b):
        with np.errstate(invalid="ignore", over="ignore"):
            return self.round(np.subtract(a, b))

    def mul(self, a, b):
        with np.errstate(invalid="ignore", over="ignore"):  # 0 * inf: nan, as IEEE
            return self.round(np.multiply(a, b))

    def tanh(self, v):
        return self._elementary("tanh", v)

    def div(self, a, b):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return self.round(np.divide(a, b))

    def sum(self, v: np.ndarray, axis: int = -1):
        """Sequential sum along `axis`, each partial sum rounded to the accumulator's format."""
        acc_fmt = self.acc_fmt
        # numpy's add.accumulate is strictly sequential and rounds each partial sum to its dtype
        # (unlike add.reduce, which sums float16 pairwise in float32); tests check this.
        with np.errstate(over="ignore", invalid="ignore"):
            partial = np.add.accumulate(np.asarray(v).astype(acc_fmt.dtype), axis=axis)
        total = np.take(partial, -1, axis=axis).astype(np.float64)
        return self.round(total)
