"""From logits to a tidy DataFrame of gradient errors against the certified gradient."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ..data.inputs import validate_batch
from ..errors import InputError
from ..numerics import elementary
from ..numerics.arithmetic import ACCUMULATORS, OWN
from ..numerics.formats import FORMATS, STANDARD_FORMATS, get_format
from ..numerics.grad_metrics import grad_error_columns
from ..numerics.methods import gradient_methods, gradient_options
from ..numerics.options import REDUCTIONS, LossOptions, check_batch, require_supported
from ..truth.grad import DEFAULT_BITS, reference_grad_dd
from .cells import cell_logits, cell_rng
from .evaluate import evaluate

__all__ = ["evaluate_grad", "grad_methods", "grad_cell", "aggregate_grad", "confident_logits",
           "GRAD_GROUP", "loss_errors"]


def grad_methods() -> list[str]:
    """The labels of every backward: each method's own, then the variants."""
    return list(gradient_methods())


def evaluate_grad(logits: ArrayLike, targets: ArrayLike,
                  formats: Iterable[str] = STANDARD_FORMATS,
                  methods: Iterable[str] | None = None, accumulators: Iterable[str] = ACCUMULATORS,
                  reduction: str | None = None, bits: int = DEFAULT_BITS,
                  cache: str | bool | None = None, options: LossOptions | None = None) -> pd.DataFrame:
    """Evaluate every (format, backward, accumulator) on a batch.

    As `evaluate`: each format first rounds `logits` correctly into itself, and the truth is the
    certified gradient of those rounded inputs (`reference_grad_dd`, cached). `methods` are
    backward labels (`grad_methods()`; default all). Returns one row per (input row, format,
    method, accumulator) with the columns of `grad_error_columns`.

    `options` (a `LossOptions`): the gradient under those training options, of the logits,
    weights and probability targets as rounded into each format; `reduction` None is the
    options' own ("none" without options). Default methods: every backward that expresses
    them (`gradient_options`); a named one that cannot raises InputError naming the option.
    The target entry of a probability-target row is its largest target's; an ignored row's is
    column 0 (its truth is exactly 0). Adds `options` (the label) and `kept`.
    """
    if options is None:
        x, t = validate_batch(logits, targets)
        reduction = "none" if reduction is None else reduction
    else:
        x, t = check_batch(logits, targets, options)
        reduction = options.reduction if reduction is None else reduction
        if reduction not in REDUCTIONS:
            raise InputError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    table = gradient_methods()
    supported = gradient_options()
    if methods is None:
        labels = [m for m in table if options is None or options.used <= supported[m]]
    else:
        labels = list(methods)
    unknown = [m for m in labels if m not in table]
    if unknown:
        raise InputError(f"no backward named {unknown[0]!r}; valid: {', '.join(table)}")
    if options is not None:
        for label in labels:
            require_supported(label, supported[label], options)
    n = len(t)
    if options is None:
        kept, tcol = np.ones(n, dtype=bool), t
    elif options.probabilities:
        kept, tcol = np.ones(n, dtype=bool), np.argmax(t, axis=1)
    else:
        kept = t != options.ignore_index
        tcol = np.where(kept, t, 0)
    blocks = []
    for fmt in (get_format(f) for f in formats):
        xr = fmt.round(x)
        extra = {}
        if options is None:
            tr = t
            hi, lo = reference_grad_dd(xr, t, reduction, bits, cache=cache)
        else:
            tr = fmt.round(t) if options.probabilities else t
            o = options if options.weight is None else \
                replace(options, weight=tuple(fmt.round(options.weight_array).tolist()))
            hi, lo = reference_grad_dd(xr, tr, reduction, bits, cache=cache, options=o)
            extra = {"options": o}
        for label in labels:
            method, fn = table[label]
            for acc in method.accumulators(fmt, accumulators):
                g = fn(xr, tr, fmt, None if acc == OWN else acc, reduction, **extra)
                cols = grad_error_columns(g, hi, lo, tcol)
                # 1 - p_t of the rounded inputs, from the certified target entry (-g_t, times N
                # for the mean); plain cross entropy only
                cols["truth_one_minus_p"] = (
                    -cols["truth_target"] * (n if reduction == "mean" else 1)
                    if options is None else np.full(n, np.nan))
                blocks.append({"format": [fmt.name] * n, "method": [label] * n,
                               "accumulator": [acc] * n, "row": np.arange(n),
                               "reduction": [reduction] * n, **cols})
    df = pd.DataFrame({k: np.concatenate([np.asarray(b[k]) for b in blocks])
                       for k in blocks[0]})
    if options is not None:
        df["options"] = options.label()
        df["kept"] = np.tile(kept, len(df) // n)
    return df


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
    formats, reduction ("none"), with_loss (add the loss's median relative error), options
    (a dict of `LossOptions` fields: the gradient under them; column `options`, its label)."""
    if cell.get("kind") == "confidence":
        x, t = confident_logits(cell["rows"], cell["classes"], cell["confidence"],
                                cell_rng(cell))
    else:
        x, t = cell_logits(cell)
    formats = cell.get("formats", STANDARD_FORMATS)
    reduction = cell.get("reduction", "none")
    options = LossOptions(**cell["options"]) if cell.get("options") else None
    out = aggregate_grad(evaluate_grad(x, t, formats=formats, reduction=reduction,
                                       options=options))
    if cell.get("with_loss"):
        out = out.merge(loss_errors(x, t, formats, reduction),
                        on=["format", "method", "accumulator"], how="left")
    for k, v in cell.items():
        if k not in ("formats", "logits_path", "options"):
            out[k] = v
    if options is not None:
        out["options"] = options.label()
    return out
