"""Scale x classes: the whole grid of logit scale and class count, as heatmaps

Question: over the plane of logit scale s (1e-2 to 1e5) and class count C (2 to 262144),
where is each method accurate, where does its error grow, and where does it stop returning a
finite loss, in each format and with each accumulator?

Data: logits s * z, z standard normal, targets uniform at random, on a grid of s (log-spaced)
by C = 2^k; rows per cell shrink as C grows (rows x C at most `max_logits`, at least
`min_rows` rows). With `--logits-file`, the user's logits replace the synthetic ones
(distribution `user`): each row truncated to C classes (its target kept, the first C - 1
others) for every C = 2^k below the user's count and the full count, and multiplied by every
s of the grid (s = 1 is the model as it is).

Method: every registered method in every format, the float32 accumulator as a variant for
float16 and bfloat16, and the batch mean (in results.csv); errors against the certified
loss of the rounded inputs. Three figures of heatmaps, one panel per method (rows) and format
+ accumulator (columns): the median relative error over the rows of a cell and the worst one,
both in units of the format's unit roundoff u, and the fraction of rows whose loss is inf or
nan.

Conclusions (the numbers in summary.md are computed from results.csv): the failure regions
are the overflow of the unshifted sum (naive: where the log-sum-exp passes the overflow logit)
and the underflow of the target probability (naive and softmax_log: where the loss passes
-log of the smallest subnormal); softmax_eps never fails but is wrong wherever the loss is large
or tiny
against eps; the shifted methods fail only where the format cannot hold the row at all, with
one exception in float16: past C = 65504, a sum of C terms near 1 overflows when it is rounded
back to float16 (float32 sums, the online method, torch); their error grows with C where the
sum is accumulated in float16 or bfloat16, which a float32 accumulator removes.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize

from precision_lab.analysis.grid import rows_for, user_cells
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.methods import stable_methods
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import (
    error_cmap,
    formats_in,
    heatmap_grid,
    nonfinite_cmap,
    order_table,
    truth_sentence,
    variants_in,
    with_variant,
)

NAME = "scale_classes"

ACCEPTS_LOGITS_FILE = True  # --logits-file replaces its synthetic logits

PROFILES = {
    "quick": {"scales": [0.01, 1.0, 10.0, 100.0, 1e4], "exponents": [1, 4, 8, 12],
              "min_rows": 2, "max_rows": 8, "max_logits": 1 << 11},
    "full": {"scales": [float(f"{v:.4g}") for v in np.logspace(-2, 5, 15)],
             "exponents": list(range(1, 19)), "min_rows": 4, "max_rows": 64,
             "max_logits": 1 << 16},
}


def cells(config, params) -> list[dict]:
    rows = partial(rows_for, params=params)
    if config.user_logits is not None:
        return user_cells(config, NAME, params["scales"], rows,
                          exponents=params["exponents"], scale_outer=False)
    return [{"distribution": "normal", "rows": rows(2 ** k), "classes": 2 ** k,
             "scale": float(s), "seed": config.seed}
            for k in params["exponents"] for s in params["scales"]]


def run(config, params) -> pd.DataFrame:
    return config.sweep(NAME, cells(config, params))


def _in_u(column):
    """Relative error in units of the format's unit roundoff, floored at u/100 (exact: 0)."""
    def values(sub):
        u = sub["format"].map(lambda f: FORMATS[f].unit_roundoff).to_numpy()
        v = sub[column].to_numpy(dtype=np.float64) / u
        return np.where(np.isfinite(v), np.maximum(v, 1e-2), np.nan)
    return values


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    d = with_variant(df[df["reduction"] == "none"])
    recs = []
    for (fmt, var), g in d.groupby(["format", "variant"], sort=False):
        u = FORMATS[fmt].unit_roundoff
        fin = g[g["nonfinite_frac"] == 0]
        fails = g["spurious_nonfinite_frac"] > 0
        recs.append({"format": fmt, "variant": var,
                     "median error / u (grid median)": float(np.median(fin["rel_err_median"]))
                     / u if len(fin) else np.nan,
                     "largest median error / u": float(fin["rel_err_median"].max()) / u
                     if len(fin) else np.nan,
                     "worst error / u": float(g["rel_err_max"].max()) / u
                     if g["rel_err_max"].notna().any() else np.nan,
                     "cells failing": f"{int(fails.sum())}/{len(g)}",
                     "smallest failing s": float(g[fails]["scale"].min()) if fails.any()
                     else np.inf})
    t = pd.DataFrame(recs)
    return order_table(t, formats_in(d), variants_in(d))


