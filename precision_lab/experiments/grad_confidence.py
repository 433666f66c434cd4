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
from precision_lab.numerics.formats import STANDARD_FORMATS
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import (
    formats_in,
    machine_marked,
    variant_label,
    variants_in,
    with_variant,
)
from precision_lab.reporting.grad_figures import grad_truth, line_panels

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
              "seed": config.seed, "formats": list(STANDARD_FORMATS)}
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


def _fails(v: float) -> str:
    return "never" if v != v else _p(v)


def failure_table(ff: pd.DataFrame, fmts) -> pd.DataFrame:
    """One row per (classes, backward variant), one column per format: the first grid p_t at
    which the median target-entry error passes 10% ('never'; '-' where not run)."""
    t = with_variant(ff).assign(fails=ff["fails_at_p"].map(_fails))
    piv = t.pivot_table(index=["classes", "variant"], columns="format", values="fails",
                        aggfunc="first", sort=False).reset_index()
    piv.columns.name = None
    order = {variant_label(m, a): i for i, (m, a) in enumerate(variants_in(ff))}
    piv = piv.assign(_v=piv["variant"].map(order)).sort_values(["classes", "_v"], kind="stable")
    piv = piv.drop(columns="_v").assign(variant=lambda p: p["variant"].map(machine_marked))
    return piv[["classes", "variant"] + [f for f in fmts if f in piv]].fillna("-")


def _first_last(g: pd.DataFrame, fmt: str) -> tuple:
    """Among the series drawn for `fmt`: (first failures, last failure row, series count)."""
    keep = set(series_in(g, fmt))
    g = g[[(m, a) in keep for m, a in zip(g["method"], g["accumulator"])]]
    failing = g.dropna(subset=["fails_at_p"])
    if failing.empty:
        return None, None, len(g)
    first = failing[failing["fails_at_p"] == failing["fails_at_p"].min()]
    never = g[g["fails_at_p"].isna()]
    last = never.iloc[0] if len(never) else failing.loc[failing["fails_at_p"].idxmax()]
    return first, last, len(g)


def findings_for(ff: pd.DataFrame, pmax: float) -> list[str]:
    """Per class count and format: the first and the last of the drawn backwards whose median
    target-entry error passes 10%, and at which grid p_t."""
    notes = []
    for (c, fmt), g in ff.groupby(["classes", "format"], sort=False):
        first, last, n = _first_last(g, fmt)
        if first is None:
            notes.append(f"{fmt}, C = {c}: none of the {n} backwards drawn has a median "
                         f"target-entry error above 10% up to p_t = {_p(pmax)}.")
            continue
        p0 = _p(first["fails_at_p"].iloc[0])
        if len(first) == n:
            notes.append(f"{fmt}, C = {c}: median target-entry error passes 10% from p_t = "
                         f"{p0} for all {n} backwards drawn.")
            continue
        names = ", ".join(f"`{m}`" for m in first["method"].head(2))
        more = f" (+{len(first) - 2})" if len(first) > 2 else ""
        held = (f"never up to {_p(pmax)}" if last["fails_at_p"] != last["fails_at_p"]
                else f"only from {_p(last['fails_at_p'])}")
        acc = " (float32 sums)" if last["accumulator"] == "float32" else ""
        notes.append(f"{fmt}, C = {c}: median target-entry error passes 10% from p_t = {p0} "
                     f"for {len(first)}/{n} backwards drawn ({names}{more}); "
                     f"`{last['method']}`{acc} {held}.")
    return notes


def report(df, config, params, out_dir) -> list[dict]:
    d = df[df["reduction"] == "none"]
    fmts = formats_in(d)
    rep = report_for(NAME, __doc__, config, out_dir, truth=grad_truth(fmts))
    ff = first_failures(d)
    cs = sorted(d["classes"].unique())
    n_p = d["confidence"].nunique()
    t1 = rep.table(failure_table(ff, fmts), f"First requested p_t (of the {n_p} grid values, "
                   f"p_t = 1 - 10^-k) at which the median over rows of the relative error of "
                   f"the gradient's target entry passes 10%, per class count C, backward and "
                   f"format; 'never': not up to the largest p_t, '-': not run.",
                   stem="first_failure", headline=True)
    figs = []
    for c in cs:
        dc = d[d["classes"] == c]
        fig = line_panels(dc, "one_minus_p", "target_rel_median", "format", fmts,
                          {f: series_in(dc, f) for f in fmts}, "1 - p_t (requested)",
                          "median rel. error, target entry",
                          f"Target entry of dL/dx against confidence (C = {c})", hline=LEVEL,
                          floor=floors(fmts), hline_label="10%")
        figs.append(rep.figure(fig, f"confidence_C{c}", f"Median relative error of the "
                               f"target entry against 1 - p_t, C = {c}, one panel per format "
                               f"(float32 sums where a method has them in float16 and "
                               f"bfloat16); dotted: 10%; errors below u/100, exact ones "
                               f"included, drawn at u/100.", headline=c == cs[0]))
    for n in findings_for(ff, float(d["confidence"].max())):
        rep.finding(n, t1)
    rep.section("How to read the figures", "One colour per method family (softmax orange, "
                "shifted blue, library green); line styles tell a family's backwards apart; "
                "`fused_store_first` is the online method's fused kernel that stores the "
                "softmax before subtracting 1.")
    return rep.write(out_dir)
