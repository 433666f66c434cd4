"""Unit roundoff: how each method's error scales with u = 2^-p, beside the BHH bound

Question: with the exponent range held fixed, how does the error of each cross-entropy method
scale with the unit roundoff u = 2^-p as the precision p runs from 3 to 53 bits, with round to
nearest and with stochastic rounding, and does the Blanchard-Higham-Higham bound cover it?

Data: normal logits (scale 1) for a few class counts, rounded once to the coarsest format of the
sweep (p = 3 on float32's exponent range) so that every format holds them exactly: every
precision sees the same inputs and the same certified true loss, and only the arithmetic
changes. Targets uniform at random.

Method: custom formats p = 3 ... 53 on float32's exponent range (emin = -126, emax = 127;
p = 8 is bfloat16 and p = 24 float32 number for number), each with round-to-nearest-even and
with stochastic rounding (seeded with the run's seed; random bits from a counter-based hash,
so reruns give the same bytes); every method except torch (no dtype for these formats), sums
sequential in the working format and its rounding mode; errors against the certified loss. The
BHH bound (numerics.bounds, log1p and shifted forms) uses u for round to nearest and 2u for
stochastic rounding, whose single rounding can err by a whole ulp.

Conclusions: the report's findings are computed from results.csv (slopes of log error
against log u, median error in units of u, rows within the bound, stochastic over nearest,
where softmax_eps's eps takes over from u); none is typed here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from precision_lab.analysis.cells import cell_logits, evaluate_with_bound
from precision_lab.numerics.formats import custom_format, get_format
from precision_lab.numerics.methods import METHODS, bounded_methods
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import (
    BOUND_STYLE,
    MARK_STYLE,
    figure_legend,
    floored,
    light_log_axis,
    method_color,
    panel_grid,
)

NAME = "unit_roundoff"
TAKES_FORMATS = False
FORMATS_NOTE = "its formats are the precision sweep of its profile (precisions, emin, emax)"

PROFILES = {
    "quick": {"precisions": [3, 8, 11, 24, 40, 53], "classes": {10: 8, 100: 4},
              "emin": -126, "emax": 127, "input_precision": 3},
    "full": {"precisions": list(range(3, 54)), "classes": {10: 128, 100: 64, 1000: 24},
             "emin": -126, "emax": 127, "input_precision": 3},
}
ROUNDINGS = ("nearest", "stochastic")
LABEL = {"nearest": "round to nearest", "stochastic": "stochastic rounding"}
METHOD_NAMES = [m for m in METHODS if METHODS[m].unsupported is None]  # torch: no dtype
GROUPS = {"unshifted and softmax": ("unshifted", "softmax"), "shifted": ("shifted",)}
FLOOR = 1e-18  # errors below this (exact results) are drawn at it


def sweep_formats(p: int, params, seed: int) -> list[str]:
    base = custom_format(p, params["emin"], params["emax"])
    return [base.name, get_format(f"{base.name},round=sr,seed={seed}").name]


def cells(config, params) -> list[dict]:
    return [{"distribution": "normal", "rows": int(rows), "classes": int(c), "scale": 1.0,
             "seed": config.seed, "precision": int(p), "input_precision":
             int(params["input_precision"]), "emin": int(params["emin"]),
             "emax": int(params["emax"]), "formats": sweep_formats(p, params, config.seed),
             "methods": METHOD_NAMES, "accumulators": ["working"]}
            for c, rows in params["classes"].items() for p in params["precisions"]]


def unit_cell(cell: dict) -> pd.DataFrame:
    """A cell's logits rounded to the coarsest format of the sweep, then every format of it."""
    x, t = cell_logits({k: cell[k] for k in ("distribution", "rows", "classes", "scale",
                                            "seed")})
    x = custom_format(cell["input_precision"], cell["emin"], cell["emax"]).round(x)
    return evaluate_with_bound(x, t, cell)


def run(config, params) -> pd.DataFrame:
    df = config.sweep(NAME, cells(config, params), fn=unit_cell)
    fmts = {f: get_format(f) for f in df["format"].unique()}
    df.insert(df.columns.get_loc("format") + 1, "rounding",
              df["format"].map(lambda f: fmts[f].rounding))
    df.insert(df.columns.get_loc("rounding") + 1, "unit_roundoff",
              df["format"].map(lambda f: fmts[f].unit_roundoff))
    return df


# ------------------------------------------------------------------------------ report -------

