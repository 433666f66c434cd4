"""Question 2: "for logits as big as 1000 ..." - at which logit does each method fail in each
format? Rows [L, 0, 0, 0] and the blog's logits rescaled, L on a grid of bfloat16 numbers."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from precision_lab.analysis.evaluate import evaluate
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.methods import METHODS
from precision_lab.numerics.metrics import ulps_at_max1
from precision_lab.reporting.figures import (
    FAMILY_GROUPS,
    GROUP_LABEL,
    machine_marked,
    method_style,
    plt,
)

from ._common import BLOG_SEED, FMT_NAMES, GT, WRONG_ULP, blog_batch, records, select

__all__ = ["QUESTION", "FAMILIES", "compute", "first_table", "describe"]

QUESTION = "q2"
FAMILIES = {
    "A": "[L, 0, 0, 0] target 0 (confidently correct)",
    "B": "[L, 0, 0, 0] target 1 (confidently wrong)",
    "C": "the blog's logits rescaled to max |logit| = L",
}
WORST = "worst error (ULPs at max(|loss|,1))"


def grid(per_octave: int, max_log2: int) -> np.ndarray:
    """bfloat16 numbers (exact in every format) from 2**-2 to 2**max_log2, `per_octave` each."""
    step = 128 // per_octave
    vals = [2.0 ** e * (1 + k / 128) for e in range(-2, max_log2) for k in range(0, 128, step)]
    return np.array(vals + [2.0 ** max_log2])


def family_batch(L_values):
    bx, bt = blog_batch()
    bx = bx / np.abs(bx).max()
    xs, ts, fam, L = [], [], [], []
    for v in L_values:
        row = np.array([v, 0.0, 0.0, 0.0])
        xs += [row, row]
        ts += [0, 1]
        fam += ["A", "B"]
        L += [v, v]
        xs += list(v * bx)
        ts += list(bt)
        fam += ["C"] * len(bt)
        L += [v] * len(bt)
    return np.array(xs), np.array(ts), np.array(fam), np.array(L)


def _errors(x, t, fam, L) -> pd.DataFrame:
    frames = []
    for name in FMT_NAMES:
        keep = L <= FORMATS[name].max_finite
        df = evaluate(x[keep], t[keep], formats=[name], methods=list(METHODS),
                      accumulators=("working",), mean=False)
        df["family"] = fam[keep][df["row"].to_numpy()]
        df["L"] = L[keep][df["row"].to_numpy()]
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    mixed = np.empty(len(df))
    for name, idx in df.groupby("format").groups.items():
        d = df.loc[idx]
        mixed[df.index.get_indexer(idx)] = ulps_at_max1(d["computed"], d["truth"], name,
                                                        abs_err=d["abs_err"])
    df["mixed_ulp"] = mixed
    df["nonfinite"] = ~np.isfinite(df["computed"]) & (df["mixed_ulp"] == np.inf)
    df["wrong"] = df["mixed_ulp"] > WRONG_ULP
    return df


def compute(params) -> list[dict]:
    x, t, fam, L = family_batch(grid(params["grid_per_octave"], params["grid_max_log2"]))
    df = _errors(x, t, fam, L)
    g = df.groupby(["family", "format", "method", "L"], sort=False).agg(
        mixed_ulp=("mixed_ulp", "max"), nonfinite=("nonfinite", "any"), wrong=("wrong", "any"))
    g = g.reset_index()
    recs = [{"item": f"{r.family} L={r.L!r}", "format": r.format, "method": r.method,
             "quantity": WORST, "value": r.mixed_ulp, "text": r.family, "argument": r.L}
            for r in g.itertuples(index=False)]
    for (f, fmt, m), s in g.groupby(["family", "format", "method"], sort=False):
        base = {"item": f"{f} first", "format": fmt, "method": m, "text": f}
        recs += [{**base, "quantity": "first non-finite L",
                  "value": s.loc[s["nonfinite"], "L"].min() if s["nonfinite"].any() else np.inf},
                 {**base, "quantity": "first wrong L",
                  "value": s.loc[s["wrong"], "L"].min() if s["wrong"].any() else np.inf},
                 {**base, "quantity": "grid end", "value": s["L"].max()}]
    # The blog's own example: the confidently wrong row at L = 1000, every method and format.
    at = evaluate(np.array([[1000.0, 0.0, 0.0, 0.0]]), np.array([1]), formats=FMT_NAMES,
                  methods=list(METHODS), accumulators=("working",), mean=False)
    for r in at.itertuples(index=False):
        recs.append({"item": "L=1000", "format": r.format, "method": r.method,
                     "quantity": "computed at [1000, 0, 0, 0], target 1", "value": r.computed,
                     "argument": 1000.0})
    for name in FMT_NAMES:
        fmt = FORMATS[name]
        with np.errstate(over="ignore"):
            e1000 = float(fmt.round(np.exp(1000.0)))
        recs.append({"item": "overflow", "format": name, "quantity": "log(max finite)",
                     "value": fmt.overflow_logit})
        recs.append({"item": "overflow", "format": name, "quantity": "exp(1000) in format",
                     "value": e1000})
    return records(QUESTION, recs)


def first_table(df: pd.DataFrame, family: str) -> pd.DataFrame:
    """Per method: the first wrong L and the first non-finite L in each format (inf: never)."""
    f = df[df["item"] == f"{family} first"]
    piv = f[f["quantity"] != "grid end"].pivot_table(
        index="method", columns=["format", "quantity"], values="value", sort=False)
    cols = [(fmt, q) for fmt in FMT_NAMES for q in ("first wrong L", "first non-finite L")]
    piv = piv.reindex(columns=cols)
    piv.columns = [f"{fmt}: {'wrong' if q == 'first wrong L' else 'non-finite'}"
                   for fmt, q in cols]
    piv = piv.reset_index()
    return piv.assign(method=piv["method"].map(machine_marked))


def _L(v) -> str:
    return "—" if v == math.inf else f"{v:.6g}"


def describe(df: pd.DataFrame, rep, ctx) -> None:
    params = ctx["params"]
    ovt = select(df, item="overflow").pivot_table(index="format", columns="quantity",
                                                  values="value", sort=False)
    ovt = ovt.reindex(FMT_NAMES).reset_index()
    n_inf = int(np.isinf(ovt["exp(1000) in format"]).sum())
    at = select(df, item="L=1000").pivot_table(index="method", columns="format",
                                               values="value", sort=False)
    at = at.reindex(columns=FMT_NAMES)
    rep.section("2. \"For logits as big as 1000 ...\": where each method fails",
                f"exp(1000) is infinite in {n_inf} of the {len(ovt)} formats; exp overflows "
                f"far earlier in the narrow formats (log of the largest finite number):")
    rep.table(ovt, "Each format's overflow logit and exp(1000) rounded to it.", stem="q2_exp")
    rep.paragraph("What each method returns for the confidently wrong row [1000, 0, 0, 0], "
                  "target 1 (true loss 1000):")
    at_t = at.reset_index()
    at_t["method"] = at_t["method"].map(machine_marked)
    t_at = rep.table(at_t, f"Every method on [1000, 0, 0, 0], target 1, in every "
                     f"format (true loss 1000; torch rows machine-dependent; {GT}).",
                     stem="q2_at1000", formats={f: lambda v: f"{v:.6g}" for f in FMT_NAMES})
    rep.paragraph(f"For each method and format, the first L (on a grid of "
                  f"{params['grid_per_octave']} bfloat16 numbers per octave, exact in every "
                  f"format, up to 2^{params['grid_max_log2']}; float16 up to its largest finite "
                  f"number) at which the result is wrong - more than {WRONG_ULP:g} ULPs of the "
                  f"format at max(|loss|, 1), the default of `precision-lab check`, a "
                  f"non-finite result included - and the first L at which it is non-finite; "
                  f"\"—\" means never on the grid. Sums are sequential in the working format; "
                  f"torch is PyTorch's own CPU kernel (machine-dependent).")
    refs = {}
    for fam, desc in FAMILIES.items():
        rep.paragraph(f"**{desc}**")
        refs[fam] = rep.table(first_table(df, fam), f"First wrong L and first non-finite L, "
                              f"{desc}; wrong = error above {WRONG_ULP:g} ULPs at "
                              f"max(|loss|,1); {GT}.", stem=f"q2_{fam}",
                              formats={c: _L for c in first_table(df, fam).columns[1:]})
    f = df[df["item"] == "B first"]

    def first(m, fmt, q="first non-finite L"):
        s = f[(f["method"] == m) & (f["format"] == fmt) & (f["quantity"] == q)]
        return float(s["value"].iloc[0]) if len(s) else math.nan

    ovl = {n: FORMATS[n].overflow_logit for n in FMT_NAMES}
    rep.paragraph(f"Reading the tables: the unshifted softmax (`naive`) on a confidently wrong "
                  f"row first returns a non-finite loss at L = {_L(first('naive', 'float64'))} "
                  f"in float64, {_L(first('naive', 'float32'))} in float32 and "
                  f"{_L(first('naive', 'float16'))} in float16, the first grid points past "
                  f"log(max finite) = {ovl['float64']:.6g}, {ovl['float32']:.4g} and "
                  f"{ovl['float16']:.4g}. The shift alone does not make the loss right: "
                  f"`softmax_log` (shifted, no epsilon) returns inf once p_t underflows, and "
                  f"`softmax_eps` is capped near -log(eps) (section 3).")
    fig = _figure(df[df["quantity"] == WORST])
    rep.figure(fig, "overflow", f"Worst error (ULPs of the format at max(|loss|, 1), log "
                      f"scale; non-finite results drawn at the top) against L, per method; rows "
                      f"[L, 0, 0, 0] with target 1 and the blog's logits (numpy seed "
                      f"{BLOG_SEED}) rescaled; {GT}.")
    inf_all = [m for m in at.index if np.isinf(at.loc[m]).all()]
    eps = at.loc["softmax_eps"] if "softmax_eps" in at.index else None
    text = (f"exp(1000) overflows in {n_inf}/{len(ovt)} formats; on [1000, 0, 0, 0] "
            + (", ".join(f"`{m}`" for m in inf_all) + " return inf in every format"
               if inf_all else "no method returns inf in every format"))
    if eps is not None:
        text += f", `softmax_eps` returns {eps.min():.3g} to {eps.max():.3g} instead of 1000"
    rep.finding(text + ".", t_at)
    rep.finding(f"Unshifted `naive` first fails at L = {_L(first('naive', 'float16'))} "
                f"(float16) and {_L(first('naive', 'float64'))} (float64) on [L, 0, 0, 0] "
                f"target 1, just past each overflow logit.", refs["B"])


def _figure(d):
    """Rows: the two row families x the two groups of method families (at most five methods a
    panel, each family in its colour); columns: formats, each with the L range it ran."""
    fams = ["B", "C"]
    methods = list(dict.fromkeys(d["method"]))
    groups = [[m for m in methods if _group(m) == g] for g in range(len(FAMILY_GROUPS))]
    groups = [g for g in groups if g]
    nrows = len(fams) * len(groups)
    fig, axes = plt.subplots(nrows, len(FMT_NAMES), figsize=(15, 2.6 * nrows + 0.8),
                             sharey=True, squeeze=False)
    top = 1e20
    for i, fam in enumerate(fams):
        for gi, group in enumerate(groups):
            r = i * len(groups) + gi
            for j, name in enumerate(FMT_NAMES):
                ax = axes[r, j]
                sub = d[(d["text"] == fam) & (d["format"] == name)]
                for m in group:
                    s = sub[sub["method"] == m].sort_values("argument")
                    y = np.where(np.isfinite(s["value"]), np.maximum(s["value"], 1e-3), top)
                    ax.plot(s["argument"], y, label=m, **method_style(m, markers=False))
                ax.axhspan(top / 10, top * 10, color="0.92", zorder=0)
                ax.axhline(WRONG_ULP, color="k", lw=0.6, ls=":")
                L = FORMATS[name].overflow_logit
                ax.axvline(L, color="gray", lw=0.6, ls="--")
                ax.set_xscale("log")
                ax.set_yscale("log")
                ax.set_ylim(1e-3, top * 10)
                if len(sub):
                    ax.set_xlim(sub["argument"].min() / 1.2, sub["argument"].max() * 1.2)
                if r == 0:
                    ax.set_title(f"{name}\n(dashed: overflow logit {L:.4g})", fontsize=8)
                if j == len(FMT_NAMES) - 1:
                    ax.annotate(f"{WRONG_ULP:g} ULPs", xy=(1.0, WRONG_ULP),
                                xycoords=("axes fraction", "data"), xytext=(2, 0),
                                textcoords="offset points", fontsize=7, va="center",
                                annotation_clip=False)
                    ax.annotate("non-finite", xy=(1.0, top), xycoords=("axes fraction", "data"),
                                xytext=(2, 0), textcoords="offset points", fontsize=7,
                                va="center", annotation_clip=False, color="0.3")
                if j == 0:
                    ax.set_ylabel(f"{FAMILY_SHORT[fam]}\n{GROUP_LABEL[FAMILY_GROUPS[_group(group[0])]]}"
                                  f"\nworst error, ULPs", fontsize=7)
                if r == nrows - 1:
                    ax.set_xlabel("L")
                ax.tick_params(labelsize=7)
    handles = [Line2D([], [], label=m, **method_style(m, markers=False)) for m in methods]
    fig.legend(handles=handles, loc="lower center", ncol=len(methods), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"Worst error (ULPs of the format at max(|loss|, 1)) against logit size L; "
                 f"blog logits numpy seed {BLOG_SEED}; {GT}", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 0.97, 1))
    return fig


def _group(m: str) -> int:
    fam = METHODS[m].family if m in METHODS else "library"
    return next((i for i, g in enumerate(FAMILY_GROUPS) if fam in g), len(FAMILY_GROUPS) - 1)


FAMILY_SHORT = {"A": "[L,0,0,0] target 0", "B": "[L,0,0,0] target 1", "C": "blog rows x L"}
