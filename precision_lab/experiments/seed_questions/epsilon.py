"""Question 3: what the blog's epsilon 1e-7 does to the loss: the cap -log(eps), the bias
-log1p(eps/p) in closed form, and softmax_eps measured on two-class rows."""
from __future__ import annotations

import math

import mpmath
import numpy as np
import pandas as pd
from mpmath import mp

from precision_lab.analysis.evaluate import evaluate
from precision_lab.numerics import elementary
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.methods import METHODS
from precision_lab.reporting.figures import plt

from ._common import EPS, FMT_NAMES, GT, records, select, value

__all__ = ["QUESTION", "compute", "tables", "describe"]

QUESTION = "q3"
# The Okabe-Ito palette (colour-blind safe), one colour per format in this figure.
FORMAT_COLORS = dict(zip(FMT_NAMES, ["#E69F00", "#56B4E9", "#009E73", "#CC79A7"]))


def compute(params) -> list[dict]:
    recs = []
    with mpmath.workprec(200):
        cap = -mp.log(mp.mpf(EPS))
    recs.append({"item": "cap", "format": "exact", "quantity": "-log(eps)", "value": float(cap),
                 "text": mpmath.nstr(cap, 20)})
    # The cap each format's softmax_eps actually reaches: a target logit far below the rest.
    for name in FMT_NAMES:
        fmt = FORMATS[name]
        row = np.array([[0.0, 60.0]])
        v = float(METHODS["softmax_eps"](row, np.array([0]), fmt, "working")[0])
        recs.append({"item": "cap", "format": name, "quantity": "eps rounded to format",
                     "value": float(fmt.round(EPS))})
        recs.append({"item": "cap", "format": name, "quantity": "largest loss softmax_eps returns",
                     "value": v})
    # Closed form on a dense grid in the logit of p.
    d = np.linspace(-60, 60, 24001)
    f64 = FORMATS["float64"]  # correctly rounded exp/log1p: the same digits on every CPU
    p = 1.0 / (1.0 + elementary.exp(d, f64))
    loss = elementary.log1p(elementary.exp(d, f64), f64)  # -log p, accurate at both ends
    rel = elementary.log1p(EPS / p, f64) / loss
    imin = int(np.argmin(rel))
    recs.append({"item": "closed form", "quantity": "smallest relative bias", "value": rel[imin]})
    recs.append({"item": "closed form", "quantity": "p at smallest relative bias",
                 "value": p[imin]})
    for frac in (1e-2, 0.5):
        below = p[rel > frac]
        lo = below[below < p[imin]].max() if (below < p[imin]).any() else np.nan
        hi = below[below > p[imin]].min() if (below > p[imin]).any() else np.nan
        recs.append({"item": "closed form", "quantity": f"bias above {frac:g} of the loss: p below",
                     "value": lo})
        recs.append({"item": "closed form", "quantity": f"bias above {frac:g} of the loss: p above",
                     "value": hi})
    for name in FMT_NAMES:
        u = FORMATS[name].unit_roundoff
        ok = rel <= u
        recs.append({"item": "harmless", "format": name, "quantity": "unit roundoff u", "value": u})
        recs.append({"item": "harmless", "format": name, "quantity": "smallest bias / u",
                     "value": rel[imin] / u})
        recs.append({"item": "harmless", "format": name, "quantity": "harmless p from",
                     "value": p[ok].min() if ok.any() else np.nan})
        recs.append({"item": "harmless", "format": name, "quantity": "harmless p to",
                     "value": p[ok].max() if ok.any() else np.nan})
    # Measured: softmax_eps and logsumexp on rows [0, d], target 0, in every format.
    dm = np.linspace(-38, 38, params["p_points"])
    x = np.stack([np.zeros_like(dm), dm], axis=1)
    t = np.zeros(len(dm), dtype=np.int64)
    df = evaluate(x, t, formats=FMT_NAMES, methods=["softmax_eps", "logsumexp"],
                  accumulators=("working",), mean=False)
    for r in df.itertuples(index=False):
        pt = float(elementary.exp(-r.truth, FORMATS["float64"]))
        recs.append({"item": f"measured {r.row}", "format": r.format, "method": r.method,
                     "quantity": "relative error", "value": r.rel_err, "text": repr(pt),
                     "argument": pt})
    pt = elementary.exp(-df["truth"].to_numpy(), FORMATS["float64"])
    central = df[(pt >= 0.01) & (pt <= 0.99)]
    for (fmt, m), s in central.groupby(["format", "method"], sort=False):
        recs.append({"item": "measured summary", "format": fmt, "method": m,
                     "quantity": "median relative error, 0.01 <= p <= 0.99",
                     "value": float(s["rel_err"].median())})
    return records(QUESTION, recs)


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    cap = select(df, item="cap")
    capt = cap[cap["format"] != "exact"].pivot_table(index="format", columns="quantity",
                                                      values="value", sort=False)
    capt = capt.reindex(FMT_NAMES).reset_index()
    harm = select(df, item="harmless").pivot_table(index="format", columns="quantity",
                                                   values="value", sort=False)
    harm = harm.reindex(FMT_NAMES).reset_index()
    harm = harm[["format", "unit roundoff u", "smallest bias / u", "harmless p from",
                 "harmless p to"]]
    meas = select(df, item="measured summary").pivot_table(
        index="format", columns="method", values="value", sort=False).reindex(FMT_NAMES)
    harm["median rel. error softmax_eps"] = meas["softmax_eps"].to_numpy()
    harm["median rel. error logsumexp"] = meas["logsumexp"].to_numpy()
    return {"cap": capt, "harmless": harm}


