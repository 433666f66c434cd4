"""The certified ground truth: cross entropy of the exact input values, in mpmath.

Each row's loss is evaluated at a working precision p and again at p + GUARD_STEP bits; when
the two agree to `bits` + 1 bits relative, the result is returned; otherwise p doubles, up to
`max_prec`, past which `UncertifiedError` names the row. Precision is always set locally.

The formula avoids cancellation, so a few guard bits usually suffice:
  target is a maximum (x_t = a):  loss = log1p(sum_{i != t} exp(x_i - a))
  otherwise:                       loss = (a - x_t) + log(sum_i exp(x_i - a))   (both terms > 0)
Differences x_i - a are exact. Terms too small to matter are dropped with a rigorous bound: in
a sum of n positive terms whose largest is M, terms below M * 2**-(p + 8) / n change it by
less than 2**-(p + 8) relative (log and log1p of a sum are no worse conditioned than that).

Non-finite inputs: -inf logits are masked classes (exp(-inf) = 0); a -inf target gives +inf,
an all -inf row gives nan; a +inf logit gives +inf unless it is the target (inf - inf: nan);
any nan gives nan, as in PyTorch.
"""
from __future__ import annotations

import math

import mpmath
import numpy as np
from mpmath import mp

__all__ = ["reference_loss", "reference_mean", "UncertifiedError", "to_double_double",
           "DEFAULT_BITS"]

DEFAULT_BITS = 100
GUARD_STEP = 32
DEFAULT_MAX_PREC = 1 << 15


class UncertifiedError(ArithmeticError):
    """The two evaluations did not agree to the required bits within the precision cap."""


def _row_loss(x: np.ndarray, t: int, prec: int):
    """One row at working precision `prec` (float64 values, finite or not)."""
    if np.isnan(x).any():
        return mp.nan
    xt = x[t]
    if xt == -np.inf:
        return mp.inf if np.isfinite(x).any() or (x == np.inf).any() else mp.nan
    if (x == np.inf).any():
        return mp.nan if xt == np.inf else mp.inf
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


def _check(logits, targets):
    from .inputs import validate_batch
    return validate_batch(logits, targets)


def reference_loss(logits, targets, bits: int = DEFAULT_BITS,
                   max_prec: int = DEFAULT_MAX_PREC) -> np.ndarray:
    """Per-row cross entropy of the exact float64 `logits` (N, C) at `targets` (N,).

    Returns an object array of `mpmath.mpf`, each with at least `bits` correct bits relative.
    """
    x, t = _check(logits, targets)
    out = np.empty(len(t), dtype=object)
    for i in range(len(t)):
        out[i] = _certified(x[i], int(t[i]), bits, max_prec, i)
    return out


def reference_mean(losses, bits: int = DEFAULT_BITS):
    """Mean of certified per-row losses: a sum of non-negative terms keeps their relative
    accuracy, and the working precision carries `bits` + 32 more bits for the sum and division."""
    losses = list(losses)
    with mpmath.workprec(bits + 32 + int(math.log2(max(len(losses), 2)))):
        return mp.fsum(losses) / len(losses)


def to_double_double(values) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) float64 arrays with hi = the value rounded to nearest and lo = the rest rounded
    to nearest; hi is +-inf or 0 where the value leaves float64's range."""
    hi = np.empty(len(values))
    lo = np.empty(len(values))
    for i, v in enumerate(values):
        v = mp.mpf(v)
        hi[i] = mpmath.libmp.to_float(v._mpf_, rnd="n")
        if mp.isfinite(v) and math.isfinite(hi[i]):
            lo[i] = mpmath.libmp.to_float(mp.fsub(v, hi[i], exact=True)._mpf_, rnd="n")
        else:
            lo[i] = 0.0
    return hi, lo
