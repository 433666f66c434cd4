"""Every method's backward: dL/dx of the cross entropy, operation by operation in a format.

A backward takes logits `x` (N, C) (float64 carrying `fmt` values), targets, the format, the
accumulator of its class sums and the reduction ("none": each row's own gradient; "mean":
the batch mean's, each row divided by N) and returns the (N, C) gradient as float64 carrying
`fmt` values (it is stored in the logits' format). Every operation goes through `Arithmetic`:
evaluated in float64 and rounded once to the format named. Declaring one is one function and
one `@backward(...)` (numerics.methods).

  textbook      p = softmax(x) (shifted unless the method is not), then p_t - 1: every
                operation in the working format. At p_t near 1 the subtraction cancels.
  lse           g = exp(x - lse) from the method's own log-sum-exp in the format, and at the
                target expm1(x_t - lse) = expm1(-loss) = -(1 - p_t): no subtraction from 1,
                so the target entry is as accurate as the method's loss (x_t - lse is minus
                the forward's loss, rounding for rounding).
  fused         the fused-kernel form: the saved log-sum-exp (the online pass, sums in the
                accumulator's format), exp(x - lse) in float32 (the format itself when wider),
                minus 1 at the target, times 1/N in float32, then stored in the format.
  fused_store_first  the faulty kernel: as fused, but the softmax is stored (rounded to the
                format) before the 1 is subtracted.
  torch         autograd of F.cross_entropy in the format's torch dtype, on the CPU (or the
                torch `device` given).
With `options=LossOptions(...)` each builds the gradient under the training options from its
own softmax (`numerics.optioned_grad`: p, its p_t - 1, its log-sum-exp) and `reduction` may
also be "sum"; torch differentiates `optioned.torch_options_loss`. The softmax backwards have
no log-sum-exp, so no z-loss (InputError from `evaluate_grad`).
"""
from __future__ import annotations

import numpy as np
import torch

from .arithmetic import WORKING, Arithmetic, accumulator_format
from .formats import FORMATS, Format
from .methods import REDUCTIONS, _shifted_exp, backward, online_lse
from .optioned import torch_options_loss
from .optioned_grad import Probs, options_backward
from .options import OPTION_NAMES

ALL = frozenset(OPTION_NAMES)
NO_LSE = ALL - {"z_loss"}

__all__ = ["textbook", "lse_backward", "fused", "fused_store_first", "torch_grad",
           "wide_format"]


def _onehot_rows(targets):
    return np.arange(len(targets)), np.asarray(targets)


def _scale(ar: Arithmetic, g, reduction: str):
    """The mean's 1/N: one rounded division per entry (exact 1/N, as autograd's grad_output)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}")
    return g if reduction == "none" else ar.div(g, float(g.shape[0]))


def textbook(x, targets, fmt: Format, accumulator=WORKING, reduction="none", shift=True,
             options=None):
    """softmax(x) - onehot(t), each operation rounded to `fmt`."""
    ar = Arithmetic(fmt, accumulator)
    if options is not None:
        def probs(ar, y, t):
            e = _shifted_exp(ar, y)[1] if shift else ar.exp(y)
            s = ar.sum(e)
            p = ar.div(e, s[:, None])
            pm1 = None if t is None else ar.sub(p[np.arange(len(t)), t], 1.0)
            return Probs(p, pm1, None if shift else ar.log(s))
        return options_backward(probs, x, targets, options, reduction, ar)
    e = _shifted_exp(ar, x)[1] if shift else ar.exp(x)
    p = ar.div(e, ar.sum(e)[:, None])
    r, t = _onehot_rows(targets)
    p[r, t] = ar.sub(p[r, t], 1.0)
    return _scale(ar, p, reduction)


def _shifted_lse(ar: Arithmetic, x):
    a, e = _shifted_exp(ar, x)
    return ar.add(a, ar.log(ar.sum(e)))


def _log1p_lse(ar: Arithmetic, x):
    a, e = _shifted_exp(ar, x)
    e = e.copy()
    e[np.arange(len(a)), np.argmax(x, axis=1)] = 0.0  # the argmax term's exact 1 -> log1p
    return ar.add(a, ar.log1p(ar.sum(e)))


def lse_backward(x, targets, fmt: Format, accumulator=WORKING, reduction="none",
                 lse=_shifted_lse, options=None):
    """exp(x - lse), and expm1(x_t - lse) at the target, in `fmt`."""
    ar = Arithmetic(fmt, accumulator)
    if options is not None:
        def probs(ar, y, t):
            ly = lse(ar, y)
            d = ar.sub(y, ly[:, None])
            pm1 = None if t is None else ar.expm1(d[np.arange(len(t)), t])
            return Probs(ar.exp(d), pm1, ly)
        return options_backward(probs, x, targets, options, reduction, ar)
    d = ar.sub(x, lse(ar, x)[:, None])
    g = ar.exp(d)
    r, t = _onehot_rows(targets)
    g[r, t] = ar.expm1(d[r, t])
    return _scale(ar, g, reduction)


def wide_format(fmt: Format) -> Format:
    """float32, or the format itself where it is at least as wide: a fused kernel's registers."""
    return fmt if fmt.precision >= FORMATS["float32"].precision else FORMATS["float32"]


