"""Arithmetic in a format: every elementwise operation evaluated in float64 and rounded once to
the working format, and sums accumulated sequentially in a chosen accumulator.

exp, log, log1p, expm1 and tanh are correctly rounded into the format (numerics.elementary: the
same bits on every CPU; evaluated through numerics.fastelem, its compiled paths with the same
bits: table look-ups for narrow formats, a compiled exp for wide ones, numerics.fast32's plain
float64 exp and tanh for float32). Compiled kernels beside the numpy paths they mirror, each
tested equal to it: `sub` (fastround.sub_compiled: the difference and its rounding in one
pass, rows of any leading shape), `exp_sub` (exp(sub(a, b)) for float32 in one pass:
fastelem.sub_exp, no rounded difference stored), sums in a native format (fastelem's
`accumulate_native`: numpy's add.accumulate in float32 or the narrow dtype, rows side by side)
and the sequential loop of round-to-nearest accumulators of p <= 25 (fastelem's
`sequential_sum`). `elementary` names the variant: "correct" (the default), "libm"
(numpy's float64 functions rounded once to the format: within an ulp of float64, and
machine-dependent, since numpy picks SIMD kernels by CPU), or "mpmath" (the pure-Python
reference path, slow; for cross-checks). `elementary_variant(name)` sets the default within a
block. Under stochastic rounding they are the correctly rounded float64 value (or libm's),
rounded stochastically to the format.

The accumulator is one concept, named `accumulator` everywhere:
  "working": every partial sum rounded to the working format (a float16 sum stalls at 2048 + ...);
  "float32": partial sums rounded to float32, the total then rounded to the working format
             (mixed precision, as PyTorch and fused kernels do for 16-bit formats); offered only
             for formats narrower than float32 (`accumulators_for`);
  "internal": the label of a method that does its own reductions (torch), never an argument
             of `Arithmetic`.
Either accumulator with the suffix "_sr" ("working_sr", "float32_sr") rounds its partial sums
stochastically, whatever the rounding of the other operations.

Rounding mode: the working format's `rounding` ("nearest", or "stochastic" for formats named
..._sr) applies to every operation and to the working accumulator; the random bits of each
rounding come from numerics.stochastic's counter-based hash of (the format's seed, the
operation's sequence number in this Arithmetic, the element's column, the value), so one seed
gives the same bytes whatever the workers or chunking. Stochastic rounding rounds the float64
result of each operation (exact for + and - of values of at most 26 bits whose exponents are
close; otherwise within 2**-53 relative, a bias of that order in the rounding probability).

Round to nearest is correct rounding at every precision: float64 then the format would round
twice, which is innocuous for p <= 25 (53 >= 2p + 2) but not beyond, so for wider formats
+, - and / pass their exact float64 error (TwoSum, Dekker's product) to `Format.round`, which
decides ties by it; and sums of formats whose numpy arithmetic is not verified correct
(`Format.native`) are sequential loops of such additions.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from ..errors import InputError
from . import elementary, fast32, fastelem, fastround
from .formats import (
    FORMATS,
    NEAREST,
    STOCHASTIC,
    Format,
    get_format,
    overflow_to_format,
    round_to_format,
)
from .stochastic import keyed_bits, random_bits, round_stochastic, row_keys, uniform53

__all__ = ["Arithmetic", "ACCUMULATORS", "STOCHASTIC_ACCUMULATORS", "WORKING", "FLOAT32", "OWN",
           "accumulator_format", "accumulators_for", "check_accumulators", "ELEMENTARY",
           "elementary_variant"]

WORKING, FLOAT32, OWN = "working", "float32", "internal"
ACCUMULATORS = (WORKING, FLOAT32)
SR = "_sr"  # suffix: partial sums rounded stochastically
STOCHASTIC_ACCUMULATORS = (WORKING + SR, FLOAT32 + SR)
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
        if a not in ACCUMULATORS + STOCHASTIC_ACCUMULATORS:
            raise InputError(f"unknown accumulator {a!r}; valid: "
                             f"{', '.join(ACCUMULATORS + STOCHASTIC_ACCUMULATORS)}")
    return out


def accumulator_format(fmt, accumulator: str) -> Format:
    """The format partial sums are rounded to: the working format, or float32 where float32 is
    wider than it (more precision and at least its range); with rounding "stochastic" (seeded
    as the working format) for "_sr"."""
    fmt = get_format(fmt)
    check_accumulators((accumulator,))
    base = accumulator.removesuffix(SR)
    acc = fmt
    f32 = FORMATS["float32"]
    if base == FLOAT32 and f32.precision > fmt.precision and f32.emin <= fmt.emin \
            and f32.emax >= fmt.emax:  # float32 holds every value of fmt
        acc = f32
    if accumulator.endswith(SR) and acc.rounding != STOCHASTIC:
        acc = get_format(f"{acc.name},round=sr,seed={fmt.seed}")
    return acc


def accumulators_for(fmt, requested=ACCUMULATORS) -> list[str]:
    """The requested accumulators that differ in `fmt`: "working" always, "float32" only for
    formats narrower than float32 (elsewhere it would be the working format again), and a
    stochastic one only where it is not one already listed (a stochastically rounded format's
    working accumulator is already stochastic)."""
    fmt = get_format(fmt)
    out, seen = [], []
    for a in check_accumulators(requested):
        acc = accumulator_format(fmt, a)
        if a != WORKING and (a.removesuffix(SR) == FLOAT32) and acc.precision <= fmt.precision:
            continue
        if a == WORKING or (acc != fmt and acc not in seen):
            out.append(a)
            seen.append(acc)
    return out or ([WORKING] if requested else [])  # float32 in float32 is the working one


class Arithmetic:
    """Operations rounded to one format, with a chosen accumulator for sums."""

    def __init__(self, fmt: Format, accumulator: str = WORKING, elementary: str | None = None):
        self.fmt = fmt
        self.accumulator = accumulator
        self.acc_fmt = accumulator_format(fmt, accumulator)
        self.elementary = _check_elementary(elementary or _ELEMENTARY.get())
        self.ops = 0  # roundings so far: the stream number of stochastic rounding's bits

    def round(self, v, residual=None, fmt: Format | None = None):
        """One rounding of float64 `v` to the working format (or `fmt`) in its rounding mode;
        `residual`: v's exact error, which decides round-to-nearest ties (see Format.round)."""
        fmt = self.fmt if fmt is None else fmt
        self.ops += 1
        if fmt.rounding == NEAREST:
            return fmt.round(v, residual)
        v = np.asarray(v, dtype=np.float64)
        column = np.arange(v.shape[-1]) if v.ndim >= 2 else 0
        return round_stochastic(v, fmt, random_bits(fmt.seed, self.ops, column, v))

    def _add_exact(self, a, b, fmt: Format):
        """a + b in float64 and, where double rounding could matter (p > 25, round to
        nearest), its exact error (Knuth's TwoSum)."""
        s = np.add(a, b)
        if fmt.precision <= 25 or fmt.rounding != NEAREST:
            return s, None
        bb = s - a
        err = (a - (s - bb)) + (b - bb)
        return s, np.where(np.isfinite(s), err, 0.0)

    def _elementary(self, name: str, v):
        if self.elementary == "libm":
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                return self.round(_LIBM[name](v))
        # stochastic rounding: the correctly rounded float64 value, rounded stochastically
        target = FORMATS["float64"] if self.fmt.rounding == STOCHASTIC else self.fmt
        if self.elementary == "correct":  # elementary.compute's bits, compiled (fastelem)
            out = fastelem.compute(name, v, target)
        else:
            out = elementary.reference(name, v, target)
        if target is not self.fmt:
            return self.round(out)
        if fastelem.any_inf(out):  # an overflow (or an infinite result) as the format's
            inf = np.isinf(out)    # rounding treats it
            with np.errstate(over="ignore"):
                beyond = np.ldexp(1.0, self.fmt.emax + 1)
            out = self.round(np.where(inf, np.copysign(beyond, out), out))
        return out

    def exp(self, v):
        return self._elementary("exp", v)

    def exp_sub(self, a, b):
        """exp(sub(a, b)), the same bits and operation count; for float32 (the formats whose
        exp fastelem evaluates by fast32: not tabulated) in one compiled pass
        (fastelem.sub_exp: no rounded difference stored)."""
        fmt = self.fmt
        if (self.elementary == "correct" and fmt.rounding == NEAREST and fmt.precision <= 25
                and fmt.overflow == "inf" and _fusable(a, b) and fast32.supports(fmt)
                and fastelem.table_size(fmt) > fastelem.TABLE_MAX):
            self.ops += 1                      # the subtraction's rounding, as sub counts it
            c = a.shape[-1]
            out, inf = fastelem.sub_exp(a.reshape(-1, c), b.reshape(-1, b.shape[-1]), fmt)
            out = out.reshape(a.shape)
            if inf:                            # as _elementary's overflow step
                with np.errstate(over="ignore"):
                    beyond = np.ldexp(1.0, fmt.emax + 1)
                out = self.round(np.where(np.isinf(out), np.copysign(beyond, out), out))
            return out
        return self.exp(self.sub(a, b))

    def log(self, v):
        return self._elementary("log", v)

    def expm1(self, v):
        return self._elementary("expm1", v)

    def log1p(self, v):
        return self._elementary("log1p", v)

    def tanh(self, v):
        return self._elementary("tanh", v)

    def add(self, a, b):
        with np.errstate(invalid="ignore", over="ignore"):
            return self.round(*self._add_exact(a, b, self.fmt))

    def sub(self, a, b):
        fmt = self.fmt
        if (fmt.rounding == NEAREST and fmt.precision <= 25 and fmt.overflow == "inf"
                and _fusable(a, b)):
            self.ops += 1                      # as self.round would count it
            c = a.shape[-1]                    # rows of any leading shape, as (rows, C)
            out = fastround.sub_compiled(a.reshape(-1, c), b.reshape(-1, b.shape[-1]),
                                         fmt.precision, fmt.emin, fmt.max_finite)
            return out.reshape(a.shape)
        with np.errstate(invalid="ignore", over="ignore"):
            return self.round(*self._add_exact(a, np.negative(b), self.fmt))

    def mul(self, a, b):
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):  # 0 * inf: nan
            p = np.multiply(a, b)
            if self.fmt.precision <= 26 or self.fmt.rounding != NEAREST:
                return self.round(p)  # a product of two p <= 26 bit values is exact
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            ah, al = _split(a)
            bh, bl = _split(b)
            err = ((ah * bh - p) + ah * bl + al * bh) + al * bl  # Dekker: a b - p exactly
            return self.round(p, np.where(np.isfinite(err), err, 0.0))

    def div(self, a, b):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            q = np.divide(a, b)
            if self.fmt.precision <= 25 or self.fmt.rounding != NEAREST:
                return self.round(q)
            return self.round(q, _div_residual(np.asarray(a, np.float64),
                                               np.asarray(b, np.float64), q))

    def sum(self, v: np.ndarray, axis: int = -1):
        """Sequential sum along `axis`, each partial sum rounded to the accumulator's format
        (in its rounding mode), the total then rounded to the working format."""
        acc_fmt = self.acc_fmt
        v = np.moveaxis(np.asarray(v, dtype=np.float64), axis, -1)
        if acc_fmt.native and acc_fmt.rounding == NEAREST:
            # numpy's add.accumulate is strictly sequential and rounds each partial sum to its
            # dtype (unlike add.reduce, which sums float16 pairwise in float32); tests check
            # this, and that every pair of float8 values adds correctly rounded. Compiled
            # (fastelem.accumulate_native: the same sums, rows side by side) where it can.
            total = None
            if acc_fmt.precision <= 25 and v.shape[-1] > 0:
                total = fastelem.accumulate_native(v, acc_fmt)
            if total is None:
                with np.errstate(over="ignore", invalid="ignore"):
                    partial = np.add.accumulate(v.astype(acc_fmt.dtype), axis=-1)
                total = partial[..., -1].astype(np.float64)
        else:
            total = self._sequential_sum(v, acc_fmt)
        if acc_fmt is self.fmt:
            return total
        return self.round(total)

    def _sequential_sum(self, v: np.ndarray, acc_fmt: Format, compiled: bool = True) -> np.ndarray:
        """s_k = round(s_{k-1} + v_k) along the last axis, one rounding per partial sum.

        The loop inlines `round_to_format` / `round_stochastic` (the tests check it against
        them; round to nearest at p <= 25 runs compiled, fastelem.sequential_sum, the same
        steps; `compiled=False` runs this loop): where every term has one sign the partial
        sums are monotone, so an overflow at any step is one at the end and is applied there.
        Stochastic bits of step k: keyed by the row's terms (`row_keys`), drawn for every step at once."""
        self.ops += 1
        p, qmin = acc_fmt.precision, acc_fmt.emin - acc_fmt.precision + 1
        stochastic = acc_fmt.rounding == STOCHASTIC
        wide = p > 25 and not stochastic  # ties need the exact residual
        with np.errstate(invalid="ignore"):
            one_sign = bool(np.all(v >= 0) or np.all(v <= 0))
        if compiled and not (wide or stochastic) and v.shape[-1] > 0:
            return fastelem.sequential_sum(v, acc_fmt, one_sign)  # this loop, compiled
        if stochastic:
            u = uniform53(keyed_bits(acc_fmt.seed, self.ops, np.arange(v.shape[-1]),
                                     row_keys(v)[..., None]))
        total = v[..., 0].copy()
        with np.errstate(invalid="ignore", over="ignore"):
            for k in range(1, v.shape[-1]):
                if wide:
                    s, err = self._add_exact(total, v[..., k], acc_fmt)
                    total = round_to_format(s, acc_fmt, err)
                    continue
                s = total + v[..., k]
                q = np.maximum(np.frexp(s)[1] - p, qmin)
                r = np.ldexp(s, -q)
                if stochastic:
                    f = np.floor(r)
                    r = np.where(u[..., k] < r - f, f + 1, f)
                else:
                    r = np.rint(r)
                total = np.ldexp(r, q)
                if not one_sign:
                    total = overflow_to_format(total, s, acc_fmt)
            if one_sign:
                total = overflow_to_format(total, total, acc_fmt)
        return total


