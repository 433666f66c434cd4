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
"""
from __future__ import annotations

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

from ..errors import InputError
from ..numerics.arithmetic import accumulators_for
from ..numerics.formats import FORMATS, Format, get_format
from ..numerics.methods import METHODS, batch_mean
from ..numerics.metrics import errors as rel_errors
from ..numerics.options import LossOptions
from ..reporting.tables import write_csv
from ..truth.options import certified_option_losses
from ..truth.reference import reference_loss, reference_mean, to_double_double

__all__ = ["add_arguments", "cli", "check_implementation", "load_function", "battery",
           "CheckResult", "DEFAULT_MAX_ULP", "SCALES"]

DEFAULT_MAX_ULP = 8.0
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
            v = torch.from_numpy(w).to(fmt.torch_dtype) if kind == "torch" else fmt.cast(w)
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
    if isinstance(out, torch.Tensor):
        return out.detach().to("cpu", torch.float64).numpy().copy()
    a = np.asarray(out)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype.kind == "V"
                                 or a.dtype.kind == "f"):
        try:
            return a.astype(np.float64)
        except (TypeError, ValueError):
            raise _CallError(f"returned {type(out).__name__}, not numbers") from None
    return a.astype(np.float64)


def _inputs(kind: str, xr: np.ndarray, t: np.ndarray, fmt: Format):
    if t.ndim == 2:  # probability targets, in the logits' format
        tp = fmt.round(t)
        if kind == "torch":
            dt = fmt.torch_dtype
            return torch.from_numpy(xr).to(dt), torch.from_numpy(tp).to(dt)
        return fmt.cast(xr), fmt.cast(tp)
    if kind == "torch":
        return torch.from_numpy(xr).to(fmt.torch_dtype), torch.from_numpy(t.astype(np.int64))
    return fmt.cast(xr), t.astype(np.int64)


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
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs((c - hi) - lo)
        rt = fmt.round(hi)  # a true loss past the format's range rounds to inf
        diff = np.where(np.isinf(c) & (c == rt), 0.0, diff)
        unit = fmt.ulp(np.maximum(np.abs(hi), 1.0))
        ulp = np.where(np.isnan(diff), np.inf, diff / unit)
        bits = np.minimum(np.log2(1.0 + ulp), 8.0 * fmt.dtype.itemsize)
    return ulp, bits


@dataclass
class CheckResult:
    """The outcome of `check_implementation`.

    verdict: one row per (implementation, format): worst ULP and bits, the worst case, the
             largest working scale, failing cases, PASS/FAIL.
    details: one row per (implementation, format, case, row) with computed value and truth.
    """
    name: str
    kind: str
    output: str
    max_ulp: float | None
    max_bits: float | None
    relative: bool
    verdict: pd.DataFrame
    details: pd.DataFrame

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
        lines.append(v.to_string(index=False))
        lines.append("")
        lines.append(f"verdict: {'PASS' if self.passed else 'FAIL'} ({self.name})")
        return "\n".join(lines)


def _truths(cases, fmt: Format, options: LossOptions | None = None):
    out = []
    for case in cases:
        with np.errstate(over="ignore", invalid="ignore"):
            xr = fmt.round(case.logits)
        finite_in = np.isfinite(case.logits)
        if not np.array_equal(np.isfinite(xr), finite_in):
            out.append(None)  # the logits are out of the format's range
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


def _run_one(fn, kind, output, xr, t, fmt, options=None, names=()):
    """Per-row or mean output of `fn` on one case as float64, or an exception message."""
    xs, ts = _inputs(kind, xr, t, fmt)
    kw = _option_kwargs(names, options, kind, fmt) if names else None
    try:
        v = _as_float64(_quiet_call(fn, xs, ts, kw))
    except _CallError as exc:
        return None, str(exc)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    want = (1,) if output == "mean" else (len(t),)
    if v.size != want[0] or (output == "per-row" and v.shape != want):
        return None, f"returned shape {v.shape}, expected {'a scalar' if output == 'mean' else want}"
    return v.reshape(want), None


def _baselines(output: str, options: LossOptions | None = None):
    if options is not None:
        red = "sum" if options.reduction == "sum" else "mean"

        def with_options(method):
            def run(xr, t, fmt):
                m, o = METHODS[method], _options_in(options, fmt)
                acc = accumulators_for(fmt)[-1]
                tt = fmt.round(t) if options.probabilities else t
                losses = m(xr, tt, fmt, acc, options=o)
                if output == "mean":
                    return np.array([m.reduce(losses, fmt, acc, xr, tt, o, red)])
                return losses
            return run
        return {"torch": with_options("torch"), "logsumexp": with_options("logsumexp")}

    def torch_fn(xr, t, fmt):
        if output == "mean":
            return np.array([METHODS["torch"].batch_mean(None, fmt, x=xr, targets=t)])
        return METHODS["torch"](xr, t, fmt)

    def lse_fn(xr, t, fmt):
        acc = accumulators_for(fmt)[-1]  # float32 sums for the narrower formats
        losses = METHODS["logsumexp"](xr, t, fmt, acc)
        if output == "mean":
            return np.array([batch_mean(losses, fmt, acc)])
        return losses
    return {"torch": torch_fn, "logsumexp": lse_fn}


def check_implementation(fn: Callable, name: str | None = None,
                         formats: Iterable[str] = tuple(FORMATS),
                         max_ulp: float | None = DEFAULT_MAX_ULP, max_bits: float | None = None,
                         relative: bool = False, seed: int = 0, baselines: bool = True,
                         cases: list[Case] | None = None,
                         options: LossOptions | None = None) -> CheckResult:
    """Run `fn(logits, targets)` over the battery in each format; see the module docstring.

    `options` (a `LossOptions`): `fn` is called as fn(logits, targets, **keywords), the
    options in use under torch's names (`option_keywords`; InputError when its signature
    lacks one), on the battery with the last row of each case ignored (or with probability
    targets), against the certified truth under the options; with `weight`, only the cases
    with its class count, plus one case of that count."""
    name = name or getattr(fn, "__module__", "") + ":" + getattr(fn, "__qualname__", repr(fn))
    kind, output = detect(fn, options)
    names = option_keywords(fn, options) if options is not None else ()
    fmts = [get_format(f) for f in formats]
    cases = battery(seed) if cases is None else cases
    if options is not None:
        if options.weight is not None:
            c = len(options.weight)
            rng = np.random.default_rng(seed)
            cases = cases + [Case("classes", f"{c} classes (weight)",
                                  3.0 * rng.standard_normal((8, c)), rng.integers(0, c, 8))]
        cases = [k for k in (_with_options(case, options) for case in cases) if k is not None]
    impls: dict[str, Callable] = {name: None}
    if baselines:
        impls.update(_baselines(output, options))
    rows = []
    for fmt in fmts:
        truths = _truths(cases, fmt, options)
        for case, tr in zip(cases, truths):
            if tr is None:
                continue
            xr, hi, lo, mhi, mlo = tr
            th, tl = (mhi, mlo) if output == "mean" else (hi, lo)
            for impl, base in impls.items():
                if base is None:
                    v, err = _run_one(fn, kind, output, xr, case.targets, fmt, options, names)
                else:
                    with np.errstate(all="ignore"):
                        v, err = base(xr, case.targets, fmt), None
                if v is None:
                    v = np.full(len(th), np.nan)
                    ulp, bits = np.full(len(th), np.inf), np.full(len(th), 8.0 * fmt.dtype.itemsize)
                else:
                    ulp, bits = _mixed_errors(v, th, tl, fmt, relative)
                for i in range(len(th)):
                    rows.append({"implementation": impl, "format": fmt.name,
                                 "family": case.family, "case": case.name, "scale": case.scale,
                                 "row": i if output == "per-row" else -1,
                                 "computed": float(v[i]), "truth": float(th[i]),
                                 "ulp": float(ulp[i]), "bits": float(bits[i]),
                                 "error": err or ""})
    details = pd.DataFrame(rows)
    ulp_fail = details["ulp"] > max_ulp if max_ulp is not None else False
    bits_fail = details["bits"] > max_bits if max_bits is not None else False
    details["fails"] = ulp_fail | bits_fail
    verdict = _verdict(details, impls, fmts)
    return CheckResult(name, kind, output, max_ulp, max_bits, relative, verdict, details)


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
                                  "(logits, targets) and returning the mean or per-row losses")
    p.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS),
                   metavar="FORMAT", help=f"formats to run in (default: {' '.join(FORMATS)})")
    p.add_argument("--max-ulp", type=float, default=DEFAULT_MAX_ULP,
                   help=f"fail a case whose error passes this many ULPs (default "
                        f"{DEFAULT_MAX_ULP:g}; a negative value turns it off)")
    p.add_argument("--max-bits", type=float, default=None,
                   help="fail a case whose error passes this many bits (default: off)")
    p.add_argument("--relative", action="store_true",
                   help="count ULPs at the truth itself, even for losses far below 1")
    p.add_argument("--seed", type=int, default=0, help="seed of the battery's random logits")
    p.add_argument("--details", type=Path, default=None,
                   help="write every case's computed value, truth and error to this CSV")
    o = p.add_argument_group("training options (passed to the function as keywords, torch's "
                             "names; see precision_lab.numerics.options)")
    o.add_argument("--label-smoothing", type=float, default=None, metavar="EPS")
    o.add_argument("--z-loss", type=float, default=None, metavar="COEF")
    o.add_argument("--softcap", type=float, default=None, metavar="C")
    o.add_argument("--ignore-index", type=int, default=None, metavar="I")
    o.add_argument("--reduction", choices=["mean", "sum"], default=None)
    o.add_argument("--probabilities", action="store_true",
                   help="call it with (N, C) probability targets")


def options_from_args(args) -> LossOptions | None:
    """The LossOptions the CLI flags ask for, or None when none is given."""
    kw = {k: getattr(args, k, None) for k in ("label_smoothing", "z_loss", "softcap",
                                               "ignore_index", "reduction")}
    kw = {k: v for k, v in kw.items() if v is not None}
    if getattr(args, "probabilities", False):
        kw["probabilities"] = True
    return LossOptions(**kw) if kw else None


def cli(args) -> int:
    fn = load_function(args.target)
    max_ulp = None if args.max_ulp is not None and args.max_ulp < 0 else args.max_ulp
    res = check_implementation(fn, name=args.target, formats=args.formats, max_ulp=max_ulp,
                               max_bits=args.max_bits, relative=args.relative, seed=args.seed,
                               options=options_from_args(args))
    print(res.to_text())
    if args.details is not None:
        write_csv(res.details, args.details)
    return res.exit_code
