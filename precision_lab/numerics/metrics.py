"""Error of computed values against a ground truth held as a double-double (hi + lo).

abs_err  = |computed - truth|;  rel_err = abs_err / |truth|
ulp_err  = abs_err / ulp_fmt(truth), the spacing of the format in truth's binade
bits_err = log2(1 + |ordinal(computed) - ordinal(RN_fmt(truth))|)  (Herbie); a nan, or an
           infinity where the rounded truth is finite, counts as the format's full width
outcome  = finite | zero (computed 0, truth not 0) | +inf | -inf | nan

A truth beyond float64's range comes scaled, (hi + lo) 2**exp with 1 <= hi <= 2 (`exp`, int,
0 elsewhere): its errors are computed in the scaled space, so rel_err, ulp_err, bits_err and
the outcome are right at every magnitude (a returned 0 against a truth of 5e-435: rel_err 1,
outcome zero); abs_err is a float64 and overflows to inf (underflows to 0) where the error
itself leaves float64's range. The format's ulp there is that of the truth's binade (exponent
unbounded above, the smallest subnormal below), RN_fmt of such a truth is inf (above) or 0
(below) in every format carried in float64.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from .formats import Format, get_format, quantum_exponent

__all__ = ["errors", "round_truth", "ordinal", "OUTCOMES", "NONFINITE", "aggregate",
           "ulps_at_max1"]

OUTCOMES = ("finite", "zero", "+inf", "-inf", "nan")
NONFINITE = ("+inf", "-inf", "nan")


def ordinal(v, fmt: Format) -> np.ndarray:
    """Integer position (int64) of each finite format value on the number line, 0 at +-0:
    adjacent values of the format differ by 1, so ordinal differences count the values in
    between. Computed from the value (any format, with or without a storage dtype): a value
    m * 2**q with integer significand m and the format's spacing 2**q at it sits at
    (binade - emin) * 2**(p-1) + m, which is the magnitude of its bit pattern in IEEE and OCP
    encodings. `v` is rounded to the format first; non-finite values give 0."""
    x = fmt.round(np.asarray(v, dtype=np.float64))
    a = np.where(np.isfinite(x), np.abs(x), 0.0)
    q = quantum_exponent(a, fmt)
    m = np.ldexp(a, -q).astype(np.int64)  # integer significand, < 2**p
    binade = q - (fmt.emin - fmt.precision + 1)  # 0 for subnormals and the first binade
    mag = np.where(a == 0, 0, binade.astype(np.int64) * (1 << (fmt.precision - 1)) + m)
    return np.where(np.signbit(x), -mag, mag)


def round_truth(hi, lo, fmt: Format) -> np.ndarray:
    """The truth hi + lo correctly rounded to `fmt` (float64 carrier).

    Rounding hi alone would round twice; where hi is a midpoint of `fmt` and lo != 0, lo says
    which side the truth lies on, so hi is nudged one float64 step towards it first.
    """
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    if fmt.is_float64:
        return hi.copy()
    r = fmt.round(hi)
    with np.errstate(invalid="ignore"):
        up, down = fmt.round(np.nextafter(hi, np.inf)), fmt.round(np.nextafter(hi, -np.inf))
        midpoint = (r != hi) & (up != down) & np.isfinite(hi)
    nudged = fmt.round(np.nextafter(hi, np.where(lo > 0, np.inf, -np.inf)))
    return np.where(midpoint & (lo != 0), nudged, r)


def ulps_at_max1(computed, hi, fmt, lo=0.0, abs_err=None) -> np.ndarray:
    """|computed - truth| in ULPs of `fmt` at max(|truth|, 1), truth = hi + lo (the error
    `precision-lab check` thresholds): an infinite result equal to the truth rounded to `fmt`
    (a true loss past the format's range) counts 0, a NaN or any other non-finite result inf.
    `abs_err`, when given, is |computed - truth| already formed (e.g. `errors`' column)."""
    fmt = get_format(fmt)
    c = np.asarray(computed, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = (np.abs((c - hi) - np.asarray(lo, dtype=np.float64)) if abs_err is None
                else np.asarray(abs_err, dtype=np.float64))
        rt = fmt.round(hi)  # a true loss past the format's range rounds to inf
        diff = np.where(np.isinf(c) & (c == rt), 0.0, diff)
        diff = np.where(~np.isfinite(c) & np.isfinite(rt), np.inf, diff)
        unit = fmt.ulp(np.maximum(np.abs(hi), 1.0))
        return np.where(np.isnan(diff), np.inf, diff / unit)


def _truth_ulp(hi, lo, fmt: Format) -> np.ndarray:
    ulp = fmt.ulp(hi)
    # hi a power of two with the truth just below it: the truth's binade is the one below.
    mant, _ = np.frexp(np.abs(hi))
    below = (mant == 0.5) & (np.sign(lo) == -np.sign(hi)) & (np.abs(hi) > fmt.min_normal)
    return np.where(below, ulp / 2, ulp)


def errors(computed: ArrayLike, hi: ArrayLike, lo: ArrayLike, fmt: Format | str,
           exp: ArrayLike | None = None) -> pd.DataFrame:
    """Per-row errors of `computed` (float64 carrying `fmt` values) against truth
    (hi + lo) 2**exp (exp None: 0)."""
    return pd.DataFrame(error_columns(computed, hi, lo, fmt, exp))


def _scaled_errors(c, hi, lo, exp, fmt: Format):
    """abs_err, rel_err, ulp_err, RN_fmt(truth) for truths (hi + lo) 2**exp, exp != 0."""
    with np.errstate(invalid="ignore", over="ignore", under="ignore", divide="ignore"):
        cs = np.ldexp(c, -exp)                      # exact but for over/underflow
        d = np.abs((cs - hi) - lo)
        d = np.where(np.isinf(cs) & (cs == hi), 0.0, d)
        rel = np.where(d == 0, 0.0, d / np.abs(hi))
        absolute = np.ldexp(d, exp)
        fr, e = np.frexp(np.abs(hi))
        binade = exp + e - 1 - ((fr == 0.5) & (np.sign(lo) == -np.sign(hi)))
        quantum = np.maximum(binade - fmt.precision + 1, fmt.emin - fmt.precision + 1)
        ulp = np.where(d == 0, 0.0, np.ldexp(d, exp - quantum))
    rounded = np.copysign(np.where(exp > 0, np.inf, 0.0), hi)
    return absolute, rel, ulp, rounded


def error_columns(computed, hi, lo, fmt, exp=None) -> dict[str, np.ndarray]:
    """The columns of `errors`, as arrays; `exp` the truth's binary exponents (None: all 0)."""
    fmt = get_format(fmt)
    c = np.asarray(computed, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    scaled = None
    if exp is not None:
        exp = np.broadcast_to(np.asarray(exp, dtype=np.int64), hi.shape)
        scaled = exp != 0
        if not scaled.any():
            scaled = None
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = (c - hi) - lo
        abs_err = np.abs(diff)
        both_inf = np.isinf(c) & (c == hi)
        abs_err = np.where(both_inf, 0.0, abs_err)
        rel_err = np.where(abs_err == 0, 0.0, abs_err / np.abs(hi))
        ulp_err = np.where(abs_err == 0, 0.0, abs_err / _truth_ulp(hi, lo, fmt))
        rounded = round_truth(hi, lo, fmt)
        if scaled is not None:
            sa, sr, su, sround = _scaled_errors(c[scaled], hi[scaled], lo[scaled],
                                                exp[scaled], fmt)
            abs_err, rel_err, ulp_err = abs_err.copy(), rel_err.copy(), ulp_err.copy()
            abs_err[scaled], rel_err[scaled], ulp_err[scaled] = sa, sr, su
            rounded[scaled] = sround
        finite_pair = np.isfinite(c) & np.isfinite(rounded)
        dist = np.abs(ordinal(np.where(finite_pair, c, 0.0), fmt)
                      - ordinal(np.where(finite_pair, rounded, 0.0), fmt)).astype(np.float64)
        bits = np.log2(1.0 + dist)
        full = float(fmt.bits)
        bits = np.where(finite_pair, bits, np.where(c == rounded, 0.0, full))
    outcome = np.full(c.shape, "finite", dtype=object)
    outcome[(c == 0) & (hi != 0)] = "zero"
    outcome[c == np.inf] = "+inf"
    outcome[c == -np.inf] = "-inf"
    outcome[np.isnan(c)] = "nan"
    return {"computed": c, "abs_err": abs_err, "rel_err": rel_err, "ulp_err": ulp_err,
            "bits_err": bits, "outcome": outcome}


def aggregate(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: `count` of rows, outcome counts and fractions, error statistics.

    Non-finite rows are never dropped silently: they are counted in `nonfinite_frac` and one
    column per outcome; `bits_err_mean` covers all rows (non-finite rows at full width, as
    Herbie counts them), the other statistics the rows whose computed value is finite (nan
    where a group has none).
    """
    groups = df.groupby(by, sort=False, dropna=False)
    out = groups.size().rename("count").to_frame()
    nonfinite = df["outcome"].isin(NONFINITE)
    out["nonfinite_frac"] = nonfinite.groupby([df[k] for k in by], sort=False,
                                              dropna=False).mean()
    counts = pd.crosstab([df[k] for k in by], df["outcome"], dropna=False)
    for o in OUTCOMES:
        out[f"n_{o}"] = counts[o].reindex(out.index, fill_value=0).astype(int) \
            if o in counts else 0
    finite = df[np.isfinite(df["computed"].to_numpy())]
    fin = finite.groupby(by, sort=False, dropna=False)
    for col in ("rel_err", "ulp_err"):
        out[f"{col}_median"] = fin[col].median().reindex(out.index)
        out[f"{col}_max"] = fin[col].max().reindex(out.index)
    out["bits_err_mean"] = groups["bits_err"].mean()
    out["bits_err_max"] = groups["bits_err"].max()
    return out.reset_index()
