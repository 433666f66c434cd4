"""`precision-lab check MODULE:FUNCTION`: a user's cross-entropy implementation against the
certified truth, beside PyTorch and the stable log-sum-exp formula.

The function takes (logits, targets) and returns the batch-mean loss or the per-row losses; the
checker finds out which, and whether it wants numpy arrays or torch tensors, by calling it once.
It then runs it in every format, the logits given in that format's dtype (numpy float16,
ml_dtypes bfloat16, float32, float64, or the torch dtypes), on a standard battery:

  scale     normal logits rescaled so that the largest |logit| is 2**-2 ... 2**20 (10 classes)
  classes   normal logits, 2 to 1000 classes
  adversarial rows: huge logits (1000 + z), ties, confidently correct ([L, 0, 0, 0] at 0),
            confidently wrong ([L, 0, 0, 0] at 1), a masked -inf class

Each output is compared with the certified loss of the logits as rounded into the format (so
input rounding is not counted). The error is counted in ULPs of the format at max(|truth|, 1):
relative above a loss of 1, absolute (in ULPs of 1) below it, because a loss is summed into a
mean of O(1) terms and an error far below ulp(1) cannot change it; bits = log2(1 + ULPs).
`relative=True` counts ULPs at the truth itself (metrics.errors), where even PyTorch loses every
bit on a confidently correct row (1 + tiny rounds to 1). A non-finite result where the truth is
finite, a wrong shape or an exception counts as infinitely many ULPs (an infinity where the
true loss itself rounds to infinity in the format counts as exact).

A case fails when its error passes `max_ulp` (or `max_bits`); an implementation passes a format
when no case fails. `largest working scale` is the largest |logit| of the scale family below
which every scale works. The CLI exits 1 when the user's function fails in any format.

Isolation (`analysis.isolation`): the truths and the baselines (torch, logsumexp) are computed
first; then the user's function is imported and run in a child process, each call on fresh
copies of the inputs. Every way it can end other than returning numbers fails the case: an
exception, sys.exit(), os._exit() or a crash (the case fails, a fresh process runs the rest), a
call running past `timeout` seconds (the case and the cases not yet run fail), an output that
is not real numbers (complex, strings, booleans, objects, masked arrays) or has the wrong shape.
An import or first call that ends any of these ways is an InputError (exit 2).
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import math
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from ..data.inputs import check_array
from ..errors import InputError
from ..numerics.arithmetic import accumulators_for
from ..numerics.formats import STANDARD_FORMATS, Format, get_format
from ..numerics.methods import METHODS, batch_mean
from ..numerics.metrics import errors as rel_errors
from ..numerics.metrics import ulps_at_max1
from ..numerics.options import LossOptions
from ..reporting.tables import write_csv
from ..running.storage import check_writable_dir
from ..truth.options import certified_option_losses
from ..truth.reference import reference_loss, reference_mean, to_double_double
from .implementations import Implementation, get_implementation
from .isolation import run_isolated
from .option_args import add_option_arguments, options_from_args

__all__ = ["add_arguments", "cli", "check_implementation", "load_function", "battery",
           "CheckResult", "DEFAULT_MAX_ULP", "DEFAULT_TIMEOUT", "SCALES"]

DEFAULT_MAX_ULP = 8.0
DEFAULT_TIMEOUT = 60.0
SCALES = tuple(2.0 ** k for k in range(-2, 21))
CLASS_COUNTS = (2, 10, 100, 1000)


@dataclass(frozen=True)
class Case:
    family: str      # scale | classes | adversarial
    name: str
    logits: np.ndarray = field(repr=False)
    targets: np.ndarray = field(repr=False)
    scale: float = math.nan


def _num(s: float) -> str:
    return f"2^{int(math.log2(s))}" if s >= 1024 and math.log2(s).is_integer() else f"{s:g}"


def battery(seed: int = 0) -> list[Case]:
    """The standard cases, float64 logits (rounded into each format by the checker)."""
    rng = np.random.default_rng(seed)
    cases = []
    z = rng.standard_normal((16, 10))
    z /= np.abs(z).max()
    t = rng.integers(0, 10, size=16)
    for s in SCALES:
        cases.append(Case("scale", f"scale {_num(s)}", s * z, t, s))
    for c in CLASS_COUNTS:
        n = 8
        cases.append(Case("classes", f"{c} classes", 3.0 * rng.standard_normal((n, c)),
                          rng.integers(0, c, size=n)))
    z4 = rng.standard_normal((4, 10))
    cases.append(Case("adversarial", "huge logits 1000 + z", 1000.0 + z4,
                      rng.integers(0, 10, size=4)))
    ties = np.array([[0.0, 0, 0, 0], [50.0, 50, 50, 50], [3.0, 3, 0, 0], [-7.0, -7, -7, 2]])
    cases.append(Case("adversarial", "ties", ties, np.array([2, 0, 1, 0])))
    big = np.array([10.0, 20.0, 40.0])
    rows = np.zeros((3, 4))
    rows[:, 0] = big
    cases.append(Case("adversarial", "confidently correct [L,0,0,0] at 0", rows,
                      np.zeros(3, dtype=np.int64)))
    cases.append(Case("adversarial", "confidently wrong [L,0,0,0] at 1", rows.copy(),
                      np.ones(3, dtype=np.int64)))
    masked = np.array([[1.5, -0.5, 0.25, -np.inf], [2.0, 1.0, -np.inf, -np.inf],
                       [-np.inf, 0.0, 3.0, 1.0]])
    cases.append(Case("adversarial", "masked -inf class", masked, np.array([1, 0, 2])))
    return cases


# ---------------------------------------------------------------------------------------------
# Loading and calling the user's function

def load_function(spec: str) -> Callable:
    """MODULE:FUNCTION (an importable module, or a path to a .py file) to the function."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise InputError(f"expected MODULE:FUNCTION (e.g. precision_lab.examples.blog:"
                         f"cross_entropy), got {spec!r}")
    modname, fname = spec.split(":")
    if not modname or not fname:
        raise InputError(f"expected MODULE:FUNCTION, got {spec!r}")
    if modname == "implementation":  # a registered library adapter (analysis.implementations)
        return get_implementation(fname)
    try:
        if modname.endswith(".py"):
            path = Path(modname)
            if not path.is_file():
                raise InputError(f"no such file: {path}")
            ms = importlib.util.spec_from_file_location(f"_checked_{path.stem}", path)
            module = importlib.util.module_from_spec(ms)
            ms.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # the user's own modules, as `python -m`
            module = importlib.import_module(modname)
    except InputError:
        raise
    except ImportError as exc:
        raise InputError(f"cannot import module {modname!r}: {exc}") from None
    except Exception as exc:  # the user's module raised while importing
        raise InputError(f"importing {modname!r} raised {type(exc).__name__}: {exc}") from None
    fn = getattr(module, fname, None)
    if fn is None:
        raise InputError(f"module {modname!r} has no attribute {fname!r}")
    if not callable(fn):
        raise InputError(f"{spec} is not callable (it is a {type(fn).__name__})")
    return fn


