"""Gradient confidence: where the target entry of the gradient, p_t - 1, cancels

Question: as the model grows confident (p_t from 0.5 to 1 - 1e-9), the target entry of
dL/dx, p_t - 1 = -(1 - p_t), shrinks towards 0 while p_t rounds towards 1. At which p_t does
each backward's target-entry error pass 10%, in bfloat16 and float16?

Data: rows of C classes, the non-target logits standard normal and the target logit set so
that p_t is the grid value (before the logits are rounded into each format); targets uniform.

Method: every method's backward (numerics.gradients: textbook softmax minus one-hot, the
log-sum-exp form, the fused kernel from the saved log-sum-exp in float32, the faulty
store-then-subtract kernel, torch autograd on the CPU) in every format, against the
certified gradient of the rounded inputs (>= 100 bits per entry, 1 - p_t summed from the
other probabilities); per cell the median over rows of the target entry's relative error.

Conclusions: generated from results.csv into the findings (the first grid p_t at which each
backward's median target-entry error passes 10%, per format).
"""
from __future__ import annotations

import pandas as pd

from precision_lab.analysis.evaluate_grad import grad_cell
from precision_lab.numerics.formats import FORMATS
from precision_lab.reporting.figures import formats_in, plt, save_figure
from precision_lab.reporting.grad_figures import grad_caption, line_panels
from precision_lab.reporting.tables import write_latex, write_markdown

from ._grad_common import LEVEL, floors, series_in

NAME = "grad_confidence"
PROFILES = {
    "quick": {"digits": [0.30103, 1, 2, 3, 4, 6, 9], "classes": [32], "rows": 4},
    "full": {"digits": [0.30103] + [k / 2 for k in range(2, 19)], "classes": [32, 1024],
             "rows": 16},
}


def confidences(params) -> list[float]:
    """p_t = 1 - 10**-k for the profile's k (k = log10(2): p_t = 0.5)."""
    return [1 - 10.0 ** -k for k in params["digits"]]


def run(config, params) -> pd.DataFrame:
    cells = [{"kind": "confidence", "rows": params["rows"], "classes": c, "confidence": p,
              "seed": config.seed, "formats": list(FORMATS)}
             for c in params["classes"] for p in confidences(params)]
    df = config.sweep(NAME, cells, fn=grad_cell)
    return df.assign(one_minus_p=1 - df["confidence"])


def first_failures(d: pd.DataFrame) -> pd.DataFrame:
    """Per (classes, format, method, accumulator): the first grid p_t whose median target
    error passes LEVEL (nan: never), and the cells' count."""
    rows = []
    for key, g in d.groupby(["classes", "format", "method", "accumulator"], sort=False):
        g = g.sort_values("confidence")
        bad = g[g["target_rel_median"] > LEVEL]
        rows.append(dict(zip(["classes", "format", "method", "accumulator"], key),
                         fails_at_p=float(bad["confidence"].iloc[0]) if len(bad) else float("nan"),
                         cells=len(g)))
    return pd.DataFrame(rows)


def _p(v: float) -> str:
    return f"1 - {1 - v:.0e}" if v > 0.99 else f"{v:g}"


def findings_for(ff: pd.DataFrame, pmax: float) -> list[str]:
    notes = []
    for (c, fmt), g in ff[ff["format"].isin(["bfloat16", "float16"])].groupby(
            ["classes", "format"], sort=False):
        keep = set(series_in(g, fmt))
        g = g[[(m, a) in keep for m, a in zip(g["method"], g["accumulator"])]]
        parts = []
        for p, h in g.groupby("fails_at_p", dropna=False, sort=True):
            names = ", ".join(f"`{m}`" for m in h["method"])
            parts.append(f"never up to {_p(pmax)}: {names}" if p != p else f"{_p(p)}: {names}")
        notes.append(f"{fmt}, C = {c}: median target-entry error passes 10% at p_t = "
                     + "; ".join(parts) + ".")
    return notes


def report(df, config, params, out_dir) -> list[dict]:
    d = df[df["reduction"] == "none"]
    fmts = formats_in(d)
    for c in sorted(d["classes"].unique()):
        dc = d[d["classes"] == c]
        fig = line_panels(dc, "one_minus_p", "target_rel_median", "format", fmts,
                          {f: series_in(dc, f) for f in fmts}, "1 - p_t (requested)",
                          "median rel. error, target entry",
                          f"Target entry of dL/dx against confidence (C = {c})", hline=LEVEL,
                          floor=floors(fmts))
        save_figure(fig, out_dir, f"confidence_C{c}")
        plt.close(fig)
    ff = first_failures(d)
    notes = findings_for(ff, float(d["confidence"].max()))
    table = ff.assign(fails_at_p=ff["fails_at_p"].map(lambda v: "never" if v != v else _p(v)))
    cap = (f"First requested p_t at which the median relative error of the gradient's target "
           f"entry passes 10%. {grad_caption(fmts, config.seed)}")
    md = out_dir / "summary.md"
    write_markdown(table, md, title="Gradient confidence: the target entry's cancellation",
                   caption=cap)
    write_latex(table, out_dir / "summary.tex", caption=cap, label="tab:grad-confidence")
    with open(md, "a", encoding="utf-8") as f:
        f.write("\n## Findings\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n## Figures\n\n"
                + "".join(f"![C = {c}](confidence_C{c}.png)\n\n"
                          for c in sorted(d["classes"].unique())))
    return [{"text": n, "link": "summary.md"} for n in notes]
