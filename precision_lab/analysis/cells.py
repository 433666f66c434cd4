"""What one sweep cell computes: its logits (synthetic, or staged from a file), every format
and method on them, aggregated, with the Blanchard–Higham–Higham bound checked.

A cell is a plain dict of parameters (picklable, hashable into a checkpoint key by
`sweep.cell_key`): {distribution, rows, classes, scale, seed} for synthetic logits, or
{logits_path, logits_digest, rows?, classes?, scale?, seed} for arrays staged on disk by
`stage_arrays`; optional formats, methods, accumulators (lists) narrow the evaluation.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.inputs import make_logits
from ..numerics import elementary
from ..numerics.bounds import BHH_CHECK_COLUMNS, bhh_bound, bhh_check, lse_terms
from ..numerics.formats import FORMATS
from ..numerics.methods import bounded_methods, get_method
from ..numerics.metrics import aggregate
from ..running.storage import atomic_write
from ..running.sweep import cell_key
from .evaluate import evaluate

__all__ = ["GROUP", "representable_rows", "cell_rng", "cell_logits", "staged_logits",
           "evaluate_cell", "stage_arrays", "array_digest",
           "class_counts_up_to"]

GROUP = ["format", "method", "accumulator", "reduction"]


def _median(v) -> float:
    """The median of the finite values (nan if none), with the middle pair averaged as
    a/2 + b/2, which cannot overflow (np.median's (a + b)/2 does near the largest float)."""
    v = np.sort(np.asarray(v, dtype=np.float64)[np.isfinite(v)])
    if not len(v):
        return np.nan
    k = len(v) // 2
    return float(v[k]) if len(v) % 2 else float(v[k - 1] / 2 + v[k] / 2)


def cell_rng(cell: dict) -> np.random.Generator:
    """The cell's own random stream: from its seed and parameters, not from its position."""
    key = int(cell_key({k: v for k, v in cell.items() if k != "seed"}), 16)
    return np.random.default_rng(np.random.SeedSequence([int(cell["seed"]), key]))


def array_digest(x, t) -> str:
    """A short content hash of a (logits, targets) pair: part of a cell's key, so checkpoints
    of other data are never reused."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(t, dtype=np.int64)):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def stage_arrays(directory, name: str, x, t) -> dict:
    """Write (x, t) to DIRECTORY/NAME-DIGEST.npz for cells to read (cells are plain dicts and
    carry the path, not the data). Returns the cell keys {"logits_path", "logits_digest"}."""
    digest = array_digest(x, t)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{digest}.npz"
    if not path.exists():
        with atomic_write(path, "wb") as f:
            np.savez(f, logits=np.asarray(x, dtype=np.float64), targets=np.asarray(t, np.int64))
    return {"logits_path": str(path), "logits_digest": digest}


def class_counts_up_to(classes: int, exponents) -> list[int]:
    """The class counts 2**k (k in `exponents`) below `classes`, then `classes` itself: the
    counts a user's rows of `classes` logits are cut to (`cell_logits` keeps the target)."""
    counts = sorted({2 ** k for k in exponents if 2 ** k < classes} | {classes})
    return [c for c in counts if c >= 2] or [classes]


def _truncate_classes(x: np.ndarray, t: np.ndarray, classes: int):
    """Keep `classes` columns per row: the target's and the first classes - 1 others, in their
    original order (a row whose target lies beyond them gets it as its last column)."""
    c = x.shape[1]
    if classes >= c:
        return x, t
    if classes < 1:
        raise ValueError(f"classes must be at least 1, got {classes}")
    inside = t < classes
    out = np.empty((len(t), classes))
    out[inside] = x[inside, :classes]
    outside = ~inside
    out[outside, :classes - 1] = x[outside, :classes - 1]
    out[outside, classes - 1] = x[outside, t[outside]]
    nt = np.where(inside, t, classes - 1)
    return out, nt


def cell_logits(cell: dict) -> tuple[np.ndarray, np.ndarray]:
    """The float64 logits and targets of a cell.

    Synthetic: {distribution, rows, classes, scale, seed} through `inputs.make_logits` with the
    cell's own random stream. From a staged file ({logits_path, ...}, see `stage_arrays`): the
    rows (at most `rows`, a sample drawn with `seed` alone, so every cell of a run uses the
    same rows, kept in file order), truncated to `classes` (target kept), times `scale`.
    """
    if "logits_path" not in cell:
        return make_logits(cell["distribution"], int(cell["rows"]), int(cell["classes"]),
                           float(cell["scale"]), cell_rng(cell))
    x, t, _ = staged_logits(cell)
    return x, t


def staged_logits(cell: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """`cell_logits` of a staged file, and what was done to the user's rows, as columns for
    the results (so a summary can say it): user_file_rows, user_rows_used, user_rows_sampled
    (a seeded sample, rather than every row), user_sample_seed, user_file_classes,
    user_classes_used (cut to the first C - 1 others plus the target) and user_scale (every
    logit multiplied by it)."""
    with np.load(cell["logits_path"], allow_pickle=False) as z:
        x, t = z["logits"], z["targets"]
    n_file, c_file = x.shape
    rows = int(cell.get("rows", len(t)))
    sampled = rows < len(t)
    if sampled:
        pick = np.sort(np.random.default_rng(int(cell["seed"])).choice(len(t), rows,
                                                                        replace=False))
        x, t = x[pick], t[pick]
    if "classes" in cell:
        x, t = _truncate_classes(x, t, int(cell["classes"]))
    scale = float(cell.get("scale", 1.0))
    if scale != 1.0:
        with np.errstate(over="ignore", invalid="ignore"):
            x = x * scale
    facts = {"user_file_rows": int(n_file), "user_rows_used": int(len(t)),
             "user_rows_sampled": bool(sampled), "user_sample_seed": int(cell["seed"]),
             "user_file_classes": int(c_file), "user_classes_used": int(x.shape[1]),
             "user_scale": scale}
    return np.ascontiguousarray(x, dtype=np.float64), t, facts


def representable_rows(x, truth, fmt) -> np.ndarray:
    """Rows (bool per row) the format can represent: their logits rounded into `fmt` are finite
    (or -inf, a masked class), and their true log-sum-exp and loss `truth` (of the rounded
    logits), rounded to `fmt`, are finite too: where a correct method must return a finite
    loss."""
    f = FORMATS[fmt] if isinstance(fmt, str) else fmt
    xr = f.round(x)
    a, s, _, _ = lse_terms(xr)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = (np.isfinite(xr) | (xr == -np.inf)).all(axis=1)
        ok &= np.isfinite(f.round(a + elementary.log1p(s, FORMATS["float64"])))
        ok &= np.isfinite(f.round(truth))
    return ok


def evaluate_with_bound(x, t, cell: dict) -> pd.DataFrame:
    """`evaluate` the batch, aggregate per (format, method, accumulator, reduction), and add:
    max_logit_median and lse_median (medians over rows of max_i x_i and of log sum_i exp x_i,
    of the float64 input), loss_median (median true loss of the rows rounded to the format),
    representable_frac (fraction of rows whose rounded logits are finite and whose true
    log-sum-exp and loss, rounded to the format, are finite too: where a correct method must
    return a finite loss), spurious_nonfinite_frac (fraction of the rows that are representable
    yet come out inf or nan: a failure of the method, not of the format), and for the
    methods the bound applies to (`Method.bound`, per-row losses) bhh_bound_rel_median (median
    of bound / true loss) and the check of the bound (`bounds.bhh_check`): bhh_within_frac
    (fraction of rows with a finite result whose error is within the bound), bhh_checked,
    bhh_violations (a non-finite result on a representable row counts as one),
    bhh_ratio_median, bhh_ratio_max (error / bound) and bhh_informative_frac (share of rows
    whose bound is below the loss)."""
    kw = {k: cell[k] for k in ("formats", "methods", "accumulators") if k in cell}
    df = evaluate(x, t, **kw)
    agg = aggregate(df, GROUP)
    rows = df[df["reduction"] == "none"]
    extra = []
    bounds_cache: dict = {}
    representable: dict = {}
    for (fmt, method, acc), g in rows.groupby(["format", "method", "accumulator"], sort=False):
        truth = g["truth"].to_numpy()
        if fmt not in representable:
            representable[fmt] = representable_rows(x, truth, fmt)
        rec = {"format": fmt, "method": method, "accumulator": acc, "reduction": "none",
               "loss_median": _median(truth),
               "representable_frac": float(representable[fmt].mean()),
               "spurious_nonfinite_frac": float(np.mean(
                   representable[fmt] & ~np.isfinite(g["computed"].to_numpy()))),
               "bhh_bound_rel_median": np.nan, **dict.fromkeys(BHH_CHECK_COLUMNS, np.nan)}
        form = get_method(method).bound
        if form is not None:
            key = (fmt, acc, form)
            if key not in bounds_cache:
                bounds_cache[key] = bhh_bound(FORMATS[fmt].round(x), t, fmt, acc, form)
            b = bounds_cache[key]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                rel = b / np.abs(truth)
            rec["bhh_bound_rel_median"] = _median(rel)
            rec.update(bhh_check(g["abs_err"].to_numpy(), g["computed"].to_numpy(), b, truth,
                                 representable[fmt]))
        extra.append(rec)
    agg = agg.merge(pd.DataFrame(extra), on=GROUP, how="left")
    for col in ("bhh_checked", "bhh_violations"):   # counts: integers, empty where unchecked
        agg[col] = agg[col].astype("Int64")
    a, s, _, _ = lse_terms(x)
    with np.errstate(invalid="ignore"):
        agg.insert(len(GROUP), "max_logit_median", _median(np.max(x, axis=1)))
        agg.insert(len(GROUP) + 1, "lse_median",
                   _median(a + elementary.log1p(s, FORMATS["float64"])))
    params = {k: v for k, v in cell.items()
              if k not in ("formats", "methods", "accumulators", "logits_path")}
    for i, (k, v) in enumerate(params.items()):
        agg.insert(i, k, v)
    return agg


def evaluate_cell(cell: dict) -> pd.DataFrame:
    """The sweep cell (for `sweep.run_cells`): `cell_logits` then `evaluate_with_bound`."""
    if "logits_path" not in cell:
        x, t = cell_logits(cell)
        return evaluate_with_bound(x, t, cell)
    x, t, facts = staged_logits(cell)
    agg = evaluate_with_bound(x, t, cell)
    for k, v in facts.items():
        agg[k] = v
    return agg


def bhh_summary(df: pd.DataFrame) -> dict | None:
    """The BHH check over a sweep's cells (per-row reduction, methods a bound covers): rows
    checked, violations (a non-finite result on a representable row counts as one), the
    median over cells of error/bound and its largest value, and the cells where the bound
    says something (median bound/|loss| below 1). None where no row was checked."""
    d = df[(df["reduction"] == "none") & df["method"].isin(list(bounded_methods()))
           & (df["bhh_checked"].fillna(0) > 0)]
    if not len(d):
        return None
    by_format = d.groupby("format", sort=False)["bhh_violations"].sum()
    return {"checked": int(d["bhh_checked"].sum()), "violations": int(d["bhh_violations"].sum()),
            "worst_format": str(by_format.idxmax()), "worst_violations": int(by_format.max()),
            "ratio_median": float(np.median(d["bhh_ratio_median"])),
            "ratio_max": float(d["bhh_ratio_max"].max()),
            "informative_cells": int((d["bhh_bound_rel_median"] < 1).sum()), "cells": len(d)}


def bhh_sentence(summary: dict, scope: str) -> str:
    """One finding from `bhh_summary`, scoped (e.g. "C <= 32000, s <= 1e5")."""
    worst = (f", {summary['worst_violations']} of them in {summary['worst_format']}"
             if summary["violations"] else "")
    top = "inf (a non-finite result)" if summary["ratio_max"] == np.inf else \
        f"{summary['ratio_max']:.2g}"
    return (f"BHH bound ({scope}): {summary['violations']}/{summary['checked']} checked "
            f"`log1p`/`logsumexp` rows violate it (non-finite results on representable rows "
            f"count){worst}; error/bound median {summary['ratio_median']:.2g}, max {top}; "
            f"informative (bound < loss) in {summary['informative_cells']}/{summary['cells']} "
            f"cells.")
