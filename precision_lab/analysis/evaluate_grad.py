"""From logits to a tidy DataFrame of gradient errors against the certified gradient."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from ..data.inputs import validate_batch
from ..errors import InputError
from ..numerics import elementary
from ..numerics.arithmetic import ACCUMULATORS, OWN
from ..numerics.formats import FORMATS, get_format
from ..numerics.grad_metrics import grad_error_columns
from ..numerics.methods import gradient_methods
from ..truth.grad import DEFAULT_BITS, reference_grad_dd
from .cells import cell_logits, cell_rng
from .evaluate import evaluate

__all__ = ["evaluate_grad", "grad_methods", "grad_cell", "aggregate_grad", "confident_logits",
           "GRAD_GROUP", "loss_errors"]


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
                # 1 - p_t of the rounded inputs, from the certified target entry (-g_t, times N
                # for the mean)
                cols["truth_one_minus_p"] = -cols["truth_target"] * (n if reduction == "mean"
                                                                     else 1)
                blocks.append({"format": [fmt.name] * n, "method": [label] * n,
                               "accumulator": [acc] * n, "row": np.arange(n),
                               "reduction": [reduction] * n, **cols})
    return pd.DataFrame({k: np.concatenate([np.asarray(b[k]) for b in blocks])
                         for k in blocks[0]})


def confident_logits(rows: int, classes: int, confidence: float, rng: np.random.Generator):
    """Logits whose target has probability `confidence` (before rounding to a format): the
    other classes standard normal, the target x_t = log(p / (1 - p)) + log sum_{i != t} e^x_i."""
    if not 0 < confidence < 1:
        raise InputError(f"confidence must lie in (0, 1), got {confidence!r}")
    x = rng.standard_normal((rows, classes))
    t = rng.integers(0, classes, size=rows)
    r = np.arange(rows)
    x[r, t] = -np.inf
    f64 = FORMATS["float64"]  # correctly rounded exp/log: the same logits on every CPU
    lse_others = elementary.log(elementary.exp(x, f64).sum(axis=1), f64)
    x[r, t] = (elementary.log(confidence, f64) - elementary.log1p(-confidence, f64)
               + lse_others)
    return x, t


GRAD_GROUP = ["format", "method", "accumulator", "reduction"]


def aggregate_grad(df: pd.DataFrame) -> pd.DataFrame:
    """Per (format, method, accumulator, reduction): row count, medians and maxima of the
    errors, outcome counts (never rows dropped: a non-finite entry's error is inf)."""
    g = df.groupby(GRAD_GROUP, sort=False)
    out = g.size().rename("count").to_frame()
    for col in ("target_rel", "entry_rel_median", "norm_rel", "angle"):
        out[f"{col}_median"] = g[col].median()
    out["target_rel_max"] = g["target_rel"].max()
    out["entry_rel_max"] = g["entry_rel_max"].max()
    out["n_nonfinite"] = g["n_nonfinite"].sum()
    out["n_flushed"] = g["n_flushed"].sum()
    out["n_target_sign_error"] = g["target_sign_error"].sum()
    out["n_target_over_10pct"] = g["target_rel"].agg(lambda v: int((v > 0.1).sum()))
    out["target_truth_median"] = g["truth_target"].median()
    out["one_minus_p_median"] = g["truth_one_minus_p"].median()
    return out.reset_index()


def loss_errors(x, t, formats, reduction: str) -> pd.DataFrame:
    """The loss's median relative error per (format, method, accumulator) on the same batch
    (`evaluate`; the batch mean's error for reduction "mean"), as `loss_rel_err`, for every
    backward label (a variant takes its forward's)."""
    table = gradient_methods()
    df = evaluate(x, t, formats=formats, methods=list(dict.fromkeys(
        m.name for m, _ in table.values())), mean=reduction == "mean")
    df = df[df["reduction"] == reduction]
    med = df.groupby(["format", "method", "accumulator"], sort=False)["rel_err"].median()
    rows = [{"format": f, "method": label, "accumulator": a, "loss_rel_err": v}
            for label, (m, _) in table.items()
            for (f, name, a), v in med.items() if name == m.name]
    return pd.DataFrame(rows)


def grad_cell(cell: dict) -> pd.DataFrame:
    """One sweep cell of the gradient experiments -> the aggregated errors of every backward,
    with the cell's parameters as columns. The logits: {kind: "confidence", rows, classes,
    confidence, seed}, or any cell `cells.cell_logits` takes (synthetic or staged); options:
    formats, reduction ("none"), with_loss (add the loss's median relative error)."""
    if cell.get("kind") == "confidence":
        x, t = confident_logits(cell["rows"], cell["classes"], cell["confidence"],
                                cell_rng(cell))
    else:
        x, t = cell_logits(cell)
    formats = cell.get("formats", tuple(FORMATS))
    reduction = cell.get("reduction", "none")
    out = aggregate_grad(evaluate_grad(x, t, formats=formats, reduction=reduction))
    if cell.get("with_loss"):
        out = out.merge(loss_errors(x, t, formats, reduction),
                        on=["format", "method", "accumulator"], how="left")
    for k, v in cell.items():
        if k not in ("formats", "logits_path"):
            out[k] = v
    return out
