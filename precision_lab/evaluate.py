"""One entry point from logits to a tidy DataFrame of errors against the certified truth."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from .formats import FORMATS, get_format
from .inputs import validate_batch
from .methods import METHODS, batch_mean, get_method
from .metrics import errors
from .reference import DEFAULT_BITS, reference_truth

__all__ = ["evaluate", "variants"]


def variants(method, fmt, accumulators=("working", "float32")) -> list[str]:
    """The accumulators a method runs with in a format: the float32 variant only for formats
    narrower than float32; a method with its own accumulator (torch) runs once, as 'internal'."""
    method, fmt = get_method(method), get_format(fmt)
    if not method.uses_accumulator:
        return ["internal"]
    return [a for a in accumulators
            if a == "working" or (a == "float32" and fmt.precision < 24)]


def evaluate(logits, targets, formats: Iterable[str] = tuple(FORMATS),
             methods: Iterable[str] = tuple(METHODS), accumulators=("working", "float32"),
             bits: int = DEFAULT_BITS, mean: bool = True, cache=None) -> pd.DataFrame:
    """Evaluate every (format, method, accumulator) on a batch.

    `logits` (N, C) are float64; each format first rounds them correctly into itself, and the
    truth is the certified loss of those rounded inputs, so input rounding is not counted as
    computation error (`input_rel_change` reports how far rounding moved the true loss).
    Returns one row per (input row, format, method, accumulator), with reduction 'none'; with
    `mean`, one more row per (format, method, accumulator) for the batch mean (row = -1).
    `cache`: where certified truths are kept on disk (see `reference_truth`).
    """
    x, t = validate_batch(logits, targets)
    fmts = [get_format(f) for f in formats]
    meths = [get_method(m) for m in methods]
    frames = []
    for fmt in fmts:
        xr = fmt.round(x)
        hi, lo, mhi, mlo = reference_truth(xr, t, bits=bits, cache=cache)
        mhi, mlo = np.array([mhi]), np.array([mlo])
        for m in meths:
            for acc in variants(m, fmt, accumulators):
                losses = m(xr, t, fmt, acc)
                df = errors(losses, hi, lo, fmt)
                df.insert(0, "row", np.arange(len(t)))
                df.insert(1, "reduction", "none")
                df.insert(2, "truth", hi)
                frames_meta = {"format": fmt.name, "method": m.name, "accumulator": acc}
                if mean:
                    mval = batch_mean(losses, fmt, acc if acc != "internal" else "working",
                                      method=m.name, x=xr, targets=t)
                    dm = errors(np.array([mval]), mhi, mlo, fmt)
                    dm.insert(0, "row", -1)
                    dm.insert(1, "reduction", "mean")
                    dm.insert(2, "truth", mhi)
                    df = pd.concat([df, dm], ignore_index=True)
                for k, v in reversed(frames_meta.items()):
                    df.insert(0, k, v)
                frames.append(df)
    return pd.concat(frames, ignore_index=True)
