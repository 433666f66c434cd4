"""Cross-entropy algorithms: one record per method, everything the suite knows about it.

A method's forward takes logits `x` (N, C) as float64 carrying values of the working format
`fmt`, integer targets (N,), the format, and the accumulator of its class reductions, and
returns the per-row losses (float64 carrying `fmt` values). Every operation goes through
`Arithmetic` (precision_lab.numerics.arithmetic): evaluated in float64 and rounded once to
`fmt`, sums sequential in the accumulator. The maximum is exact in any format.

Non-finite logits follow the policy of `validate_batch` (torch's) by their own arithmetic,
never by a special case: every shifted method meets inf - inf on a row with a +inf logit and
returns nan, as the truth does. `naive`, unshifted, never subtracts: where the +inf is not the
target it returns exp(x_t) / inf = 0, so -log 0 = +inf, an outcome of its formula that is
counted as such (a +inf against a nan truth).

Adding a method is one function and one `@register(...)`: the record carries its formula and
summary, whether it shifts by the maximum, which Blanchard-Higham-Higham bound applies, how its
batch mean is formed, its family (which sets its figure colour), and the accumulators it runs
with. `backward` is the slot the gradient fills. `options` names the training options
(numerics.options) the method expresses and `with_options` computes the loss under them from
the method's terms (every class's -log p and its log-sum-exp, at the end of this module;
numerics.optioned); an option it cannot express is refused with an InputError.

Speed: outside `shared_steps`, the shifted methods' row maxima, exponentials and sums (and
naive's unshifted ones, online's blocks) run as one compiled pass where it gives the same
bits (numerics.fastshift: bfloat16 and float32, round to nearest; its declined rows, nan or
infinite ones, by the numpy steps `_max_sum_numpy`, `_naive_numpy`, `_online_block_sums`).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..data.inputs import validate_batch
from ..errors import InputError
from . import fastround, fastshift
from .arithmetic import ACCUMULATORS, OWN, WORKING, Arithmetic, accumulators_for
from .formats import NEAREST, Format, get_format
from .optioned import Terms, options_forward, reduce_rows, torch_options
from .options import OPTION_NAMES, LossOptions, check_batch, require_supported

__all__ = ["Method", "METHODS", "FAMILIES", "ACCUMULATORS", "register", "get_method",
           "backward", "GRAD_VARIANTS", "gradient_methods", "gradient_options", "REDUCTIONS",
           "Arithmetic", "batch_mean", "stable_methods", "bounded_methods",
           "torch_unsupported", "shared_steps"]

# Method families: the colour family of every figure, and what "shifted" means in findings.
# Colours (on the records): the Okabe-Ito colour-blind-safe palette, one colour per family:
# unshifted #D55E00, softmax #E69F00, shifted #0072B2, library #009E73.
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
    backward: Callable | None = None  # gradient: (x, targets, fmt, accumulator, reduction)
    #                                  -> (N, C) dL/dx carrying fmt values (numerics.gradients)
    options: frozenset = field(default_factory=frozenset)  # training options it expresses
    # (x, targets, fmt, accumulator, options, reduction) -> the loss under LossOptions
    with_options: Callable | None = None
    # (losses, fmt) -> the same batch mean as mean_fn, from this method's own per-row losses:
    # lets a batch evaluated in blocks of rows (analyze) form it without the whole batch.
    mean_of_losses: Callable | None = None
    grad_options: frozenset = field(default_factory=frozenset)  # options `backward` expresses
    #                                  (called with options=LossOptions: numerics.optioned_grad)
    # (fmt) -> None if it runs in fmt, else the reason it cannot (None: runs in every format)
    unsupported: Callable | None = None

    def __call__(self, x, targets, fmt, accumulator=WORKING, options: LossOptions | None = None):
        """Per-row losses of logits `x` (N, C), whose values must already be in `fmt`;
        with `options`, reduction "none" under them (numerics.options)."""
        fmt = get_format(fmt)
        self.require_runs_in(fmt)
        if options is not None:
            return self.loss(x, targets, fmt, accumulator, options, "none")
        view = x if self.own_reduction else _read_only(x)
        xv, targets = validate_batch(view, targets)
        if xv is not view or view is x:
            x = xv                 # validated as given (a copy, or a frozen array as it is)
        # else: the caller's own float64 array, validated through a read-only view of it
        # without a copy (compiled kernels run faster on writable arrays; none writes)
        return self.fn(x, targets, fmt, accumulator)

    def runs_in(self, fmt) -> bool:
        return not (self.unsupported and self.unsupported(get_format(fmt)))

    def require_runs_in(self, fmt) -> None:
        """InputError saying why this method cannot run in `fmt` (torch in float8, tf32, ...)."""
        why = self.unsupported(fmt) if self.unsupported else None
        if why:
            raise InputError(f"method {self.name} cannot run in {fmt.name}: {why}")

    def loss(self, x, targets, fmt, accumulator=WORKING, options: LossOptions | None = None,
             reduction: str | None = None):
        """The loss under `options` (default: plain cross entropy) with `reduction`
        (default: the options' own): per-row losses for "none", a float for "sum" and "mean".
        InputError names any option in use that this method cannot express."""
        options = LossOptions() if options is None else options
        fmt = get_format(fmt)
        self.require_runs_in(fmt)
        require_supported(self.name, self.options, options)
        if self.with_options is None:
            raise InputError(f"method {self.name!r} cannot express training options")
        x, targets = check_batch(x, targets, options)
        return self.with_options(x, targets, fmt, accumulator, options, reduction)

    @property
    def uses_accumulator(self) -> bool:
        return not self.own_reduction

    def accumulators(self, fmt, requested=ACCUMULATORS) -> list[str]:
        """The accumulators this method runs with in `fmt` (none if it cannot run in it)."""
        if not self.runs_in(fmt):
            return []
        return [OWN] if self.own_reduction else accumulators_for(fmt, requested)

    def batch_mean(self, losses, fmt, accumulator=WORKING, x=None, targets=None,
                   options: LossOptions | None = None) -> float:
        """The batch mean (PyTorch's default reduction) as this method forms it: its own
        `mean_fn` on the batch, or a sequential sum of the per-row `losses` then one division.
        With `options`: their "mean" of the batch (`x`, `targets`), weighted as torch does."""
        if options is not None:
            return self.reduce(losses, fmt, accumulator, x, targets, options, "mean")
        if self.mean_fn is not None:
            if x is None and self.mean_of_losses is not None:
                return float(self.mean_of_losses(losses, get_format(fmt)))
            return float(self.mean_fn(x, targets, get_format(fmt)))
        return batch_mean(losses, fmt, WORKING if accumulator == OWN else accumulator)

    def reduce(self, losses, fmt, accumulator, x, targets, options: LossOptions,
               reduction: str) -> float:
        """"sum" or "mean" under `options` of this method's per-row `losses` of the batch
        (`x`, `targets`); a method with its own reduction (torch) reduces the batch itself."""
        if self.own_reduction or losses is None:
            return self.loss(x, targets, fmt, accumulator, options, reduction)
        options = LossOptions() if options is None else options
        _, targets = check_batch(x, targets, options)
        return reduce_rows(losses, targets, get_format(fmt), accumulator, options, reduction)


METHODS: dict[str, Method] = {}


def register(name: str, formula: str, summary: str, *, family: str = "shifted",
             shifted: bool = True, color: str | None = None,
             bound: str | None = None, own_reduction: bool = False,
             mean_fn: Callable | None = None, mean_of_losses: Callable | None = None,
             unsupported: Callable | None = None) -> Callable[[Callable], Callable]:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")

    def deco(fn):
        METHODS[name] = Method(name, fn, formula, summary, family, shifted, color, bound,
                               own_reduction, mean_fn, mean_of_losses=mean_of_losses,
                               unsupported=unsupported)
        return fn
    return deco


# Backward variants that are not a method's own gradient: {label: (method name, fn, options)}.
GRAD_VARIANTS: dict[str, tuple[str, Callable, frozenset]] = {}
REDUCTIONS = ("none", "mean")


def backward(name: str, variant: str | None = None, options=()):
    """Declare a gradient of method `name`: its own (fills the record's `backward`), or, with
    `variant`, another backward of the same forward (listed by `gradient_methods`). `options`:
    the training options it expresses when called with `options=LossOptions(...)`."""
    opts = frozenset(options)
    unknown = opts - set(OPTION_NAMES)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}")

    def deco(fn):
        if variant is None:
            METHODS[name] = replace(get_method(name), backward=fn, grad_options=opts)
        else:
            get_method(name)
            GRAD_VARIANTS[variant] = (name, fn, opts)
        return fn
    return deco


def gradient_methods() -> dict[str, tuple[Method, Callable]]:
    """{label: (method record, backward fn)}: every method with a backward under its own
    name, then the variants."""
    out = {m.name: (m, m.backward) for m in METHODS.values() if m.backward is not None}
    out.update({v: (METHODS[name], fn) for v, (name, fn, _) in GRAD_VARIANTS.items()})
    return out


def gradient_options() -> dict[str, frozenset]:
    """{backward label: the training options it expresses}, in `gradient_methods` order."""
    out = {m.name: m.grad_options for m in METHODS.values() if m.backward is not None}
    out.update({v: opts for v, (_, _, opts) in GRAD_VARIANTS.items()})
    return out


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


def batch_mean(losses: ArrayLike, fmt: Format | str, accumulator: str = WORKING) -> float:
    """The batch mean of per-row `losses`: a sequential sum in the accumulator, rounded to
    `fmt`, then one rounded division by N."""
    ar = Arithmetic(get_format(fmt), accumulator)
    losses = np.asarray(losses, dtype=np.float64)[None, :]
    return float(ar.div(ar.sum(losses), float(losses.shape[1]))[0])


def _read_only(x):
    """A writable float64 array as a read-only view of itself (outside `shared_steps`), so
    that `validate_batch` checks it without a copy (`Method.__call__` then hands the method
    the array itself: no method writes into its logits)."""
    if (isinstance(x, np.ndarray) and x.dtype == np.float64 and x.flags.writeable
            and _SHARED.get() is None):
        x = x.view()
        x.flags.writeable = False
    return x


def _pick(v: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.take_along_axis(v, targets[:, None], axis=1)[:, 0]


_SHARED: ContextVar[dict | None] = ContextVar("shared_steps", default=None)


@contextmanager
def shared_steps():
    """Within the block, the methods share the steps they compute alike from their input: of
    one read-only logits array x (every method's input as `evaluate` and `analyze` hand it
    over, frozen), exp(x), the row maxima with exp(x - max x), and the online method's
    exp(x - m_b) of its blocks are computed once per (array, format, elementary variant), and
    the sum of that exp(x - max x) once per accumulator; each is handed (read-only) to every
    method that asks. Only where the format (and, for a sum, the accumulator) rounds to
    nearest: there a step is a function of its input alone, so every method gets the bits it
    would compute itself; the operations it skips are counted into its `Arithmetic` (`ops`)
    as if done, so a stochastic accumulator's later bits are unchanged. Holds a few (N, C)
    float64 arrays per format in use; leave the block to free them."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _share(ar: Arithmetic, x, step, compute):
    """`compute()` (a step of `ar` on x), or its value from `shared_steps` where x is a
    read-only array and the format rounds to nearest (`step` keys it, with x, the format and
    the elementary variant)."""
    memo = _SHARED.get()
    if memo is None or ar.fmt.rounding != NEAREST or not isinstance(x, np.ndarray) \
            or x.flags.writeable:
        return compute()
    key = (step, id(x), ar.fmt, ar.elementary)
    hit = memo.get(key)
    if hit is not None and hit[0] is x:
        ar.ops += hit[2]
        return hit[1]
    ops = ar.ops
    value = compute()
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, np.ndarray):
            v.flags.writeable = False
    memo[key] = (x, value, ar.ops - ops)      # x held: its id is not reused meanwhile
    return value


def _shifted_exp(ar: Arithmetic, x, share: bool = False):
    """(max x per row, exp(x - max x) rounded to the format); `share`: x is the method's own
    input, whose steps `shared_steps` may hold."""
    def compute():
        m = np.max(x, axis=1, keepdims=True)
        return m[:, 0], ar.exp_sub(x, m)       # ar.exp(ar.sub(x, m)), fused where it can
    return _share(ar, x, "shifted_exp", compute) if share else compute()


def _shared_sum(ar: Arithmetic, e):
    """ar.sum(e) of a shared exp(x - max x), itself shared where the accumulator rounds to
    nearest."""
    if ar.acc_fmt.rounding != NEAREST:
        return ar.sum(e)
    return _share(ar, e, ("sum", ar.acc_fmt), lambda: ar.sum(e))


@register("naive", "-log(exp(x_t) / sum_i exp(x_i))",
          "softmax without a shift, then -log p_t; exp overflows past log(max_finite)",
          family="unshifted", shifted=False, color="#D55E00")
def naive(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    if _fuse(ar, x):
        _, s, et = _fused(ar, x, lambda rows: (0.0,) + _naive_numpy(ar, x[rows],
                                                                     targets[rows])[::-1],
                          shifted=False, pick=targets)
    else:
        et, s = _naive_numpy(ar, x, targets)
    return -ar.log(ar.div(et, s))


def _naive_numpy(ar: Arithmetic, x, targets):
    """(exp(x_t), sum_i exp(x_i)): the unfused steps."""
    e = _share(ar, x, "exp", lambda: ar.exp(x))
    return _pick(e, targets), ar.sum(e)


def _fuse(ar: Arithmetic, x) -> bool:
    """The fused pass (numerics.fastshift) gives this Arithmetic's bits, and x is not an input
    whose steps `shared_steps` holds (there the steps are shared instead)."""
    if not fastshift.fusable(ar):
        return False
    return _SHARED.get() is None or not isinstance(x, np.ndarray) or x.flags.writeable


def _fused(ar: Arithmetic, x, numpy_rows, block=None, shifted=True, skip_argmax=False,
           pick=None):
    """(m, s, e_pick) of `fastshift.shifted_sums` (m, s (N,) without `block`), the rows it
    declines from `numpy_rows(rows)` (the unfused steps on x[rows], which return
    (m, s, e_pick) of those rows); the operations counted into `ar` as the unfused steps on
    all of x count them (the declined rows' steps count their own: they count the same)."""
    m, s, ep, ok = fastshift.shifted_sums(ar, np.asarray(x), block=block, shifted=shifted,
                                          skip_argmax=skip_argmax, pick=pick)
    if block is None:
        m, s = m[:, 0], s[:, 0]
    if ok.all():
        parts = 1 if block is None else 1 + (x.shape[1] % block != 0) * (x.shape[1] > block)
        ar.ops += parts * (int(shifted) + (ar.acc_fmt is not ar.fmt))
        return m, s, ep
    rows = np.flatnonzero(~ok)
    m2, s2, ep2 = numpy_rows(rows)
    m[rows], s[rows] = m2, s2
    if ep is not None:
        ep[rows] = ep2
    return m, s, ep


def _max_sum(ar: Arithmetic, x, skip_argmax=False, pick=None):
    """(a = max x per row, s = ar.sum(exp(x - a)), exp(x - a) at column pick[i] or None):
    with `skip_argmax`, the term of the (first) argmax left out of s where a is finite
    (log1p's sum). Fused (numerics.fastshift) where it gives the same bits."""
    if _fuse(ar, x):
        def rows_numpy(rows):
            return _max_sum_numpy(ar, x[rows], skip_argmax, None if pick is None
                                  else pick[rows])
        return _fused(ar, x, rows_numpy, skip_argmax=skip_argmax, pick=pick)
    return _max_sum_numpy(ar, x, skip_argmax, pick)


def _max_sum_numpy(ar: Arithmetic, x, skip_argmax=False, pick=None):
    """`_max_sum` by the unfused steps (the definition the fused pass matches)."""
    a, e = _shifted_exp(ar, x, share=True)
    et = None if pick is None else _pick(e, pick)
    if not skip_argmax:
        return a, _shared_sum(ar, e), et
    k = np.argmax(x, axis=1)
    e = e.copy()
    rows = np.arange(len(k))
    # the argmax term, exp(0) = 1, leaves the sum; where a = +inf it is exp(inf - inf) = nan
    # and stays (the formula's 1 holds only for a finite maximum): nan, as every shifted method
    e[rows, k] = np.where(np.isfinite(a), 0.0, e[rows, k])
    return a, ar.sum(e), et


def _softmax_target(ar: Arithmetic, x, targets):
    _, s, et = _max_sum(ar, x, pick=targets)
    return ar.div(et, s)


SOFTMAX_EPS = 1e-7


@register("softmax_eps", "-log(p_t + eps), p = softmax(x - max x), eps = 1e-7",
          "the blog post's code: shifted softmax, eps (rounded to the format) caps the loss",
          family="softmax", shifted=True, color="#E69F00")
def softmax_eps(x, targets, fmt, accumulator, eps: float = SOFTMAX_EPS):
    ar = Arithmetic(fmt, accumulator)
    p = _softmax_target(ar, x, targets)
    return -ar.log(ar.add(p, ar.round(eps)))


@register("softmax_log", "-log(p_t), p = softmax(x - max x)",
          "shifted softmax without eps: p_t underflows to 0 and the loss to inf",
          family="softmax", shifted=True, color="#E69F00")
def softmax_log(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    return -ar.log(_softmax_target(ar, x, targets))


@register("logsumexp", "(a + log sum_i exp(x_i - a)) - x_t, a = max x",
          "the stable formula: shifted log-sum-exp minus the target logit",
          family="shifted", shifted=True, color="#0072B2", bound="shifted")
def logsumexp(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    a, s, _ = _max_sum(ar, x)
    lse = ar.add(a, ar.log(s))
    return ar.sub(lse, _pick(x, targets))


@register("log1p", "(a + log1p(sum_{i != k} exp(x_i - a))) - x_t, a = x_k = max x",
          "Blanchard, Higham & Higham (2021): the argmax term's exact 1 moved into log1p",
          family="shifted", shifted=True, color="#0072B2", bound="log1p")
def log1p(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    a, s, _ = _max_sum(ar, x, skip_argmax=True)
    lse = ar.add(a, ar.log1p(s))
    return ar.sub(lse, _pick(x, targets))


@register("log_softmax", "-((x_t - a) - log sum_i exp(x_i - a)), a = max x",
          "ATen's order of operations: log-softmax of the target, negated",
          family="shifted", shifted=True, color="#0072B2")
def log_softmax(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    a, s, _ = _max_sum(ar, x)
    return -ar.sub(ar.sub(_pick(x, targets), a), ar.log(s))


ONLINE_BLOCK = 256


@register("online", "blockwise online softmax: per block of 256 classes m_b = max, "
          "s_b = sum exp(x - m_b); running (m, s) <- (M, s exp(m - M) + s_b exp(m_b - M))",
          "one pass over the classes, as fused cross-entropy kernels do (Milakov & "
          "Gimelshein 2018), then m + log s - x_t",
          family="shifted", shifted=True, color="#0072B2")
def online(x, targets, fmt, accumulator):
    ar = Arithmetic(fmt, accumulator)
    return ar.sub(online_lse(ar, x), _pick(x, targets))


def online_lse(ar: Arithmetic, x):
    """The online pass's log-sum-exp m + log s per row (what a fused kernel saves)."""
    m, s = _online_ms(ar, x)
    return ar.add(m, ar.log(s))


def _online_ms(ar: Arithmetic, x):
    """The online softmax's running (max, sum) after the last block."""
    if _online_vectorisable(ar) and x.shape[1] > 0:
        return _online_ms_blocks(ar, x)
    return _online_ms_loop(ar, x)


def _online_vectorisable(ar: Arithmetic) -> bool:
    """The block-at-once form gives the same bits: every operation is elementwise and rounds
    to nearest (so no rounding depends on the operation's sequence number, as stochastic
    rounding's bits do), and the elementary functions are the correctly rounded ones (libm's
    may depend on where an element falls in numpy's SIMD lanes)."""
    return (ar.fmt.rounding == NEAREST and ar.acc_fmt.rounding == NEAREST
            and ar.elementary == "correct")


def _online_ms_blocks(ar: Arithmetic, x):
    """`_online_ms_loop` with each step's elementwise work done for every block at once: the
    block maxima and sums (the sums sequential within each block, as there), the running
    maxima (a running max is exact), both scales; only s's recurrence stays a loop over blocks,
    the same two rounded operations per step."""
    n, c = x.shape
    if _fuse(ar, x):
        mb, sb, _ = _fused(ar, x, lambda rows: _online_block_sums(ar, x[rows]) + (None,),
                           block=ONLINE_BLOCK)
    else:
        mb, sb = _online_block_sums(ar, x)
    new = np.maximum.accumulate(np.concatenate([np.full((n, 1), -np.inf), mb], axis=1),
                                axis=1)
    old, new = new[:, :-1], new[:, 1:]
    with np.errstate(invalid="ignore"):  # -inf - -inf on the first block: its scale is 0
        scale_old = np.where(old == -np.inf, 0.0, ar.exp_sub(old, new))
    term = ar.round(sb * ar.exp_sub(mb, new))
    fmt = ar.fmt
    if fmt.precision <= 25 and fmt.overflow == "inf":  # one rounding of each float64 result
        ar.ops += 2 * mb.shape[1]                        # as the loop below counts them
        s = fastround.scaled_sum_compiled(scale_old, term, fmt.precision, fmt.emin,
                                          fmt.max_finite)
        return new[:, -1], s
    s = np.zeros(n)
    for b in range(mb.shape[1]):
        s = ar.add(ar.round(s * scale_old[:, b]), term[:, b])
    return new[:, -1], s


def _online_block_sums(ar: Arithmetic, x):
    """(block maxima mb, block sums sb), (N, blocks) each, of `_online_ms_blocks` by the
    unfused steps (the definition numerics.fastshift's block pass matches)."""
    n, c = x.shape
    full = c // ONLINE_BLOCK * ONLINE_BLOCK
    mbs, sbs = [], []
    if full:
        xb = x[:, :full].reshape(n, -1, ONLINE_BLOCK)
        mb = np.max(xb, axis=2)
        mbs.append(mb)
        eb = _share(ar, x, "online_block_exp", lambda: ar.exp_sub(xb, mb[:, :, None]))
        sbs.append(ar.sum(eb))                 # (shared across accumulators: shared_steps)
    if full < c:
        mb, eb = _shifted_exp(ar, x[:, full:])
        mbs.append(mb[:, None])
        sbs.append(ar.sum(eb)[:, None])
    return np.concatenate(mbs, axis=1), np.concatenate(sbs, axis=1)


def _online_ms_loop(ar: Arithmetic, x):
    """The online pass, block by block (the definition `_online_ms_blocks` matches)."""
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
    return m, s


@register("torch", "torch.nn.functional.cross_entropy(x, t, reduction='none')",
          "PyTorch on the CPU in the format's torch dtype; its own reduction (exp and sum in float32 "
          "lanes, the sum rounded to the format, for 16-bit formats)",
          family="library", shifted=True, color="#009E73", own_reduction=True,
          mean_fn=lambda x, t, fmt: _torch_ce(x, t, fmt, "mean"),
          mean_of_losses=lambda losses, fmt: _torch_mean_of_losses(losses, fmt),
          unsupported=lambda fmt: torch_unsupported(fmt))
def torch_ce(x, targets, fmt, accumulator=None):
    return _torch_ce(x, targets, fmt, "none")


_TORCH_PROBE: dict = {}


def torch_unsupported(fmt) -> str | None:
    """Why torch's CPU cross_entropy cannot run in `fmt` (None if it can): no torch dtype
    (tf32, custom formats), a rounding torch does not do (stochastic, saturating), or no CPU
    kernel for the dtype (float8: probed once per dtype)."""
    if fmt.torch_dtype is None:
        return "torch has no dtype for it"
    if fmt.rounding != "nearest" or not fmt.native:
        return f"torch rounds to nearest in {fmt.torch_dtype} (not {fmt.name}'s arithmetic)"
    if fmt.torch_dtype not in _TORCH_PROBE:
        try:
            torch.nn.functional.cross_entropy(torch.zeros((1, 2), dtype=fmt.torch_dtype),
                                              torch.zeros(1, dtype=torch.int64))
            _TORCH_PROBE[fmt.torch_dtype] = None
        except (NotImplementedError, RuntimeError) as exc:
            _TORCH_PROBE[fmt.torch_dtype] = (f"torch {torch.__version__} has no CPU kernel "
                                             f"for {fmt.torch_dtype} "
                                             f"({str(exc).splitlines()[0][:80]})")
    return _TORCH_PROBE[fmt.torch_dtype]


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


# Training options (numerics.options, numerics.optioned): each method's terms, -log p of every
# class and its log-sum-exp, formed with the same rounded operations as its forward above (so
# the target's column is its plain loss, bit for bit), and the options it can express.
def _naive_terms(ar: Arithmetic, y) -> Terms:
    e = ar.exp(y)
    s = ar.sum(e)[:, None]
    return Terms(-ar.log(ar.div(e, s)), ar.log(s[:, 0]))


def _softmax_terms(eps: float | None):
    def terms(ar: Arithmetic, y) -> Terms:
        _, e = _shifted_exp(ar, y)
        p = ar.div(e, ar.sum(e)[:, None])
        return Terms(-ar.log(p if eps is None else ar.add(p, ar.round(eps))), None)
    return terms


def _logsumexp_terms(ar: Arithmetic, y) -> Terms:
    a, e = _shifted_exp(ar, y)
    lse = ar.add(a, ar.log(ar.sum(e)))
    return Terms(ar.sub(lse[:, None], y), lse)


def _log1p_terms(ar: Arithmetic, y) -> Terms:
    a, e = _shifted_exp(ar, y)
    k = np.argmax(y, axis=1)
    e = e.copy()
    e[np.arange(len(k)), k] = 0.0
    lse = ar.add(a, ar.log1p(ar.sum(e)))
    return Terms(ar.sub(lse[:, None], y), lse)


def _log_softmax_terms(ar: Arithmetic, y) -> Terms:
    a, e = _shifted_exp(ar, y)
    ls = ar.log(ar.sum(e))
    return Terms(-ar.sub(ar.sub(y, a[:, None]), ls[:, None]), ar.add(a, ls))


def _online_terms(ar: Arithmetic, y) -> Terms:
    m, s = _online_ms(ar, y)
    lse = ar.add(m, ar.log(s))
    return Terms(ar.sub(lse[:, None], y), lse, fused=True)


def _torch_with_options(x, targets, fmt, accumulator, options, reduction):
    return torch_options(x, targets, fmt, options, reduction)


def _declare_options(name: str, terms, unsupported: tuple = ()) -> None:
    def with_options(x, targets, fmt, accumulator, options, reduction, _terms=terms):
        return options_forward(_terms, x, targets, fmt, accumulator, options, reduction)
    fn = _torch_with_options if terms is None else with_options
    METHODS[name] = replace(METHODS[name], with_options=fn,
                            options=frozenset(OPTION_NAMES) - set(unsupported))


_declare_options("naive", _naive_terms)
_declare_options("softmax_eps", _softmax_terms(SOFTMAX_EPS), ("z_loss",))
_declare_options("softmax_log", _softmax_terms(None), ("z_loss",))
_declare_options("logsumexp", _logsumexp_terms)
_declare_options("log1p", _log1p_terms)
_declare_options("log_softmax", _log_softmax_terms)
_declare_options("online", _online_terms)
_declare_options("torch", None)
