"""From logits to a tidy DataFrame of gradient errors against the certified gradient."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from ..data.inputs import validate_batch
from ..errors import InputError
from ..numerics.arithmetic import ACCUMULATORS, OWN
from ..numerics.formats import FORMATS, get_format
from ..numerics.grad_metrics import grad_error_columns
from ..numerics.methods import gradient_methods
from ..truth.grad import DEFAULT_BITS, reference_grad_dd

__all__ = ["evaluate_grad", "grad_methods"]


def grad_methods() -> list[str]:
    """The labels of every backward: each method's own, then the variants."""
    return list(gradient_methods())


def evaluate_grad(logits, targets, formats: Iterable[str] = tuple(FORMATS),
                  methods: Iterable[str] | None = None, accumulators=ACCUMULATORS,
                  reduction: str = "none", bits: int = DEFAULT_BITS,
                  cache=None) -> pd.DataFrame:
    """Evaluate every (format, backward, accumulator) on a batch.

    As `evaluate`: each format first rounds `logits` correctly into itself, and the truth is the
    certified gradient of those rounded inputs (`reference_grad_dd`, cached). `methods` are
    backward labels (`grad_methods()`; default all). Returns one row per (input row, format,
    method, accumulator) with the columns of `grad_error_columns`.
    """
    x, t = validate_batch(logits, targets)
    table = gradient_methods()
    labels = list(table) if methods is None else list(methods)
    unknown = [m for m in labels if m not in table]
    if unknown:
        raise InputError(f"no backward named {unknown[0]!r}; valid: {', '.join(table)}")
    blocks = []
    for fmt in (get_format(f) for f in formats):
        xr = fmt.round(x)
        hi, lo = reference_grad_dd(xr, t, reduction, bits, cache=cache)
        for label in labels:
            method, fn = table[label]
            for acc in method.accumulators(fmt, accumulators):
                g = fn(xr, t, fmt, None if acc == OWN else acc, reduction)
                cols = grad_error_columns(g, hi, lo, t)
                n = len(t)
                blocks.append({"format": [fmt.name] * n, "method": [label] * n,
                               "accumulator": [acc] * n, "row": np.arange(n),
                               "reduction": [reduction] * n, **cols})
    return pd.DataFrame({k: np.concatenate([np.asarray(b[k]) for b in blocks])
                         for k in blocks[0]})