def _p(v) -> str:
    return "never" if math.isnan(v) else f"{v:.6g}"


def describe(df: pd.DataFrame, rep, ctx) -> None:
    t = tables(df)
    harm = t["harmless"]
    capv = value(df, "-log(eps)", format="exact")
    rmin = value(df, "smallest relative bias")
    pmin = value(df, "p at smallest relative bias")
    p1lo = value(df, "bias above 0.01 of the loss: p below")
    p1hi = value(df, "bias above 0.01 of the loss: p above")
    p50lo = value(df, "bias above 0.5 of the loss: p below")
    never = list(harm.loc[harm["harmless p from"].isna(), "format"])
    somet = harm[harm["harmless p from"].notna()]
    rep.section("3. The epsilon",
                f"-log(p + 1e-7) can never exceed -log(1e-7) = **{capv:.10g}**: a prediction "
                f"that gives the target probability 0 costs at most that much. Each format "
                f"rounds the epsilon first, so the cap it reaches differs slightly:")
    rep.table(t["cap"], "The epsilon rounded to each format and the largest loss softmax_eps "
              "returns there (row [0, 60], target 0).", stem="q3_cap",
              formats={c: lambda v: f"{v:.8g}" for c in t["cap"].columns[1:]})
    text = (f"The bias is -log(p + eps) + log p = -log1p(eps/p): always negative, about -eps/p "
            f"for p >> eps. Relative to the loss -log p it is smallest, {rmin:.3g}, at p = "
            f"{pmin:.3g} (1/e), exceeds 1% of the loss for p below {p1lo:.3g} or above "
            f"{p1hi:.10g}, and half of it for p below {p50lo:.3g} (where the cap takes over). "
            f"Compared with one rounding of the loss (unit roundoff u): the bias is larger than "
            f"u at every p in {' and '.join(never) or 'no format'}")
    if len(somet):
        text += ("; it stays below u only for " + "; ".join(
            f"{_p(r['harmless p from'])} <= p <= {_p(r['harmless p to'])} in {r['format']}"
            for _, r in somet.iterrows()))
    ratio = harm["median rel. error softmax_eps"] / harm["median rel. error logsumexp"]
    text += (". Where the bias exceeds u it dominates the error: measured on two-class rows "
             "with 0.01 <= p <= 0.99, the median relative error of softmax_eps divided by that "
             "of logsumexp is " + ", ".join(f"{v:.3g} in {f}" for f, v in
                                            zip(harm["format"], ratio)) + ".")
    rep.paragraph(text)
    ref = rep.table(harm, f"The epsilon's bias against each format's unit roundoff (closed form "
                    f"-log1p(eps/p) relative to -log p; measured on two-class rows; {GT}).",
                    stem="q3", formats={"harmless p from": _p, "harmless p to": _p})
    rep.figure(_figure(df, capv), "epsilon", f"Left, the loss with and without the epsilon "
               f"against p; right, the relative bias |log1p(eps/p)| / -log p (closed form) and "
               f"the measured relative error of softmax_eps per format, with each format's unit "
               f"roundoff labelled; two-class rows, no random seed; {GT}.")
    rep.finding(f"The epsilon caps every loss at -log(1e-7) = {capv:.4g} and biases it by "
                f"-log1p(1e-7/p): at least {rmin:.2g} of the loss (p = 1/e), more than one "
                f"rounding at every p in {' and '.join(never)}.", ref)


