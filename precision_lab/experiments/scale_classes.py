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
-log of the smallest subnormal); softmax_eps never fails but is wrong wherever the loss is large or tiny
against eps; the shifted methods fail only where the format cannot hold the row at all, with
one exception in float16: past C = 65504, a sum of C terms near 1 overflows when it is rounded
back to float16 (float32 sums, the online method, torch); their error grows with C where the
sum is accumulated in float16 or bfloat16, which a float32 accumulator removes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize

from precision_lab.analysis.cells import class_counts_up_to, stage_arrays
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.methods import stable_methods
from precision_lab.reporting.figures import (
    caption,
    error_cmap,
    formats_in,
    heatmap_grid,
    nonfinite_cmap,
    order_table,
    plt,
    save_figure,
    variants_in,
    with_variant,
)
from precision_lab.reporting.tables import write_latex, write_markdown

NAME = "scale_classes"

PROFILES = {
    "quick": {"scales": [0.01, 1.0, 10.0, 100.0, 1e4], "exponents": [1, 4, 8, 12],
              "min_rows": 2, "max_rows": 8, "max_logits": 1 << 11},
    "full": {"scales": [float(f"{v:.4g}") for v in np.logspace(-2, 5, 15)],
             "exponents": list(range(1, 19)), "min_rows": 4, "max_rows": 64,
             "max_logits": 1 << 16},
}


