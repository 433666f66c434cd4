"""The training options (`numerics.options`) as a method computes them in a format.

A method that can express the options provides its *terms* (`Terms`): from the (soft-capped)
logits y, every class's -log p as the method forms it (`nlp`, (N, C)), its log-sum-exp `lse`
(None when it never forms one: it cannot express the z-loss), and whether its smoothing sum
is the fused kernels' form. `options_forward` builds the loss from them, every operation
rounded to the format through `Arithmetic`, and every reduction (the smoothing sum over
classes, the sum over rows, the weighted mean's numerator and denominator) sequential on the
chosen accumulator:

  soft-cap    y = c * tanh(x / c): a division, a tanh and a product, each rounded
  nll         w[t] * nlp[t] (rounded product), 0 for ignored rows
  smoothing   sum_c w_c * nlp_c on the accumulator (torch's -sum(log_softmax * w)); the fused
              form (Liger-style kernels, `fused`): (sum_c w_c) * lse - sum_c w_c * y_c,
              which cancels when the logits are large and nearly equal
  combine     (1 - eps) * nll + (eps / C) * smooth + z * w[t] * lse * lse
  probability sum_c (nlp_c * q_c) * w_c on the accumulator, q = p * (1 - eps) + eps / C
  mean        (sum of the rows on the accumulator, rounded) / D: D the kept rows' weights
              summed on the accumulator, or the count of kept rows (exact) without weights
Scalar coefficients (1 - eps, eps / C, z, c) are held in the accumulator's format (a float16
kernel with a float16 accumulator holds them in float16, where eps / C becomes subnormal past
C ~ 1600 for eps = 0.1); each product with one is rounded to the working format.

`torch_options` is PyTorch itself: F.cross_entropy in the format's dtype with the options
passed through, the soft-cap and the z-loss composed from torch ops in that dtype.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch

from .arithmetic import OWN, WORKING, Arithmetic
from .options import LossOptions

__all__ = ["Terms", "options_forward", "reduce_rows", "torch_options", "torch_options_loss",
           "softcap_logits"]


class Terms(NamedTuple):
    """A method's view of a batch: -log p of every class, and its log-sum-exp."""
    nlp: np.ndarray                # (N, C) rounded to the format
    lse: np.ndarray | None         # (N,), or None: the method never forms log Z
    fused: bool = False            # smoothing as (sum w) lse - sum w y (one-pass kernels)


def softcap_logits(ar: Arithmetic, x, cap: float):
    """c * tanh(x / c), each of the three operations rounded to the format."""
    c = ar.round(cap)
    return ar.mul(c, ar.tanh(ar.div(x, c)))


def _coef(ar: Arithmetic, v: float) -> float:
    return float(ar.acc_fmt.round(v))


def options_forward(terms_fn: Callable, x, targets, fmt, accumulator: str,
                    options: LossOptions, reduction: str | None = None):
    """The loss under `options` from a method's terms: per-row losses (reduction "none"), or
    the reduced value for "sum" and "mean" (`reduction` overrides `options.reduction`)."""
    reduction = options.reduction if reduction is None else reduction
    ar = Arithmetic(fmt, WORKING if accumulator == OWN else accumulator)
    y = x if options.softcap is None else softcap_logits(ar, x, options.softcap)
    terms = terms_fn(ar, y)
    n, c = x.shape
    eps = options.label_smoothing
    w = None if options.weight is None else ar.round(options.weight_array)
    if options.probabilities:
        targets = ar.round(targets)      # probabilities are values of the format, as logits
        q = ar.add(ar.mul(targets, _coef(ar, 1.0 - eps)), _coef(ar, eps / c)) if eps > 0 \
            else targets
        prod = ar.mul(terms.nlp, q)
        loss = ar.sum(prod if w is None else ar.mul(prod, w[None, :]))
        keep = np.ones(n, dtype=bool)
        wt = None
    else:
        keep = targets != options.ignore_index
        ti = np.where(keep, targets, 0)
        loss = np.take_along_axis(terms.nlp, ti[:, None], axis=1)[:, 0]
        wt = None if w is None else w[ti]
        if wt is not None:
            loss = ar.mul(wt, loss)
        if eps > 0:
            if terms.fused:
                wsum = float(c) if w is None else ar.sum(w[None, :])[0]
                ysum = ar.sum(y if w is None else ar.mul(w[None, :], y))
                smooth = ar.sub(ar.mul(wsum, terms.lse), ysum)
            else:
                smooth = ar.sum(terms.nlp if w is None else ar.mul(w[None, :], terms.nlp))
            loss = ar.add(ar.mul(_coef(ar, 1.0 - eps), loss), ar.mul(_coef(ar, eps / c), smooth))
    if options.z_loss > 0:
        zl = ar.mul(_coef(ar, options.z_loss), ar.mul(terms.lse, terms.lse))
        loss = ar.add(loss, zl if wt is None else ar.mul(wt, zl))
    loss = np.where(keep, loss, 0.0)
    if reduction == "none":
        return loss
    return reduce_rows(loss, targets, fmt, accumulator, options, reduction)


