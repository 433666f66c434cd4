"""Gradient with training options: what label smoothing, the z-loss and the soft-cap do to dL/dx

Question: language models train with label smoothing 0.1, PaLM's z-loss 1e-4 and Gemma 2's
logit soft-cap 30. Each changes the gradient: smoothing moves the target entry's zero from
p_t = 1 to p_t = 1 - eps (1 - 1/C), the z-loss adds 2 z lse softmax, the soft-cap multiplies
by 1 - tanh^2(x / c). How does each backward's gradient error change with each option in
bfloat16, float16 and float32, as the model grows confident and as the logits grow?

Data: two sweeps per setting (plain, each option alone, all three together): rows whose
target has probability p_t (non-target logits standard normal, the target logit set to give
p_t before rounding and before the soft-cap), and logits s * z (z standard normal) over logit
scales s; targets uniform.

Method: every backward that expresses the setting's options (numerics.gradients with
`options`: the textbook softmax minus one-hot, the log-sum-exp form, the fused kernel and its
store-first variant, torch autograd with the options passed through; the softmax backwards
have no log-sum-exp and sit out the z-loss), in each format with the float32 sum as a variant
for the 16-bit formats, per-row gradients (reduction "none"), against the certified gradient
under the same options of the rounded inputs (truth.grad with options, >= 100 bits per
entry). Per cell the median over rows of the target entry's and the norm-wise relative error.

Conclusions: generated from results.csv into the findings (per format and setting, how many
backward variants pass 10% median target-entry error on the confidence grid; where label
smoothing's largest error lies against the zero it moves the target entry to; the soft-cap's
flushed entries and norm-wise error at the largest scale against plain).
"""
from __future__ import annotations

import pandas as pd

from precision_lab.analysis.evaluate_grad import grad_cell
from precision_lab.numerics.options import LossOptions
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import formats_in
from precision_lab.reporting.grad_figures import grad_truth, line_panels

from ._grad_common import LEVEL, floors, series_in

NAME = "grad_options"
FORMATS_RUN = ["bfloat16", "float16", "float32"]
# The settings: name -> LossOptions fields (reduction "none" is the cells' own); a profile
# may name a subset as "settings".
SETTINGS = {"plain": {}, "label_smoothing 0.1": {"label_smoothing": 0.1},
            "z_loss 1e-4": {"z_loss": 1e-4}, "softcap 30": {"softcap": 30.0},
            "all three": {"label_smoothing": 0.1, "z_loss": 1e-4, "softcap": 30.0}}
PROFILES = {
    "quick": {"digits": [0.30103, 1, 2, 4, 6], "classes": 32, "rows": 4,
              "scales": [1.0, 10.0, 100.0], "scale_classes": 256},
    "full": {"digits": [0.30103, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9], "classes": 128,
             "rows": 16, "scales": [0.3, 1.0, 3.0, 10.0, 100.0, 300.0], "scale_classes": 512},
}


def cells(config, params) -> list[dict]:
    out = []
    for name in params.get("settings", list(SETTINGS)):
        spec = SETTINGS[name]
        opts = {**spec, "reduction": "none"}
        LossOptions(**opts)  # validated here, not in a worker
        base = {"setting": name, "options": opts, "seed": config.seed, "formats": FORMATS_RUN,
                "rows": params["rows"]}
        out += [{**base, "sweep": "confidence", "kind": "confidence",
                 "classes": params["classes"], "confidence": 1 - 10.0 ** -k}
                for k in params["digits"]]
        out += [{**base, "sweep": "scale", "distribution": "normal",
                 "classes": params["scale_classes"], "scale": float(s)}
                for s in params["scales"]]
    return out


def run(config, params) -> pd.DataFrame:
    df = config.sweep(NAME, cells(config, params), fn=grad_cell)
    return df.assign(one_minus_p=1 - df["confidence"])


def _p(v: float) -> str:
    return f"1 - {1 - v:.0e}" if v > 0.99 else f"{v:.3g}"