def slope(u, err) -> float:
    """Least-squares slope of log2(err) against log2(u) over the points with a positive
    finite error (nan with fewer than 3)."""
    u, err = np.asarray(u, float), np.asarray(err, float)
    ok = np.isfinite(err) & (err > 0)
    if ok.sum() < 3:
        return np.nan
    return float(np.polyfit(np.log2(u[ok]), np.log2(err[ok]), 1)[0])


def summary_table(d: pd.DataFrame) -> pd.DataFrame:
    """Per method, rounding and class count: the fitted slope, the median and largest of
    (median relative error / u) over the precisions, and the share of finite rows within the
    BHH bound (bounded methods)."""
    recs = []
    for (m, r, c), g in d.groupby(["method", "rounding", "classes"], sort=False):
        g = g.sort_values("precision")
        ratio = g["rel_err_median"] / g["unit_roundoff"]
        rec = {"method": m, "rounding": r, "classes": int(c),
               "slope of log err vs log u": slope(g["unit_roundoff"], g["rel_err_median"]),
               "median err / u (median over p)": float(np.nanmedian(ratio)),
               "median err / u (largest)": float(np.nanmax(ratio)),
               "rows within BHH bound": "-"}
        if g["bhh_within_frac"].notna().any():
            fin = g["count"] * (1 - g["nonfinite_frac"])
            inside = int(round(float((g["bhh_within_frac"].fillna(0) * fin).sum())))
            rec["rows within BHH bound"] = f"{inside}/{int(round(float(fin.sum())))}"
        recs.append(rec)
    order = {m: i for i, m in enumerate(METHODS)}
    out = pd.DataFrame(recs)
    return out.sort_values(["method", "rounding", "classes"], key=lambda s: s.map(order)
                           if s.name == "method" else s, kind="stable").reset_index(drop=True)


