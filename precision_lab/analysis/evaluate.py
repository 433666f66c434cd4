"""One entry point from logits to a tidy DataFrame of errors against the certified truth."""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import replace
from typing import Iterable

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ..data.inputs import check_bits, check_names, validate_batch
from ..numerics.arithmetic import ACCUMULATORS, check_accumulators
from ..numerics.formats import STANDARD_FORMATS, get_format
from ..numerics.methods import METHODS, get_method, shared_steps
from ..numerics.metrics import error_columns
from ..numerics.options import LossOptions, check_batch
from ..truth.options import certified_option_losses
from ..truth.reference import DEFAULT_BITS, reference_truth, to_double_double

__all__ = ["evaluate", "variants", "frozen", "reading_frozen"]


def variants(method: str, fmt: str, accumulators: Iterable[str] = ACCUMULATORS) -> list[str]:
    """The accumulators a method runs with in a format (`Method.accumulators`)."""
    return get_method(method).accumulators(fmt, accumulators)


def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only view of `a` (the array itself is untouched): `check_array`, and so every
    method's and the truth's `validate_batch`, takes it without a copy."""
    v = a.view()
    v.flags.writeable = False
    return v


@contextlib.contextmanager
def reading_frozen():
    """Around methods given `frozen` logits: torch's from_numpy warns that a read-only array
    could be written through a tensor; the torch method only reads it (and casts it, a copy)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable",
                                category=UserWarning)
        yield


def evaluate(logits: ArrayLike, targets: ArrayLike, formats: Iterable[str] = STANDARD_FORMATS,
             methods: Iterable[str] | None = None, accumulators: Iterable[str] = ACCUMULATORS,
             bits: int = DEFAULT_BITS, mean: bool = True, cache: str | bool | None = None,
             options: LossOptions | None = None) -> pd.DataFrame:
    """Evaluate every (format, method, accumulator) on a batch.

    `logits` (N, C) are float64; each format first rounds them correctly into itself, and the
    truth is the certified loss of those rounded inputs, so input rounding is not counted as
    computation error.
    Returns one row per (input row, format, method, accumulator), with reduction 'none'; with
    `mean`, one more row per (format, method, accumulator) for the batch mean (row = -1).
    `cache`: where certified truths are kept on disk (see `reference_truth`).
    The `truth` column is the truth rounded to float64: inf where it exceeds float64's range,
    0 where it is below 2**-1075; the error columns use the exact truth at every magnitude.
    `formats`, `methods`, `accumulators`: non-empty lists of names (a bare string is refused);
    an accumulator that is the working format itself in a format ("float32" in float32 and
    float64) runs as "working" there. Logits may be torch tensors (detached first).
    `options` (a `LossOptions`): the losses under those training options (`evaluate_options`).
    `methods`: None is every registered method (with options: every one that expresses them).
    """
    bits = check_bits(bits)
    formats = check_names(formats, "formats")
    if methods is not None:
        methods = check_names(methods, "methods")
    accumulators = check_accumulators(check_names(accumulators, "accumulators"))
    if options is not None:
        return evaluate_options(logits, targets, options, formats, methods, accumulators,
                                bits, mean)
    if isinstance(logits, np.ndarray) and logits.dtype == np.float64:
        logits = frozen(logits)     # only read (rounded into each format): no copy of it
    x, t = validate_batch(logits, targets)
    fmts = [get_format(f) for f in formats]
    meths = [get_method(m) for m in (tuple(METHODS) if methods is None else methods)]
    parts = []
    for fmt in fmts:
        xr = frozen(fmt.round(x))   # validated once here: the methods' own checks copy nothing
        tr = reference_truth(xr, t, bits=bits, cache=cache)
        with reading_frozen(), shared_steps():
            done = _run_methods(fmt, meths, accumulators, xr, t, tr, mean)
        if done:   # none where no method runs in the format (torch in float8)
            parts.append(_block(fmt, done))
    return pd.DataFrame({k: np.concatenate([b[k] for b in parts]) for k in parts[0]})