class _CallError(Exception):
    pass


def _quiet_call(fn, x, t, kwargs=None):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return fn(x, t, **(kwargs or {}))


# ---------------------------------------------------------------------------------------------
# Training options (numerics.options): passed to the user's function as torch's keywords

def option_keywords(fn, options: LossOptions) -> list[str]:
    """The keywords `fn` is called with for `options` (torch's names: weight, ignore_index,
    reduction, label_smoothing; and z_loss, softcap): every option in use. InputError when
    the signature does not accept one of them (a **kwargs parameter accepts all)."""
    names = sorted(options.used - {"probabilities"})
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return names  # no signature to read (a builtin): try the call
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return names
    missing = [n for n in names if n not in params]
    if missing:
        raise InputError(f"the function does not accept the option(s) {', '.join(missing)} "
                         f"(its parameters: {', '.join(params)})")
    return names


def _option_kwargs(names, options: LossOptions, kind: str, fmt: Format) -> dict:
    out = {}
    for n in names:
        v = getattr(options, n)
        if n == "weight":
            w = fmt.round(options.weight_array)
            v = (torch.from_numpy(w).to(fmt.torch_dtype or torch.float64) if kind == "torch"
                 else w if fmt.dtype is None else fmt.cast(w))
        out[n] = v
    return out