def reduce_rows(losses, targets, fmt, accumulator: str, options: LossOptions,
                reduction: str) -> float:
    """"sum" or "mean" of per-row losses under `options` (both reductions are functions of
    the rows: the mean is their sum over D, as torch 2.13 forms it for every option)."""
    ar = Arithmetic(fmt, WORKING if accumulator == OWN else accumulator)
    losses = np.asarray(losses, dtype=np.float64)
    total = ar.sum(losses[None, :])[0]
    if reduction == "sum":
        return float(total)
    if options.probabilities:
        den = float(len(losses))
    else:
        keep = targets != options.ignore_index
        if options.weight is None:
            den = float(np.count_nonzero(keep))
        else:
            wt = ar.round(options.weight_array)[np.where(keep, targets, 0)]
            den = ar.sum(np.where(keep, wt, 0.0)[None, :])[0]
    return float(ar.div(total, den))


def torch_options(x, targets, fmt, options: LossOptions, reduction: str | None = None):
    """PyTorch on the CPU in fmt's dtype with the options: per-row losses or the reduction."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(fmt.torch_dtype)
    out = torch_options_loss(xt, targets, options, reduction).to(torch.float64).numpy()
    return out if (options.reduction if reduction is None else reduction) == "none" \
        else float(out)


def torch_options_loss(xt, targets, options: LossOptions, reduction: str | None = None):
    """The loss under `options` as a torch tensor of the logits tensor `xt` (in its dtype and
    on its device; differentiable): F.cross_entropy with the options passed through, the
    soft-cap and the z-loss composed from torch ops in that dtype."""
    reduction = options.reduction if reduction is None else reduction
    dt, dev = xt.dtype, xt.device
    if options.softcap is not None:
        xt = options.softcap * torch.tanh(xt / options.softcap)
    if options.probabilities:
        tg = torch.from_numpy(np.asarray(targets, dtype=np.float64)).to(device=dev, dtype=dt)
    else:
        tg = torch.from_numpy(np.asarray(targets).astype(np.int64)).to(dev)
    wt = (None if options.weight is None
          else torch.tensor(options.weight, dtype=torch.float64).to(device=dev, dtype=dt))
    kw = {"weight": wt, "label_smoothing": options.label_smoothing}
    if not options.probabilities:
        kw["ignore_index"] = options.ignore_index
    out = torch.nn.functional.cross_entropy(xt, tg, reduction=reduction, **kw)
    if options.z_loss > 0:
        lse = torch.logsumexp(xt, dim=1)
        zl = options.z_loss * (lse * lse)
        if options.probabilities:
            den = torch.tensor(float(len(tg)), dtype=dt, device=dev)
        else:
            keep = tg != options.ignore_index
            if wt is not None:
                zl = wt[tg.clamp(min=0)] * zl
                den = torch.where(keep, wt[tg.clamp(min=0)], 0).sum()
            else:
                den = keep.sum().to(dt)
            zl = torch.where(keep, zl, torch.zeros((), dtype=dt, device=dev))
        out = out + (zl if reduction == "none" else zl.sum() if reduction == "sum"
                     else zl.sum() / den)
    return out
