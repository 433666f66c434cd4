"""Error of a computed gradient (N, C) against the certified one held as double-double.

Per row:
  entry_rel_median, entry_rel_max  |g_hat_i - g_i| / |g_i| over the non-target entries whose
                                   truth is not 0 (a non-finite g_hat_i counts as inf)
  target_rel                       the same at the target entry (where 1 - p_t cancels)
  norm_rel                         ||g_hat - g||_2 / ||g||_2 (inf when g_hat has a non-finite)
  angle                            the angle between g_hat and g in radians, by Kahan's
                                   2 atan2(|u - v|, |u + v|) of the unit vectors (accurate near
                                   0, where arccos of the cosine is not); nan if either is 0
  n_nonfinite                      entries of g_hat that are nan or +-inf
  n_flushed                        entries of g_hat that are 0 where the truth is not
  target_sign_error                g_hat_t > 0 while the truth g_t < 0
The metrics are evaluated in float64 (the computed values are exact in it; the truth's lo
enters the difference), never in the method's format.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["grad_error_columns", "GRAD_METRICS"]

GRAD_METRICS = ("entry_rel_median", "entry_rel_max", "target_rel", "norm_rel", "angle",
                "n_nonfinite", "n_flushed", "target_sign_error")


def _rel(c, hi, lo):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = (c - hi) - lo
        rel = np.abs(diff) / np.abs(hi)
    rel = np.where(diff == 0, 0.0, rel)
    return np.where(np.isfinite(c), rel, np.inf), diff


def _angle(c, g):
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        u = c / np.linalg.norm(c, axis=1, keepdims=True)
        v = g / np.linalg.norm(g, axis=1, keepdims=True)
        return 2.0 * np.arctan2(np.linalg.norm(u - v, axis=1), np.linalg.norm(u + v, axis=1))


def grad_error_columns(computed, hi, lo, targets) -> dict[str, np.ndarray]:
    """The per-row gradient metrics (see the module docstring) of `computed` (N, C) against
    the truth hi + lo (N, C) at `targets` (N,), plus the truth's target entry."""
    c = np.asarray(computed, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    r = np.arange(c.shape[0])
    t = np.asarray(targets, dtype=np.int64)
    rel, diff = _rel(c, hi, lo)
    truth_zero = (hi == 0) & (lo == 0)
    other = ~truth_zero
    other[r, t] = False
    masked = np.where(other, rel, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan rows: nan, as stated
        med = np.nanmedian(masked, axis=1)
        mx = np.nanmax(masked, axis=1)
        finite = np.isfinite(c).all(axis=1)
        norm = np.linalg.norm(np.where(np.isfinite(diff), diff, 0.0), axis=1)
        norm_rel = np.where(finite, norm / np.linalg.norm(hi, axis=1), np.inf)
        norm_rel = np.where(finite & (norm == 0), 0.0, norm_rel)
    return {"truth_target": hi[r, t], "computed_target": c[r, t],
            "entry_rel_median": med, "entry_rel_max": mx, "target_rel": rel[r, t],
            "norm_rel": norm_rel, "angle": np.where(finite, _angle(c, hi + lo), np.nan),
            "n_nonfinite": (~np.isfinite(c)).sum(axis=1),
            "n_flushed": ((c == 0) & ~truth_zero).sum(axis=1),
            "target_sign_error": (c[r, t] > 0) & (hi[r, t] < 0)}
