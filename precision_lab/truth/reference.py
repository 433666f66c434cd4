"""The certified ground truth: cross entropy of the exact input values.

Two backends compute it. `backend="arb"` (the default, via "auto") is `fastref`: ball
arithmetic (python-flint) and an exact fixed-point sum, certified by the ball's radius (the
result provably has `bits` + 1 correct bits); it is tested against the mpmath backend below.
`reference_truth` returns the truth as double-double arrays and can
keep it in a disk cache (`cache`). A truth beyond float64's range (a loss above 2**1024, or
below 2**-1075, where hi would be inf or 0) carries a binary exponent: truth = (hi + lo) 2**exp
with 1 <= hi <= 2 (|exp| capped at 2**52, see `scaled_double_double`); exp is 0 for every
other row, whose hi and lo are the plain double-double.

mpmath backend (`backend="mpmath"`): each row's loss is evaluated at a working precision p and
again at p + GUARD_STEP bits; when
the two agree to `bits` + 1 bits relative, the result is returned; otherwise p doubles, up to
`max_prec`, past which `UncertifiedError` names the row. Precision is always set locally.

The formula avoids cancellation, so a few guard bits usually suffice:
  target is a maximum (x_t = a):  loss = log1p(sum_{i != t} exp(x_i - a))
  otherwise:                       loss = (a - x_t) + log(sum_i exp(x_i - a))   (both terms > 0)
Differences x_i - a are exact. Terms too small to matter are dropped with a rigorous bound: in
a sum of n positive terms whose largest is M, terms below M * 2**-(p + 8) / n change it by
less than 2**-(p + 8) relative (log and log1p of a sum are no worse conditioned than that).

Non-finite inputs: -inf logits are masked classes (exp(-inf) = 0); a -inf target gives +inf,
an all -inf row gives nan; any +inf logit gives nan (at the target or elsewhere, once or more,
with -inf classes or not: torch shifts by the maximum, inf - inf); any nan gives nan; all as
torch.nn.functional.cross_entropy does.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import mpmath
import numpy as np
from mpmath import mp
from numpy.typing import ArrayLike

from ..data.inputs import check_bits, validate_batch
from ..errors import InputError, UncertifiedError
from ..numerics.options import LossOptions
from .cache import resolve_cache, truth_key
from .fastref import BALL, FIXED, arb_to_double_double, certified_losses, man_exp_to_double_double
from .options import certified_option_losses

__all__ = ["reference_loss", "reference_mean", "UncertifiedError", "to_double_double",
           "DEFAULT_BITS", "BACKENDS", "Truth", "reference_truth", "scaled_double_double"]

BACKENDS = ("auto", "arb", "mpmath")

DEFAULT_BITS = 100
GUARD_STEP = 32
DEFAULT_MAX_PREC = 1 << 15


def _row_loss(x: np.ndarray, t: int, prec: int):
    """One row at working precision `prec` (float64 values, finite or not)."""
    if np.isnan(x).any() or (x == np.inf).any():
        return mp.nan
    xt = x[t]
    if xt == -np.inf:
        return mp.inf if np.isfinite(x).any() else mp.nan
    x = x[x != -np.inf]
    a = x.max()
    target_is_max = xt == a
    if target_is_max:
        rest = np.delete(x, np.flatnonzero(x == a)[0])  # one copy of the max is the 1
        if rest.size == 0:
            return mp.zero
        lead = rest.max()
    else:
        rest, lead = x, a
    # Pruning in float64 with a wide margin; the kept differences are exact in mpmath.
    cutoff = (prec + 8) * math.log(2) + math.log(rest.size) + 1.0
    with np.errstate(over="ignore", invalid="ignore"):  # -1.8e308 - 1.8e308: -inf, pruned
        kept = rest[(rest - lead) >= -cutoff] if np.isfinite(lead - cutoff) else rest
    with mpmath.workprec(prec):
        am = mp.mpf(a)
        s = mp.fsum(mp.exp(mp.fsub(v, am, exact=True)) for v in kept.tolist())
        if target_is_max:
            return mp.log1p(s)
        return mp.fsub(am, xt, exact=True) + mp.log(s)


def _certified(x, t, bits, max_prec, row):
    prec = bits + 24 + int(math.log2(max(len(x), 2)))
    while True:
        lo = _row_loss(x, t, prec)
        hi = _row_loss(x, t, prec + GUARD_STEP)
        if not mp.isfinite(hi) or hi == 0:
            if (mp.isnan(lo) and mp.isnan(hi)) or lo == hi:
                return hi
        elif abs(hi - lo) <= abs(hi) * mp.ldexp(1, -(bits + 1)):
            return hi
        if prec >= max_prec:
            raise UncertifiedError(
                f"row {row}: evaluations at {prec} and {prec + GUARD_STEP} bits disagree "
                f"beyond 2**-{bits + 1} relative; precision cap {max_prec} bits reached")
        prec = min(2 * prec, max_prec)


_check = validate_batch


def _check_cap(bits: int, classes: int, max_prec) -> None:
    """Refuse at once, before any evaluation, a `bits` that the precision cap cannot reach:
    the first evaluation alone needs bits + 24 + log2(C) bits (either backend)."""
    if isinstance(max_prec, bool) or not isinstance(max_prec, (int, np.integer)) or max_prec < 1:
        raise InputError(f"max_prec must be a positive integer, got {max_prec!r}")
    need = bits + 24 + int(math.log2(max(classes, 2)))
    if need > max_prec:
        raise UncertifiedError(f"{bits} bits cannot be certified within the precision cap of "
                               f"{max_prec} bits (the first evaluation alone needs {need}); "
                               f"ask for fewer bits or raise max_prec")


def _backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    return "arb" if backend == "auto" else backend  # auto: python-flint is a dependency


def _arb_losses(x, t, bits, max_prec):
    return certified_losses(x, t, bits, max_prec, error_cls=UncertifiedError)


def _arb_to_mpf(v):
    if isinstance(v, float):
        return mp.nan if math.isnan(v) else mp.inf
    man, ex = v.mid().man_exp()
    return mp.make_mpf(mpmath.libmp.from_man_exp(int(man), int(ex)))  # exact, not rounded


def _result_to_mpf(res, i):
    """Row i of a `fastref.Results` as an exact mpf (the certified midpoint)."""
    if res.kind[i] == FIXED:
        man, ex = res.man_exp(i)
        return mp.make_mpf(mpmath.libmp.from_man_exp(man, ex))
    return _arb_to_mpf(res[i])


def reference_loss(logits: ArrayLike, targets: ArrayLike, bits: int = DEFAULT_BITS,
                   max_prec: int = DEFAULT_MAX_PREC, backend: str = "auto",
                   options: LossOptions | None = None) -> np.ndarray:
    """Per-row cross entropy of the exact float64 `logits` (N, C) at `targets` (N,).

    Returns an object array of `mpmath.mpf`, each with at least `bits` correct bits relative
    (the arb backend: within 2**-(bits + 1) relative, proven by ball arithmetic).
    `options` (a `LossOptions`): the per-row losses of reduction "none" under those training
    options, certified by `truth.options` (the backend is then always arb).
    """
    bits = check_bits(bits)
    if options is not None:
        rows = certified_option_losses(logits, targets, options, bits, max_prec).rows
        out = np.empty(len(rows), dtype=object)
        out[:] = rows
        return out
    x, t = _check(logits, targets)
    _check_cap(bits, x.shape[1], max_prec)
    out = np.empty(len(t), dtype=object)
    if _backend(backend) == "arb":
        res = _arb_losses(x, t, bits, max_prec)
        for i in range(len(t)):
            out[i] = _result_to_mpf(res, i)
        return out
    for i in range(len(t)):
        out[i] = _certified(x[i], int(t[i]), bits, max_prec, i)
    return out


class _Pairs(NamedTuple):
    hi: np.ndarray
    lo: np.ndarray
    mean_hi: float
    mean_lo: float


class Truth(_Pairs):
    """The certified truth of a batch as double-double: per row (hi, lo) and the mean, each
    times 2**exp (attributes `exp`, int64 per row, and `mean_exp`: 0 except beyond float64's
    range; see the module docstring). Unpacks as (hi, lo, mean_hi, mean_lo)."""

    def __new__(cls, hi, lo, mean_hi, mean_lo, exp=None, mean_exp: int = 0):
        self = super().__new__(cls, hi, lo, mean_hi, mean_lo)
        self.exp = np.zeros(len(hi), dtype=np.int64) if exp is None else \
            np.asarray(exp, dtype=np.int64)
        self.mean_exp = int(mean_exp)
        return self


def _man_exp(v) -> tuple[int, int] | None:
    """The exact value of an arb midpoint or an mpf as (man, exp), None if not finite."""
    if isinstance(v, float):
        return None
    if isinstance(v, mpmath.mpf):
        if not mp.isfinite(v):
            return None
        sign, man, ex, _ = v._mpf_
        return (-int(man) if sign else int(man)), int(ex)
    man, ex = v.mid().man_exp()
    return int(man), int(ex)


EXP_LIMIT = 1 << 52   # |Truth.exp| at most this (exact in float64, as the cache stores it)


def scaled_double_double(man: int, ex: int) -> tuple[float, float, int]:
    """man 2**ex as (hi, lo, e) with (hi + lo) 2**e = it (to 2**-106), 1 <= |hi| <= 2;
    (0, 0, 0) for 0. Beyond 2**(+-EXP_LIMIT) (a loss like exp(-1e37)) it is recorded as
    +-2**(+-EXP_LIMIT): every error metric is the same for any truth that far out (a float64
    result is 0 or inf against it, or off by a factor past float64's range)."""
    if man == 0:
        return 0.0, 0.0, 0
    e = abs(man).bit_length() - 1 + ex
    if abs(e) > EXP_LIMIT:
        return math.copysign(1.0, man), 0.0, int(math.copysign(EXP_LIMIT, e))
    hi, lo = man_exp_to_double_double(man, ex - e)
    return hi, lo, e


def _rescale(hi, lo, values) -> np.ndarray:
    """Where hi left float64's range (inf or 0) though the value is finite and non-zero, put
    the value as (hi, lo) 2**exp instead (in place); returns exp (int64)."""
    exp = np.zeros(len(hi), dtype=np.int64)
    for i in np.flatnonzero(np.isinf(hi) | (hi == 0)).tolist():
        me = _man_exp(values(i))
        if me is not None and me[0] != 0:
            hi[i], lo[i], exp[i] = scaled_double_double(*me)
    return exp


def _mean_dd(v) -> tuple[float, float, int]:
    hi, lo = arb_to_double_double(v) if not isinstance(v, mpmath.mpf) else \
        tuple(float(a[0]) for a in to_double_double([v]))
    h, lw = np.array([hi]), np.array([lo])
    e = _rescale(h, lw, lambda i: v)
    return float(h[0]), float(lw[0]), int(e[0])


def _result_value(res, i):
    """Row i of a `fastref.Results` (an arb ball, or a float nan / inf)."""
    return res[i] if res.kind[i] in (BALL, FIXED) else math.nan


def reference_truth(logits, targets, bits: int = DEFAULT_BITS, *,
                    max_prec: int = DEFAULT_MAX_PREC, backend: str = "auto",
                    cache=None, options=None) -> Truth:
    """Per-row truth and batch mean of `reference_loss`, as double-double float64 arrays
    (with a binary exponent beyond float64's range: `Truth.exp`, `Truth.mean_exp`).

    `cache`: None uses the default disk cache ($PRECISION_LAB_CACHE or
    ~/.cache/precision_lab; see `precision_lab.cache`), False none, or a directory. An entry is
    found by the SHA-256 of the exact inputs and `bits`, and verified when read.
    `options` (a `LossOptions`): per-row losses of reduction "none" and the mean under them
    (`truth.options`; not cached).
    """
    bits = check_bits(bits)
    if options is not None:
        ot = certified_option_losses(logits, targets, options, bits, max_prec)
        hi, lo = to_double_double(ot.rows)
        exp = _rescale(hi, lo, lambda i: ot.rows[i])
        mhi, mlo, mexp = _mean_dd(ot.mean)
        return Truth(hi, lo, mhi, mlo, exp, mexp)
    x, t = _check(logits, targets)
    _check_cap(bits, x.shape[1], max_prec)
    store = resolve_cache(cache)
    key = truth_key(x, t, bits) if store is not None else None
    if store is not None:
        hit = store.load(key, len(t), x, t)
        if hit is not None:
            return Truth(hit["hi"], hit["lo"], float(hit["mean_hi"]), float(hit["mean_lo"]),
                         hit["exp"].astype(np.int64), int(hit["mean_exp"]))
    if _backend(backend) == "arb":
        res = _arb_losses(x, t, bits, max_prec)
        hi, lo = res.double_double()
        exp = _rescale(hi, lo, lambda i: _result_value(res, i))
        mhi, mlo, mexp = _mean_dd(res.mean(bits))
    else:
        losses = reference_loss(x, t, bits=bits, max_prec=max_prec, backend="mpmath")
        hi, lo = to_double_double(losses)
        exp = _rescale(hi, lo, lambda i: losses[i])
        mhi, mlo, mexp = _mean_dd(reference_mean(losses, bits=bits))
    truth = Truth(hi, lo, float(mhi), float(mlo), exp, mexp)
    if store is not None:
        store.store(key, {"hi": hi, "lo": lo, "mean_hi": np.float64(mhi),
                          "mean_lo": np.float64(mlo), "exp": exp.astype(np.float64),
                          "mean_exp": np.float64(mexp)})
    return truth


def reference_mean(losses: ArrayLike, bits: int = DEFAULT_BITS, *, logits: ArrayLike | None = None,
                   targets: ArrayLike | None = None, options: LossOptions | None = None) -> mpmath.mpf:
    """Mean of certified per-row losses: a sum of non-negative terms keeps their relative
    accuracy, and the working precision carries `bits` + 32 more bits for the sum and division.

    With `options` (a `LossOptions`), the certified "mean" reduction of the batch (`logits`,
    `targets`) under them (weighted: divided by the kept targets' summed weights); `losses`
    is then not used and may be None."""
    if options is not None:
        if logits is None or targets is None:
            raise InputError("reference_mean with options needs logits= and targets=")
        return certified_option_losses(logits, targets, options, bits).mean
    losses = list(losses)
    with mpmath.workprec(bits + 32 + int(math.log2(max(len(losses), 2)))):
        return mp.fsum(losses) / len(losses)


def to_double_double(values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) float64 arrays with hi = the value rounded to nearest and lo = the rest rounded
    to nearest; hi is +-inf or 0 where the value leaves float64's range."""
    hi = np.empty(len(values))
    lo = np.empty(len(values))
    for i, v in enumerate(values):
        if not isinstance(v, mpmath.mpf):
            with mpmath.workprec(2000):  # exact for floats, ints and any mpf below 2000 bits
                v = mp.mpf(v)
        hi[i] = mpmath.libmp.to_float(v._mpf_, rnd="n")
        if mp.isfinite(v) and math.isfinite(hi[i]):
            lo[i] = mpmath.libmp.to_float(mp.fsub(v, hi[i], exact=True)._mpf_, rnd="n")
        else:
            lo[i] = 0.0
    return hi, lo
