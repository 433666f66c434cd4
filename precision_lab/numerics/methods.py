"""Cross-entropy algorithms, each a plain function registered by name.

A method takes logits `x` (N, C) as float64 carrying values of the working format `fmt`, integer
targets (N,), the format, and the accumulator of its class reductions, and returns the per-row
losses (float64 carrying `fmt` values). Every elementwise operation is evaluated in float64 and
rounded once to `fmt` (`Arithmetic`): an exact result for + - * / (53 >= 2p + 2 bits, so the
double rounding is innocuous) and exp/log/log1p correct except where libm's float64 result lies
within 2**-53 of a rounding boundary of `fmt`. Reductions are sequential, left to right:
  accumulate="working": every partial sum rounded to `fmt` (a float16 sum stalls at 2048 + ...);
  accumulate="float32": partial sums rounded to float32, the total then rounded to `fmt`
                        (mixed precision, as PyTorch and fused kernels do for 16-bit formats).
The maximum is exact in any format. Adding a method is one function and one `@register`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .formats import FORMATS, Format, get_format
from ..data.inputs import validate_batch
from ..errors import InputError

__all__ = ["Method", "METHODS", "ACCUMULATORS", "register", "get_method", "Arithmetic",
           "batch_mean"]

ACCUMULATORS = ("working", "float32")


class Arithmetic:
    """Operations rounded to one format, with a chosen accumulator for sums."""

    def __init__(self, fmt: Format, accumulate: str = "working"):
        if accumulate not in ACCUMULATORS:
            raise InputError(f"unknown accumulator {accumulate!r}; valid: {', '.join(ACCUMULATORS)}")
        self.fmt = fmt
        self.accumulate = accumulate

    def round(self, v):
        return self.fmt.round(v)

    def exp(self, v):
        with np.errstate(over="ignore"):
            return self.round(np.exp(v))

    def log(self, v):
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.round(np.log(v))

    def log1p(self, v):
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.round(np.log1p(v))

    def add(self, a, b):
        with np.errstate(invalid="ignore"):
            return self.round(np.add(a, b))

    def sub(self, a, b):
        with np.errstate(invalid="ignore"):
            return self.round(np.subtract(a, b))

    def div(self, a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.round(np.divide(a, b))

    def sum(self, v: np.ndarray, axis: int = -1):
        """Sequential sum along `axis`, each partial sum rounded to the accumulator's format."""
        acc_fmt = self.fmt if self.accumulate == "working" else FORMATS["float32"]
        if acc_fmt.precision < self.fmt.precision:  # float32 accumulator for a wider format
            acc_fmt = self.fmt
        # numpy's add.accumulate is strictly sequential and rounds each partial sum to its dtype
        # (unlike add.reduce, which sums float16 pairwise in float32); tests check this.
        with np.errstate(over="ignore", invalid="ignore"):
            partial = np.add.accumulate(np.asarray(v).astype(acc_fmt.dtype), axis=axis)
        total = np.take(partial, -1, axis=axis).astype(np.float64)
        return self.round(total)


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable
    formula: str
    summary: str
    uses_accumulator: bool = True

    def __call__(self, x, targets, fmt, accumulate="working"):
        """Per-row losses of logits `x` (N, C), whose values must already be in `fmt`."""
        fmt = get_format(fmt)
        x, targets = validate_batch(x, targets)
        return self.fn(x, targets, fmt, accumulate)


METHODS: dict[str, Method] = {}


def register(name: str, formula: str, summary: str, uses_accumulator: bool = True):
    def deco(fn):
        METHODS[name] = Method(name, fn, formula, summary, uses_accumulator)
        return fn
    return deco


def get_method(name: str | Method) -> Method:
    if isinstance(name, Method):
        return name
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None


