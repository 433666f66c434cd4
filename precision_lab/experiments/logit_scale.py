"""Logit scale: where each cross-entropy method breaks as the logits grow

Question: as logits grow from tiny (1e-2) to huge (1e5), how accurate is each cross-entropy
method in float16, bfloat16, float32 and float64, and at what scale does each one stop
returning a finite loss?

Data: logits s * z for s log-spaced from 1e-2 to 1e5 (denser from 1 to 1000, where the
overflow transitions of all four formats lie), with z standard normal (`normal`), uniform on
[-1, 1] (`uniform`), or normal with the target logit leading every other by 3 s (`peaked`, a
confidently correct model), for 10, 1000 and 32000 classes (fewer rows per cell as the class
count grows). Targets uniform at random. With `--logits-file`, the user's logits replace the
synthetic distributions (distribution `user`): a seeded sample of at most `user_rows` of their
rows, multiplied by every s of the grid, so s = 1 is their model as it is and the curve shows
how much headroom it has before each format breaks.

Method: every registered method in every format, with the float32 accumulator as a variant for
float16 and bfloat16, and the batch mean (PyTorch's default reduction) of each; errors against
the certified loss of the inputs as rounded into each format. Every cell also records
the median row maximum and log-sum-exp of its logits, the fraction of rows whose loss is
representable in each format, and the Blanchard-Higham-Higham first-order error bound of the
shifted algorithm (precision_lab.bounds) with the fraction of rows of log1p and logsumexp
within it.

Conclusions (the numbers in the report are computed from results.csv): the unshifted `naive`
formula breaks once a row's log-sum-exp, not only its largest logit, passes the format's
overflow logit (log of the largest finite value: 11.09 for float16, 88.72 for bfloat16 and
float32, 709.78 for float64), so the break comes earlier with more classes, and also once the
loss passes -log of the smallest subnormal (the target probability underflows to 0);
`softmax_log` breaks as soon as a target probability underflows and `softmax_eps` stays finite
but caps the loss near -log(eps); the shifted methods (`logsumexp`, `log1p`, torch) stay finite
for every input whose loss the format can represent, with errors of a few units of roundoff
that the BHH bound accounts for.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from precision_lab.analysis.cells import bhh_sentence, bhh_summary
from precision_lab.analysis.grid import user_cells
from precision_lab.numerics.formats import get_format
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import (
    crossing,
    error_panels_legend,
    error_pivot,
    formats_in,
    mark_vline,
    order_table,
    plot_error_panels,
    truth_sentence,
    variants_in,
    with_variant,
)

NAME = "logit_scale"


def scale_grid(coarse_per_decade: int, fine_per_decade: int, fine_from: float = 1.0,
               fine_to: float = 1e3, lo: float = 1e-2, hi: float = 1e5) -> list[float]:
    """Log-spaced scales, `coarse_per_decade` over [lo, hi] and `fine_per_decade` over
    [fine_from, fine_to], rounded to 4 significant digits (clean labels, exact CSV values)."""
    def span(a, b, k):
        n = int(round(np.log10(b / a) * k))
        return np.logspace(np.log10(a), np.log10(b), n + 1)
    v = np.concatenate([span(lo, hi, coarse_per_decade), span(fine_from, fine_to,
                                                                fine_per_decade)])
    return sorted({float(f"{x:.4g}") for x in v})


ACCEPTS_LOGITS_FILE = True  # --logits-file replaces its synthetic logits

PROFILES = {
    "quick": {"distributions": ["normal", "peaked"], "classes": {10: 8, 1000: 2},
              "scales": [0.01, 1.0, 4.0, 10.0, 30.0, 100.0, 1000.0, 1e5], "user_rows": 16},
    "full": {"distributions": ["normal", "uniform", "peaked"],
             "classes": {10: 64, 1000: 16, 32000: 4},
             "scales": scale_grid(4, 16), "user_rows": 64,
             "formats": ["float16", "bfloat16", "float32", "float64", "float8_e5m2",
                         "float8_e4m3fn"]},
}


def cells(config, params) -> list[dict]:
    out = []
    if config.user_logits is not None:
        return user_cells(config, NAME, params["scales"], lambda c: params["user_rows"])
    for dist in params["distributions"]:
        for c, rows in params["classes"].items():
            for s in params["scales"]:
                out.append({"distribution": dist, "rows": int(rows), "classes": int(c),
                            "scale": s, "seed": config.seed})
    return out


def run(config, params) -> pd.DataFrame:
    return config.sweep(NAME, cells(config, params))


# ------------------------------------------------------------------------------ report -------

def first_break(df: pd.DataFrame) -> pd.DataFrame:
    """Per distribution, classes, format, method and accumulator (per-row losses): the
    smallest scale at which the method returns a non-finite loss for a row the format can
    represent (inputs, log-sum-exp and loss finite), the median max logit and log-sum-exp
    there, the smallest scale at which at least half the rows fail so, and the smallest scale
    at which the format itself cannot represent some row."""
    d = df[df["reduction"] == "none"]
    recs = []
    for (dist, c, fmt, m, a), g in d.groupby(["distribution", "classes", "format", "method",
                                              "accumulator"], sort=False):
        g = g.sort_values("scale")
        bad = g[g["spurious_nonfinite_frac"] > 0]
        half = g[g["spurious_nonfinite_frac"] >= 0.5]
        unrep = g[g["representable_frac"] < 1]
        recs.append({"distribution": dist, "classes": c, "format": fmt, "method": m,
                     "accumulator": a,
                     "first_fail_scale": bad["scale"].iloc[0] if len(bad) else np.inf,
                     "max_logit_there": bad["max_logit_median"].iloc[0] if len(bad) else np.nan,
                     "lse_there": bad["lse_median"].iloc[0] if len(bad) else np.nan,
                     "half_fail_scale": half["scale"].iloc[0] if len(half) else np.inf,
                     "loss_half": half["loss_median"].iloc[0] if len(half) else np.nan,
                     "lse_half": half["lse_median"].iloc[0] if len(half) else np.nan,
                     "format_limit_scale": unrep["scale"].iloc[0] if len(unrep) else np.inf})
    return pd.DataFrame(recs)


def _cross(sub: pd.DataFrame, column: str, level: float) -> float:
    g = sub.drop_duplicates("scale").sort_values("scale")
    return crossing(g["scale"], g[column], level)


def _vlines(df):
    def draw(ax, fmt, rv, sub):
        label = sub is not None
        if sub is None:
            sub = df[(df["classes"] == rv) & (df["format"] == fmt)]
        L = get_format(fmt).overflow_logit
        s_max = _cross(sub, "max_logit_median", L)
        s_lse = _cross(sub, "lse_median", L)
        mark_vline(ax, s_max, f"max x = {L:.4g}" if label else None)
        if np.isfinite(s_lse) and (not np.isfinite(s_max) or abs(np.log(s_lse / s_max)) > 0.15):
            mark_vline(ax, s_lse, f"logsumexp = {L:.4g}" if label else None, side="left",
                       linestyle=":")
    return draw


def break_table(fb: pd.DataFrame, d: pd.DataFrame, fmts, pick_c) -> pd.DataFrame:
    """First failing scale per format and variant (columns: distributions), C = pick_c, with
    a '(format limit)' row per format."""
    table = with_variant(fb)
    tc = table[table["classes"] == pick_c]
    piv = tc.pivot_table(index=["format", "variant"], columns="distribution",
                         values="first_fail_scale", sort=False, aggfunc="first").reset_index()
    piv = order_table(piv, fmts, variants_in(d))
    limit = tc.drop_duplicates(["distribution", "format"]).pivot_table(
        index="format", columns="distribution", values="format_limit_scale", sort=False,
        aggfunc="first").reset_index()
    limit.insert(1, "variant", "(format limit)")
    parts = []
    for fmt in fmts:
        parts += [piv[piv["format"] == fmt], limit[limit["format"] == fmt]]
    piv = pd.concat(parts, ignore_index=True)
    piv.columns.name = None
    return piv.rename(columns={c: f"{c}: first failing s" for c in piv.columns
                               if c not in ("format", "variant")})


def naive_table(fb: pd.DataFrame, dist: str) -> pd.DataFrame:
    """The unshifted `naive` loss (working sums): first failing scale, the scale from which half
    the rows fail, and the median log-sum-exp and loss there, per format and class count."""
    n = fb[(fb["distribution"] == dist) & (fb["method"] == "naive")
           & (fb["accumulator"] == "working")]
    t = n[["format", "classes", "first_fail_scale", "half_fail_scale", "lse_half",
           "loss_half"]].rename(columns={
               "classes": "C", "first_fail_scale": "first failing s",
               "half_fail_scale": "half the rows fail from s",
               "lse_half": "median log-sum-exp there", "loss_half": "median loss there"})
    order = {f: i for i, f in enumerate(formats_in(n))}
    return t.sort_values(["format", "C"], key=lambda c: c.map(order) if c.name == "format"
                         else c, kind="stable").reset_index(drop=True)


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    rep = report_for(NAME, __doc__, config, out_dir, truth=truth_sentence(fmts))
    d = df[df["reduction"] == "none"]
    fb = first_break(df)
    key_c = sorted(fb["classes"].unique())
    pick_c = 1000 if 1000 in key_c else key_c[len(key_c) // 2]
    s_max = max(d["scale"])
    t1 = rep.table(break_table(fb, d, fmts, pick_c),
                   f"First logit scale s of the grid at which the method returns a non-finite "
                   f"loss (inf or NaN) for a row whose loss the format can represent, C = "
                   f"{pick_c} classes; inf: never on the grid (up to s = {s_max:g}). "
                   f"'(format limit)': the first s at which some row's logits, log-sum-exp or "
                   f"loss overflow the format itself. torch rows depend on the machine (its "
                   f"CPU kernels, see metadata.json kernels).", stem="break", headline=True)
    dists = list(d["distribution"].unique())
    dist_t = "user" if "user" in dists else ("normal" if "normal" in dists else dists[0])
    figs = {}
    for dist in dists:
        sub = d[d["distribution"] == dist]
        classes = sorted(sub["classes"].unique())
        rows = {c: int(sub[sub["classes"] == c]["rows"].iloc[0]) for c in classes}
        fig = plot_error_panels(
            sub, x="scale", row_key="classes", row_values=classes,
            row_label=lambda c: f"C = {c} ({rows[c]} rows)", xlabel="logit scale s",
            vlines=_vlines(sub),
            title=f"Median relative error of the per-row loss against the logit scale s "
                  f"({dist} logits)")
        figs[dist] = rep.figure(fig, f"scale_{dist}", f"Median relative error against s, "
                                f"{dist} logits; one row of panels per class count, one column "
                                f"per format.", headline=(dist == dist_t))
    at = d[(d["distribution"] == dist_t) & (d["classes"] == pick_c)]
    want = [v for v in (0.01, 1.0, 10.0, 100.0, 1000.0, 1e5) if v in set(at["scale"])]
    t2 = rep.table(error_pivot(at, "scale", want, lambda v: f"s = {v:g}"),
                   f"Median relative error of the per-row loss ({dist_t} logits, C = {pick_c}) "
                   f"at selected logit scales of the grid run; the share of non-finite rows in "
                   f"brackets, 'all non-finite' where no row is finite.", stem="errors")
    nt = naive_table(fb, dist_t)
    t3 = rep.table(nt, f"The unshifted `naive` loss, {dist_t} logits, working-format sums: "
                   f"where it first fails and where half the rows fail (inf: never on the "
                   f"grid).", stem="naive") if len(nt) else None
    _findings(rep, df, fb, t1, t2, t3, figs.get(dist_t))
    mean = df[df["reduction"] == "mean"]
    if len(mean):
        dist0 = "user" if "user" in set(mean["distribution"]) else "normal"
        if dist0 not in set(mean["distribution"]):
            dist0 = mean["distribution"].iloc[0]
        ms = mean[mean["distribution"] == dist0]
        rep.section("Batch mean (reduction='mean')")
        fig = plot_error_panels(
            ms.assign(reduction="none", bhh_bound_rel_median=np.nan), x="scale",
            row_key="classes", row_values=sorted(ms["classes"].unique()),
            row_label=lambda c: f"C = {c}", xlabel="logit scale s",
            ylabel="relative error of the batch mean", bound=False, vlines=_vlines(
                d[d["distribution"] == dist0]),
            title=f"Relative error of the batch-mean loss (reduction='mean') against the "
                  f"logit scale s ({dist0} logits)")
        rep.figure(fig, "batch_mean", f"Relative error of the batch mean against s, {dist0} "
                   f"logits.")
    rep.section("How to read the figures", error_panels_legend(
        "Vertical lines: the scale where the median row's largest logit (and, where it "
        "differs, its log-sum-exp) reaches the format's overflow logit."))
    return rep.write(out_dir)


def _findings(rep, df, fb, t1, t2, t3, fig) -> None:
    """Short findings whose numbers come from the results, each linked to its table."""
    d = df[df["reduction"] == "none"]
    dists = list(d["distribution"].unique())
    dist = "user" if "user" in dists else ("normal" if "normal" in dists else dists[0])
    f = fb[(fb["distribution"] == dist) & (fb["accumulator"] != "float32")]
    naive = f[(f["method"] == "naive") & np.isfinite(f["first_fail_scale"])]
    if len(naive):
        first = [(fmt, naive[naive["format"] == fmt]["first_fail_scale"].min())
                 for fmt in formats_in(naive)]
        rep.finding("Unshifted `naive` first returns inf or NaN for a representable row at s = "
                    + ", ".join(f"{v:.3g} ({fmt})" for fmt, v in first)
                    + f" ({dist} logits): its sum of exponentials overflows once the "
                    "log-sum-exp passes the overflow logit.", t3 or t1)
    stable = d[d["method"].isin(["logsumexp", "log1p", "torch"])]
    c_max = int(d["classes"].max())
    s_max = float(d["scale"].max())
    if "spurious_nonfinite_frac" in stable:
        bad = stable[stable["spurious_nonfinite_frac"] > 0]
        n_cells = len(stable.drop_duplicates(["distribution", "classes", "scale", "format"]))
        if len(bad) == 0:
            rep.finding(f"`logsumexp`, `log1p` and `torch` never return a non-finite loss for "
                        f"a representable row in {n_cells} cells (C <= {c_max}, s <= "
                        f"{s_max:g}); larger C is class_count's question.", t1)
        else:
            worst = bad.sort_values("nonfinite_frac").iloc[-1]
            rep.finding(f"A shifted method returns non-finite losses for representable rows in "
                        f"{len(bad)}/{len(stable)} cells, e.g. {worst['method']} "
                        f"({worst['accumulator']}) in {worst['format']} at s = "
                        f"{worst['scale']:g}, C = {worst['classes']}.", t1)
    bhh = bhh_summary(d)
    if bhh is not None:
        rep.finding(bhh_sentence(bhh, f"C <= {c_max}, s <= {s_max:g}"), fig or t1)
    se = d[(d["method"] == "softmax_eps") & (d["accumulator"] != "float32")
           & (d["nonfinite_frac"] < 1)]
    if len(se):
        parts = []
        for fmt in formats_in(se):
            g = se[se["format"] == fmt]
            parts.append(f"{int((g['rel_err_median'] > 0.1).sum())}/{len(g)} in {fmt}")
        rep.finding("`softmax_eps` (eps = 1e-7) caps losses near -log(eps) = 16.1; its median "
                    "relative error exceeds 10% in " + ", ".join(parts) + " cells with a "
                    "finite row.", t2)