def _findings(rep, df, table, t1, fig) -> None:
    d = df[df["reduction"] == "none"]
    for var in ("naive", "softmax_log"):
        r = table[table["variant"] == var]
        if len(r):
            rep.finding(f"`{var}` returns inf or NaN for representable rows in "
                        + ", ".join(f"{row['cells failing']} cells in {row['format']}"
                                    for _, row in r.iterrows()) + ".", t1)
    shifted = d[d["method"].isin(stable_methods())]
    bad = shifted[shifted["spurious_nonfinite_frac"] > 0]
    c_max, s_max = int(d["classes"].max()), float(d["scale"].max())
    if len(bad) == 0:
        rep.finding(f"The shifted methods never return inf or NaN for a representable row on "
                    f"this grid (C <= {c_max}, s <= {s_max:g}).", fig)
    else:
        for fmt, g in bad.groupby("format", sort=False):
            n = len(g[["method", "accumulator"]].drop_duplicates())
            rep.finding(f"In {fmt}, {n} shifted variants return inf for representable rows "
                        f"from C = {int(g['classes'].min())}: a sum of C terms near 1 "
                        f"overflows when rounded back to {fmt}.", t1)
    for fmt in ("float16", "bfloat16"):
        w = table[(table["format"] == fmt) & (table["variant"] == "logsumexp")]
        f = table[(table["format"] == fmt) & (table["variant"] == "logsumexp (float32 sum)")]
        if len(w) and len(f):
            rep.finding(f"In {fmt}, `logsumexp`'s largest median relative error on the grid is "
                        f"{w['largest median error / u'].iloc[0]:.3g} u with {fmt} sums, "
                        f"{f['largest median error / u'].iloc[0]:.3g} u with float32 sums.", t1)


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    rep = report_for(NAME, __doc__, config, out_dir, truth=truth_sentence(fmts))
    d = df[df["reduction"] == "none"]
    dist = d["distribution"].iloc[0]
    table = summary_table(df)
    t1 = rep.table(table, f"Over the grid run of logit scale s ({len(d['scale'].unique())} "
                   f"values, {d['scale'].min():g} to {d['scale'].max():g}) and class count C "
                   f"({len(d['classes'].unique())} values, {d['classes'].min()} to "
                   f"{d['classes'].max()}), {dist} logits: the median over cells with every row "
                   f"finite of the median relative error and its largest value, the worst "
                   f"relative error of any finite row (all in units of the format's unit "
                   f"roundoff u), the cells with a representable row whose loss came out inf "
                   f"or NaN, and the smallest scale at which that happens.", stem="summary",
                   headline=True)
    norm = LogNorm(vmin=1e-2, vmax=1e4, clip=True)
    specs = [
        ("nonfinite", lambda sub: sub["nonfinite_frac"].to_numpy(), Normalize(0, 1),
         nonfinite_cmap(), "fraction of rows with an inf or NaN loss",
         f"Fraction of rows whose loss is inf or NaN ({dist} logits)"),
        ("median_error", _in_u("rel_err_median"), norm, error_cmap(),
         "median relative error / u (clipped to [0.01, 1e4])",
         f"Median relative error of the per-row loss, in units of u ({dist} logits)"),
        ("worst_error", _in_u("rel_err_max"), norm, error_cmap(),
         "worst relative error / u (clipped to [0.01, 1e4])",
         f"Worst relative error of the per-row loss over finite rows, in units of u "
         f"({dist} logits)"),
    ]
    figs = {}
    for stem, values, nm, cmap, label, title in specs:
        note = ("grey x: some rows overflow the format itself (logits, log-sum-exp or loss), "
                "where no method can succeed;  n/a: no such variant"
                if stem == "nonfinite" else None)
        fig = heatmap_grid(d, values, title, label, nm, cmap,
                           mark_partial=(stem != "nonfinite"), footnote=note)
        figs[stem] = rep.figure(fig, stem, title + ".", headline=(stem == "nonfinite"))
    _findings(rep, df, table, t1, figs["nonfinite"])
    rep.section("How to read the figures",
                "Each panel: logit scale s across, class count C up; one panel per method "
                "(rows) and format, with its float32-sum variant beside it for float16 and "
                "bfloat16 (torch uses its own accumulator and appears in the plain column). "
                "Errors are relative to the true loss and divided by the format's u; black "
                "cells have no finite row, a white dot marks cells where some rows are "
                "non-finite, a grey cross cells where some rows overflow the format itself.")
    return rep.write(out_dir)
