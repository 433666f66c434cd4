"""One row of the certified gradient under training options (`numerics.options`); the
certification loop, the outputs and the cache are truth.grad's (`reference_grad(...,
options=...)`).

With y the (soft-capped) logits, p = softmax(y), and per kept row
  class-index target t:   b_i = (1 - eps) w_t [i = t] + (eps / C) w_i,     zw = z w_t
  probabilities P:        b_i = w_i q_i,  q_i = (1 - eps) P_i + eps / C,   zw = z
  B = sum_c b_c  (every class, masked ones too)
the row's loss is sum_c b_c (lse - y_c) + zw lse^2, so
  dL/dy_i = A p_i - b_i,    A = B + 2 zw lse   (the z-loss: d(z lse^2)/dy = 2 z lse p)
  dL/dx_i = dL/dy_i sech^2(x_i / c) under the soft-cap c (the chain rule through c tanh(x / c):
            1 - tanh^2 taken as 4 m / (1 + m)^2, m = exp(-2 |x_i / c|), which does not cancel).
Written so that nothing cancels that need not: with e_i = exp(y_i - y_k) (k an argmax),
S = sum_c e_c and S_i' = sum_{c != i} e_c (prefix and suffix sums over the distinct values,
never S - e_i),
  A p_i - b_i = ((B - b_i) + 2 zw lse) e_i / S - b_i S_i' / S,   lse = y_k + log1p(S - 1)
where B - b_i = sum_{c != i} b_c is exact (rational arithmetic on the float inputs, Python's
Fraction). Plain cross entropy is b = onehot(t): B - b_t = 0 and the target entry is
-S_t' / S, truth.grad's form. What remains is the true cancellation of A p_i against b_i
(an entry near 0): the ball shows it and truth.grad's loop doubles the precision.
Exact where the value is rational: a masked class (p_i = 0) has -b_i; a row whose live logits
are all equal, with zw = 0, has (B - L b_i) / L (L live classes); zero coefficients give exact
zeros. `scale` (the mean's 1/D, a Fraction) multiplies every entry.
Non-finite logits as truth.options: a nan logit (or +inf without the soft-cap) makes the row
nan, every class masked too; a masked class's entry is -b_i (what torch's autograd gives,
although the loss is +inf under smoothing); under the soft-cap a +-inf logit has sech^2 = 0.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from flint import arb, fmpq

from ..numerics.options import LossOptions

__all__ = ["option_row", "to_arb"]


def to_arb(q: Fraction) -> arb:
    """A rational as a ball (exact when dyadic and within the precision)."""
    return arb(fmpq(q.numerator, q.denominator))


def _coefficients(target, w, opt: LossOptions, c: int):
    """(per-column index into the distinct coefficients, the distinct b as Fractions, B, zw)."""
    eps, z = Fraction(opt.label_smoothing), Fraction(opt.z_loss)
    wv = np.ones(c) if w is None else np.asarray(w, dtype=np.float64)
    if opt.probabilities:
        feats = np.stack([wv, np.asarray(target, dtype=np.float64), np.zeros(c)], axis=1)
    else:
        feats = np.stack([wv, np.zeros(c), (np.arange(c) == int(target)).astype(float)], axis=1)
    fu, finv = np.unique(feats, axis=0, return_inverse=True)
    finv = finv.reshape(-1)
    counts = np.bincount(finv, minlength=len(fu)).tolist()
    bs = []
    for wi, pi, is_t in fu.tolist():
        wi = Fraction(wi)
        if opt.probabilities:
            bs.append(wi * ((1 - eps) * Fraction(pi) + eps / c))
        else:
            bs.append(wi * ((1 - eps) * int(is_t) + eps / c))
    big_b = sum((b * n for b, n in zip(bs, counts)), Fraction(0))
    zw = z if opt.probabilities else z * Fraction(float(wv[int(target)]))
    return finv, bs, big_b, zw


def _logit_balls(vals: np.ndarray, opt: LossOptions):
    """(y, sech^2 or None) per distinct logit value."""
    if opt.softcap is None:
        return [arb(v) for v in vals.tolist()], None
    cap = arb(opt.softcap)
    ys, sech2 = [], []
    for v in vals.tolist():
        if math.isinf(v):
            ys.append(cap if v > 0 else -cap)
            sech2.append(arb(0))
            continue
        u = arb(v) / cap
        m = (-2 * abs(u)).exp()
        ys.append(cap * u.tanh())
        sech2.append(4 * m / ((1 + m) * (1 + m)))
    return ys, sech2


def option_row(x: np.ndarray, target, w, opt: LossOptions, scale: Fraction | None):
    """One kept row at the current arb precision: (columns, index of each column's ball,
    the balls), or "nan"."""
    c = x.size
    if np.isnan(x).any() or (opt.softcap is None and (x == np.inf).any()):
        return "nan"
    live = np.ones(c, dtype=bool) if opt.softcap is not None else x != -np.inf
    if not live.any():
        return "nan"
    finv, bs, big_b, zw = _coefficients(target, w, opt, c)
    vals, vinv, vcnt = np.unique(x[live], return_inverse=True, return_counts=True)
    ys, sech2 = _logit_balls(vals, opt)
    yk = ys[-1]
    e = [(v - yk).exp() for v in ys[:-1]] + [arb(1)]
    terms = [ev * int(n) for ev, n in zip(e, vcnt.tolist())]
    u = len(terms)
    pre, suf = [arb(0)] * (u + 1), [arb(0)] * (u + 1)
    for j in range(u):
        pre[j + 1] = pre[j] + terms[j]
        suf[u - 1 - j] = suf[u - j] + terms[u - 1 - j]
    s = pre[u]
    lse = yk + (pre[u - 1] + (int(vcnt[-1]) - 1)).log1p()
    two_zl = None if zw == 0 else 2 * to_arb(zw) * lse
    uniform = u == 1 and zw == 0
    sc = None if scale is None else to_arb(scale)

    vcol = np.full(c, -1, dtype=np.int64)
    vcol[live] = vinv.reshape(-1)
    keys, idx = np.unique(np.stack([vcol, finv], axis=1), axis=0, return_inverse=True)
    balls = []
    for j, f in keys.tolist():
        b = bs[f]
        if j < 0:                                  # masked class: p = 0
            g = -b if scale is None else -b * scale
            balls.append(to_arb(g))
            continue
        if uniform:                                # p = 1 / L exactly
            q = (big_b - int(vcnt[0]) * b) / int(vcnt[0])
            if scale is not None:
                q *= scale
            g = to_arb(q)
        else:
            others = pre[j] + suf[j + 1] + e[j] * (int(vcnt[j]) - 1)
            coef = to_arb(big_b - b)
            if two_zl is not None:
                coef = coef + two_zl
            g = (coef * e[j] - to_arb(b) * others) / s
            if sc is not None:
                g = g * sc
        if sech2 is not None:
            g = g * sech2[j]
        balls.append(g)
    return np.arange(c), idx.reshape(-1), balls