def confidence_notes(d: pd.DataFrame) -> list[str]:
    """Per format: per setting, how many (backward, accumulator) variants have a median
    target-entry error above LEVEL somewhere on the p_t grid."""
    notes = []
    c = d[d["sweep"] == "confidence"]
    for fmt in [f for f in FORMATS_RUN if f in set(c["format"])]:
        parts = []
        for setting in [s for s in SETTINGS if s in set(c["setting"])]:
            g = c[(c["format"] == fmt) & (c["setting"] == setting)]
            worst = g.groupby(["method", "accumulator"], sort=False)["target_rel_median"].max()
            parts.append(f"{setting} {int((worst > LEVEL).sum())}/{len(worst)}")
        notes.append(f"{fmt}: variants with a median target-entry error above 10% on the p_t "
                     f"grid: " + "; ".join(parts) + ".")
    return notes


def smoothing_notes(d: pd.DataFrame, classes: int) -> list[str]:
    """Label smoothing moves the target entry's zero to p_t = 1 - eps (1 - 1/C): where on the
    grid each 16-bit format's largest median target-entry error lies."""
    c = d[(d["sweep"] == "confidence") & (d["setting"] == "label_smoothing 0.1")]
    parts = []
    for fmt in [f for f in ("bfloat16", "float16") if f in set(c["format"])]:
        g = c[c["format"] == fmt]
        r = g.loc[g["target_rel_median"].idxmax()]
        parts.append(f"{fmt} at p_t {_p(r['confidence'])} ({r['target_rel_median']:.2g}, "
                     f"`{r['method']}`)")
    if not parts:
        return []
    zero = 1 - 0.1 * (1 - 1 / classes)
    return [f"Label smoothing 0.1, C = {classes}: the true target entry is 0 at p_t = "
            f"{zero:.3g}; the largest median target-entry error: " + ", ".join(parts) + "."]


def softcap_notes(d: pd.DataFrame) -> list[str]:
    """At the largest scale, per format: the soft-cap's flushed entries and `logsumexp`'s
    median norm-wise error against plain."""
    s = d[d["sweep"] == "scale"]
    if s.empty:
        return []
    top = s[s["scale"] == s["scale"].max()]
    notes = []
    for fmt in [f for f in FORMATS_RUN if f in set(top["format"])]:
        g = top[(top["format"] == fmt) & (top["method"] == "logsumexp")
                & (top["accumulator"] == "working")]
        by = g.set_index("setting")
        if not {"plain", "softcap 30"} <= set(by.index):
            continue
        pl, sc = by.loc["plain"], by.loc["softcap 30"]
        entries = int(sc["count"]) * int(sc["classes"])
        notes.append(f"{fmt}, s = {sc['scale']:g}, C = {int(sc['classes'])}, `logsumexp`: "
                     f"median norm-wise error {pl['norm_rel_median']:.2g} plain, "
                     f"{sc['norm_rel_median']:.2g} soft-capped; entries flushed to 0: "
                     f"{int(pl['n_flushed'])}/{entries} plain, {int(sc['n_flushed'])}/{entries}"
                     f" soft-capped.")
    return notes


