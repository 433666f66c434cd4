"""Class count: how the error of each cross-entropy method grows with the number of classes

Question: from 2 classes to 262144 (2^1 ... 2^18, beyond the vocabularies of today's language
models), how does the error of each method grow with the class count C, in each format, and
what does accumulating the sum in float32 buy for float16 and bfloat16?

Data: logits s * z, z standard normal, for C = 2^1 ... 2^18 at the scales s in the profile
(0.01: nearly equal logits, where the sum of C terms of about 1 each dominates; 1 and 10:
typical trained models; 100: a few logits dominate), targets uniform at random. Rows per cell
shrink as C grows (at most `max_rows`, at least `min_rows`, rows x C at most `max_logits`), so
the largest cells hold a few rows of 262144 logits. With `--logits-file`, the user's logits
replace the synthetic ones (distribution `user`, scale 1): each row truncated to its first
C - 1 non-target classes plus the target (kept in place), for every C = 2^k below the user's
class count and the full count itself, so the curve shows what a larger or smaller
vocabulary of the same model would cost.

Method: every registered method in every format, the float32 accumulator as a variant for
float16 and bfloat16, and the batch mean (reduction='mean'); errors against the certified
mpmath loss of the rounded inputs; the Blanchard-Higham-Higham bound of the shifted algorithm,
whose summation term grows as C u, overlaid.

Conclusions (the numbers in the report come from results.csv): with sums in the working
format, the error of every method that sums C exponentials grows with C, fastest in bfloat16
and float16, where a sequential sum of terms near 1 stalls once it reaches about 1/u (256 for
bfloat16, 2048 for float16), marked on the figures; a float32 accumulator removes most of that
growth. The unshifted `naive` loss overflows float16 at large C even for small logits, since
its sum of C exponentials passes 65504. Past C = 65504 the same happens to shifted methods in
float16 whenever their sum of C terms near 1 is rounded back to float16 (float32 sums, the
online method, torch on the CPU): they return inf although the loss (about log C) is
representable, while a sum kept in float16 stalls and stays finite, but wrong. The shifted
methods stay within the BHH bound wherever they are finite.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from precision_lab.analysis.cells import class_counts_up_to, stage_arrays
from precision_lab.numerics.formats import FORMATS, get_format
from precision_lab.numerics.methods import bounded_methods, stable_methods
from precision_lab.reporting.figures import (
    caption,
    error_pivot,
    formats_in,
    mark_vline,
    plot_error_panels,
    plt,
    save_figure,
)
from precision_lab.reporting.tables import write_latex, write_markdown

NAME = "class_count"

PROFILES = {
    "quick": {"exponents": [1, 4, 8, 11, 14], "scales": [0.01, 1.0, 10.0],
              "min_rows": 2, "max_rows": 16, "max_logits": 1 << 12, "user_scales": [1.0]},
    "full": {"exponents": list(range(1, 19)), "scales": [0.01, 0.1, 1.0, 10.0, 100.0],
             "min_rows": 8, "max_rows": 128, "max_logits": 1 << 19, "user_scales": [1.0]},
}


def rows_for(classes: int, params) -> int:
    return int(max(params["min_rows"], min(params["max_rows"], params["max_logits"] // classes)))


def cells(config, params) -> list[dict]:
    out = []
    if config.user_logits is not None:
        x, t = config.user_logits
        staged = stage_arrays(config.checkpoint_dir(NAME), "user", x, t)
        counts = class_counts_up_to(int(x.shape[1]), params["exponents"])
        for s in params["user_scales"]:
            for c in counts:
                out.append({"distribution": "user", "rows": min(len(t), rows_for(c, params)),
                            "classes": c, "scale": float(s), "seed": config.seed, **staged})
        return out
    for s in params["scales"]:
        for k in params["exponents"]:
            c = 2 ** k
            out.append({"distribution": "normal", "rows": rows_for(c, params), "classes": c,
                        "scale": float(s), "seed": config.seed})
    return out


def run(config, params) -> pd.DataFrame:
    return config.sweep(NAME, cells(config, params))


def _log2_axes(fig) -> None:
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    for ax in fig.axes:
        if ax.get_xscale() == "log":
            ax.xaxis.set_major_locator(FixedLocator([2.0 ** k for k in range(1, 19, 3)]))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"2^{int(np.log2(v))}"))
            ax.xaxis.set_minor_locator(NullLocator())


def _vlines(ax, fmt, scale, sub):
    """C = 1/u: where a sequential sum of terms near 1 in the format stops growing."""
    f = get_format(fmt)
    c = 1 / f.unit_roundoff
    xmax = 2.0 ** 18
    if c <= xmax * 1.01:
        mark_vline(ax, c, f"C = 1/u = {c:g}" if sub is not None else None, linestyle=":")


def _median_err(d, fmt, method, acc, scale, c):
    r = d[(d["format"] == fmt) & (d["method"] == method) & (d["accumulator"] == acc)
          & (d["scale"] == scale) & (d["classes"] == c)]
    return (float(r["rel_err_median"].iloc[0]), float(r["nonfinite_frac"].iloc[0])) \
        if len(r) else (np.nan, np.nan)


SHIFTED = tuple(stable_methods())


def sum_overflow_notes(d: pd.DataFrame) -> list[str]:
    """Shifted methods that still return inf or NaN for representable rows: per format, which
    variants, from which class count, at which scales."""
    st = d[d["method"].isin(SHIFTED)]
    bad = st[st["spurious_nonfinite_frac"] > 0]
    if len(bad) == 0:
        return ["The shifted methods (" + ", ".join(f"`{m}`" for m in SHIFTED
                                                   if m in set(d["method"]))
                + ") return a finite loss for every row the format can represent, at every "
                "class count and scale."]
    notes = []
    for fmt, g in bad.groupby("format", sort=False):
        variants = []
        for (m, a), h in g.groupby(["method", "accumulator"], sort=False):
            variants.append(f"`{m}`" + (" (float32 sum)" if a == "float32" else ""))
        c0 = int(g["classes"].min())
        scales = ", ".join(f"{v:g}" for v in sorted(g["scale"].unique()))
        ok = st[(st["format"] == fmt) & ~st.set_index(["method", "accumulator"]).index.isin(
            g.set_index(["method", "accumulator"]).index)]
        spared = sorted({f"`{m}`" + (" (float32 sum)" if a == "float32" else
                                     f" ({fmt} sum)" if a == "working" else "")
                         for m, a in zip(ok["method"], ok["accumulator"])})
        text = (f"In {fmt}, even shifted methods return inf for rows whose loss the format "
                f"can represent once C >= {c0} (at s = {scales}): "
                + ", ".join(variants) + f". With nearly equal logits the sum of the C shifted "
                f"exponentials is close to C, and C > {FORMATS[fmt].max_finite:g} overflows "
                f"when that sum is rounded back to {fmt}")
        if spared:
            text += ("; " + ", ".join(spared) + " stay finite (a sum kept in the working format "
                     "stalls long before it can overflow)")
        notes.append(text + ".")
    return notes


def _notes(df) -> list[str]:
    d = df[df["reduction"] == "none"]
    notes = []
    dist = d["distribution"].iloc[0]
    scales = sorted(d["scale"].unique())
    s = 1.0 if 1.0 in scales else scales[len(scales) // 2]
    cs = sorted(d["classes"].unique())
    lo, hi = cs[0], cs[-1]
    for fmt in [f for f in ("float16", "bfloat16") if f in set(d["format"])]:
        w0, _ = _median_err(d, fmt, "logsumexp", "working", s, lo)
        w1, n1 = _median_err(d, fmt, "logsumexp", "working", s, hi)
        f1, _ = _median_err(d, fmt, "logsumexp", "float32", s, hi)
        if np.isfinite(w0) and np.isfinite(w1):
            text = (f"In {fmt} with sums in {fmt}, `logsumexp`'s median relative error goes "
                    f"from {w0:.2g} at C = {lo} to {w1:.2g} at C = {hi} (scale {s:g}, {dist} "
                    f"logits; u = {FORMATS[fmt].unit_roundoff:.2g})")
            if np.isfinite(f1):
                text += f"; with float32 sums it is {f1:.2g} at C = {hi}"
            notes.append(text + ".")
    nf = d[(d["method"] == "naive") & (d["format"] == "float16")]
    parts = []
    for acc, g in nf.groupby("accumulator", sort=False):
        sub = []
        for sc, h in g.groupby("scale"):
            h = h.sort_values("classes")
            half = h[h["spurious_nonfinite_frac"] >= 0.5]
            if len(half):
                r = half.iloc[0]
                sub.append(f"at s = {sc:g} from C = {int(r['classes'])} (median log-sum-exp "
                           f"{r['lse_median']:.3g}, median largest logit "
                           f"{r['max_logit_median']:.3g})")
        if sub:
            parts.append(("with float16 sums " if acc == "working" else "with float32 sums ")
                         + "; ".join(sub))
    if parts:
        notes.append("The unshifted `naive` loss returns inf or NaN for at least half the rows "
                     "in float16 " + ". And ".join(parts) + ": it fails once the log-sum-exp, "
                     "not the largest logit, passes the overflow logit 11.09, and a float16 "
                     "sum that stalls below 65504 can hide the overflow that a float32 sum "
                     "exposes when rounded back.")
    notes += sum_overflow_notes(d)
    lp = d[d["method"].isin(list(bounded_methods())) & d["bhh_within_frac"].notna()]
    if len(lp):
        fin = lp["count"] * (1 - lp["nonfinite_frac"])
        frac = float((lp["bhh_within_frac"] * fin).sum() / fin.sum()) if fin.sum() else np.nan
        notes.append(f"The Blanchard-Higham-Higham first-order bound holds for "
                     f"{100 * frac:.2f}% of the finite `log1p` and `logsumexp` losses; its "
                     f"summation term (n u) makes it grow linearly with C.")
    return notes


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    cap = caption(fmts, config.seed)
    d = df[df["reduction"] == "none"]
    scales = sorted(d["scale"].unique())
    dist = d["distribution"].iloc[0]
    fig = plot_error_panels(
        d, x="classes", row_key="scale", row_values=scales, row_label=lambda s: f"s = {s:g}",
        xlabel="number of classes C", vlines=_vlines,
        title=f"Median relative error of the per-row loss against the number of classes "
              f"({dist} logits x s)")
    _log2_axes(fig)
    save_figure(fig, out_dir, "classes")
    plt.close(fig)
    mean = df[df["reduction"] == "mean"]
    fig = plot_error_panels(
        mean.assign(reduction="none", bhh_bound_rel_median=np.nan), x="classes",
        row_key="scale", row_values=scales, row_label=lambda s: f"s = {s:g}",
        xlabel="number of classes C", ylabel="relative error of the batch mean", bound=False,
        vlines=_vlines,
        title=f"Relative error of the batch-mean loss (reduction='mean') against the number "
              f"of classes ({dist} logits x s)")
    _log2_axes(fig)
    save_figure(fig, out_dir, "classes_mean")
    plt.close(fig)

    s = 1.0 if 1.0 in scales else scales[len(scales) // 2]
    cs = sorted(d["classes"].unique())
    want = [c for c in cs if c in {2, 1024, 32768, 131072, 262144}] or cs[:: max(1, len(cs) // 5)]
    table = error_pivot(d[d["scale"] == s], "classes", want, lambda c: f"C = {c}")
    notes = _notes(df)
    md = out_dir / "summary.md"
    tcap = (f"Median relative error of the per-row cross-entropy loss at logit scale s = {s:g} "
            f"({dist} logits) for several class counts C; a percentage in brackets where some "
            f"rows are non-finite. {cap}")
    write_markdown(table, md, title="Class count: error of each method against the number of "
                   "classes", caption=tcap)
    write_latex(table, out_dir / "summary.tex", caption=tcap, label="tab:class-count")
    rows = d.drop_duplicates("classes").set_index("classes")["rows"]
    with open(md, "a", encoding="utf-8") as f:
        f.write("\n## Findings\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
        f.write("\n## Figures\n\n![classes](classes.png)\n\n![classes_mean](classes_mean.png)\n\n")
        f.write("Solid lines: sums in the working format; dashed: float32 sums (float16 and "
                "bfloat16 only). Dotted black: the Blanchard-Higham-Higham bound (log1p form), "
                "median over rows of bound / loss. Dotted vertical line: C = 1/u, where a "
                "sequential sum of terms near 1 in the format stops growing. Errors below u/100 "
                "(including exact results) are drawn at u/100; the strip under each panel is "
                "the fraction of non-finite rows, grey where the format cannot represent the "
                "row at all.\n\n")
        f.write("Rows per cell: " + ", ".join(f"{r} for C = {c}" for c, r in rows.items())
                + ".\n\n")
        f.write(f"{cap}\n")
    return [{"text": n, "link": "classes.png" if i == 0 else "summary.md",
             "label": "figure" if i == 0 else "table"} for i, n in enumerate(notes)]
