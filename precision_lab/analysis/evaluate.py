"""One entry point from logits to a tidy DataFrame of errors against the certified truth."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from ..data.inputs import validate_batch
from ..numerics.arithmetic import ACCUMULATORS
from ..numerics.formats import FORMATS, get_format
from ..numerics.methods import METHODS, get_method
from ..numerics.metrics import error_columns
from ..truth.reference import DEFAULT_BITS, reference_truth

__all__ = ["evaluate", "variants"]


def variants(method, fmt, accumulators=ACCUMULATORS) -> list[str]:
    """The accumulators a method runs with in a format (`Method.accumulators`)."""
    return get_method(method).accumulators(fmt, accumulators)


def evaluate(logits, targets, formats: Iterable[str] = tuple(FORMATS),
             methods: Iterable[str] = tuple(METHODS), accumulators=ACCUMULATORS,
             bits: int = DEFAULT_BITS, mean: bool = True, cache=None) -> pd.DataFrame:
    """Evaluate every (format, method, accumulator) on a batch.

    `logits` (N, C) are float64; each format first rounds them correctly into itself, and the
    truth is the certified loss of those rounded inputs, so input rounding is not counted as
    computation error.
    Returns one row per (input row, format, method, accumulator), with reduction 'none'; with
    `mean`, one more row per (format, method, accumulator) for the batch mean (row = -1).
    `cache`: where certified truths are kept on disk (see `reference_truth`).
    The `truth` column is the truth rounded to float64: inf where it exceeds float64's range,
    0 where it is below 2**-1075; the error columns use the exact truth at every magnitude.
    """
    x, t = validate_batch(logits, targets)
    fmts = [get_format(f) for f in formats]
    meths = [get_method(m) for m in methods]
    blocks = []

    def add(fmt, method, acc, reduction, row, computed, hi, lo, exp):
        n = len(row)
        with np.errstate(over="ignore"):
            truth = np.ldexp(hi, exp)     # float64: inf above its range, 0 below
        blocks.append({"format": np.full(n, fmt.name, dtype=object),
                       "method": np.full(n, method, dtype=object),
                       "accumulator": np.full(n, acc, dtype=object), "row": row,
                       "reduction": np.full(n, reduction, dtype=object), "truth": truth,
                       **error_columns(computed, hi, lo, fmt, exp)})

    for fmt in fmts:
        xr = fmt.round(x)
        tr = reference_truth(xr, t, bits=bits, cache=cache)
        for m in meths:
            for acc in variants(m, fmt, accumulators):
                losses = m(xr, t, fmt, acc)
                add(fmt, m.name, acc, "none", np.arange(len(t)), losses, tr.hi, tr.lo, tr.exp)
                if mean:
                    mval = m.batch_mean(losses, fmt, acc, x=xr, targets=t)
                    add(fmt, m.name, acc, "mean", np.array([-1]), np.array([mval]),
                        np.array([tr.mean_hi]), np.array([tr.mean_lo]),
                        np.array([tr.mean_exp], dtype=np.int64))
    return pd.DataFrame({k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]})