def _with_options(case: Case, options: LossOptions) -> Case | None:
    """The case under `options`: probability targets (0.7 on the class, 0.3 spread), or the
    last of several rows ignored; None where `weight` has another class count."""
    n, c = case.logits.shape
    if options.weight is not None and len(options.weight) != c:
        return None
    if options.probabilities:
        p = np.full((n, c), 0.3 / c)
        p[np.arange(n), case.targets] += 0.7
        return Case(case.family, case.name, case.logits, p, case.scale)
    t = case.targets.copy()
    if n > 1:
        t[-1] = options.ignore_index
    return Case(case.family, case.name, case.logits, t, case.scale)


def _as_float64(out) -> np.ndarray:
    """The function's output as float64, or _CallError: complex, strings, booleans, objects
    and masked arrays are not a loss (`check_array`)."""
    try:
        return np.array(check_array(out, "output"), dtype=np.float64)
    except InputError as exc:
        raise _CallError(f"returned {type(out).__name__}: {exc}") from None


def _inputs(kind: str, xr: np.ndarray, t: np.ndarray, fmt: Format):
    """The logits in fmt's dtype; a format without one (tf32, custom) as float64 carrying
    its values."""
    if t.ndim == 2:  # probability targets, in the logits' format
        tp = fmt.round(t)
        if kind == "torch":
            dt = fmt.torch_dtype or torch.float64
            return torch.from_numpy(xr).to(dt), torch.from_numpy(tp).to(dt)
        if fmt.dtype is None:
            return xr.copy(), tp
        return fmt.cast(xr), fmt.cast(tp)
    if kind == "torch":
        return (torch.from_numpy(xr).to(fmt.torch_dtype or torch.float64),
                torch.from_numpy(t.astype(np.int64)))
    return (xr.copy() if fmt.dtype is None else fmt.cast(xr)), t.astype(np.int64)


def detect(fn, options: LossOptions | None = None) -> tuple[str, str]:
    """(kind, output): kind 'numpy' or 'torch', output 'mean' or 'per-row'."""
    rng = np.random.default_rng(12345)
    x = rng.standard_normal((5, 4))
    t = rng.integers(0, 4, size=5)
    names = [] if options is None else option_keywords(fn, options)
    if options is not None:
        case = _with_options(Case("detect", "detect", x, t), options)
        if case is None:  # the weights' class count
            x = rng.standard_normal((5, len(options.weight)))
            case = _with_options(Case("detect", "detect", x, t % x.shape[1]), options)
        t = case.targets
    f64 = get_format("float64")
    kind, out, numpy_exc = "numpy", None, None
    try:
        out = _quiet_call(fn, x.copy(), t.copy(), _option_kwargs(names, options, "numpy", f64)
                          if names else None)
        if isinstance(out, torch.Tensor):
            kind = "torch"
    except Exception as exc:  # not a numpy function: try torch
        numpy_exc, kind = exc, "torch"
    if kind == "torch":
        try:
            out = _quiet_call(fn, torch.from_numpy(x.copy()), torch.from_numpy(t.copy()),
                              _option_kwargs(names, options, "torch", f64) if names else None)
        except Exception as exc:
            raise InputError(
                f"the function raised with numpy arrays ({type(numpy_exc).__name__}: {numpy_exc})"
                f" and with torch tensors ({type(exc).__name__}: {exc}); it must take "
                f"(logits (N, C), targets (N,))") from None
    try:
        v = _as_float64(out)
    except _CallError as exc:
        raise InputError(f"the function {exc}; it must return the mean loss or per-row losses"
                         ) from None
    if v.size == 1 and v.ndim <= 1:
        return kind, "mean"
    if v.shape == (len(t),):
        return kind, "per-row"
    raise InputError(f"the function returned shape {v.shape} for 5 rows; expected a scalar "
                     f"(the mean loss) or shape (5,) (per-row losses)")


