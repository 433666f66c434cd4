"""Gradient scale: the error of dL/dx against logit scale and class count

Question: how does the norm-wise error ||g_hat - g|| / ||g|| of each backward grow with the
logit scale s and the number of classes C, in each format, and where do entries flush to zero
or turn non-finite?

Data: logits s * z, z standard normal, for the profile's scales and class counts; targets
uniform at random.

Method: every method's backward (numerics.gradients) in every format (the float32 sum as a
variant for float16 and bfloat16), against the certified gradient of the rounded inputs
(>= 100 bits per entry); per cell the median over rows of the norm-wise relative error, and
the counts of flushed and non-finite entries.

Conclusions: generated from results.csv into the findings.
"""
from __future__ import annotations

import pandas as pd

from precision_lab.analysis.evaluate_grad import grad_cell
from precision_lab.numerics.formats import STANDARD_FORMATS
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import error_pivot, formats_in
from precision_lab.reporting.grad_figures import grad_truth, line_panels

from ._grad_common import floors, loss_vs_grad_notes, loss_vs_grad_table, series_in

NAME = "grad_scale"

PROFILES = {
    "quick": {"scales": [1.0, 10.0, 100.0], "classes": [16, 1024], "rows": 4},
    "full": {"scales": [0.1, 1.0, 10.0, 100.0, 1000.0], "classes": [4, 64, 1024, 16384],
             "rows": 8},
}


def run(config, params) -> pd.DataFrame:
    cells = [{"distribution": "normal", "rows": params["rows"], "classes": c, "scale": float(s),
              "seed": config.seed, "formats": list(STANDARD_FORMATS), "with_loss": True}
             for c in params["classes"] for s in params["scales"]]
    return config.sweep(NAME, cells, fn=grad_cell)


def extremes_notes(d: pd.DataFrame) -> list[str]:
    """Per 16-bit format at the largest C: the largest and smallest finite median norm-wise
    error, with the backward and scale."""
    notes = []
    cmax = int(d["classes"].max())
    for fmt in [f for f in ("bfloat16", "float16") if f in set(d["format"])]:
        g = d[(d["format"] == fmt) & (d["classes"] == cmax)]
        g = g[g["norm_rel_median"] < float("inf")]
        if not len(g):
            continue
        worst = g.loc[g["norm_rel_median"].idxmax()]
        best = g.loc[g["norm_rel_median"].idxmin()]
        notes.append(f"{fmt}, C = {cmax}: the largest finite median norm-wise error is "
                     f"{worst['norm_rel_median']:.2g} (`{worst['method']}`, "
                     f"{worst['accumulator']} sums, s = {worst['scale']:g}), the smallest "
                     f"{best['norm_rel_median']:.2g} (`{best['method']}`, s = {best['scale']:g}).")
    return notes


def nonfinite_table(d: pd.DataFrame) -> pd.DataFrame:
    """Per format and method with any: gradient entries non-finite and flushed to zero, summed
    over every cell (scales x class counts x accumulators), and the entries computed."""
    g = d.assign(entries=d["count"] * d["classes"]).groupby(
        ["format", "method"], sort=False)[["n_nonfinite", "n_flushed", "entries"]].sum()
    g = g[(g["n_nonfinite"] > 0) | (g["n_flushed"] > 0)].reset_index()
    return g.rename(columns={"n_nonfinite": "entries non-finite",
                             "n_flushed": "entries flushed"}).astype(
        {"entries non-finite": int, "entries flushed": int, "entries": int})


def nonfinite_notes(nt: pd.DataFrame) -> list[str]:
    bad = nt[nt["entries non-finite"] > 0]
    if bad.empty:
        return ["No backward returns a non-finite gradient entry in any cell of this grid."]
    out = []
    for m, g in bad.groupby("method", sort=False):
        parts = ", ".join(f"{f} {k}/{n}" for f, k, n in zip(g["format"],
                                                            g["entries non-finite"],
                                                            g["entries"]))
        out.append(f"`{m}` returns non-finite gradient entries (all cells): {parts}.")
    return out[:3]


def findings_for(d: pd.DataFrame) -> list[str]:
    return extremes_notes(d) + nonfinite_notes(nonfinite_table(d))


def report(df, config, params, out_dir) -> list[dict]:
    d = df[df["reduction"] == "none"]
    fmts = formats_in(d)
    rep = report_for(NAME, __doc__, config, out_dir, truth=grad_truth(fmts))
    cs = sorted(d["classes"].unique())
    cmax = int(max(cs))
    table = error_pivot(d[d["classes"] == cmax].assign(rel_err_median=d["norm_rel_median"],
                                                       nonfinite_frac=0.0),
                        "scale", sorted(d["scale"].unique()), lambda s: f"s = {s:g}")
    t1 = rep.table(table, f"Median over rows of the norm-wise relative error ||g_hat - g|| / "
                   f"||g|| of dL/dx at C = {cmax} ({int(params['rows'])} rows of normal "
                   f"logits s * z per cell), per format, backward and logit scale s; inf: a "
                   f"non-finite entry.", stem="norm_error", headline=True)
    figs = {}
    for c in sorted(cs, key=lambda c: c != cmax):  # the headline figure (largest C) first
        dc = d[d["classes"] == c]
        fig = line_panels(dc, "scale", "norm_rel_median", "format", fmts,
                          {f: series_in(dc, f) for f in fmts}, "logit scale s",
                          "median ||g_hat - g|| / ||g||",
                          f"Norm-wise error of dL/dx against logit scale (C = {c})",
                          floor=floors(fmts))
        figs[c] = rep.figure(fig, f"scale_C{c}", f"Median norm-wise relative error of dL/dx "
                             f"against the logit scale s, C = {c}, one panel per format "
                             f"(float32 sums where a method has them in float16 and "
                             f"bfloat16); errors below u/100 drawn at u/100.",
                             headline=c == cmax)
    nt = nonfinite_table(d)
    lt = loss_vs_grad_table(d, "scale x C", "norm_rel_median")
    t2 = rep.table(nt, "Gradient entries non-finite and flushed to zero, per format and "
                   "method (every cell and accumulator), out of the entries computed; "
                   "methods with none are left out.", stem="nonfinite") if len(nt) else None
    t3 = rep.table(lt, "Does an accurate loss predict an accurate gradient? (cell, backward) "
                   "cases whose loss is within 1%, and of them those whose median gradient "
                   "error passes 10%.", stem="loss_vs_grad")
    for n in extremes_notes(d):
        rep.finding(n, t1)
    for n in nonfinite_notes(nt):
        rep.finding(n, t2 or t1)
    for n in loss_vs_grad_notes(d, "scale x C", "norm_rel_median"):
        rep.finding(n, t3)
    rep.section("How to read the figures", "One colour per method family (unshifted red, "
                "softmax orange, shifted blue, library green); line styles tell a family's "
                "backwards apart.")
    return rep.write(out_dir)