def _run_methods(fmt, meths, accumulators, xr, t, tr, mean) -> list[tuple]:
    """Every variant of `meths` in `fmt` on the rounded logits `xr`, in order: (method,
    accumulator, reduction, rows, computed, truth hi, lo, exp) for its per-row losses and, with
    `mean`, for its batch mean."""
    out = []
    rows = np.arange(len(t))
    for m in meths:
        for acc in variants(m, fmt, accumulators):
            losses = m(xr, t, fmt, acc)
            out.append((m.name, acc, "none", rows, losses, tr.hi, tr.lo, tr.exp))
            if mean:
                mval = m.batch_mean(losses, fmt, acc, x=xr, targets=t)
                out.append((m.name, acc, "mean", np.array([-1]), np.array([mval]),
                            np.array([tr.mean_hi]), np.array([tr.mean_lo]),
                            np.array([tr.mean_exp], dtype=np.int64)))
    return out


def evaluate_options(logits, targets, options: LossOptions,
                     formats: Iterable[str] = STANDARD_FORMATS, methods: Iterable[str] | None = None,
                     accumulators=ACCUMULATORS, bits: int = DEFAULT_BITS,
                     mean: bool = True) -> pd.DataFrame:
    """`evaluate` under training options: the same columns, plus `options` (its label).

    In each format the logits, the weights and probability targets are rounded into it (torch
    requires them in the logits' dtype), and the truth (`truth.options`, not cached) is that of
    the rounded values. Rows: reduction "none" per input row, and with `mean` one row for the
    options' reduction ("mean" when it is "none"). A method named in `methods` that cannot
    express an option in use raises InputError; with `methods` None those are left out.
    """
    x, t = check_batch(logits, targets, options)
    if methods is None:
        meths = [m for m in METHODS.values() if options.used <= m.options]
    else:
        meths = [get_method(m) for m in methods]
    red = "mean" if options.reduction == "none" else options.reduction
    blocks = []
    for fmt in (get_format(f) for f in formats):
        xr = fmt.round(x)
        tr = fmt.round(t) if options.probabilities else t
        o = options if options.weight is None else \
            replace(options, weight=tuple(fmt.round(options.weight_array).tolist()))
        truth = certified_option_losses(xr, tr, o, bits)
        hi, lo = to_double_double(truth.rows)
        bhi, blo = to_double_double([truth.mean if red == "mean" else truth.total])
        for m in meths:
            for acc in variants(m, fmt, accumulators):
                rows = m(xr, tr, fmt, acc, options=o)
                blocks.append(_block_one(fmt, m.name, acc, "none", np.arange(len(t)), rows, hi, lo))
                if mean:
                    v = m.reduce(rows, fmt, acc, xr, tr, o, red)
                    blocks.append(_block_one(fmt, m.name, acc, red, np.array([-1]), np.array([v]),
                                         bhi, blo))
    df = pd.DataFrame({k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]})
    df["options"] = options.label()
    return df


def _block(fmt, parts: list[tuple]) -> dict:
    """The frame's columns for a format's variants, `parts` (method, accumulator, reduction,
    rows, computed, hi, lo, exp) in order; the truth is (hi + lo) 2**exp, its column that
    rounded to float64 (inf / 0 beyond). Every error column is elementwise, so it is formed
    once over all the variants' values together (`_block_one` per variant, the same values)."""
    cat = [np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(3, 8)]
    row, computed, hi, lo, exp = cat
    sizes = [len(p[3]) for p in parts]
    with np.errstate(over="ignore"):
        truth = np.ldexp(hi, exp)
    return {"format": np.full(len(row), fmt.name, dtype=object),
            "method": np.repeat(np.array([p[0] for p in parts], dtype=object), sizes),
            "accumulator": np.repeat(np.array([p[1] for p in parts], dtype=object), sizes),
            "row": row,
            "reduction": np.repeat(np.array([p[2] for p in parts], dtype=object), sizes),
            "truth": truth, **error_columns(computed, hi, lo, fmt, exp)}


def _block_one(fmt, method, acc, reduction, row, computed, hi, lo, exp=None) -> dict:
    """The frame's columns for one (format, method, accumulator, reduction); the truth is
    (hi + lo) 2**exp (exp None: 0), its column that rounded to float64 (inf / 0 beyond)."""
    n = len(row)
    truth = hi
    if exp is not None:
        with np.errstate(over="ignore"):
            truth = np.ldexp(hi, exp)
    return {"format": np.full(n, fmt.name, dtype=object),
            "method": np.full(n, method, dtype=object),
            "accumulator": np.full(n, acc, dtype=object), "row": row,
            "reduction": np.full(n, reduction, dtype=object), "truth": truth,
            **error_columns(computed, hi, lo, fmt, exp)}