# ---------------------------------------------------------------------------------------------
# Errors

def _mixed_errors(c, hi, lo, fmt: Format, relative: bool) -> tuple[np.ndarray, np.ndarray]:
    """(ulp, bits) of computed c against truth hi + lo; see the module docstring."""
    c, hi, lo = (np.asarray(v, dtype=np.float64) for v in (c, hi, lo))
    if relative:
        e = rel_errors(c, hi, lo, fmt)
        ulp = e["ulp_err"].to_numpy().copy()
        ulp[~np.isfinite(c) & (c != hi)] = np.inf
        ulp[np.isnan(c)] = np.inf
        return ulp, e["bits_err"].to_numpy()
    ulp = ulps_at_max1(c, hi, fmt, lo=lo)
    bits = np.minimum(np.log2(1.0 + ulp), float(fmt.bits))
    return ulp, bits


@dataclass
class CheckResult:
    """The outcome of `check_implementation`.

    verdict: one row per (implementation, format): worst ULP and bits, the worst case, the
             largest working scale, failing cases, and PASS/FAIL for the function checked;
             the references (torch, logsumexp) have the verdict "reference": they are shown
             beside it for comparison and judged by nothing.
    details: one row per (implementation, format, case, row) with the case's inputs (the
             logits as rounded into the format, the target), computed value and truth.
    skipped: one row per (format, case) not run, with the reason (logits the format cannot
             represent), so every format runs the same battery or says why not.
    """
    name: str
    kind: str
    output: str
    max_ulp: float | None
    max_bits: float | None
    relative: bool
    verdict: pd.DataFrame
    details: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["format", "case", "reason"]))

    @property
    def passed(self) -> bool:
        v = self.verdict
        return bool((v.loc[v["implementation"] == self.name, "verdict"] == "PASS").all())

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_text(self) -> str:
        thr = []
        if self.max_ulp is not None:
            thr.append(f"{self.max_ulp:g} ULPs")
        if self.max_bits is not None:
            thr.append(f"{self.max_bits:g} bits")
        unit = "at the truth" if self.relative else "at max(|truth|, 1)"
        lines = [f"precision-lab check {self.name} ({self.kind}, returns the "
                 f"{'batch-mean loss' if self.output == 'mean' else 'per-row losses'})",
                 f"error against the certified truth of the inputs rounded into each "
                 f"format; ULPs of the format {unit}; a case fails above "
                 f"{' or '.join(thr) or 'no threshold'}",
                 ""]
        v = self.verdict.copy()
        for col in ("max ULP", "max bits"):
            v[col] = v[col].map(lambda a: "inf" if a == np.inf else f"{a:.3g}")
        mine = v[v["verdict"] != "reference"]
        refs = v[v["verdict"] == "reference"]
        n_cases = self.details.groupby("format", sort=False)["case"].nunique()
        counts = ", ".join(f"{k}: {n} cases" for k, n in n_cases.items())
        lines.append(f"{self.name}, judged ({counts}):")
        lines.append(mine.to_string(index=False))
        if not refs.empty:
            lines += ["", "references, for comparison only (not judged; no verdict of their "
                          "own):",
                      refs.drop(columns=["failing cases", "verdict"]).to_string(index=False)]
        if not self.skipped.empty:
            lines += ["", "cases a format cannot represent (not run there):"]
            for (fmt, reason), g in self.skipped.groupby(["format", "reason"], sort=False):
                lines.append(f"  {fmt}: {', '.join(g['case'])}: {reason}")
        lines.append("")
        lines.append(f"verdict: {'PASS' if self.passed else 'FAIL'} ({self.name})")
        return "\n".join(lines)


