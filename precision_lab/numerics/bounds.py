"""The Blanchard–Higham–Higham rounding-error bound for shifted log-sum-exp, per row.

Blanchard, Higham & Higham, "Accurately computing the log-sum-exp and softmax functions",
IMA J. Numer. Anal. 41(4), 2021, eq. (4.8): for the log1p form of the shifted algorithm,
y = a + log1p(s) with a = x_k = max_i x_i and s = sum_{i != k} exp(x_i - a), to first order

    |yhat - y| <= [log(1 + s) + (s / (1 + s)) (n + max_i |a - x_i|)] u + u |y|,

n the number of terms (classes) and u the unit roundoff of the working format (for stochastic
rounding, whose one rounding errs by up to an ulp, u is replaced by 2u:
`Format.max_rel_error`; the bound then holds with certainty, where SR's probabilistic error is
far smaller); the last term is the rounding of the final addition a + log1p(s). The
cross-entropy loss y - x_t adds one more rounding, u |loss|. `bhh_bound` returns the bound on
the computed *loss*.

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
The float64 exp and log1p here are correctly rounded (numerics.elementary), so the bound is the
same on every CPU.
"""
from __future__ import annotations

import numpy as np

from . import elementary
from .arithmetic import WORKING, accumulator_format
from .formats import FORMATS, get_format

F64 = FORMATS["float64"]

__all__ = ["bhh_bound", "lse_terms", "lse_terms_direct", "bhh_check", "BHH_CHECK_COLUMNS"]

BHH_CHECK_COLUMNS = ("bhh_within_frac", "bhh_checked", "bhh_violations", "bhh_ratio_median",
                     "bhh_ratio_max", "bhh_informative_frac")