def _figure(df, cap):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    dd = np.linspace(-38, 38, 2001)
    p = 1.0 / (1.0 + np.exp(dd))
    loss = np.log1p(np.exp(dd))
    with_eps = -np.log(p + EPS)
    a1.plot(p, loss, color="#0072B2", label="-log p (true)")
    a1.plot(p, with_eps, color="#D55E00", ls="--", label="-log(p + 1e-7) (the blog)")
    a1.axhline(cap, color="gray", lw=0.6, ls=":")
    a1.annotate(f"cap -log(1e-7) = {cap:.4g}", xy=(1.0, cap), xycoords=("axes fraction", "data"),
                xytext=(-3, 3), textcoords="offset points", ha="right", fontsize=8,
                color="0.35")
    a1.set_xscale("log")
    a1.set_xlim(1e-17, 1)
    a1.set_xlabel("target probability p")
    a1.set_ylabel("loss")
    a1.legend(fontsize=8, frameon=False)
    rel = np.log1p(EPS / p) / loss
    inside = (p > 0) & (p < 1 - 1e-15)
    a2.plot(p[inside], rel[inside], color="k", lw=1.2, label="closed form log1p(eps/p) / -log p")
    m = df[(df["method"] == "softmax_eps") & df["item"].str.startswith("measured ")
           & (df["item"] != "measured summary")]
    for name in FMT_NAMES:
        s = m[m["format"] == name]
        pp = s["argument"].to_numpy()
        ok = (pp > 0) & (pp < 1 - 1e-15)
        c = FORMAT_COLORS[name]
        a2.scatter(pp[ok], np.maximum(s["value"].to_numpy()[ok], 1e-20), s=6, color=c,
                   label=f"softmax_eps measured, {name}")
        u = FORMATS[name].unit_roundoff
        a2.axhline(u, color=c, lw=0.7, ls=":")
        a2.annotate(f"u {name}", xy=(0.0, u), xycoords=("axes fraction", "data"),
                    xytext=(2, 2), textcoords="offset points", fontsize=7, color=c)
    a2.set_xscale("logit")
    a2.set_xlim(1e-17, 1 - 1e-15)
    ticks = [1e-15, 1e-10, 1e-5, 0.5, 1 - 1e-5, 1 - 1e-10, 1 - 1e-14]
    a2.set_xticks(ticks, ["1e-15", "1e-10", "1e-5", "0.5", "1-1e-5", "1-1e-10", "1-1e-14"])
    a2.minorticks_off()
    a2.set_yscale("log")
    a2.set_ylim(1e-20, 1e12)
    a2.set_xlabel("target probability p (logit scale)")
    a2.set_ylabel("relative error of the loss")
    a2.legend(fontsize=7, loc="upper center", frameon=False)
    fig.suptitle(f"The epsilon 1e-7: cap and bias; formats {', '.join(FMT_NAMES)}; "
                 f"two-class rows [0, d] (no random seed); {GT}", fontsize=9)
    fig.tight_layout()
    return fig