def _truths(cases, fmt: Format, options: LossOptions | None = None):
    out = []
    for case in cases:
        with np.errstate(over="ignore", invalid="ignore"):
            xr = fmt.round(case.logits)
        finite_in = np.isfinite(case.logits)
        if not np.array_equal(np.isfinite(xr), finite_in):  # out of the format's range
            big = float(np.max(np.abs(case.logits[finite_in])))
            out.append(f"its logits (|x| up to {big:.3g}) overflow {fmt.name} (largest "
                       f"finite {fmt.max_finite:.5g})")
            continue
        if options is not None:
            o = _options_in(options, fmt)
            t = fmt.round(case.targets) if options.probabilities else case.targets
            truth = certified_option_losses(xr, t, o)
            hi, lo = to_double_double(truth.rows)
            mhi, mlo = to_double_double([truth.total if options.reduction == "sum"
                                         else truth.mean])
            out.append((xr, hi, lo, mhi, mlo))
            continue
        truth = reference_loss(xr, case.targets)
        hi, lo = to_double_double(truth)
        mhi, mlo = to_double_double([reference_mean(truth)])
        out.append((xr, hi, lo, mhi, mlo))
    return out


def _options_in(options: LossOptions, fmt: Format) -> LossOptions:
    """The options with their weights rounded into the format (as the user's function gets
    them)."""
    if options.weight is None:
        return options
    return replace(options, weight=tuple(fmt.round(options.weight_array).tolist()))


def _run_one(fn, kind, output, job, options=None, names=()):
    """In the child: per-row or mean output of `fn` on one job (format name, rounded logits,
    targets) as float64, or (None, why not). Each call gets fresh inputs."""
    fmt_name, xr, t = job
    fmt = get_format(fmt_name)
    xs, ts = _inputs(kind, xr.copy(), t.copy(), fmt)
    kw = _option_kwargs(names, options, kind, fmt) if names else None
    try:
        v = _as_float64(_quiet_call(fn, xs, ts, kw))
    except _CallError as exc:
        return None, str(exc)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    want = (1,) if output == "mean" else (len(t),)
    if v.size != want[0] or (output == "per-row" and v.shape != want):
        expected = "a scalar" if output == "mean" else want
        return None, f"returned shape {v.shape}, expected {expected}"
    return v.reshape(want), None


def _prepare(target, options=None):
    """In the child: load the function (a MODULE:FUNCTION spec, or the function itself),
    find its kind and output (and the option keywords it takes), and return ((kind, output),
    the per-job call).

    torch runs with one intra-op thread here: a forked child whose parent's OpenMP pool has
    run deadlocks in its first parallel region otherwise. No result changes: torch splits a
    row's log-softmax over rows, and the battery's batches are far below its parallel grain."""
    torch.set_num_threads(1)
    fn = load_function(target) if isinstance(target, str) else target
    kind, output = detect(fn, options)
    names = option_keywords(fn, options) if options is not None else ()
    return (kind, output), functools.partial(_run_one, fn, kind, output, options=options,
                                             names=names)


