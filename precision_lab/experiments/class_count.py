"""Class count: how the error of each cross-entropy method grows with the number of classes

Question: from 2 classes to 262144 (2^1 ... 2^18, beyond the vocabularies of today's language
models), how does the error of each method grow with the class count C, in each format, and
what does accumulating the sum in float32 buy for float16 and bfloat16?

Data: logits s * z, z standard normal, for C = 2^1 ... 2^18 at the scales s in the profile
(0.01: nearly equal logits, where the sum of C terms of about 1 each dominates; 1 and 10:
typical trained models; 100: a few logits dominate), targets uniform at random. Rows per cell
shrink as C grows (at most `max_rows`, at least `min_rows`, rows x C at most `max_logits`), so
the largest cells hold a few rows of 262144 logits. With `--logits-file`, the user's logits
replace the synthetic ones (distribution `user`, scale 1): each row truncated to its first
C - 1 non-target classes plus the target (kept in place), for every C = 2^k below the user's
class count and the full count itself, so the curve shows what a larger or smaller
vocabulary of the same model would cost.

Method: every registered method in every format, the float32 accumulator as a variant for
float16 and bfloat16, and the batch mean (reduction='mean'); errors against the certified
mpmath loss of the rounded inputs; the Blanchard-Higham-Higham bound of the shifted algorithm,
whose summation term grows as C u, overlaid.

Conclusions (the numbers in the report come from results.csv): with sums in the working
format, the error of every method that sums C exponentials grows with C, fastest in bfloat16
and float16, where a sequential sum of terms near 1 stalls once it reaches about 1/u (256 for
bfloat16, 2048 for float16), marked on the figures; a float32 accumulator removes most of that
growth. The unshifted `naive` loss overflows float16 at large C even for small logits, since
its sum of C exponentials passes 65504. Past C = 65504 the same happens to shifted methods in
float16 whenever their sum of C terms near 1 is rounded back to float16 (float32 sums, the
online method, torch on the CPU): they return inf although the loss (about log C) is
representable, while a sum kept in float16 stalls and stays finite, but wrong. The shifted
methods stay within the BHH bound wherever they are finite.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from precision_lab.analysis.cells import bhh_sentence, bhh_summary
from precision_lab.analysis.grid import rows_for, user_cells
from precision_lab.numerics.formats import FORMATS, get_format
from precision_lab.numerics.methods import stable_methods
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import (
    error_panels_legend,
    error_pivot,
    formats_in,
    mark_vline,
    plot_error_panels,
    truth_sentence,
)

NAME = "class_count"

ACCEPTS_LOGITS_FILE = True  # --logits-file replaces its synthetic logits

PROFILES = {
    "quick": {"exponents": [1, 4, 8, 11, 14], "scales": [0.01, 1.0, 10.0],
              "min_rows": 2, "max_rows": 16, "max_logits": 1 << 12, "user_scales": [1.0]},
    "full": {"exponents": list(range(1, 19)), "scales": [0.01, 0.1, 1.0, 10.0, 100.0],
             "min_rows": 8, "max_rows": 128, "max_logits": 1 << 19, "user_scales": [1.0],
             "formats": ["float16", "bfloat16", "float32", "float64", "float8_e5m2",
                         "float8_e4m3fn"]},
}


def cells(config, params) -> list[dict]:
    rows = partial(rows_for, params=params)
    if config.user_logits is not None:
        return user_cells(config, NAME, params["user_scales"], rows,
                          exponents=params["exponents"])
    return [{"distribution": "normal", "rows": rows(2 ** k), "classes": 2 ** k,
             "scale": float(s), "seed": config.seed}
            for s in params["scales"] for k in params["exponents"]]


def run(config, params) -> pd.DataFrame:
    return config.sweep(NAME, cells(config, params))


def _log2_axes(fig, cs) -> None:
    """Powers of two on the C axis, limited to the class counts actually run."""
    k0, k1 = int(np.log2(min(cs))), int(np.log2(max(cs)))
    step = max(1, (k1 - k0) // 6 + 1)
    for ax in fig.axes:
        if ax.get_xscale() == "log":
            ax.set_xlim(min(cs) / 1.3, max(cs) * 1.3)
            ax.xaxis.set_major_locator(FixedLocator([2.0 ** k for k in range(k0, k1 + 1, step)]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"2^{int(np.log2(v))}"))
            ax.xaxis.set_minor_locator(NullLocator())


def _vlines(ax, fmt, scale, sub):
    """C = 1/u: where a sequential sum of terms near 1 in the format stops growing."""
    f = get_format(fmt)
    c = 1 / f.unit_roundoff
    xmax = float(sub["classes"].max()) if sub is not None and len(sub) else 2.0 ** 18
    if c <= xmax * 1.01:
        mark_vline(ax, c, f"C = 1/u = {c:g}" if sub is not None else None, linestyle=":")


def _median_err(d, fmt, method, acc, scale, c):
    r = d[(d["format"] == fmt) & (d["method"] == method) & (d["accumulator"] == acc)
          & (d["scale"] == scale) & (d["classes"] == c)]
    return float(r["rel_err_median"].iloc[0]) if len(r) else np.nan


SHIFTED = tuple(stable_methods())


def _sum_label(m: str, a: str, fmt: str) -> str:
    return f"{m} (" + ("float32 sum" if a == "float32" else f"{fmt} sum" if a == "working"
                       else "own sum") + ")"


def naive_failures(d: pd.DataFrame) -> pd.DataFrame:
    """Per accumulator and scale: the first class count at which the unshifted `naive` loss in
    float16 is non-finite for at least half the rows it could represent, with the median
    log-sum-exp and largest logit there."""
    nf = d[(d["method"] == "naive") & (d["format"] == "float16")]
    recs = []
    for (acc, sc), h in nf.groupby(["accumulator", "scale"], sort=False):
        half = h.sort_values("classes")
        half = half[half["spurious_nonfinite_frac"] >= 0.5]
        if len(half):
            r = half.iloc[0]
            recs.append({"sum": "float32" if acc == "float32" else "float16", "scale s": sc,
                         "first C": int(r["classes"]), "rows failing": _count(r),
                         "median log-sum-exp": r["lse_median"],
                         "median largest logit": r["max_logit_median"]})
    return pd.DataFrame(recs, columns=["sum", "scale s", "first C", "rows failing",
                                       "median log-sum-exp", "median largest logit"])


def _count(r) -> str:
    n = int(r["count"])
    return f"{int(round(r['spurious_nonfinite_frac'] * n))}/{n}"


def sum_overflows(d: pd.DataFrame) -> pd.DataFrame:
    """Shifted methods that return inf or NaN for rows the format can represent: per format and
    variant, the first class count and the scales at which it happens."""
    st = d[d["method"].isin(SHIFTED)]
    bad = st[st["spurious_nonfinite_frac"] > 0]
    recs = []
    for (fmt, m, a), g in bad.groupby(["format", "method", "accumulator"], sort=False):
        recs.append({"format": fmt, "variant": _sum_label(m, a, fmt),
                     "first C": int(g["classes"].min()),
                     "scales s": ", ".join(f"{v:g}" for v in sorted(g["scale"].unique()))})
    return pd.DataFrame(recs, columns=["format", "variant", "first C", "scales s"])


def _findings(rep, df, t1, naive, overflow, f1) -> None:
    (t2, r2), (t3, r3) = naive, overflow
    d = df[df["reduction"] == "none"]
    scales = sorted(d["scale"].unique())
    s = 1.0 if 1.0 in scales else scales[len(scales) // 2]
    cs = sorted(d["classes"].unique())
    lo, hi = cs[0], cs[-1]
    dist = d["distribution"].iloc[0]
    for fmt in [f for f in ("float16", "bfloat16") if f in set(d["format"])]:
        w0 = _median_err(d, fmt, "logsumexp", "working", s, lo)
        w1 = _median_err(d, fmt, "logsumexp", "working", s, hi)
        f1v = _median_err(d, fmt, "logsumexp", "float32", s, hi)
        if np.isfinite(w0) and np.isfinite(w1):
            verb = "grows" if w1 > w0 else "falls" if w1 < w0 else "stays"
            text = (f"{fmt}, {fmt} sums: `logsumexp`'s median relative error {verb} from "
                    f"{w0:.2g} (C = {lo}) to {w1:.2g} (C = {hi}), s = {s:g}, {dist} logits")
            if np.isfinite(f1v):
                text += f"; float32 sums: {f1v:.2g} at C = {hi}"
            rep.finding(text + ".", t1)
    if len(t2):
        first = t2.sort_values("first C").iloc[0]
        rep.finding(f"Unshifted `naive` in float16 fails for at least half the rows from "
                    f"C = {first['first C']} (s = {first['scale s']:g}, {first['sum']} sums): "
                    f"once the log-sum-exp, not the largest logit, passes 11.09.", r2)
    if len(t3):
        for fmt, g in t3.groupby("format", sort=False):
            rep.finding(f"In {fmt}, {len(g)} shifted variants return inf for representable "
                        f"rows from C = {g['first C'].min()}: a sum of C terms near 1 rounded "
                        f"back to {fmt} overflows past {FORMATS[fmt].max_finite:g}.", r3)
    else:
        rep.finding("Every shifted method returns a finite loss for every representable row, "
                    "at every class count and scale of this grid.", f1)
    bhh = bhh_summary(d)
    if bhh is not None:
        rep.finding(bhh_sentence(bhh, f"C <= {d['classes'].max()}"), f1)


def _columns(cs: list) -> list:
    """At most six class counts of the grid actually run, first and last included."""
    if len(cs) <= 6:
        return list(cs)
    return [cs[i] for i in sorted({int(round(v)) for v in np.linspace(0, len(cs) - 1, 6)})]


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    rep = report_for(NAME, __doc__, config, out_dir, truth=truth_sentence(fmts))
    d = df[df["reduction"] == "none"]
    scales = sorted(d["scale"].unique())
    dist = d["distribution"].iloc[0]
    s = 1.0 if 1.0 in scales else scales[len(scales) // 2]
    cs = sorted(d["classes"].unique())
    table = error_pivot(d[d["scale"] == s], "classes", _columns(cs), lambda c: f"C = {c}")
    t1 = rep.table(table, f"Median relative error of the per-row cross-entropy loss at logit "
                   f"scale s = {s:g} ({dist} logits), at class counts C of the grid run; the "
                   f"share of non-finite rows in brackets.", stem="errors", headline=True)
    fig = plot_error_panels(
        d, x="classes", row_key="scale", row_values=scales, row_label=lambda v: f"s = {v:g}",
        xlabel="number of classes C", vlines=_vlines,
        title=f"Median relative error of the per-row loss against the number of classes "
              f"({dist} logits x s)")
    _log2_axes(fig, cs)
    f1 = rep.figure(fig, "classes", "Median relative error against C, one row of panels per "
                    "scale s, one column per format.", headline=True)
    t2 = naive_failures(d)
    t3 = sum_overflows(d)
    r2 = rep.table(t2, "Unshifted `naive` in float16: first class count C at which at least "
                   "half the representable rows return inf or NaN, per accumulator and "
                   "scale.", stem="naive") if len(t2) else None
    r3 = rep.table(t3, "Shifted methods returning inf or NaN for rows the format can "
                   "represent: first class count and scales.", stem="sum_overflow") \
        if len(t3) else None
    _findings(rep, df, t1, (t2, r2), (t3, r3), f1)
    mean = df[df["reduction"] == "mean"]
    rep.section("Batch mean (reduction='mean')")
    fig = plot_error_panels(
        mean.assign(reduction="none", bhh_bound_rel_median=np.nan), x="classes",
        row_key="scale", row_values=scales, row_label=lambda v: f"s = {v:g}",
        xlabel="number of classes C", ylabel="relative error of the batch mean", bound=False,
        vlines=_vlines,
        title=f"Relative error of the batch-mean loss (reduction='mean') against the number "
              f"of classes ({dist} logits x s)")
    _log2_axes(fig, cs)
    rep.figure(fig, "classes_mean", "Relative error of the batch mean against C.")
    rows = d.drop_duplicates("classes").set_index("classes")["rows"]
    rep.section("How to read the figures", error_panels_legend(
        "Dotted vertical line: C = 1/u, where a sequential sum of terms near 1 in the format "
        "stops growing."))
    rep.paragraph("Rows per cell: " + ", ".join(f"{r} for C = {c}" for c, r in rows.items())
                  + ".")
    return rep.write(out_dir)