def _pick(v: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.take_along_axis(v, targets[:, None], axis=1)[:, 0]


def _shifted_exp(ar: Arithmetic, x):
    m = np.max(x, axis=1, keepdims=True)
    return m[:, 0], ar.exp(ar.sub(x, m))


@register("naive", "-log(exp(x_t) / sum_i exp(x_i))",
          "softmax without a shift, then -log p_t; exp overflows past log(max_finite)")
def naive(x, targets, fmt, accumulate):
    ar = Arithmetic(fmt, accumulate)
    e = ar.exp(x)
    p = ar.div(_pick(e, targets), ar.sum(e))
    return -ar.log(p)


def _softmax_target(ar: Arithmetic, x, targets):
    _, e = _shifted_exp(ar, x)
    return ar.div(_pick(e, targets), ar.sum(e))


@register("softmax_eps", "-log(p_t + eps), p = softmax(x - max x), eps = 1e-7",
          "the blog post's code: shifted softmax, eps (rounded to the format) caps the loss")
def softmax_eps(x, targets, fmt, accumulate, eps: float = 1e-7):
    ar = Arithmetic(fmt, accumulate)
    p = _softmax_target(ar, x, targets)
    return -ar.log(ar.add(p, ar.round(eps)))


@register("softmax_log", "-log(p_t), p = softmax(x - max x)",
          "shifted softmax without eps: p_t underflows to 0 and the loss to inf")
def softmax_log(x, targets, fmt, accumulate):
    ar = Arithmetic(fmt, accumulate)
    return -ar.log(_softmax_target(ar, x, targets))


@register("logsumexp", "(a + log sum_i exp(x_i - a)) - x_t, a = max x",
          "the stable formula: shifted log-sum-exp minus the target logit")
def logsumexp(x, targets, fmt, accumulate):
    ar = Arithmetic(fmt, accumulate)
    a, e = _shifted_exp(ar, x)
    lse = ar.add(a, ar.log(ar.sum(e)))
    return ar.sub(lse, _pick(x, targets))


@register("log1p", "(a + log1p(sum_{i != k} exp(x_i - a))) - x_t, a = x_k = max x",
          "Blanchard, Higham & Higham (2021): the argmax term's exact 1 moved into log1p")
def log1p(x, targets, fmt, accumulate):
    ar = Arithmetic(fmt, accumulate)
    a, e = _shifted_exp(ar, x)
    k = np.argmax(x, axis=1)
    e = e.copy()
    e[np.arange(len(k)), k] = 0.0  # the argmax term, exp(0) = 1, leaves the sum
    lse = ar.add(a, ar.log1p(ar.sum(e)))
    return ar.sub(lse, _pick(x, targets))


@register("log_softmax", "-((x_t - a) - log sum_i exp(x_i - a)), a = max x",
          "ATen's order of operations: log-softmax of the target, negated")
def log_softmax(x, targets, fmt, accumulate):
    ar = Arithmetic(fmt, accumulate)
    a, e = _shifted_exp(ar, x)
    return -ar.sub(ar.sub(_pick(x, targets), a), ar.log(ar.sum(e)))


ONLINE_BLOCK = 256


@register("online", "blockwise online softmax: per block of 256 classes m_b = max, "
          "s_b = sum exp(x - m_b); running (m, s) <- (M, s exp(m - M) + s_b exp(m_b - M))",
          "one pass over the classes, as fused cross-entropy kernels do (Milakov & "
          "Gimelshein 2018), then m + log s - x_t")
def online(x, targets, fmt, accumulate):
    ar = Arithmetic(fmt, accumulate)
    n = x.shape[0]
    m = np.full(n, -np.inf)
    s = np.zeros(n)
    for start in range(0, x.shape[1], ONLINE_BLOCK):
        mb, eb = _shifted_exp(ar, x[:, start:start + ONLINE_BLOCK])
        sb = ar.sum(eb)
        new = np.maximum(m, mb)
        with np.errstate(invalid="ignore"):  # -inf - -inf on the first block: its scale is 0
            scale_old = np.where(m == -np.inf, 0.0, ar.exp(ar.sub(m, new)))
        s = ar.add(ar.round(s * scale_old), ar.round(sb * ar.exp(ar.sub(mb, new))))
        m = new
    return ar.sub(ar.add(m, ar.log(s)), _pick(x, targets))


@register("torch", "torch.nn.functional.cross_entropy(x, t, reduction='none')",
          "PyTorch on the CPU in the format's torch dtype; its own reduction (exp and sum in float32 "
          "lanes, the sum rounded to the format, for 16-bit formats)", uses_accumulator=False)
def torch_ce(x, targets, fmt, accumulate=None):
    xt = torch.from_numpy(x).to(fmt.torch_dtype)  # exact: x already carries fmt values
    out = torch.nn.functional.cross_entropy(xt, torch.from_numpy(targets.astype(np.int64)),
                                            reduction="none")
    return out.to(torch.float64).numpy()


def batch_mean(losses, fmt, accumulate="working", method: str | None = None, x=None,
               targets=None):
    """The batch-mean loss (PyTorch's default reduction) of per-row `losses`.

    For the torch method, torch's own `reduction='mean'` on `x`; otherwise a sequential sum in
    the accumulator, rounded to `fmt`, then one rounded division by N.
    """
    fmt = get_format(fmt)
    if method == "torch":
        xt = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(fmt.torch_dtype)
        out = torch.nn.functional.cross_entropy(
            xt, torch.from_numpy(np.asarray(targets).astype(np.int64)), reduction="mean")
        return float(out.to(torch.float64))
    ar = Arithmetic(fmt, accumulate)
    losses = np.asarray(losses, dtype=np.float64)[None, :]
    return float(ar.div(ar.sum(losses), float(losses.shape[1]))[0])