def lse_terms(x) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row of float64 logits x (N, C): a = max x, s = sum_{i != argmax} exp(x_i - a),
    n = number of finite logits, d = max_i |a - x_i| over the finite logits.

    The terms exp(x_i - a) are float64 correctly rounded (`elementary.exp`), summed by numpy's
    float64 row sum. Where every logit is a 16-bit value (bfloat16 or float16, so every value
    of those formats and of float8), each row holds at most 65536 distinct values: exp is then
    evaluated once per distinct (row, value) and gathered back (`_row_exp_16bit`), the very
    same float64 terms in the same array, so the same sums; `lse_terms_direct` is the path
    without it, which it must equal bit for bit."""
    return _lse_terms(x, fast=True)


def lse_terms_direct(x):
    """`lse_terms` with exp evaluated on every logit (the definition the fast path mirrors)."""
    return _lse_terms(x, fast=False)


def _lse_terms(x, fast: bool):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    finite = np.isfinite(x)
    xm = np.where(finite, x, -np.inf)
    with np.errstate(invalid="ignore"):
        a = xm.max(axis=1)
        k = np.argmax(xm, axis=1)
        e = _row_exp_16bit(x, a) if fast else None
        if e is None:
            diff = xm - a[:, None]
            diff = np.where(finite, diff, -np.inf)
            e = elementary.exp(diff, F64)
            del diff
        e[np.arange(len(k)), k] = 0.0
        s = e.sum(axis=1)
        del e
        d = np.where(finite.any(axis=1), a - np.where(finite, x, np.inf).min(axis=1), 0.0)
    n = finite.sum(axis=1).astype(np.float64)
    return a, s, n, d


_CODES = 1 << 16
_TABLES: dict[str, np.ndarray] = {}


def _code_table(kind: str) -> np.ndarray:
    """The float64 value of each of the 65536 bit patterns of bfloat16 or float16."""
    if kind not in _TABLES:
        bits = np.arange(_CODES, dtype=np.uint32)
        v = (bits << 16).view(np.float32) if kind == "bfloat16" else \
            bits.astype(np.uint16).view(np.float16)
        with np.errstate(invalid="ignore"):
            _TABLES[kind] = v.astype(np.float64)
    return _TABLES[kind]


def _codes_16bit(x: np.ndarray):
    """(uint16 bit patterns of x, the table of their float64 values) when every element of x
    is, bit for bit, the float64 of a bfloat16 or of a float16 pattern, else None."""
    bits = x.view(np.uint64)
    with np.errstate(over="ignore", invalid="ignore"):
        for kind in ("bfloat16", "float16"):
            if kind == "bfloat16":
                codes = (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
            else:
                codes = x.astype(np.float16).view(np.uint16)
            table = _code_table(kind)
            if np.array_equal(np.take(table, codes).view(np.uint64), bits):
                return codes, table
    return None


def _row_exp_16bit(x: np.ndarray, a: np.ndarray) -> np.ndarray | None:
    """exp(x_i - a_row) (-inf where x_i is not finite: 0) as `_lse_terms` forms it, with exp
    evaluated once per distinct (row, bit pattern); None unless every x is a 16-bit value. Every
    argument of exp is the same float64 as on the direct path (the pattern's value is x_i bit
    for bit, its sign of zero included), and exp is elementwise, so every term is too."""
    n, c = x.shape
    if c < 4096 or not x.flags.c_contiguous:   # the direct path is as fast
        return None
    found = _codes_16bit(x)
    if found is None:
        return None
    codes, table = found
    present = [np.flatnonzero(np.bincount(codes[r], minlength=_CODES)) for r in range(n)]
    row = np.repeat(np.arange(n), [len(p) for p in present])
    vals = table[np.concatenate(present)]
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(np.isfinite(vals), vals - a[row], -np.inf)
    terms = elementary.exp(diff, F64)
    out = np.empty((n, c))
    lut = np.zeros(_CODES)
    start = 0
    for r in range(n):
        p = present[r]
        lut[p] = terms[start:start + len(p)]
        np.take(lut, codes[r], out=out[r])
        start += len(p)
    return out


def bhh_bound(x, targets, fmt, accumulator: str = WORKING, form: str = "log1p",
              terms=None) -> np.ndarray:
    """First-order bound on |computed loss - true loss| per row (float64 array, N).

    `x` holds the logits as the method sees them (already rounded to `fmt`), `targets` the
    class indices; `accumulator` is "working" or "float32"; `form` "log1p" (Blanchard, Higham &
    Higham eq. 4.8) or "shifted" (the 1 kept in the sum, as the `logsumexp` method does).
    `terms`: `lse_terms(x)` if already computed (it does not depend on the format or form).
    """
    fmt = get_format(fmt)
    if form not in ("log1p", "shifted"):
        raise ValueError(f"unknown form {form!r}; valid: log1p, shifted")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    u = fmt.max_rel_error  # u; 2u (an ulp) for stochastic rounding, which may round away
    u_acc = accumulator_format(fmt, accumulator).max_rel_error
    mixed = 1.0 if u_acc < u else 0.0
    a, s, n, d = lse_terms(x) if terms is None else terms
    with np.errstate(invalid="ignore", over="ignore"):
        ratio = s / (1.0 + s)
        under = n * fmt.min_subnormal / 2 / (1.0 + s)
        l1p = elementary.log1p(s, F64)
        y = a + l1p
        loss = y - x[np.arange(len(t)), t]
        if form == "log1p":
            if mixed:
                summed = ratio * (n * u_acc + (2.0 + d) * u)
            else:  # n u_acc: u_acc = 2u for stochastically rounded sums ("working_sr")
                summed = ratio * (n * u_acc + d * u)
        else:
            summed = (n - 1.0) * u_acc + mixed * u + ratio * (1.0 + d) * u
        bound = l1p * u + summed + under + u * np.abs(y) + u * np.abs(loss)
    bad = ~np.all(np.isfinite(x) | (x == -np.inf), axis=1) | ~np.isfinite(bound)
    return np.where(bad, np.nan, bound)


def bhh_check(abs_err, computed, bound, truth, representable) -> dict[str, float]:
    """The bound checked on one cell's rows (arrays of equal length).

    A row is checked where its bound is finite and either the result is finite or the row is
    representable (the format can hold its inputs, log-sum-exp and loss): there a non-finite
    result is a violation, not a row to drop. Returns
      bhh_within_frac      share of the checked rows with a finite result whose error is
                           within the bound, among the rows with a finite result (as before);
      bhh_checked          the number of checked rows;
      bhh_violations       checked rows whose error exceeds the bound, or whose result is
                           non-finite on a representable row;
      bhh_ratio_median/max error / bound over the checked rows (inf for a non-finite result;
                           0 where the error is 0);
      bhh_informative_frac share of the rows with a finite bound where it says something:
                           bound < |loss| (the bound relative to the loss below 1).
    nan where no row qualifies."""
    abs_err, computed, bound, truth = (np.asarray(a, dtype=np.float64)
                                       for a in (abs_err, computed, bound, truth))
    representable = np.asarray(representable, dtype=bool)
    has_bound = np.isfinite(bound)
    fin = np.isfinite(computed) & has_bound
    checked = has_bound & (np.isfinite(computed) | representable)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(abs_err == 0, 0.0, abs_err / bound)
    ratio = np.where(np.isfinite(computed), ratio, np.inf)[checked]
    within = abs_err[fin] <= bound[fin]
    return {"bhh_within_frac": float(within.mean()) if fin.any() else np.nan,
            "bhh_checked": int(checked.sum()),
            "bhh_violations": int((ratio > 1).sum()),
            "bhh_ratio_median": float(np.median(ratio)) if ratio.size else np.nan,
            "bhh_ratio_max": float(ratio.max()) if ratio.size else np.nan,
            "bhh_informative_frac": float(np.mean(bound[has_bound] < np.abs(truth[has_bound])))
            if has_bound.any() else np.nan}