def first_failures(d: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, format, method, accumulator) on the confidence sweep: the first grid p_t
    whose median target-entry error passes LEVEL ("never" if none) and the largest error."""
    rows = []
    c = d[d["sweep"] == "confidence"]
    for key, g in c.groupby(["setting", "format", "method", "accumulator"], sort=False):
        g = g.sort_values("confidence")
        bad = g[g["target_rel_median"] > LEVEL]
        rows.append(dict(zip(["setting", "format", "method", "accumulator"], key),
                         fails_at_p=_p(float(bad["confidence"].iloc[0])) if len(bad) else "never",
                         max_target_rel=float(g["target_rel_median"].max())))
    return pd.DataFrame(rows)


def failing_table(d: pd.DataFrame) -> pd.DataFrame:
    """One row per setting, one column per format: the (backward, accumulator) variants whose
    median target-entry error passes LEVEL somewhere on the p_t grid, as k/n."""
    c = d[d["sweep"] == "confidence"]
    rows = []
    for setting in [s for s in SETTINGS if s in set(c["setting"])]:
        r = {"setting": setting, "options": LossOptions(**SETTINGS[setting]).label()}
        for fmt in [f for f in FORMATS_RUN if f in set(c["format"])]:
            g = c[(c["format"] == fmt) & (c["setting"] == setting)]
            worst = g.groupby(["method", "accumulator"], sort=False)["target_rel_median"].max()
            r[fmt] = f"{int((worst > LEVEL).sum())}/{len(worst)}"
        rows.append(r)
    return pd.DataFrame(rows)


def softcap_table(d: pd.DataFrame) -> pd.DataFrame:
    """At the largest scale, per format: `logsumexp`'s (working sums) median norm-wise error
    and entries flushed to 0, plain and soft-capped."""
    s = d[d["sweep"] == "scale"]
    rows = []
    if s.empty:
        return pd.DataFrame(rows)
    top = s[(s["scale"] == s["scale"].max()) & (s["method"] == "logsumexp")
            & (s["accumulator"] == "working")]
    for fmt in [f for f in FORMATS_RUN if f in set(top["format"])]:
        for setting, r in top[top["format"] == fmt].set_index("setting").iterrows():
            rows.append({"format": fmt, "setting": setting, "scale": r["scale"],
                         "classes": int(r["classes"]), "norm-wise error": r["norm_rel_median"],
                         "entries flushed": f"{int(r['n_flushed'])}/"
                                            f"{int(r['count']) * int(r['classes'])}"})
    return pd.DataFrame(rows)


def _figures(rep, d, fmts) -> None:
    settings = [s for s in SETTINGS if s in set(d["setting"])]
    head = "bfloat16" if "bfloat16" in fmts else fmts[0]
    for sweep, x, y, xlabel, ylabel in (
            ("confidence", "one_minus_p", "target_rel_median", "1 - p_t (requested)",
             "median rel. error, target entry"),
            ("scale", "scale", "norm_rel_median", "logit scale s",
             "median ||g_hat - g|| / ||g||")):
        for fmt in fmts:
            g = d[(d["sweep"] == sweep) & (d["format"] == fmt)]
            if g.empty:
                continue
            fig = line_panels(g, x, y, "setting", settings, series_in(g, fmt), xlabel, ylabel,
                              f"dL/dx with training options, {fmt} ({sweep} sweep)",
                              hline=LEVEL if sweep == "confidence" else None,
                              floor=floors([fmt])[fmt],
                              hline_label="10%" if sweep == "confidence" else None)
            what = ("the target entry's median relative error against 1 - p_t"
                    if sweep == "confidence" else
                    "the median norm-wise relative error against the logit scale s")
            rep.figure(fig, f"{sweep}_{fmt}", f"{fmt}: {what}, one panel per setting "
                       f"(float32 sums where a method has them); errors below u/100 drawn at "
                       f"u/100.", headline=sweep == "confidence" and fmt == head)


def report(df, config, params, out_dir) -> list[dict]:
    d = df[df["reduction"] == "none"]
    fmts = [f for f in FORMATS_RUN if f in formats_in(d)]
    rep = report_for(NAME, __doc__, config, out_dir, truth=grad_truth(fmts))
    t1 = rep.table(failing_table(d), f"Confidence sweep (C = {params['classes']}, "
                   f"{params['rows']} rows per p_t): backward variants (method x accumulator) "
                   f"whose median target-entry error passes 10% somewhere on the p_t grid, per "
                   f"setting and format.", stem="failing", headline=True)
    _figures(rep, d, fmts)
    t2 = rep.table(first_failures(d), f"Confidence sweep (C = {params['classes']}): first "
                   f"requested p_t at which the median relative error of the gradient's target "
                   f"entry passes 10%, and its largest value.", stem="first_failure")
    st = softcap_table(d)
    t3 = rep.table(st, "Scale sweep, the largest logit scale: `logsumexp`'s (working sums) "
                   "median norm-wise error and entries flushed to 0, per format and setting.",
                   stem="softcap") if len(st) else None
    for n in confidence_notes(d):
        rep.finding(n, t1)
    for n in smoothing_notes(d, params["classes"]):
        rep.finding(n, t2)
    for n in softcap_notes(d):
        rep.finding(n, t3)
    rep.section("Settings", "; ".join(f"{k}: {LossOptions(**v).label()}"
                                      for k, v in SETTINGS.items()) + ".")
    return rep.write(out_dir)