def _fused(x, targets, fmt, accumulator, reduction, store_first, options=None):
    w = Arithmetic(wide_format(fmt))
    if options is not None:
        def probs(ar, y, t):
            saved = online_lse(Arithmetic(accumulator_format(fmt, accumulator)), y)
            p = ar.exp_sub(y, saved[:, None])
            pm1 = None if t is None else ar.sub(p[np.arange(len(t)), t], 1.0)
            return Probs(p, pm1, saved)
        return fmt.round(options_backward(probs, x, targets, options, reduction, w,
                                          fmt.round if store_first else None,
                                          reciprocal=True))
    saved = online_lse(Arithmetic(accumulator_format(fmt, accumulator)), x)
    p = w.exp_sub(x, saved[:, None])
    if store_first:
        p = fmt.round(p)
    r, t = _onehot_rows(targets)
    p[r, t] = w.sub(p[r, t], 1.0)
    if reduction == "mean":
        p = w.mul(p, w.round(1.0 / x.shape[0]))
    return fmt.round(p)


@backward("online", options=ALL)
def fused(x, targets, fmt, accumulator=WORKING, reduction="none", options=None):
    """The fused kernel's backward from the saved log-sum-exp, in float32, stored in `fmt`."""
    return _fused(x, targets, fmt, accumulator, reduction, False, options)


@backward("online", variant="fused_store_first", options=ALL)
def fused_store_first(x, targets, fmt, accumulator=WORKING, reduction="none", options=None):
    """As `fused`, but softmax rounded to `fmt` before the target's 1 is subtracted."""
    return _fused(x, targets, fmt, accumulator, reduction, True, options)


@backward("naive", options=ALL)
def _naive(x, targets, fmt, accumulator=WORKING, reduction="none", options=None):
    return textbook(x, targets, fmt, accumulator, reduction, shift=False, options=options)


@backward("softmax_eps", options=NO_LSE)
@backward("softmax_log", options=NO_LSE)
def _softmax(x, targets, fmt, accumulator=WORKING, reduction="none", options=None):
    return textbook(x, targets, fmt, accumulator, reduction, options=options)


@backward("logsumexp", options=ALL)
@backward("log_softmax", options=ALL)
def _logsumexp(x, targets, fmt, accumulator=WORKING, reduction="none", options=None):
    return lse_backward(x, targets, fmt, accumulator, reduction, options=options)


@backward("log1p", options=ALL)
def _log1p(x, targets, fmt, accumulator=WORKING, reduction="none", options=None):
    return lse_backward(x, targets, fmt, accumulator, reduction, lse=_log1p_lse,
                        options=options)


@backward("torch", options=ALL)
def torch_grad(x, targets, fmt, accumulator=None, reduction="none", device="cpu",
               options=None):
    """Autograd of F.cross_entropy in fmt's torch dtype on `device`; "none" back-propagates
    ones (each row's loss depends on its row only, so this is each row's gradient). With
    `options`: of `optioned.torch_options_loss` (the options passed through)."""
    if reduction not in REDUCTIONS and not (options is not None and reduction == "sum"):
        raise ValueError(f"unknown reduction {reduction!r}")
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(device=device,
                                                              dtype=fmt.torch_dtype)
    xt.requires_grad_(True)
    if options is not None:
        loss = torch_options_loss(xt, targets, options, reduction)
    else:
        t = torch.from_numpy(np.asarray(targets).astype(np.int64)).to(device)
        loss = torch.nn.functional.cross_entropy(xt, t, reduction=reduction)
    loss.backward(torch.ones_like(loss) if reduction == "none" else None)
    return xt.grad.detach().to(device="cpu", dtype=torch.float64).numpy()
