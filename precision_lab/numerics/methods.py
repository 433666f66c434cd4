"""Cross-entropy algorithms: one record per method, everything the suite knows about it.

A method's forward takes logits `x` (N, C) as float64 carrying values of the working format
`fmt`, integer targets (N,), the format, and the accumulator of its class reductions, and
returns the per-row losses (float64 carrying `fmt` values). Every operation goes through
`Arithmetic` (precision_lab.numerics.arithmetic): evaluated in float64 and rounded once to
`fmt`, sums sequential in the accumulator. The maximum is exact in any format.

Adding a method is one function and one `@register(...)`: the record carries its formula and
summary, whether it shifts by the maximum, which Blanchard-Higham-Higham bound applies, how its
batch mean is formed, its family (which sets its figure colour), and the accumulators it runs
with. `backward` and `options` are the slots the gradient and the training options fill.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..data.inputs import validate_batch
from ..errors import InputError
from .arithmetic import ACCUMULATORS, OWN, WORKING, Arithmetic, accumulators_for
from .formats import get_format

__all__ = ["Method", "METHODS", "FAMILIES", "ACCUMULATORS", "register", "get_method",
           "Arithmetic", "batch_mean", "stable_methods", "bounded_methods"]

# Method families: the colour family of every figure, and what "shifted" means in findings.
FAMILIES = ("unshifted", "softmax", "shifted", "library")


@dataclass(frozen=True)
class Method:
    """Everything the suite knows about one cross-entropy algorithm."""
    name: str
    fn: Callable                   # forward: (x, targets, fmt, accumulator) -> per-row losses
    formula: str
    summary: str
    family: str                    # one of FAMILIES
    shifted: bool                  # subtracts the row maximum before exp
    color: str | None              # its colour in every figure (None: one picked by name)
    bound: str | None = None       # the BHH bound form that covers it ("log1p", "shifted")
    own_reduction: bool = False    # sums in its own way (torch): runs once, as "internal"
    mean_fn: Callable | None = None  # (x, targets, fmt) -> batch mean, if not sum-then-divide
    backward: Callable | None = None  # the gradient (filled by the gradient work)
    options: frozenset = field(default_factory=frozenset)  # training options it expresses
    # (losses, fmt) -> the same batch mean as mean_fn, from this method's own per-row losses:
    # lets a batch evaluated in blocks of rows (analyze) form it without the whole batch.
    mean_of_losses: Callable | None = None

    def __call__(self, x, targets, fmt, accumulator=WORKING):
        """Per-row losses of logits `x` (N, C), whose values must already be in `fmt`."""
        fmt = get_format(fmt)
        x, targets = validate_batch(x, targets)
        return self.fn(x, targets, fmt, accumulator)

    @property
    def uses_accumulator(self) -> bool:
        return not self.own_reduction

    def accumulators(self, fmt, requested=ACCUMULATORS) -> list[str]:
        """The accumulators this method runs with in `fmt`."""
        return [OWN] if self.own_reduction else accumulators_for(fmt, requested)

    def batch_mean(self, losses, fmt, accumulator=WORKING, x=None, targets=None) -> float:
        """The batch mean (PyTorch's default reduction) as this method forms it: its own
        `mean_fn` on the batch, or a sequential sum of the per-row `losses` then one division."""
        if self.mean_fn is not None:
            if x is None and self.mean_of_losses is not None:
                return float(self.mean_of_losses(losses, get_format(fmt)))
            return float(self.mean_fn(x, targets, get_format(fmt)))
        return batch_mean(losses, fmt, WORKING if accumulator == OWN else accumulator)


METHODS: dict[str, Method] = {}


def register(name: str, formula: str, summary: str, *, family: str = "shifted",
             shifted: bool = True, color: str | None = None,
             bound: str | None = None, own_reduction: bool = False,
             mean_fn: Callable | None = None, mean_of_losses: Callable | None = None):
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")

    def deco(fn):
        METHODS[name] = Method(name, fn, formula, summary, family, shifted, color, bound,
                               own_reduction, mean_fn, mean_of_losses=mean_of_losses)
        return fn
    return deco


def get_method(name: str | Method) -> Method:
    if isinstance(name, Method):
        return name
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None


def stable_methods() -> list[str]:
    """The methods of the log-sum-exp families (shifted formulas and libraries), in registry
    order: those a finding calls "the shifted methods"."""
    return [m.name for m in METHODS.values() if m.family in ("shifted", "library")]


def bounded_methods() -> dict[str, str]:
    """{method: BHH bound form} for the methods a Blanchard-Higham-Higham bound covers."""
    return {m.name: m.bound for m in METHODS.values() if m.bound is not None}


def batch_mean(losses, fmt, accumulator=WORKING) -> float:
    """The batch mean of per-row `losses`: a sequential sum in the accumulator, rounded to
    `fmt`, then one rounded division by N."""
    ar = Arithmetic(get_format(fmt), accumulator)
    losses = np.asarray(losses, dtype=np.float64)[None, :]
    return float(ar.div(ar.sum(losses), float(losses.shape[1]))[0])


def _pick(v: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.take_along_axis(v, targets[:, None], axis=1)[:, 0]


def _shifted_exp(ar: Arithmetic, x):
    m = np.max(x, axis=1, keepdims=True)
    return m[:, 0], ar.exp(ar.sub(x, m))


@register("naive", "-log(exp(x_t) / sum_i exp(x_i))",
          "softmax without a shift, then -log p_t; exp overflows past log(max_finite)",
          family="unshifted", shifted=False, color="#d62728")
def naive(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    e = ar.exp(x)
    p = ar.div(_pick(e, targets), ar.sum(e))
    return -ar.log(p)


def _softmax_target(ar: Arithmetic, x, targets):
    _, e = _shifted_exp(ar, x)
    return ar.div(_pick(e, targets), ar.sum(e))


@register("softmax_eps", "-log(p_t + eps), p = softmax(x - max x), eps = 1e-7",
          "the blog post's code: shifted softmax, eps (rounded to the format) caps the loss",
          family="softmax", shifted=True, color="#ff7f0e")
def softmax_eps(x, targets, fmt, accumulator, eps: float = 1e-7):
    ar = Arithmetic(fmt, accumulator)
    p = _softmax_target(ar, x, targets)
    return -ar.log(ar.add(p, ar.round(eps)))


@register("softmax_log", "-log(p_t), p = softmax(x - max x)",
          "shifted softmax without eps: p_t underflows to 0 and the loss to inf",
          family="softmax", shifted=True, color="#8c564b")
def softmax_log(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    return -ar.log(_softmax_target(ar, x, targets))


@register("logsumexp", "(a + log sum_i exp(x_i - a)) - x_t, a = max x",
          "the stable formula: shifted log-sum-exp minus the target logit",
          family="shifted", shifted=True, color="#1f77b4", bound="shifted")
def logsumexp(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    a, e = _shifted_exp(ar, x)
    lse = ar.add(a, ar.log(ar.sum(e)))
    return ar.sub(lse, _pick(x, targets))


@register("log1p", "(a + log1p(sum_{i != k} exp(x_i - a))) - x_t, a = x_k = max x",
          "Blanchard, Higham & Higham (2021): the argmax term's exact 1 moved into log1p",
          family="shifted", shifted=True, color="#2ca02c", bound="log1p")
def log1p(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    a, e = _shifted_exp(ar, x)
    k = np.argmax(x, axis=1)
    e = e.copy()
    e[np.arange(len(k)), k] = 0.0  # the argmax term, exp(0) = 1, leaves the sum
    lse = ar.add(a, ar.log1p(ar.sum(e)))
    return ar.sub(lse, _pick(x, targets))


@register("log_softmax", "-((x_t - a) - log sum_i exp(x_i - a)), a = max x",
          "ATen's order of operations: log-softmax of the target, negated",
          family="shifted", shifted=True, color="#17becf")
def log_softmax(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    a, e = _shifted_exp(ar, x)
    return -ar.sub(ar.sub(_pick(x, targets), a), ar.log(ar.sum(e)))


ONLINE_BLOCK = 256


@register("online", "blockwise online softmax: per block of 256 classes m_b = max, "
          "s_b = sum exp(x - m_b); running (m, s) <- (M, s exp(m - M) + s_b exp(m_b - M))",
          "one pass over the classes, as fused cross-entropy kernels do (Milakov & "
          "Gimelshein 2018), then m + log s - x_t",
          family="shifted", shifted=True, color="#e377c2")
def online(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
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
          "lanes, the sum rounded to the format, for 16-bit formats)",
          family="library", shifted=True, color="#9467bd", own_reduction=True,
          mean_fn=lambda x, t, fmt: _torch_ce(x, t, fmt, "mean"),
          mean_of_losses=lambda losses, fmt: _torch_mean_of_losses(losses, fmt))
def torch_ce(x, targets, fmt, accumulator=None):
    return _torch_ce(x, targets, fmt, "none")


def _torch_mean_of_losses(losses, fmt):
    """F.cross_entropy's mean from its per-row losses: its mean is nll_loss's over the picked
    log-probabilities (-loss), which depends on those values alone, not on the other classes,
    so nll_loss on an (N, 1) input of -losses reduces them the same way (tests check it)."""
    lt = torch.from_numpy(np.array(losses, dtype=np.float64)).to(fmt.torch_dtype)  # a copy
    zeros = torch.zeros(len(lt), dtype=torch.int64)
    return torch.nn.functional.nll_loss(-lt[:, None], zeros, reduction="mean").to(
        torch.float64).item()


def _torch_ce(x, targets, fmt, reduction):
    """F.cross_entropy in fmt's torch dtype on the CPU; x already carries fmt values (exact)."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64)).to(fmt.torch_dtype)
    t = torch.from_numpy(np.asarray(targets).astype(np.int64))
    return torch.nn.functional.cross_entropy(xt, t, reduction=reduction).to(torch.float64).numpy()