def _baselines(xr, t, fmt, options: LossOptions | None = None
               ) -> dict[str, dict[str, np.ndarray]]:
    """{reference: {"per-row": losses, "mean": [its reduction]}} of torch and logsumexp, on
    copies (computed before the user's function runs)."""
    with np.errstate(all="ignore"):
        if options is not None:
            red = "sum" if options.reduction == "sum" else "mean"
            out = {}
            for method in ("torch", "logsumexp"):
                m, o = METHODS[method], _options_in(options, fmt)
                acc = accumulators_for(fmt)[-1]
                if not m.runs_in(fmt):
                    continue  # torch has no kernel for this format: no baseline
                tt = fmt.round(t) if options.probabilities else t.copy()
                losses = m(xr.copy(), tt, fmt, acc, options=o)
                out[method] = {"per-row": losses,
                               "mean": np.array([m.reduce(losses, fmt, acc, xr.copy(), tt, o,
                                                          red)])}
            return out
        out = {}
        if METHODS["torch"].runs_in(fmt):  # else no torch baseline in this format
            tl = METHODS["torch"](xr.copy(), t.copy(), fmt)
            tm = METHODS["torch"].batch_mean(None, fmt, x=xr.copy(), targets=t.copy())
            out["torch"] = {"per-row": tl, "mean": np.array([tm])}
        acc = accumulators_for(fmt)[-1]  # float32 sums for the narrower formats
        ll = METHODS["logsumexp"](xr.copy(), t.copy(), fmt, acc)
        lm = batch_mean(ll, fmt, acc)
    out["logsumexp"] = {"per-row": ll, "mean": np.array([lm])}
    return out


def _cell(a: np.ndarray) -> str:
    """Values of one --details cell: numbers by spaces, rows by "; " (exact: repr)."""
    a = np.asarray(a)
    if a.ndim == 1:
        return " ".join(str(int(v)) if a.dtype.kind in "iu" else repr(float(v)) for v in a)
    return "; ".join(_cell(r) for r in a)


def _number(v, what: str, *, positive: bool = False, allow_none: bool = True):
    """A finite number >= 0 (> 0 if `positive`) or None, or InputError naming the option."""
    if v is None and allow_none:
        return None
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{what} must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise InputError(f"{what} must be a finite number {'above' if positive else 'of at least'}"
                         f" 0, got {v!r}")
    return v