def rows_for(classes: int, params) -> int:
    return int(max(params["min_rows"], min(params["max_rows"], params["max_logits"] // classes)))


def cells(config, params) -> list[dict]:
    out = []
    if config.user_logits is not None:
        x, t = config.user_logits
        staged = stage_arrays(config.checkpoint_dir(NAME), "user", x, t)
        for c in class_counts_up_to(int(x.shape[1]), params["exponents"]):
            for s in params["scales"]:
                out.append({"distribution": "user", "rows": min(len(t), rows_for(c, params)),
                            "classes": c, "scale": float(s), "seed": config.seed, **staged})
        return out
    for k in params["exponents"]:
        for s in params["scales"]:
            c = 2 ** k
            out.append({"distribution": "normal", "rows": rows_for(c, params), "classes": c,
                        "scale": float(s), "seed": config.seed})
    return out


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
                     "cells failing (%)": 100 * float(fails.mean()),
                     "smallest failing s": float(g[fails]["scale"].min()) if fails.any()
                     else np.inf})
    t = pd.DataFrame(recs)
    return order_table(t, formats_in(d), variants_in(d))


def _notes(df, table) -> list[str]:
    notes = []
    d = df[df["reduction"] == "none"]
    n_cells = len(d.drop_duplicates(["scale", "classes"]))
    for var in ("naive", "softmax_log"):
        r = table[table["variant"] == var]
        if len(r):
            parts = [f"{row['format']} {row['cells failing (%)']:.0f}%"
                     for _, row in r.iterrows()]
            notes.append(f"`{var}` returns inf or NaN for rows the format can represent in "
                         f"this share of the {n_cells} (scale, classes) cells: "
                         + ", ".join(parts) + ".")
    shifted = d[d["method"].isin(stable_methods())]
    bad = shifted[shifted["spurious_nonfinite_frac"] > 0]
    if len(bad) == 0:
        notes.append("The shifted methods never return inf or NaN for a row the format can "
                     "represent anywhere on the grid.")
    else:
        parts = []
        for fmt, g in bad.groupby("format", sort=False):
            names = sorted({f"`{m}`" + (" (float32 sum)" if a == "float32" else "")
                            for m, a in zip(g["method"], g["accumulator"])})
            parts.append(f"in {fmt} from C = {int(g['classes'].min())} (s <= "
                         f"{g['scale'].max():g}): " + ", ".join(names))
        notes.append("The shifted methods return inf or NaN for representable rows only where "
                     "a sum of C terms near 1 overflows when rounded back to the format, "
                     + "; ".join(parts) + ".")
    for fmt in ("float16", "bfloat16"):
        w = table[(table["format"] == fmt) & (table["variant"] == "logsumexp")]
        f = table[(table["format"] == fmt) & (table["variant"] == "logsumexp (float32 sum)")]
        if len(w) and len(f):
            notes.append(f"In {fmt}, `logsumexp`'s largest median relative error over the grid "
                         f"is {w['largest median error / u'].iloc[0]:.3g} u with {fmt} sums and "
                         f"{f['largest median error / u'].iloc[0]:.3g} u with float32 sums "
                         f"(u = {FORMATS[fmt].unit_roundoff:.2g}).")
    w = table[table["variant"] == "logsumexp"]
    if len(w):
        notes.append("The worst relative error of even the stable methods reaches "
                     + ", ".join(f"{r['worst error / u']:.3g} u in {r['format']}"
                                 for _, r in w.iterrows())
                     + ": losses far below u times the largest logit (a confident correct row) "
                     "are computed as a difference of two nearly equal numbers and come out as "
                     "0 or a few ulps of the logit; the BHH bound's u|y| term allows exactly "
                     "this.")
    return notes


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    cap = caption(fmts, config.seed)
    d = df[df["reduction"] == "none"]
    dist = d["distribution"].iloc[0]
    norm = LogNorm(vmin=1e-2, vmax=1e4, clip=True)
    specs = [
        ("median_error", _in_u("rel_err_median"), norm, error_cmap(),
         "median relative error / u (clipped to [0.01, 1e4])",
         f"Median relative error of the per-row loss, in units of u ({dist} logits)"),
        ("worst_error", _in_u("rel_err_max"), norm, error_cmap(),
         "worst relative error / u (clipped to [0.01, 1e4])",
         f"Worst relative error of the per-row loss over finite rows, in units of u "
         f"({dist} logits)"),
        ("nonfinite", lambda sub: sub["nonfinite_frac"].to_numpy(), Normalize(0, 1),
         nonfinite_cmap(), "fraction of rows with an inf or NaN loss",
         f"Fraction of rows whose loss is inf or NaN ({dist} logits)"),
    ]
    for stem, values, nm, cmap, label, title in specs:
        note = ("grey x: some rows overflow the format itself (logits, log-sum-exp or loss), "
                "where no method can succeed;  n/a: no such variant"
                if stem == "nonfinite" else None)
        fig = heatmap_grid(d, values, title, label, nm, cmap,
                           mark_partial=(stem != "nonfinite"), footnote=note)
        save_figure(fig, out_dir, stem)
        plt.close(fig)
    table = summary_table(df)
    notes = _notes(df, table)
    tcap = (f"Over the grid of logit scale s ({len(d['scale'].unique())} values, "
            f"{d['scale'].min():g} to {d['scale'].max():g}) and class count C "
            f"({len(d['classes'].unique())} values, {d['classes'].min()} to "
            f"{d['classes'].max()}), {dist} logits: the median over cells with every row finite "
            f"of the median relative error and its largest value, the worst relative error of "
            f"any finite row (all in units of the format's unit roundoff u), the share of cells with a row the "
            f"format can represent whose loss came out inf or NaN, and the smallest scale at "
            f"which that happens. {cap}")
    md = out_dir / "summary.md"
    write_markdown(table, md, title="Scale x classes: accuracy and failures over the grid",
                   caption=tcap)
    write_latex(table, out_dir / "summary.tex", caption=tcap, label="tab:scale-classes")
    with open(md, "a", encoding="utf-8") as f:
        f.write("\n## Findings\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
        f.write("\n## Figures\n\n")
        for stem in ("median_error", "worst_error", "nonfinite"):
            f.write(f"![{stem}]({stem}.png)\n\n")
        f.write("Each panel: logit scale s across, class count C up; one panel per method "
                "(rows) and format, with its float32-sum variant beside it for float16 and "
                "bfloat16 (torch uses its own accumulator and appears in the plain column). "
                "Errors are relative to the true loss and divided by the format's u; black "
                "cells have no finite row, a white dot marks cells where some rows are "
                "non-finite, a grey cross cells where some rows overflow the format itself.\n\n")
        f.write(f"{cap}\n")
    return [{"text": n, "link": "nonfinite.png" if i == 0 else "summary.md",
             "label": "figure" if i == 0 else "table"} for i, n in enumerate(notes)]
