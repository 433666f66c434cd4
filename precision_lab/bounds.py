"""The Blanchard–Higham–Higham rounding-error bound for shifted log-sum-exp, per row, and a sweep
cell that checks every evaluated loss against it.

Blanchard, Higham & Higham, "Accurately computing the log-sum-exp and softmax functions",
IMA J. Numer. Anal. 41(4), 2021, eq. (4.8): for the log1p form of the shifted algorithm,
y = a + log1p(s) with a = x_k = max_i x_i and s = sum_{i != k} exp(x_i - a), to first order

    |yhat - y| <= [log(1 + s) + (s / (1 + s)) (n + max_i |a - x_i|)] u + u |y|,

n the number of terms (classes) and u the unit roundoff of the working format; the last term is
the rounding of the final addition a + log1p(s). The cross-entropy loss y - x_t adds one more
rounding, u |loss|. `bhh_bound` returns the bound on the computed *loss*.

Extensions, derived the same way (first order; stated so a reader can check them):
  * a wider accumulator (float32 partial sums for float16/bfloat16): the n summation errors
    cost u_acc each, the exp and subtraction of every term u (1 + |a - x_i|), and rounding the
    total back to the format one u more: (s / (1 + s)) (n u_acc + (2 + max|a - x_i|) u);
  * form="shifted" (the `logsumexp` method, the 1 kept inside the sum): the sum 1 + s is
    rounded n - 1 times relative to itself, so the summation term loses its s / (1 + s) factor:
    log(1 + s) u + (n - 1) u_acc + (s / (1 + s)) (1 + max|a - x_i|) u (+ u if mixed) + u |y|;
  * gradual underflow: a term exp(x_i - a) below the smallest normal has an absolute, not a
    relative, rounding error of at most half the smallest subnormal; n of them add
    n * min_subnormal / 2 / (1 + s).
Rows with a +inf or nan logit have no bound (nan); -inf logits are masked classes (exact zeros).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .formats import FORMATS, get_format

__all__ = ["bhh_bound", "lse_terms", "BOUND_FORMS", "evaluate_with_bound", "bound_cell",
           "cell_logits", "stage_arrays", "array_digest"]

# The methods the bound applies to, and the form of the algorithm each one computes.
BOUND_FORMS = {"log1p": "log1p", "logsumexp": "shifted"}


def lse_terms(x) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of float64 logits x (N, C): a = max x, s = sum_{i != argmax} exp(x_i - a),
    n = number of finite logits, d = max_i |a - x_i| over the finite logits."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    finite = np.isfinite(x)
    xm = np.where(finite, x, -np.inf)
    with np.errstate(invalid="ignore"):
        a = xm.max(axis=1)
        k = np.argmax(xm, axis=1)
        diff = xm - a[:, None]
        diff = np.where(finite, diff, -np.inf)
        e = np.exp(diff)
        e[np.arange(len(k)), k] = 0.0
        s = e.sum(axis=1)
        d = np.where(finite.any(axis=1), a - np.where(finite, x, np.inf).min(axis=1), 0.0)
    n = finite.sum(axis=1).astype(np.float64)
    return a, s, n, d


def bhh_bound(x, targets, fmt, accumulator: str = "working", form: str = "log1p") -> np.ndarray:
    """First-order bound on |computed loss - true loss| per row (float64 array, N).

    `x` holds the logits as the method sees them (already rounded to `fmt`), `targets` the
    class indices; `accumulator` is "working" or "float32"; `form` "log1p" (Blanchard, Higham &
    Higham eq. 4.8) or "shifted" (the 1 kept in the sum, as the `logsumexp` method does).
    """
    fmt = get_format(fmt)
    if form not in ("log1p", "shifted"):
        raise ValueError(f"unknown form {form!r}; valid: log1p, shifted")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    u = fmt.unit_roundoff
    if accumulator in ("working", "internal", None):
        u_acc, mixed = u, 0.0
    else:
        u_acc = min(u, get_format(accumulator).unit_roundoff)
        mixed = 1.0 if u_acc < u else 0.0
    a, s, n, d = lse_terms(x)
    with np.errstate(invalid="ignore", over="ignore"):
        ratio = s / (1.0 + s)
        under = n * fmt.min_subnormal / 2 / (1.0 + s)
        y = a + np.log1p(s)
        loss = y - x[np.arange(len(t)), t]
        if form == "log1p":
            if mixed:
                summed = ratio * (n * u_acc + (2.0 + d) * u)
            else:
                summed = ratio * (n + d) * u
        else:
            summed = (n - 1.0) * u_acc + mixed * u + ratio * (1.0 + d) * u
        bound = np.log1p(s) * u + summed + under + u * np.abs(y) + u * np.abs(loss)
    bad = ~np.all(np.isfinite(x) | (x == -np.inf), axis=1) | ~np.isfinite(bound)
    return np.where(bad, np.nan, bound)


# ---------------------------------------------------------------- sweep cells -----------------

def array_digest(x, t) -> str:
    """A short content hash of a (logits, targets) pair: part of a cell's key, so checkpoints
    of other data are never reused."""
    import hashlib
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
        tmp = directory / f".{name}-{digest}.tmp.npz"
        np.savez(tmp, logits=np.asarray(x, dtype=np.float64), targets=np.asarray(t, np.int64))
        tmp.replace(path)
    return {"logits_path": str(path), "logits_digest": digest}


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
    from .inputs import make_logits
    from .sweep import cell_rng
    if "logits_path" not in cell:
        return make_logits(cell["distribution"], int(cell["rows"]), int(cell["classes"]),
                           float(cell["scale"]), cell_rng(cell))
    with np.load(cell["logits_path"], allow_pickle=False) as z:
        x, t = z["logits"], z["targets"]
    rows = int(cell.get("rows", len(t)))
    if rows < len(t):
        pick = np.sort(np.random.default_rng(int(cell["seed"])).choice(len(t), rows,
                                                                        replace=False))
        x, t = x[pick], t[pick]
    if "classes" in cell:
        x, t = _truncate_classes(x, t, int(cell["classes"]))
    scale = float(cell.get("scale", 1.0))
    if scale != 1.0:
        with np.errstate(over="ignore", invalid="ignore"):
            x = x * scale
    return np.ascontiguousarray(x, dtype=np.float64), t


def evaluate_with_bound(x, t, cell: dict) -> pd.DataFrame:
    """`evaluate` the batch, aggregate per (format, method, accumulator, reduction), and add:
    max_logit_median and lse_median (medians over rows of max_i x_i and of log sum_i exp x_i,
    of the float64 input), loss_median (median true loss of the rows rounded to the format),
    representable_frac (fraction of rows whose rounded logits are finite and whose true
    log-sum-exp and loss, rounded to the format, are finite too: where a correct method must
    return a finite loss), spurious_nonfinite_frac (fraction of the rows that are representable
    yet come out inf or nan: a failure of the method, not of the format), and for the methods the bound applies to
    (`BOUND_FORMS`, per-row losses) bhh_bound_rel_median (median of bound / true loss) and
    bhh_within_frac (fraction of rows with a finite result whose error is within the bound)."""
    from .evaluate import evaluate
    from .metrics import aggregate
    from .sweep import GROUP
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
            f = FORMATS[fmt]
            xr = f.round(x)
            a, s, _, _ = lse_terms(xr)
            with np.errstate(invalid="ignore", over="ignore"):
                ok = (np.isfinite(xr) | (xr == -np.inf)).all(axis=1)
                ok &= np.isfinite(f.round(a + np.log1p(s))) & np.isfinite(f.round(truth))
            representable[fmt] = ok
        rec = {"format": fmt, "method": method, "accumulator": acc, "reduction": "none",
               "loss_median": float(np.median(truth)) if np.isfinite(truth).any() else np.nan,
               "representable_frac": float(representable[fmt].mean()),
               "spurious_nonfinite_frac": float(np.mean(
                   representable[fmt] & ~np.isfinite(g["computed"].to_numpy()))),
               "bhh_bound_rel_median": np.nan, "bhh_within_frac": np.nan}
        form = BOUND_FORMS.get(method)
        if form is not None:
            key = (fmt, acc, form)
            if key not in bounds_cache:
                bounds_cache[key] = bhh_bound(FORMATS[fmt].round(x), t, fmt, acc, form)
            b = bounds_cache[key]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                rel = b / np.abs(truth)
            ok = np.isfinite(rel)
            rec["bhh_bound_rel_median"] = float(np.median(rel[ok])) if ok.any() else np.nan
            comp = g["computed"].to_numpy()
            fin = np.isfinite(comp) & np.isfinite(b)
            within = g["abs_err"].to_numpy()[fin] <= b[fin]
            rec["bhh_within_frac"] = float(within.mean()) if fin.any() else np.nan
        extra.append(rec)
    agg = agg.merge(pd.DataFrame(extra), on=GROUP, how="left")
    a, s, _, _ = lse_terms(x)
    with np.errstate(invalid="ignore"):
        agg.insert(len(GROUP), "max_logit_median", float(np.median(np.max(x, axis=1))))
        agg.insert(len(GROUP) + 1, "lse_median", float(np.median(a + np.log1p(s))))
    params = {k: v for k, v in cell.items()
              if k not in ("formats", "methods", "accumulators", "logits_path")}
    for i, (k, v) in enumerate(params.items()):
        agg.insert(i, k, v)
    return agg


def bound_cell(cell: dict) -> pd.DataFrame:
    """A sweep cell (for `sweep.run_cells`): `cell_logits` then `evaluate_with_bound`."""
    x, t = cell_logits(cell)
    return evaluate_with_bound(x, t, cell)
