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

from precision_lab.analysis.cells import stage_arrays
from precision_lab.numerics.formats import FORMATS, get_format
from precision_lab.numerics.methods import bounded_methods
from precision_lab.reporting.figures import (
    caption,
    crossing,
    error_pivot,
    formats_in,
    mark_vline,
    order_table,
    plot_error_panels,
    plt,
    save_figure,
    variants_in,
    with_variant,
)
from precision_lab.reporting.tables import write_latex, write_markdown

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


PROFILES = {
    "quick": {"distributions": ["normal", "peaked"], "classes": {10: 8, 1000: 2},
              "scales": [0.01, 1.0, 4.0, 10.0, 30.0, 100.0, 1000.0, 1e5], "user_rows": 16},
    "full": {"distributions": ["normal", "uniform", "peaked"],
             "classes": {10: 64, 1000: 16, 32000: 4},
             "scales": scale_grid(4, 16), "user_rows": 64},
}


def cells(config, params) -> list[dict]:
    out = []
    if config.user_logits is not None:
        x, t = config.user_logits
        staged = stage_arrays(config.checkpoint_dir(NAME), "user", x, t)
        rows = min(int(params["user_rows"]), len(t))
        for s in params["scales"]:
            out.append({"distribution": "user", "rows": rows, "classes": int(x.shape[1]),
                        "scale": s, "seed": config.seed, **staged})
        return out
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


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    cap = caption(fmts, config.seed)
    findings = []
    figures = []
    d = df[df["reduction"] == "none"]
    for dist in d["distribution"].unique():
        sub = d[d["distribution"] == dist]
        classes = sorted(sub["classes"].unique())
        rows = {c: int(sub[sub["classes"] == c]["rows"].iloc[0]) for c in classes}
        fig = plot_error_panels(
            sub, x="scale", row_key="classes", row_values=classes,
            row_label=lambda c: f"C = {c} ({rows[c]} rows)", xlabel="logit scale s",
            vlines=_vlines(sub),
            title=f"Median relative error of the per-row loss against the logit scale s "
                  f"({dist} logits)")
        stem = f"scale_{dist}"
        save_figure(fig, out_dir, stem)
        plt.close(fig)
        figures.append(stem)

    # The batch mean: the reduction PyTorch applies by default.
    mean = df[df["reduction"] == "mean"]
    if len(mean):
        dist0 = "user" if "user" in set(mean["distribution"]) else "normal"
        if dist0 not in set(mean["distribution"]):
            dist0 = mean["distribution"].iloc[0]
        ms = mean[mean["distribution"] == dist0]
        # the bound column belongs to per-row losses; the mean has none
        fig = plot_error_panels(
            ms.assign(reduction="none", bhh_bound_rel_median=np.nan), x="scale",
            row_key="classes", row_values=sorted(ms["classes"].unique()),
            row_label=lambda c: f"C = {c}", xlabel="logit scale s",
            ylabel="relative error of the batch mean", bound=False, vlines=_vlines(
                d[d["distribution"] == dist0]),
            title=f"Relative error of the batch-mean loss (reduction='mean') against the "
                  f"logit scale s ({dist0} logits)")
        save_figure(fig, out_dir, "batch_mean")
        plt.close(fig)
        figures.append("batch_mean")

    # Table 1: where each method first goes non-finite.
    fb = first_break(df)
    table = with_variant(fb)
    key_c = sorted(table["classes"].unique())
    pick_c = 1000 if 1000 in key_c else key_c[len(key_c) // 2]
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
    piv = piv.rename(columns={c: f"{c}: first failing s" for c in piv.columns
                              if c not in ("format", "variant")})

    # Table 2: median relative error at a few scales (normal logits, C = pick_c).
    dist_t = "user" if "user" in set(d["distribution"]) else "normal"
    if dist_t not in set(d["distribution"]):
        dist_t = d["distribution"].iloc[0]
    at = d[(d["distribution"] == dist_t) & (d["classes"] == pick_c)]
    want = [v for v in (0.01, 1.0, 10.0, 100.0, 1000.0, 1e5) if v in set(at["scale"])]
    err = error_pivot(at, "scale", want, lambda v: f"s = {v:g}")

    notes = _notes(df, fb, pick_c)
    md = out_dir / "summary.md"
    write_markdown(piv, md, title="Logit scale: where each cross-entropy method breaks",
                   caption=f"First logit scale s of the grid at which the method returns a "
                           f"non-finite loss (inf or NaN) for a row whose loss the format can "
                           f"represent, C = {pick_c} classes; inf: never on the grid (up to "
                           f"s = {max(params['scales']):g}). The row '(format limit)' gives the "
                           f"first s at which some row's logits, log-sum-exp or loss overflow "
                           f"the format itself, where no method can succeed. {cap}",
                   notes=None)
    write_latex(piv, out_dir / "summary.tex",
                caption=f"First logit scale at which each method returns a non-finite "
                        f"cross-entropy loss for a row whose loss the format can represent "
                        f"(C = {pick_c}; inf: never up to s = {max(params['scales']):g}; "
                        f"format limit: the first scale at which the format cannot represent "
                        f"some row). {cap}",
                label="tab:logit-scale-break")
    write_latex(err, out_dir / "errors.tex",
                caption=f"Median relative error of the per-row loss ({dist_t} logits, "
                        f"C = {pick_c}) at selected logit scales; 'inf' where every row is "
                        f"non-finite, a percentage where some are. {cap}",
                label="tab:logit-scale-error")
    with open(md, "a", encoding="utf-8") as f:
        f.write(f"\n## Median relative error at selected scales ({dist_t} logits, "
                f"C = {pick_c})\n\n")
        f.write("Median over the rows of the cell whose loss is finite; a cell with non-finite "
                "rows shows their percentage in brackets, `all non-finite` when no row is "
                "finite. LaTeX: `errors.tex`.\n\n")
        f.write(err.to_markdown(index=False) + "\n")
        f.write("\n## Findings\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
        f.write("\n## Figures\n\n")
        for stem in figures:
            f.write(f"![{stem}]({stem}.png)\n\n")
        f.write("Solid lines: sums in the working format; dashed: float32 sums (float16 and "
                "bfloat16 only). Dotted black: the Blanchard-Higham-Higham bound (log1p form), "
                "median over the rows of bound / loss. Vertical lines: the scale where the "
                "median row's largest logit (and, where it differs, its log-sum-exp) reaches "
                "the format's overflow logit. Errors below u/100, including exact results, are "
                "drawn at u/100; the lower strip of each panel is the fraction of rows whose "
                "loss is non-finite.\n\n")
        f.write(f"{cap}\n")
    for n, link in notes_links(notes, figures):
        findings.append({"text": n, "link": link, "label": "figure" if link.endswith(".png")
                         else "table"})
    return findings


def notes_links(notes, figures):
    out = []
    for i, n in enumerate(notes):
        link = f"{figures[0]}.png" if (i == 0 and figures) else "summary.md"
        out.append((n, link))
    return out


def _notes(df, fb, pick_c) -> list[str]:
    """Findings as sentences whose numbers come from the results."""
    notes = []
    d = df[df["reduction"] == "none"]
    dists = list(d["distribution"].unique())
    dist = "user" if "user" in dists else ("normal" if "normal" in dists else dists[0])
    f = fb[(fb["distribution"] == dist) & (fb["accumulator"] != "float32")]
    naive = f[f["method"] == "naive"]
    if len(naive):
        parts = []
        for fmt in formats_in(naive):
            r = naive[naive["format"] == fmt].sort_values("classes")
            bits = []
            for row in r.itertuples():
                if np.isfinite(row.half_fail_scale):
                    bits.append(f"C = {row.classes}: first failure at s = "
                                f"{row.first_fail_scale:.3g}, half the rows from s = "
                                f"{row.half_fail_scale:.3g} (median log-sum-exp there "
                                f"{row.lse_half:.3g}, median loss {row.loss_half:.3g})")
                elif np.isfinite(row.first_fail_scale):
                    bits.append(f"C = {row.classes}: first failure at s = "
                                f"{row.first_fail_scale:.3g}")
                else:
                    bits.append(f"C = {row.classes}: no failure")
            parts.append(f"{fmt} " + "; ".join(bits))
        limits = ", ".join(f"{f} {FORMATS[f].overflow_logit:.4g} and {-np.log(FORMATS[f].min_subnormal):.4g}"
                           for f in formats_in(naive))
        notes.append(f"The unshifted `naive` loss returns inf or NaN for rows the format can "
                     f"represent ({dist} logits): in " + ". In ".join(parts) + ". It fails "
                     f"in two ways: the sum of exponentials overflows once a row's log-sum-exp "
                     f"passes the overflow logit, and the target probability underflows to 0 "
                     f"once the loss passes -log of the smallest subnormal (overflow logit and "
                     f"that limit: {limits}).")
    stable = d[d["method"].isin(["logsumexp", "log1p", "torch"])]
    if "spurious_nonfinite_frac" in stable:
        bad = stable[stable["spurious_nonfinite_frac"] > 0]
        n_cells = len(stable.drop_duplicates(["distribution", "classes", "scale", "format"]))
        if len(bad) == 0:
            notes.append(f"`logsumexp`, `log1p` and `torch` never return a non-finite loss for "
                         f"a row whose inputs, log-sum-exp and loss are finite in the format "
                         f"({n_cells} cells of distribution x classes x scale x format).")
        else:
            worst = bad.sort_values("nonfinite_frac").iloc[-1]
            notes.append(f"A shifted method returned non-finite losses for representable rows "
                         f"in {len(bad)} of {len(stable)} cells, e.g. {worst['method']} "
                         f"({worst['accumulator']}) in {worst['format']} at s = "
                         f"{worst['scale']:g}, C = {worst['classes']}.")
    lp = d[(d["method"].isin(list(bounded_methods()))) & d["bhh_within_frac"].notna()]
    if len(lp):
        inside = lp["bhh_within_frac"] * lp["count"] * (1 - lp["nonfinite_frac"])
        total = lp["count"] * (1 - lp["nonfinite_frac"])
        frac = float(inside.sum() / total.sum()) if total.sum() else np.nan
        worst = lp.sort_values("bhh_within_frac").iloc[0]
        text = (f"The Blanchard-Higham-Higham first-order bound holds for {100 * frac:.2f}% of "
                f"the finite `log1p` and `logsumexp` losses")
        if worst["bhh_within_frac"] < 1:
            text += (f"; the lowest share in one cell is {100 * worst['bhh_within_frac']:.0f}% "
                     f"({worst['method']}, {worst['accumulator']} sum, {worst['format']}, "
                     f"s = {worst['scale']:g}, C = {worst['classes']})")
        notes.append(text + ".")
    se = d[(d["method"] == "softmax_eps") & (d["accumulator"] != "float32")
           & (d["nonfinite_frac"] < 1)]
    if len(se):
        parts = []
        for fmt in formats_in(se):
            g = se[se["format"] == fmt]
            parts.append(f"{fmt} {100 * float((g['rel_err_median'] > 0.1).mean()):.0f}%")
        notes.append("`softmax_eps` stays finite wherever its inputs are, but eps = 1e-7 "
                     "distorts every loss it is not negligible against: large losses are capped "
                     "near -log(eps) = 16.1 and losses below about eps come out as 0 or "
                     "negative. Its median relative error exceeds 10% in this share of the "
                     "cells (all distributions, class counts and scales): " + ", ".join(parts)
                     + ".")
    return notes
