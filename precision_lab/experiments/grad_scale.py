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
from precision_lab.numerics.formats import FORMATS
from precision_lab.reporting.figures import error_pivot, formats_in, plt, save_figure
from precision_lab.reporting.grad_figures import grad_caption, line_panels
from precision_lab.reporting.tables import write_latex, write_markdown

from ._grad_common import floors, loss_vs_grad_notes, series_in

NAME = "grad_scale"

PROFILES = {
    "quick": {"scales": [1.0, 10.0, 100.0], "classes": [16, 1024], "rows": 4},
    "full": {"scales": [0.1, 1.0, 10.0, 100.0, 1000.0], "classes": [4, 64, 1024, 16384],
             "rows": 8},
}


def run(config, params) -> pd.DataFrame:
    cells = [{"distribution": "normal", "rows": params["rows"], "classes": c, "scale": float(s),
              "seed": config.seed, "formats": list(FORMATS), "with_loss": True}
             for c in params["classes"] for s in params["scales"]]
    return config.sweep(NAME, cells, fn=grad_cell)


def findings_for(d: pd.DataFrame) -> list[str]:
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
    bad = d.groupby(["format", "method"], sort=False)[["n_nonfinite", "n_flushed"]].sum()
    nf = bad[bad["n_nonfinite"] > 0]
    if len(nf):
        notes.append("Non-finite gradient entries (all cells): " + "; ".join(
            f"`{m}` in {f}: {int(v)}" for (f, m), v in nf["n_nonfinite"].items()) + ".")
    return notes


def report(df, config, params, out_dir) -> list[dict]:
    d = df[df["reduction"] == "none"]
    fmts = formats_in(d)
    for c in sorted(d["classes"].unique()):
        dc = d[d["classes"] == c]
        fig = line_panels(dc, "scale", "norm_rel_median", "format", fmts,
                          {f: series_in(dc, f) for f in fmts}, "logit scale s",
                          "median ||g_hat - g|| / ||g||",
                          f"Norm-wise error of dL/dx against logit scale (C = {c})",
                          floor=floors(fmts))
        save_figure(fig, out_dir, f"scale_C{c}")
        plt.close(fig)
    cmax = int(d["classes"].max())
    table = error_pivot(d[d["classes"] == cmax].assign(rel_err_median=d["norm_rel_median"],
                                                       nonfinite_frac=0.0),
                        "scale", sorted(d["scale"].unique()), lambda s: f"s = {s:g}")
    notes = findings_for(d) + loss_vs_grad_notes(d, "scale x C", "norm_rel_median")
    cap = (f"Median norm-wise relative error of the gradient at C = {cmax}. "
           f"{grad_caption(fmts, config.seed)}")
    md = out_dir / "summary.md"
    write_markdown(table, md, title="Gradient scale: error of dL/dx against logit scale and "
                   "class count", caption=cap)
    write_latex(table, out_dir / "summary.tex", caption=cap, label="tab:grad-scale")
    with open(md, "a", encoding="utf-8") as f:
        f.write("\n## Findings\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n## Figures\n\n"
                + "".join(f"![C = {c}](scale_C{c}.png)\n\n"
                          for c in sorted(d["classes"].unique())))
    return [{"text": n, "link": "summary.md"} for n in notes]