def _fusable(a, b) -> bool:
    """a (..., C) and b (..., 1) or (..., C) of the same leading shape (at least one leading
    axis), both float64 arrays: what fastround.sub_compiled takes once the leading axes are
    flattened into rows (the subtraction and its one rounding in one pass, the same bits)."""
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.ndim >= 2
            and b.ndim == a.ndim and a.dtype == np.float64 and b.dtype == np.float64
            and b.shape[:-1] == a.shape[:-1] and b.shape[-1] in (1, a.shape[-1])
            and a.size > 0)


def _split(a: np.ndarray):
    """Veltkamp's split of float64 a into two 26-bit halves, hi + lo = a exactly."""
    c = a * 134217729.0  # 2**27 + 1
    hi = c - (c - a)
    return hi, a - hi


def _div_residual(a: np.ndarray, b: np.ndarray, q: np.ndarray) -> np.ndarray:
    """A float64 with the sign of the exact error a / b - q (0 where q is exact), from the
    remainder a - q b computed exactly with Dekker's product (finite, unscaled values)."""
    qh, ql = _split(q)
    bh, bl = _split(b)
    ph = q * b
    pl = ((qh * bh - ph) + qh * bl + ql * bh) + ql * bl
    r = (a - ph) - pl
    out = r * np.sign(b)
    return np.where(np.isfinite(out), out, 0.0)
