"""The certified truth of cross entropy with training options (`numerics.options.LossOptions`:
weight, ignore_index, reduction, label smoothing, probability targets, z-loss, soft-cap).

Ball arithmetic (python-flint's `arb`): every quantity is a ball that provably holds the
exact value, so a result whose radius is at most 2**-(bits + 1) of its midpoint has `bits`
correct bits relative; rows that are not are recomputed at twice the precision, up to
`max_prec`, past which `UncertifiedError` names the row. Nothing is certified by two
evaluations merely agreeing.

Per kept row, with y the (soft-capped) logits and k one argmax (tanh is increasing, so the
argmax of x), everything is a sum of non-negative terms when the weights and targets are:
  d_c   = y_k - y_c >= 0                (exact for float logits at the working precision;
                                         computed once per distinct logit value)
  T     = sum_{c != k} exp(-d_c)        (terms below 2**-(P + 10) / C of T's largest term
                                         are dropped, their total added to the radius)
  log S = log1p(T) = lse - y_k >= 0     (no cancellation against the argmax's 1)
  lse - y_c = d_c + log S               (each -log p_c, a sum of two non-negative terms)
  smooth = sum_c w_c (lse - y_c) = sum_c w_c d_c + (sum_c w_c) log S   (never C lse - sum y)
  q-targets: sum_c w_c q_c (lse - y_c) = sum_c w_c q_c d_c + (sum_c w_c q_c) log S
  lse = y_k + log S (for the z-loss; a cancellation here only costs precision, the ball shows it)
  soft-cap: y_c = c tanh(x_c / c) in arb (certified like every other operation).
Non-finite logits follow torch exactly (see `numerics.options`): masked classes' terms are
IEEE products (w_c * inf, 0 * inf = nan) added to the ball's midpoint sign, and the mean over
D = 0 weights is 0/0 = nan or +-inf.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import mpmath
import numpy as np
from flint import arb
from mpmath import mp

from ..errors import UncertifiedError
from ..numerics import elementary
from ..numerics.formats import FORMATS
from ..numerics.options import LossOptions, check_batch
from .fastref import arbprec

__all__ = ["OptionTruth", "certified_option_losses", "arb_to_mpf"]

LOG2 = math.log(2.0)


class OptionTruth(NamedTuple):
    """Certified per-row losses (reduction "none") and the batch mean, as exact mpf midpoints
    (or mpmath's nan / +-inf), and the bits they carry."""
    rows: list
    mean: object
    total: object
    bits: int


class _Ambiguous(Exception):
    """A ball straddles zero where its sign decides an IEEE special: more precision."""


def _sign(v) -> float:
    """IEEE stand-in of a value: a float special as is; a ball as 0.0, +1.0 or -1.0."""
    if isinstance(v, float):
        return v
    if v.is_zero():
        return 0.0
    if v > 0:
        return 1.0
    if v < 0:
        return -1.0
    raise _Ambiguous


def _mul(a, b):
    if isinstance(a, arb) and isinstance(b, arb):
        return a * b
    return _sign(a) * _sign(b)


def _add(a, b):
    if isinstance(a, arb) and isinstance(b, arb):
        return a + b
    return _sign(a) + _sign(b)


def _div(a, d, d_is_zero: bool):
    if d_is_zero:
        s = _sign(a)
        return math.nan if (s == 0.0 or math.isnan(s)) else math.copysign(math.inf, s)
    if isinstance(a, arb):
        return a / d
    return a * _sign(d)


def _certified(v, bits: int) -> bool:
    if isinstance(v, float):
        return True
    if v.is_zero():
        return True
    return bool(v.rad() <= abs(v.mid()) * arb(2) ** -(bits + 1))


def arb_to_mpf(v):
    """The exact midpoint of a ball as an mpf; float specials as mpmath's."""
    if isinstance(v, float):
        return mp.nan if math.isnan(v) else (mp.inf if v > 0 else mp.ninf)
    man, ex = v.mid().man_exp()
    return mp.make_mpf(mpmath.libmp.from_man_exp(int(man), int(ex)))


def _row(x: np.ndarray, target, w: np.ndarray | None, opt: LossOptions, prec: int):
    """One kept row's loss (reduction "none") as a ball or an IEEE special.

    Works on the row's distinct values (a float16 or bfloat16 row of 262144 logits has a few
    thousand): each one's ball and exp once, times its count."""
    c = x.size
    if np.isnan(x).any() or (opt.softcap is None and (x == np.inf).any()):
        return math.nan
    eps, probs = opt.label_smoothing, opt.probabilities
    live = np.ones(c, dtype=bool) if opt.softcap is not None else x != -np.inf
    if not live.any():
        return math.nan                                  # every class masked: -inf - -inf
    vals, inv, cnt = np.unique(x[live], return_inverse=True, return_counts=True)
    if opt.softcap is not None:
        cap = arb(opt.softcap)
        yu = [cap if v == math.inf else -cap if v == -math.inf else cap * (arb(v) / cap).tanh()
              for v in vals.tolist()]
        with np.errstate(invalid="ignore"):
            yf = opt.softcap * elementary.tanh(vals / opt.softcap, FORMATS["float64"])  # pruning
    else:
        yu = [arb(v) for v in vals.tolist()]
        yf = vals
    yk = yu[-1]                                          # the maximum (tanh is increasing)
    du = [yk - v for v in yu[:-1]] + [arb(0)]            # d = y_k - y >= 0 per value
    with np.errstate(over="ignore", invalid="ignore"):
        dest = yf[-1] - yf
    cutoff = (prec + 10) * LOG2 + math.log(max(c, 2)) + 2.0
    # T's largest term: 1 for a tie at the maximum, else the nearest value's (T alone is the
    # loss of a target at the maximum, so terms are dropped relative to it, not to 1)
    lead = 0.0 if cnt[-1] > 1 or len(vals) == 1 else float(np.min(dest[:-1]))
    near = dest <= lead + cutoff
    near[-1] = False
    t_sum = arb(int(cnt[-1]) - 1)                        # the other copies of the maximum
    for j in np.flatnonzero(near).tolist():
        t_sum += int(cnt[j]) * (-du[j]).exp()
    far = int(cnt[~near].sum()) - int(cnt[-1])
    if far > 0:
        r = arb(far) * arb(-lead - cutoff + 1.0).exp()  # each dropped term is below this
        t_sum += arb(r.upper() / 2, r.upper() / 2)
    log_s = t_sum.log1p()
    lse = yk + log_s
    masked = np.flatnonzero(~live)
    col = np.full(c, -1, dtype=np.int64)
    col[live] = inv                                      # class -> index of its value
    if probs:
        one_m, share = 1 - arb(eps), arb(eps) / c
        s_d, s_w = arb(0), arb(0)
        wl = None if w is None else w.tolist()
        for i in np.flatnonzero(live).tolist():
            q = one_m * arb(float(target[i])) + share
            wq = q if wl is None else arb(wl[i]) * q
            s_d += wq * du[col[i]]
            s_w += wq
        loss = s_d + s_w * log_s
        if masked.size:
            qs = np.where((target[masked] == 0) & (eps == 0), 0.0, 1.0)
            ws = np.ones(masked.size) if w is None else w[masked]
            with np.errstate(invalid="ignore"):
                loss = _add(loss, float(-np.sum((-np.inf * qs) * ws)))
        if opt.z_loss > 0:
            loss = _add(loss, arb(opt.z_loss) * lse * lse)
        return loss
    t = int(target)
    wt = arb(1) if w is None else arb(float(w[t]))
    nlp_t = math.inf if not live[t] else du[col[t]] + log_s
    loss = _mul(wt, nlp_t)
    if eps > 0:
        if w is None:
            s_d = arb(0)
            for j in range(len(vals) - 1):
                s_d += int(cnt[j]) * du[j]
            s_w = arb(int(live.sum()))
        else:
            s_d, s_w = arb(0), arb(0)
            wl = w.tolist()
            for i in np.flatnonzero(live).tolist():
                wi = arb(wl[i])
                s_d += wi * du[col[i]]
                s_w += wi
        smooth = s_d + s_w * log_s
        if masked.size:
            ws = np.ones(masked.size) if w is None else w[masked]
            with np.errstate(invalid="ignore"):
                smooth = _add(smooth, float(np.sum(np.inf * ws)))
        loss = _add(_mul(1 - arb(eps), loss), _mul(arb(eps) / c, smooth))
    if opt.z_loss > 0:
        loss = _add(loss, _mul(arb(opt.z_loss), _mul(wt, lse * lse)))
    return loss


def _denominator(t: np.ndarray, kept: np.ndarray, w, opt: LossOptions):
    """(D as a ball, D == 0 exactly) of the "mean" reduction."""
    if opt.probabilities:
        return arb(len(t)), False
    if w is None:
        n = int(np.count_nonzero(kept))
        return arb(n), n == 0
    wk = w[t[kept]]
    exact_zero = math.fsum(wk.tolist()) == 0.0  # fsum is correctly rounded: 0 only if exact
    total = arb(0)
    for v in wk.tolist():
        total += arb(v)
    return total, exact_zero


def certified_option_losses(logits, targets, options: LossOptions, bits: int = 100,
                            max_prec: int = 1 << 15) -> OptionTruth:
    """Per-row losses (reduction "none") and the mean of a batch under `options`, certified
    to `bits` correct bits relative (`UncertifiedError` past `max_prec`)."""
    x, t = check_batch(logits, targets, options)
    n, c = x.shape
    w = options.weight_array
    kept = np.ones(n, dtype=bool) if options.probabilities else t != options.ignore_index
    start = bits + 32 + max(c, 2).bit_length()
    rows = [arb(0)] * n
    todo = [i for i in range(n) if kept[i]]
    prec = start
    while True:
        with arbprec(prec):
            again = []
            for i in todo:
                try:
                    v = _row(x[i], t[i], w, options, prec)
                except _Ambiguous:
                    again.append(i)
                    continue
                rows[i] = v
                if not _certified(v, bits):
                    again.append(i)
            if not again:
                try:
                    total = arb(0)
                    for v in rows:
                        total = _add(total, v)
                    den, den_zero = _denominator(t, kept, w, options)
                    mean = _div(total, den, den_zero)
                    if _certified(mean, bits) and _certified(total, bits):
                        break
                except _Ambiguous:
                    pass
                again = [i for i in range(n) if kept[i]]  # a cancelling sum over rows
        if prec >= max_prec:
            raise UncertifiedError(f"row {again[0]}: loss with options {options.label()} not "
                                   f"certified to {bits} bits at the precision cap {max_prec}")
        todo = again
        prec = min(2 * prec, max_prec)
    return OptionTruth([arb_to_mpf(v) for v in rows], arb_to_mpf(mean), arb_to_mpf(total), bits)