def _figure(d: pd.DataFrame, classes: list[int], title: str):
    groups = list(GROUPS)
    nrows = len(classes) * len(groups)
    fig, axes = panel_grid(nrows, len(ROUNDINGS), 4.2, [2.3] * nrows, top=0.7, bottom=0.9,
                           hspace=0.18)
    present = set(d["method"])
    for i, c in enumerate(classes):
        for j, gname in enumerate(groups):
            meths = [m for m in METHOD_NAMES if METHODS[m].family in GROUPS[gname]
                     and m in present]
            for k, rnd in enumerate(ROUNDINGS):
                ax = axes[i * len(groups) + j, k]
                sub = d[(d["classes"] == c) & (d["rounding"] == rnd)]
                for m in meths:
                    g = sub[sub["method"] == m].sort_values("unit_roundoff")
                    ax.plot(g["unit_roundoff"], floored(g["rel_err_median"], FLOOR),
                            color=method_color(m), linewidth=1.4, marker="o", markersize=2.5)
                b = sub[sub["method"] == "log1p"].sort_values("unit_roundoff")
                if b["bhh_bound_rel_median"].notna().any():
                    ax.plot(b["unit_roundoff"], floored(b["bhh_bound_rel_median"], FLOOR),
                            **BOUND_STYLE)
                uu = np.sort(sub["unit_roundoff"].unique())
                ax.plot(uu, uu, **MARK_STYLE, linestyle="--")
                ax.set_xscale("log")
                ax.set_yscale("log")
                light_log_axis(ax.xaxis)
                light_log_axis(ax.yaxis)
                ax.grid(True, alpha=0.3)
                ax.tick_params(labelsize=7)
                if i == 0 and j == 0:
                    ax.set_title(LABEL[rnd], fontsize=9)
                if k == 0:
                    ax.set_ylabel(f"C = {c}, {gname}\nmedian relative error", fontsize=8)
    for k in range(len(ROUNDINGS)):
        axes[-1, k].set_xlabel("unit roundoff u = 2^-p (p = 53 ... 3, left to right)",
                               fontsize=8)
    pairs = [(m, "working") for m in METHOD_NAMES if m in present]
    figure_legend(fig, pairs, bound=True, ncol=4)
    fig.suptitle(title, fontsize=11, y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig


def _findings(d: pd.DataFrame, table: pd.DataFrame, params) -> list[str]:
    notes = []
    shifted = [m for m in METHOD_NAMES if METHODS[m].family == "shifted"]
    st = table[table["method"].isin(shifted)]
    for rnd in ROUNDINGS:
        s = st[st["rounding"] == rnd]
        if len(s):
            notes.append(
                f"With {LABEL[rnd]} the shifted methods' median error follows u from p = "
                f"{min(params['precisions'])} to {max(params['precisions'])}: fitted slopes of "
                f"log error against log u between {s['slope of log err vs log u'].min():.2f} "
                f"and {s['slope of log err vs log u'].max():.2f} over {len(s)} (method, class "
                f"count) curves, the median error between "
                f"{s['median err / u (median over p)'].min():.2g} u and "
                f"{s['median err / u (median over p)'].max():.2g} u (median over p).")
    bounded = table[table["method"].isin(list(bounded_methods()))]
    for rnd in ROUNDINGS:
        b = bounded[bounded["rounding"] == rnd]
        if len(b):
            inside = sum(int(v.split("/")[0]) for v in b["rows within BHH bound"])
            total = sum(int(v.split("/")[1]) for v in b["rows within BHH bound"])
            u = "u" if rnd == "nearest" else "2u"
            notes.append(f"The BHH bound (with {u} per rounding) holds for {inside}/{total} "
                         f"finite rows of " + " and ".join(f"`{m}`" for m in bounded_methods())
                         + f" with {LABEL[rnd]}, over every precision and class count.")
    piv = d[d["method"].isin(shifted)].pivot_table(
        index=["method", "classes", "precision"], columns="rounding", values="rel_err_median",
        aggfunc="first")
    if set(ROUNDINGS) <= set(piv.columns):
        ok = (piv["nearest"] > 0) & np.isfinite(piv["stochastic"])
        ratio = (piv["stochastic"] / piv["nearest"])[ok]
        if len(ratio):
            notes.append(f"Stochastic rounding's median error over round to nearest's, per "
                         f"(shifted method, class count, precision): median "
                         f"{ratio.median():.2g}, range {ratio.min():.2g} to {ratio.max():.2g} "
                         f"({len(ratio)} points; SR is unbiased, but one rounding errs by up "
                         f"to an ulp rather than half of one).")
    se = d[(d["method"] == "softmax_eps") & (d["rounding"] == "nearest")]
    if len(se):
        far = se[se["rel_err_median"] / se["unit_roundoff"] > 100]
        if len(far):
            notes.append(f"`softmax_eps` stops following u: its median error exceeds 100 u "
                         f"from p = {int(far['precision'].min())} on (round to nearest; "
                         f"{len(far)}/{len(se)} cells), where eps = 1e-7 dominates.")
    nonfin = d[d["nonfinite_frac"] > 0]
    notes.append(f"{len(nonfin)}/{len(d)} (method, rounding, class count, precision) cells "
                 f"have a non-finite loss" + (
                     ": " + ", ".join(sorted({f"`{m}`" for m in nonfin['method']}))
                     + f" at p <= {int(nonfin['precision'].max())}" if len(nonfin) else "")
                 + ".")
    return notes


def report(df, config, params, out_dir) -> list[dict]:
    d = df[df["reduction"] == "none"]
    classes = sorted(d["classes"].unique())
    truth = (f"Formats: custom p = {min(params['precisions'])} ... {max(params['precisions'])} "
             f"({len(params['precisions'])} precisions) on emin = {params['emin']}, emax = "
             f"{params['emax']}, each with round to nearest and stochastic rounding. Inputs: "
             f"normal logits rounded to p = {params['input_precision']}, exact in every format "
             f"(one certified truth for all); rows per C: "
             + ", ".join(f"{c}: {r}" for c, r in params["classes"].items()) + ".")
    rep = report_for(NAME, __doc__, config, out_dir, truth=truth,
                     title="Unit roundoff: error against u = 2^-p, p = 3 ... 53")
    table = summary_table(d)
    t1 = rep.table(table, "Per method, rounding mode and class count C, over the precisions: "
                   "the slope of a least-squares fit of log2(median relative error) against "
                   "log2(u) (1: error proportional to u), the median and the largest of median "
                   "error / u, and the rows within the Blanchard-Higham-Higham bound (u per "
                   "rounding for round to nearest, 2u for stochastic rounding).",
                   stem="summary_table", headline=True)
    f1 = rep.figure(_figure(d, classes, "Median relative error of the per-row loss against "
                                        "the unit roundoff u = 2^-p"), "error_vs_u",
                    "Median relative error of the per-row loss against u = 2^-p: round to "
                    "nearest (left) and stochastic rounding (right), per class count and "
                    "method group.", headline=True)
    for i, text in enumerate(_findings(d, table, params)):
        rep.finding(text, f1 if i < 2 else t1)
    rep.section("How to read the figure",
                "Columns: round to nearest, stochastic rounding. Rows: class count C and "
                "method group (the unshifted and softmax methods; the shifted ones). Dotted "
                "black: the BHH bound (log1p form, median over rows of bound / loss; 2u per "
                "rounding for stochastic rounding); dashed grey: u itself. Errors below 1e-18 "
                "(exact results) are drawn at 1e-18.")
    return rep.write(out_dir)