def check_implementation(fn, name: str | None = None,
                         formats: Iterable[str] = STANDARD_FORMATS,
                         max_ulp: float | None = DEFAULT_MAX_ULP, max_bits: float | None = None,
                         relative: bool = False, seed: int = 0, baselines: bool = True,
                         cases: list[Case] | None = None,
                         options: LossOptions | None = None,
                         timeout: float | None = DEFAULT_TIMEOUT) -> CheckResult:
    """Run `fn(logits, targets)` over the battery in each format; see the module docstring.

    `fn`: the function, or "MODULE:FUNCTION" (imported in the child process only).
    `timeout`: seconds each call (and the import with the first call) may take; None: no limit.
    `options` (a `LossOptions`): `fn` is called as fn(logits, targets, **keywords), the
    options in use under torch's names (`option_keywords`; InputError when its signature
    lacks one), on the battery with the last row of each case ignored (or with probability
    targets), against the certified truth under the options; with `weight`, only the cases
    with its class count, plus one case of that count."""
    max_ulp = _number(max_ulp, "max_ulp")
    max_bits = _number(max_bits, "max_bits")
    timeout = _number(timeout, "timeout", positive=True)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(formats, str) or not list(formats):
        raise InputError(f"formats must be a non-empty list of format names, got {formats!r}")
    adapter = fn if isinstance(fn, Implementation) else (
        get_implementation(fn.split(":", 1)[1])
        if isinstance(fn, str) and fn.startswith("implementation:") else None)
    if adapter is not None:  # a library adapter: only the formats it supports
        formats = [f for f in formats if f in adapter.formats]
        name = name or f"implementation:{adapter.name}"
    if isinstance(fn, str):
        name = name or fn
    elif callable(fn):
        name = name or getattr(fn, "__module__", "") + ":" + getattr(fn, "__qualname__",
                                                                     repr(fn))
    else:
        raise InputError(f"expected a function or MODULE:FUNCTION, got {type(fn).__name__}")
    fmts = [get_format(f) for f in formats]
    cases = battery(int(seed)) if cases is None else cases
    if options is not None:
        if options.weight is not None:
            c = len(options.weight)
            rng = np.random.default_rng(seed)
            cases = cases + [Case("classes", f"{c} classes (weight)",
                                  3.0 * rng.standard_normal((8, c)), rng.integers(0, c, 8))]
        cases = [k for k in (_with_options(case, options) for case in cases) if k is not None]
    # Everything of ours first: the truths and the baselines, before the user's code runs.
    plan, skipped = [], []
    for fmt in fmts:
        for case, tr in zip(cases, _truths(cases, fmt, options)):
            if isinstance(tr, str):
                skipped.append({"format": fmt.name, "case": case.name, "reason": tr})
            else:
                plan.append((fmt, case, tr, _baselines(tr[0], case.targets, fmt, options)
                             if baselines else {}))
    jobs = [(fmt.name, tr[0], case.targets) for fmt, case, tr, _ in plan]
    (kind, output), outcomes = run_isolated(functools.partial(_prepare, fn, options), jobs,
                                             timeout)
    rows = []
    for (fmt, case, tr, base), outcome in zip(plan, outcomes):
        xr, hi, lo, mhi, mlo = tr
        th, tl = (mhi, mlo) if output == "mean" else (hi, lo)
        v, err = outcome[1] if outcome[0] == "ok" else (None, outcome[1])
        impls = {name: (v, err), **{b: (vals[output], None) for b, vals in base.items()}}
        for impl, (val, err) in impls.items():
            if val is None:
                val = np.full(len(th), np.nan)
                ulp, bits = np.full(len(th), np.inf), np.full(len(th), float(fmt.bits))
            else:
                ulp, bits = _mixed_errors(val, th, tl, fmt, relative)
            for i in range(len(th)):
                sl = slice(i, i + 1) if output == "per-row" else slice(None)
                rows.append({"implementation": impl, "format": fmt.name,
                             "family": case.family, "case": case.name, "scale": case.scale,
                             "row": i if output == "per-row" else -1,
                             "target": _cell(case.targets[sl]),
                             "logits": _cell(xr[sl]),
                             "computed": float(val[i]), "truth": float(th[i]),
                             "ulp": float(ulp[i]), "bits": float(bits[i]),
                             "error": err or ""})
    details = pd.DataFrame(rows)
    ulp_fail = details["ulp"] > max_ulp if max_ulp is not None else False
    bits_fail = details["bits"] > max_bits if max_bits is not None else False
    details["fails"] = ulp_fail | bits_fail | (details["error"] != "")
    details.insert(1, "role", np.where(details["implementation"] == name, "checked",
                                       "reference"))
    impl_names = [name] + (["torch", "logsumexp"] if baselines else [])
    verdict = _verdict(details, impl_names, fmts)
    verdict.loc[verdict["implementation"] != name, "verdict"] = "reference"
    return CheckResult(name, kind, output, max_ulp, max_bits, relative, verdict, details,
                       pd.DataFrame(skipped, columns=["format", "case", "reason"]))


def _verdict(details: pd.DataFrame, impls, fmts) -> pd.DataFrame:
    out = []
    for impl in impls:
        for fmt in fmts:
            d = details[(details["implementation"] == impl) & (details["format"] == fmt.name)]
            if d.empty:
                continue
            per_case = d.groupby("case", sort=False).agg(
                ulp=("ulp", "max"), bits=("bits", "max"), fails=("fails", "any"),
                family=("family", "first"), scale=("scale", "first"), error=("error", "max"))
            worst = per_case.sort_values(["ulp", "bits"], ascending=False).index[0]
            sc = per_case[per_case["family"] == "scale"].sort_values("scale")
            failing = sc[sc["fails"]]
            if sc.empty:
                largest = "n/a"
            elif failing.empty:
                largest = f"{_num(sc['scale'].max())} (all)"
            elif failing["scale"].iloc[0] == sc["scale"].iloc[0]:
                largest = f"< {_num(sc['scale'].iloc[0])}"
            else:
                largest = _num(sc[sc["scale"] < failing["scale"].iloc[0]]["scale"].max())
            nfail = int(per_case["fails"].sum())
            out.append({"implementation": impl, "format": fmt.name,
                        "max ULP": float(per_case["ulp"].max()),
                        "max bits": float(per_case["bits"].max()),
                        "worst case": worst if per_case["ulp"].max() > 0 else "-",
                        "largest working scale": largest,
                        "failing cases": f"{nfail}/{len(per_case)}",
                        "verdict": "FAIL" if nfail else "PASS"})
    return pd.DataFrame(out)


