"""The backward under training options (`numerics.options`) as a method computes it in a format.

A backward that can express the options provides its softmax (`Probs`): p (N, C) as it
forms p, p_t - 1 at the target as it forms that (the textbook's subtraction from 1, the
log-sum-exp form's expm1(y_t - lse)), and its log-sum-exp (None when it has none: it cannot
express the z-loss). `options_backward` builds dL/dx from them, each operation rounded to the
format through `Arithmetic` and each reduction sequential on the accumulator:

  soft-cap     y = c * tanh(x / c) (as the forward: `softcap_logits`), and at the end the
               chain rule as autograd forms it: g * (1 - th * th), th = tanh(x / c) rounded
               (cancels where |x / c| is large: that is the method's error, not avoided)
  class index  g = ((1 - eps) w_t) * (p - onehot(t))        the method's own p_t - 1
                 + (eps / C) * (W * p - w)                  W = sum_c w_c on the accumulator
                 + ((2 z) * lse * w_t) * p                  the z-loss: 2 z lse softmax
               each product and sum rounded; ignored rows exactly 0
  probability  q = P * (1 - eps) + eps / C, b = q * w, Q = sum_c b_c on the accumulator,
               g = (Q + (2 z) * lse) * p - b
  reduction    "mean": each entry divided by D (the fused kernels: times 1/D rounded), D the
               kept rows' weights summed on the accumulator (their count, exact, without
               weights; N for probabilities), as `optioned.reduce_rows` forms it; "sum" and
               "none": not divided
Coefficients (1 - eps, eps / C, 2 z) are held in the accumulator's format, as in the forward.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .arithmetic import Arithmetic
from .optioned import _coef
from .options import LossOptions

__all__ = ["Probs", "options_backward", "kept_denominator"]


class Probs(NamedTuple):
    """A backward's softmax of y: p (N, C), p_t - 1 at the targets (N,), log-sum-exp (N,)."""
    p: np.ndarray
    pm1: np.ndarray | None
    lse: np.ndarray | None


def kept_denominator(ar: Arithmetic, targets, options: LossOptions, n: int) -> float:
    """The mean's D as `optioned.reduce_rows` forms it."""
    if options.probabilities:
        return float(n)
    keep = targets != options.ignore_index
    if options.weight is None:
        return float(np.count_nonzero(keep))
    wt = ar.round(options.weight_array)[np.where(keep, targets, 0)]
    return float(ar.sum(np.where(keep, wt, 0.0)[None, :])[0])


def options_backward(probs_fn: Callable, x, targets, options: LossOptions, reduction: str,
                     ar: Arithmetic, store: Callable | None = None, reciprocal: bool = False):
    """dL/dx under `options` from a method's `probs_fn(ar, y, targets) -> Probs`, in `ar`'s
    format. `store` (the store-first kernel): rounds p before it is used (None: not rounded);
    `reciprocal` (the fused kernels): the mean multiplies by 1/D rounded instead of dividing."""
    n, c = x.shape
    th = None
    y = x
    if options.softcap is not None:
        cap = ar.round(options.softcap)
        th = ar.tanh(ar.div(x, cap))
        y = ar.mul(cap, th)                      # `optioned.softcap_logits`, rounding for rounding
    eps, z = options.label_smoothing, options.z_loss
    w = None if options.weight is None else ar.round(options.weight_array)
    r = np.arange(n)
    if options.probabilities:
        keep = np.ones(n, dtype=bool)
        pr = probs_fn(ar, y, None)
        p = pr.p if store is None else store(pr.p)
        q = ar.round(targets)
        if eps > 0:
            q = ar.add(ar.mul(q, _coef(ar, 1.0 - eps)), _coef(ar, eps / c))
        b = q if w is None else ar.mul(q, w[None, :])
        a = ar.sum(b)
        if z > 0:
            a = ar.add(a, ar.mul(_coef(ar, 2.0 * z), pr.lse))
        g = ar.sub(ar.mul(a[:, None], p), b)
    else:
        keep = targets != options.ignore_index
        ti = np.where(keep, targets, 0)
        pr = probs_fn(ar, y, ti)
        p = pr.p if store is None else store(pr.p)
        d = p.copy()
        d[r, ti] = pr.pm1 if store is None else ar.sub(p[r, ti], 1.0)
        wt = None if w is None else w[ti]
        cn = wt
        if eps > 0:
            cn = np.full(n, _coef(ar, 1.0 - eps)) if wt is None else \
                ar.mul(_coef(ar, 1.0 - eps), wt)
        g = d if cn is None else ar.mul(cn[:, None], d)
        if eps > 0:
            big_w = float(c) if w is None else ar.sum(w[None, :])[0]
            sm = ar.sub(ar.mul(big_w, p), 1.0 if w is None else w[None, :])
            g = ar.add(g, ar.mul(_coef(ar, eps / c), sm))
        if z > 0:
            zc = ar.mul(_coef(ar, 2.0 * z), pr.lse)
            if wt is not None:
                zc = ar.mul(zc, wt)
            g = ar.add(g, ar.mul(zc[:, None], p))
    if th is not None:
        g = ar.mul(g, ar.sub(1.0, ar.mul(th, th)))
    if reduction == "mean":
        den = kept_denominator(ar, targets, options, n)
        with np.errstate(divide="ignore"):
            g = ar.mul(g, ar.round(1.0 / den)) if reciprocal else ar.div(g, den)
    return np.where(keep[:, None], g, 0.0)    # ignored rows: exactly 0, whatever D is
