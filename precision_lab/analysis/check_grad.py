"""`precision-lab check --grad MODULE:FUNCTION`: a user's torch cross entropy, differentiated
by autograd, against the certified gradient, beside torch's own.

The function takes (logits, targets) as torch tensors and returns the batch-mean loss or the
per-row losses; the checker makes the logits a leaf in each format's torch dtype (on the CPU
or `device`), back-propagates (the mean as is, per-row losses through their sum, so each row's
gradient is its own) and compares `logits.grad` with `reference_grad_dd` of the logits as
rounded into the format (reduction "mean" or "none" to match). The battery is the loss check's
(`check.battery`) plus rows of growing confidence (p_t = 0.9 ... 1 - 1e-6, where the target
entry p_t - 1 cancels).

Error of a row (`row_errors`), in units of what correct rounding into the format may cost: the
larger of ||g_hat - g|| / (u ||g|| + sqrt(C) s) and |g_hat_t - g_t| / (u |g_t| + s), u the
unit roundoff and s the least subnormal (entries below the format's range cost nothing); a
correctly rounded gradient scores at most 1. A non-finite entry, a missing gradient or an
exception counts as infinite. Reported as the loss check's
"ULP" column, bits = log2(1 + that). The verdict, the thresholds (--max-ulp, --max-bits) and the
exit codes are the loss check's: 1 when the user's function fails in any format.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..numerics.formats import STANDARD_FORMATS, Format, get_format
from ..numerics.gradients import torch_grad
from ..numerics.methods import METHODS
from ..reporting.tables import write_csv
from ..truth.grad import reference_grad_dd
from . import check
from .check import DEFAULT_MAX_ULP, Case, CheckResult, battery, load_function
from .evaluate_grad import confident_logits

__all__ = ["check_grad", "grad_battery", "add_arguments", "cli", "dispatch", "CONFIDENCES"]

CONFIDENCES = (0.9, 0.99, 0.999, 0.9999, 1 - 1e-6)


def grad_battery(seed: int = 0) -> list[Case]:
    rng = np.random.default_rng([seed, 1])
    cases = battery(seed)
    for p in CONFIDENCES:
        x, t = confident_logits(4, 10, p, rng)
        cases.append(Case("confidence", f"p_t = {p:.7g}", x, t))
    return cases


class _Failed(Exception):
    pass


def _user_grad(fn, xr, t, fmt: Format, device) -> tuple[np.ndarray, str]:
    """(gradient float64 (N, C), reduction) of fn at the rounded logits xr, by autograd."""
    x = torch.from_numpy(xr).to(device=device, dtype=fmt.torch_dtype).requires_grad_(True)
    tt = torch.from_numpy(t.astype(np.int64)).to(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(x, tt)
            if not isinstance(out, torch.Tensor):
                raise _Failed(f"returned {type(out).__name__}, not a torch tensor")
            if out.numel() == 1:
                reduction = "mean"
                out.reshape(()).backward()
            elif tuple(out.shape) == (len(t),):
                reduction = "none"
                out.sum().backward()
            else:
                raise _Failed(f"returned shape {tuple(out.shape)}; expected a scalar or "
                              f"({len(t)},)")
    except _Failed:
        raise
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0]  # one line (torch's messages run on)
        raise _Failed(f"{type(exc).__name__}: {first}") from None
    if x.grad is None:
        raise _Failed("no gradient reached the logits (is the loss built from them?)")
    return x.grad.detach().to("cpu", torch.float64).numpy(), reduction


def detect_grad(fn) -> None:
    """InputError unless `fn` takes torch tensors and its loss back-propagates to the logits
    (the loss check's `detect`, for --grad)."""
    rng = np.random.default_rng(12345)
    x, t = rng.standard_normal((5, 4)), rng.integers(0, 4, size=5)
    try:
        _user_grad(fn, x, t, get_format("float32"), "cpu")
    except _Failed as exc:
        raise InputError(f"check --grad needs a torch function (logits, targets) -> loss whose "
                         f"autograd reaches the logits; on a float32 tensor it failed: {exc}"
                         ) from None


def row_errors(g, hi, lo, t, fmt: Format) -> np.ndarray:
    """Per row, the error in units of what correct rounding into `fmt` may cost: the larger of
    ||g_hat - g|| / (u ||g|| + sqrt(C) s) and |g_hat_t - g_t| / (u |g_t| + s), s the
    format's least subnormal (a correctly rounded gradient scores at most 1; s, not s/2,
    which is 0 in float64); inf where a computed entry is not finite."""
    g = np.asarray(g, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    r = np.arange(len(t))
    u, s = fmt.unit_roundoff, fmt.min_subnormal
    with np.errstate(invalid="ignore", over="ignore"):
        diff = (g - hi) - lo
        norm = np.linalg.norm(diff, axis=1) / (u * np.linalg.norm(hi, axis=1)
                                               + math.sqrt(g.shape[1]) * s)
        target = np.abs(diff[r, t]) / (u * np.abs(hi[r, t]) + s)
    e = np.maximum(norm, target)
    return np.where(np.isfinite(g).all(axis=1) & np.isfinite(e), e, np.inf)


def check_grad(fn: Callable, name: str | None = None, formats: Iterable[str] = STANDARD_FORMATS,
               max_ulp: float | None = DEFAULT_MAX_ULP, max_bits: float | None = None,
               seed: int = 0, device: str = "cpu", baselines: bool = True) -> CheckResult:
    """Run autograd of `fn(logits, targets)` over the gradient battery in each format."""
    name = name or getattr(fn, "__module__", "") + ":" + getattr(fn, "__qualname__", repr(fn))
    fmts = [get_format(f) for f in formats]
    detect_grad(fn)
    impls = [name] + (["torch"] if baselines else [])
    rows, reductions = [], set()
    for fmt in fmts:
        for case in grad_battery(seed):
            with np.errstate(over="ignore", invalid="ignore"):
                xr = fmt.round(case.logits)
            if not np.array_equal(np.isfinite(xr), np.isfinite(case.logits)):
                continue  # out of the format's range
            t = case.targets
            try:
                g, reduction = _user_grad(fn, xr, t, fmt, device)
                err = ""
            except _Failed as exc:
                g, reduction, err = None, "none", str(exc)
            reductions.add(reduction)
            hi, lo = reference_grad_dd(xr, t, reduction)
            for impl in impls:
                if impl == "torch" and not METHODS["torch"].runs_in(fmt):
                    continue  # torch has no kernel for this format
                if impl == "torch":
                    gi, e = torch_grad(xr, t, fmt, reduction=reduction, device=device), ""
                else:
                    gi, e = g, err
                ulp = np.full(len(t), np.inf) if gi is None else row_errors(gi, hi, lo, t, fmt)
                with np.errstate(over="ignore"):
                    bits = np.minimum(np.log2(1.0 + ulp), float(fmt.bits))
                rows += [{"implementation": impl, "format": fmt.name, "family": case.family,
                          "case": case.name, "scale": case.scale, "row": i,
                          "ulp": float(ulp[i]), "bits": float(bits[i]), "error": e}
                         for i in range(len(t))]
    details = pd.DataFrame(rows)
    fails = np.zeros(len(details), dtype=bool)
    if max_ulp is not None:
        fails |= details["ulp"].to_numpy() > max_ulp
    if max_bits is not None:
        fails |= details["bits"].to_numpy() > max_bits
    details["fails"] = fails
    verdict = check._verdict(details, impls, fmts)
    output = "mean" if reductions == {"mean"} else "per-row"
    return CheckResult(name, "torch autograd", output, max_ulp, max_bits, False, verdict,
                       details)


def to_text(res: CheckResult) -> str:
    """The loss check's text, its header worded for gradients."""
    lines = res.to_text().splitlines()
    lines[0] = (f"precision-lab check --grad {res.name} (torch autograd of the "
                f"{'batch-mean loss' if res.output == 'mean' else 'per-row losses'})")
    lines[1] = ("gradient error against the certified gradient of the inputs rounded into "
                "each format: norm-wise and target-entry error per row, in units of what "
                "correct rounding may cost (1: correctly rounded); a case fails above "
                + " or ".join(x for x in (f"{res.max_ulp:g} u" if res.max_ulp is not None
                                          else "", f"{res.max_bits:g} bits"
                                          if res.max_bits is not None else "") if x))
    return "\n".join(lines)


def add_arguments(p) -> None:
    """The loss check's arguments, plus --grad and --device."""
    check.add_arguments(p)
    p.add_argument("--grad", action="store_true",
                   help="check the autograd gradient of a torch function instead of its loss")
    p.add_argument("--device", default="cpu",
                   help="torch device for --grad (the user's function and torch; default cpu)")


def cli(args) -> int:
    fn = load_function(args.target)
    max_ulp = None if args.max_ulp is not None and args.max_ulp < 0 else args.max_ulp
    res = check_grad(fn, name=args.target, formats=args.formats, max_ulp=max_ulp,
                     max_bits=args.max_bits, seed=args.seed, device=args.device)
    print(to_text(res))
    if args.details is not None:
        write_csv(res.details, args.details)
    return res.exit_code


def dispatch(args) -> int:
    """`precision-lab check`: the gradient check with --grad, else the loss check."""
    return cli(args) if getattr(args, "grad", False) else check.cli(args)