# ---------------------------------------------------------------------------------------------
# CLI

def add_arguments(p) -> None:
    p.add_argument("target", help="MODULE:FUNCTION (or path/to/file.py:FUNCTION) taking "
                                  "(logits, targets) and returning the mean or per-row losses, "
                                  "or implementation:NAME, a library adapter (precision-lab "
                                  "list)")
    p.add_argument("--formats", nargs="+", default=list(STANDARD_FORMATS), metavar="FORMAT",
                   help=f"formats to run in (default: {' '.join(STANDARD_FORMATS)}; any name "
                        f"of `precision-lab list` or p=P,emin=EMIN,emax=EMAX[,round=sr])")
    p.add_argument("--max-ulp", type=_threshold, default=DEFAULT_MAX_ULP,
                   help=f"fail a case whose error passes this many ULPs (default "
                        f"{DEFAULT_MAX_ULP:g}; 'off' turns it off)")
    p.add_argument("--max-bits", type=_threshold, default=None,
                   help="fail a case whose error passes this many bits (default: off)")
    p.add_argument("--relative", action="store_true",
                   help="count ULPs at the truth itself, even for losses far below 1")
    p.add_argument("--seed", type=int, default=0, help="seed of the battery's random logits")
    p.add_argument("--timeout", type=_threshold, default=DEFAULT_TIMEOUT,
                   help=f"seconds each call of the function may take (default "
                        f"{DEFAULT_TIMEOUT:g}; 'off': no limit)")
    p.add_argument("--details", type=Path, default=None,
                   help="write every case's inputs (rounded logits, target), computed value, "
                        "truth and error to this CSV")
    o = add_option_arguments(p, "training options (passed to the function as keywords, "
                             "torch's names; see precision_lab.numerics.options)")
    o.add_argument("--probabilities", action="store_true",
                   help="call it with (N, C) probability targets")


def _threshold(s: str):
    """A command-line number, or None for 'off'; checked by `check_implementation`."""
    if s.strip().lower() in ("off", "none"):
        return None
    try:
        return float(s)
    except ValueError:
        raise InputError(f"expected a number or 'off', got {s!r}") from None


def cli(args) -> int:
    for opt in ("max_ulp", "max_bits", "timeout"):
        v = getattr(args, opt)
        if v is not None and not (math.isfinite(v) and v >= 0 and (v > 0 or opt != "timeout")):
            raise InputError(f"--{opt.replace('_', '-')} must be a finite number "
                             f"{'above' if opt == 'timeout' else 'of at least'} 0 or 'off', "
                             f"got {v:g}")
    if args.seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.details is not None:  # before the check runs, not after
        if args.details.is_dir():
            raise InputError(f"--details {args.details} is a directory; give a file name")
        check_writable_dir(args.details.parent, "--details: the directory")
    res = check_implementation(args.target, name=args.target, formats=args.formats,
                               max_ulp=args.max_ulp, max_bits=args.max_bits,
                               relative=args.relative, seed=args.seed, timeout=args.timeout,
                               options=options_from_args(args))
    print(res.to_text())
    if args.details is not None:
        try:
            write_csv(res.details, args.details)
        except OSError as exc:
            raise InputError(f"--details {args.details}: cannot write it: "
                             f"{exc.strerror or exc}") from None
    return res.exit_code
