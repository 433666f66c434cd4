"""Training options: what label smoothing, z-loss, soft-capping and masks do to each method's error

Question: language models train cross entropy with label smoothing, PaLM's z-loss, Gemma 2's
logit soft-cap, ignored targets and class weights. How does each change every method's error
in each format, as the class count and the logit scale grow; and on adversarial masks (many
-inf logits, padded -inf lanes under a soft-cap, a target at a -inf class, every target
ignored, weights summing to zero), does each method give what the exact loss gives?

Data: logits s * z, z standard normal, targets uniform; class counts up to 262144 at s = 1
(rows per cell shrink as C grows: a few rows at the largest C), and logit scales at one
class count. The adversarial battery builds its masks from the same logits (`CASES`).

Method: every method that can express the options (`Method.options`; the softmax methods
cannot form the z-loss's log Z and are left out of those cells), in every format, with the
float32 accumulator as a variant for float16 and bfloat16, per-row losses (reduction "none")
and the batch mean; errors against the certified loss under the same options
(`truth.options`, >= 100 correct bits) of the logits and weights as rounded into the format.
Options as `numerics.options` defines them (torch's semantics).

Conclusions: generated from results.csv into the report's findings (the class count at which
float16's smoothing sum overflows with each accumulator, what the fused smoothing form costs,
what the soft-cap does to padded lanes, how each degenerate batch comes out).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from precision_lab.analysis.cells import GROUP, cell_rng
from precision_lab.analysis.evaluate import evaluate
from precision_lab.data.inputs import make_logits
from precision_lab.errors import InputError
from precision_lab.numerics.metrics import aggregate
from precision_lab.numerics.options import LossOptions
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import (
    error_pivot,
    error_text,
    formats_in,
    machine_marked,
    plot_error_panels,
    truth_sentence,
)
from precision_lab.reporting.tables import format_number
from precision_lab.truth.options import certified_option_losses

NAME = "options"

# The settings swept: (option, value); "plain" is the baseline every figure shows.
PROFILES = {
    "quick": {"settings": [["plain", 0.0], ["label_smoothing", 0.1], ["z_loss", 1e-4],
                           ["softcap", 30.0]],
              "classes": [16, 1024, 8192], "scales": [1.0, 30.0], "scale_classes": 256,
              "max_rows": 8, "max_logits": 1 << 13, "min_rows": 2, "battery_classes": 256,
              "battery_rows": 4},
    "full": {"settings": [["plain", 0.0], ["label_smoothing", 0.1], ["label_smoothing", 0.5],
                          ["z_loss", 1e-4], ["z_loss", 1e-2], ["softcap", 30.0],
                          ["softcap", 5.0]],
             "classes": [2, 16, 128, 1024, 4096, 8192, 16384, 65536, 262144],
             "scales": [0.1, 1.0, 10.0, 100.0], "scale_classes": 1024,
             "max_rows": 32, "max_logits": 1 << 17, "min_rows": 2, "battery_classes": 1024,
             "battery_rows": 8},
}

# Figures: at most six series per panel.
SHOWN = [("logsumexp", "working"), ("logsumexp", "float32"), ("log_softmax", "working"),
         ("online", "working"), ("online", "float32"), ("torch", "internal")]
PADDED_LANES = 64

# The adversarial battery: (case, options); what each case does to the batch is `_battery`.
CASES = [
    ("many_masked", {}), ("many_masked", {"label_smoothing": 0.1}),
    ("many_masked", {"softcap": 30.0}),
    ("padded_lanes", {}), ("padded_lanes", {"softcap": 30.0}), ("padded_lanes", {"softcap": 5.0}),
    ("padded_lanes", {"softcap": 30.0, "label_smoothing": 0.1}),
    ("padded_lanes", {"label_smoothing": 0.1}),
    ("masked_target", {}), ("masked_target", {"softcap": 30.0}),
    ("all_ignored", {}), ("all_ignored", {"label_smoothing": 0.1}),
    ("all_ignored", {"reduction": "sum"}),
    ("zero_weights", {"weight": "pm1"}),
    ("zero_weights", {"weight": "pm1", "label_smoothing": 0.1}),
    ("offset_logits", {"label_smoothing": 0.1}),
]
OFFSET = 1000.0


def _options(spec: dict, classes: int) -> LossOptions:
    spec = dict(spec)
    if spec.get("weight") == "pm1":  # +1 on even classes, -1 on odd: kept weights cancel
        spec["weight"] = tuple(1.0 if i % 2 == 0 else -1.0 for i in range(classes))
    return LossOptions(**spec)


def setting_options(option: str, value: float) -> LossOptions:
    return LossOptions() if option == "plain" else LossOptions(**{option: value})


def rows_for(classes: int, params) -> int:
    return int(max(params["min_rows"], min(params["max_rows"], params["max_logits"] // classes)))


def cells(config, params) -> list[dict]:
    if config.user_logits is not None:
        raise InputError("the options experiment builds its own logits (and masks); "
                         "--logits-file is not supported by it")
    out = []
    for option, value in params["settings"]:
        grid = [(1.0, c) for c in params["classes"]]
        grid += [(s, params["scale_classes"]) for s in params["scales"] if s != 1.0]
        for s, c in grid:
            out.append({"kind": "sweep", "case": "random", "option": option,
                        "value": float(value), "scale": float(s), "classes": int(c),
                        "rows": rows_for(c, params), "seed": config.seed})
    c = params["battery_classes"]
    for i, (case, spec) in enumerate(CASES):
        out.append({"kind": "battery", "case": case, "option": _options(spec, c).label(),
                    "value": float(i), "scale": 1.0, "classes": c,
                    "rows": params["battery_rows"], "seed": config.seed})
    return out


def _battery(case: str, x: np.ndarray, t: np.ndarray, rng):
    """The adversarial batch of `case` from normal logits x and targets t."""
    n, c = x.shape
    x, t = x.copy(), t.copy()
    if case == "many_masked":            # 7 of 8 classes masked, never the target
        mask = rng.random((n, c)) < 7 / 8
        mask[np.arange(n), t] = False
        x[mask] = -np.inf
    elif case == "padded_lanes":         # the last lanes are padding, at -inf
        t = t % (c - PADDED_LANES)
        x[:, c - PADDED_LANES:] = -np.inf
    elif case == "masked_target":        # the target's logit is -inf
        x[np.arange(n), t] = -np.inf
    elif case == "all_ignored":
        t[:] = -100
    elif case == "zero_weights":         # targets alternate between a +1 and a -1 class
        t = np.arange(n) % 2
    elif case == "offset_logits":        # a common offset: C lse and sum x nearly cancel
        x = x + OFFSET
    return x, t


def _cell_batch(cell: dict):
    rng = cell_rng(cell)
    x, t = make_logits("normal", int(cell["rows"]), int(cell["classes"]), float(cell["scale"]),
                       rng)
    if cell["kind"] == "sweep":
        return x, t, setting_options(cell["option"], cell["value"])
    case, spec = CASES[int(cell["value"])]
    x, t = _battery(case, x, t, rng)
    return x, t, _options(spec, int(cell["classes"]))


def options_cell(cell: dict) -> pd.DataFrame:
    """One cell: its batch under its options, every method that expresses them, aggregated;
    with the truth's outcomes, how many results share the truth's outcome (finite, inf, nan),
    and (padded lanes) how far the padding moves the true loss."""
    x, t, o = _cell_batch(cell)
    df = evaluate(x, t, options=o)
    tv, cv = df["truth"].to_numpy(), df["computed"].to_numpy()
    tfin, cfin = np.isfinite(tv), np.isfinite(cv)
    same = np.where(tfin, cfin, (np.isnan(tv) & np.isnan(cv)) | (tv == cv))
    df = df.assign(_tf=~tfin, _spur=tfin & ~cfin, _same=same)
    agg = aggregate(df, GROUP)
    extra = df.groupby(GROUP, sort=False).agg(
        truth_nonfinite_frac=("_tf", "mean"), spurious_nonfinite_frac=("_spur", "mean"),
        outcome_match_frac=("_same", "mean"),
        truth_median=("truth", "median")).reset_index()
    agg = agg.merge(extra, on=GROUP, how="left")
    leak = np.nan
    if cell["case"] == "padded_lanes":
        c = int(cell["classes"]) - PADDED_LANES
        full = certified_option_losses(x, t, o).rows
        cut = certified_option_losses(x[:, :c], t, o).rows
        shift = [float(a / b - 1) if (b != 0 and math.isfinite(float(b))) else np.nan
                 for a, b in zip(full, cut)]
        leak = float(np.nanmedian(shift)) if np.isfinite(shift).any() else np.nan
    agg["padding_shift_median"] = leak
    agg.insert(0, "options", o.label())
    for i, k in enumerate(("kind", "case", "option", "value", "scale", "classes", "rows",
                           "seed")):
        agg.insert(i, k, cell[k])
    return agg


def run(config, params) -> pd.DataFrame:
    return config.sweep(NAME, cells(config, params), fn=options_cell)


# ---------------------------------------------------------------------- findings -----------

def _sel(d, **kw):
    for k, v in kw.items():
        d = d[d[k] == v]
    return d


def _variant(m: str, a: str) -> str:
    return f"`{m}`" + (" (float32 sums)" if a == "float32" else "")


def smoothing_overflow_notes(d: pd.DataFrame) -> list[str]:
    """float16 at s = 1: from which class count `logsumexp`'s smoothed loss is inf with each
    accumulator (and torch's), or how wrong it is where it stalls instead."""
    notes = []
    g0 = _sel(d, kind="sweep", option="label_smoothing", scale=1.0, format="float16",
              reduction="none")
    for eps, g in g0.groupby("value"):
        parts = []
        for (m, a), h in g[g["method"].isin(["logsumexp", "torch"])].groupby(
                ["method", "accumulator"], sort=False):
            h = h.sort_values("classes")
            bad = h[h["spurious_nonfinite_frac"] > 0]
            name = "torch" if m == "torch" else f"{'float32' if a == 'float32' else 'float16'} sums"
            if len(bad):
                r = bad.iloc[0]
                parts.append(f"{name}: inf from C = {int(r['classes'])} "
                             f"({int(r['n_+inf'] + r['n_nan'])}/{int(r['count'])} rows)")
            else:
                r = h.iloc[-1]
                parts.append(f"{name}: finite to C = {int(r['classes'])}, median error "
                             f"{r['rel_err_median']:.2g}")
        notes.append(f"float16, label_smoothing {eps:g}, s = 1, `logsumexp`, the smoothing "
                     f"sum: " + "; ".join(parts) + ".")
    return notes


def smoothing_mean_table(d: pd.DataFrame) -> pd.DataFrame:
    """float16 batch means with label smoothing and a finite true mean: per smoothing and
    method (torch, logsumexp), the cells whose mean is non-finite and the smallest rows x C
    among them."""
    g = _sel(d, kind="sweep", option="label_smoothing", format="float16", reduction="mean")
    g = g[g["truth_nonfinite_frac"] == 0]
    rows = []
    for eps, h in g.groupby("value"):
        for m in ("torch", "logsumexp"):
            hm = h[h["method"] == m]  # a cell is non-finite when any accumulator's mean is
            key = ["rows", "classes", "scale"]
            bad = hm[hm["spurious_nonfinite_frac"] > 0].drop_duplicates(key)
            rows.append({"label_smoothing": eps, "method": machine_marked(m),
                         "cells non-finite": f"{len(bad)}/{len(hm.drop_duplicates(key))}",
                         "from rows x C": (int((bad["rows"] * bad["classes"]).min())
                                           if len(bad) else np.nan)})
    return pd.DataFrame(rows, columns=["label_smoothing", "method", "cells non-finite",
                                       "from rows x C"])


def smoothing_mean_notes(mt: pd.DataFrame) -> list[str]:
    out = []
    for eps, h in mt.groupby("label_smoothing", sort=False):
        parts = [f"`{m.split(' [')[0]}` {k} cells" + (f" (from rows x C = {int(r)})"
                                                      if r == r else "")
                 for m, k, r in zip(h["method"], h["cells non-finite"], h["from rows x C"])]
        out.append(f"float16 batch mean, label_smoothing {eps:g}, finite truth: non-finite "
                   f"for " + ", ".join(parts) + ".")
    return out


FORMS = (("online", "fused C lse - sum x"), ("logsumexp", "sum of lse - x"),
         ("log_softmax", "shifted first"), ("torch", "library"))


def fused_table(d: pd.DataFrame) -> pd.DataFrame:
    """The fused smoothing form (online: C lse - sum x) against the sum of lse - x, on logits
    with a common offset (the `offset_logits` case): median error per format and form."""
    g = _sel(d, kind="battery", case="offset_logits", reduction="none", accumulator="working")
    g = pd.concat([g, _sel(d, kind="battery", case="offset_logits", reduction="none",
                           method="torch")])
    rows = []
    for m, what in FORMS:
        r = {"method": machine_marked(m), "form": what}
        for fmt in formats_in(g) if len(g) else []:
            e = g[(g["format"] == fmt) & (g["method"] == m)]
            r[fmt] = (error_text(e["rel_err_median"].iloc[0], e["nonfinite_frac"].iloc[0],
                                 e["count"].iloc[0]) if len(e) else "-")
        rows.append(r)
    return pd.DataFrame(rows)


def fused_notes(ft: pd.DataFrame) -> list[str]:
    out = []
    for fmt in ("float32", "float64"):
        if fmt in ft:
            e = ft.set_index("form")[fmt]
            out.append(f"{fmt}, logits {OFFSET:g} + z, label_smoothing 0.1: the fused form "
                       f"(`online`, C lse - sum x) has median error {e[FORMS[0][1]]}, "
                       f"shifting first (`log_softmax`) {e[FORMS[2][1]]}.")
    return out


def option_effect_table(d: pd.DataFrame) -> pd.DataFrame:
    """z-loss and soft-cap: `logsumexp`'s median error at the largest C (s = 1), with and
    without the option, per format."""
    base = _sel(d, kind="sweep", option="plain", scale=1.0, method="logsumexp",
                accumulator="working", reduction="none")
    rows = []
    if base.empty:
        return pd.DataFrame(rows)
    c = int(base["classes"].max())
    for opt in ("z_loss", "softcap"):
        g = _sel(d, kind="sweep", option=opt, scale=1.0, classes=c, method="logsumexp",
                 accumulator="working", reduction="none")
        for v, h in g.groupby("value"):
            for fmt in formats_in(h):
                e, b = _sel(h, format=fmt)["rel_err_median"], _sel(base, classes=c,
                                                                  format=fmt)["rel_err_median"]
                if len(e) and len(b):
                    rows.append({"option": opt, "value": v, "classes": c, "format": fmt,
                                 "with option": float(e.iloc[0]), "plain": float(b.iloc[0])})
    return pd.DataFrame(rows)


def option_effect_notes(ot: pd.DataFrame) -> list[str]:
    out = []
    if ot.empty:
        return out
    for (opt, v), h in ot.groupby(["option", "value"], sort=False):
        h = h[h["format"].isin(["float16", "bfloat16", "float32"])]
        out.append(f"{opt} {v:g}, C = {int(h['classes'].iloc[0])}, s = 1, `logsumexp` median "
                   "error: " + ", ".join(f"{f} {e:.2g} (plain {b:.2g})" for f, e, b in
                                         zip(h["format"], h["with option"], h["plain"]))
                   + ".")
    return out


def softcap_scale_table(d: pd.DataFrame) -> pd.DataFrame:
    """At the largest scale: `naive`'s non-finite rows, plain and soft-capped, per format."""
    g = _sel(d, kind="sweep", method="naive", accumulator="working", reduction="none")
    g = g[g["option"].isin(["plain", "softcap"])]
    if g.empty or g["scale"].max() <= 1.0:
        return pd.DataFrame()
    g = g[g["scale"] == g["scale"].max()]
    return pd.DataFrame({"format": g["format"], "scale": g["scale"], "classes": g["classes"],
                         "setting": ["plain" if o == "plain" else f"softcap {v:g}"
                                     for o, v in zip(g["option"], g["value"])],
                         "rows non-finite": [f"{int(r['n_+inf'] + r['n_nan'])}/{int(r['count'])}"
                                             for _, r in g.iterrows()]})


def softcap_scale_notes(st: pd.DataFrame) -> list[str]:
    if st.empty:
        return []
    h = st[st["format"].isin(["float16", "bfloat16", "float32"])]
    parts = "; ".join(f"{f} " + ", ".join(f"{'plain' if s == 'plain' else s.replace('softcap', 'cap')}"
                                          f" {k}" for s, k in zip(g["setting"], g["rows non-finite"]))
                      for f, g in h.groupby("format", sort=False))
    return [f"`naive` non-finite rows at s = {st['scale'].iloc[0]:g}, "
            f"C = {int(st['classes'].iloc[0])}: {parts}."]


def battery_table(d: pd.DataFrame) -> pd.DataFrame:
    """One row per battery case: the truth's outcome (non-finite rows as counts, the reduced
    value), how many variants share it, which methods do not, the padding's shift."""
    b = d[d["kind"] == "battery"]
    rows = []
    for (case, opts), g in b.groupby(["case", "options"], sort=False):
        r = g[g["reduction"] == "none"]
        m = g[g["reduction"] != "none"]
        n = int(r["count"].iloc[0])
        miss = sorted({x for x in r[r["outcome_match_frac"] != 1]["method"]}
                      | {x for x in m[m["outcome_match_frac"] != 1]["method"]})
        rows.append({"case": case, "options": opts,
                     "true rows non-finite": f"{int(round(r['truth_nonfinite_frac'].iloc[0] * n))}"
                                             f"/{n}",
                     "variants matching (rows)": f"{int((r['outcome_match_frac'] == 1).sum())}"
                                                 f"/{len(r)}",
                     "variants matching (reduced)": f"{int((m['outcome_match_frac'] == 1).sum())}"
                                                    f"/{len(m)}",
                     "methods not matching": ", ".join(miss) or "-",
                     "true reduced": m["truth_median"].iloc[0] if len(m) else np.nan,
                     "padding shift": g["padding_shift_median"].iloc[0]})
    return pd.DataFrame(rows)


def battery_notes(bt: pd.DataFrame) -> list[str]:
    """How many battery cases every variant gets right, which methods miss most; the largest
    padding shift."""
    if bt.empty:
        return []
    ok = bt["methods not matching"] == "-"
    miss = pd.Series([m for v in bt["methods not matching"] if v != "-"
                      for m in v.split(", ")]).value_counts()
    text = (f"Adversarial battery: every variant has the truth's outcome (finite, inf or nan) "
            f"in {int(ok.sum())}/{len(bt)} cases")
    if len(miss):
        text += "; misses: " + ", ".join(f"`{m}` {k}" for m, k in miss.head(3).items())
    out = [text + "."]
    pad = bt.dropna(subset=["padding shift"])
    if len(pad):
        r = pad.loc[pad["padding shift"].idxmax()]
        out.append(f"Padded -inf lanes move the true loss by {r['padding shift']:.2g} "
                   f"(relative, median) under {r['options']}, at most "
                   f"{pad[pad['options'] == 'plain']['padding shift'].max():.2g} without "
                   f"options: a soft-cap makes them finite.")
    return out


# ---------------------------------------------------------------------- report -------------

def _shown(d: pd.DataFrame) -> pd.DataFrame:
    keep = pd.Series(False, index=d.index)
    for m, a in SHOWN:
        keep |= (d["method"] == m) & (d["accumulator"] == a)
    return d[keep]


def _figure(rep, d, option, x, stem, xlabel, headline=False):
    g = d[(d["kind"] == "sweep") & d["option"].isin(["plain", option])]
    if x == "classes":
        g = g[g["scale"] == 1.0]
    else:  # the class count the scale sweep runs at
        g = g[g["classes"] == g[g["scale"] != 1.0]["classes"].min()]
    g = _shown(g)
    if g.empty:
        return None
    g = g.assign(setting=[("plain" if o == "plain" else f"{o} = {v:g}")
                          for o, v in zip(g["option"], g["value"])])
    settings = list(dict.fromkeys(g.sort_values(["option", "value"])["setting"]))
    settings = ["plain"] + [s for s in settings if s != "plain"]
    where = "s = 1" if x == "classes" else f"C = {int(g['classes'].iloc[0])}"
    fig = plot_error_panels(g, x=x, row_key="setting", row_values=settings,
                            row_label=lambda s: s, xlabel=xlabel, bound=False,
                            title=f"Median relative error of the per-row loss with {option} "
                                  f"(normal logits, {where}; rows: settings)")
    return rep.figure(fig, stem, f"Median relative error of the per-row loss against "
                      f"{xlabel}, plain and with {option} ({where}), one column per format and "
                      f"accumulator; the strip under each panel: the non-finite fraction.",
                      headline=headline)


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    rep = report_for(NAME, __doc__, config, out_dir, truth=truth_sentence(fmts))
    sweep = df[df["kind"] == "sweep"]
    cs = sorted(sweep["classes"].unique())
    ls = sweep[(sweep["option"].isin(["plain", "label_smoothing"])) & (sweep["scale"] == 1.0)]
    ls = ls.assign(method=[m if o == "plain" else f"{m} [ls {v:g}]"
                           for m, o, v in zip(ls["method"], ls["option"], ls["value"])])
    table = error_pivot(ls[ls["method"].str.startswith(("logsumexp", "online", "torch"))],
                        "classes", cs, lambda c: f"C = {c}")
    t1 = rep.table(table, "Median relative error of the per-row loss at s = 1 (normal "
                   "logits), plain and with label smoothing ([ls eps]), against the class "
                   "count C; non-finite rows in brackets.", stem="label_smoothing",
                   headline=True)
    _figure(rep, df, "label_smoothing", "classes", "label_smoothing", "classes C",
                 headline=True)
    for n in smoothing_overflow_notes(df):
        rep.finding(n, t1)
    mt, ft = smoothing_mean_table(df), fused_table(df)
    ot, st, bt = option_effect_table(df), softcap_scale_table(df), battery_table(df)
    rep.section("Adversarial battery", "A variant matches when its result has the truth's "
                "outcome on every row (finite where the truth is finite; the same infinity or "
                f"nan where it is not). Padding: the last {PADDED_LANES} of "
                f"{int(params['battery_classes'])} lanes at -inf; shift = (true loss with the "
                "lanes) / (without them) - 1.")
    tb = rep.table(bt, f"Adversarial battery ({int(params['battery_rows'])} rows of "
                   f"{int(params['battery_classes'])} normal logits per case): the true "
                   "outcome, the variants (method x format x accumulator) that share it, the "
                   "methods that do not; padding shift '-': no padded lanes.", stem="battery",
                   formats={"padding shift": lambda v: "-" if v != v else format_number(v)})
    rep.section("Batch means with label smoothing",
                "torch sums the smoothing term over the whole batch in the format before "
                "dividing by the batch size.")
    tm = rep.table(mt, "float16 batch means (reduction='mean') with label smoothing, cells "
                   "whose true mean is finite: cells with a non-finite mean, and the smallest "
                   "rows x C among them.", stem="smoothing_mean") if len(mt) else None
    rep.section("The fused smoothing form")
    tf = rep.table(ft, f"Median relative error of the per-row loss on logits {OFFSET:g} + z "
                   f"with label smoothing 0.1 (the offset_logits case), per form and format "
                   f"(working sums).", stem="fused") if len(ft) else None
    rep.section("z-loss and soft-cap")
    to = rep.table(ot, "`logsumexp`'s median relative error of the per-row loss at the largest "
                   "class count, s = 1, with each option and plain, per format (working sums).",
                   stem="option_effects") if len(ot) else None
    ts = rep.table(st, "Unshifted `naive` (working sums) at the largest logit scale: rows "
                   "whose loss is non-finite, plain and soft-capped.",
                   stem="naive_softcap") if len(st) else None
    for notes, ref in ((smoothing_mean_notes(mt), tm), (fused_notes(ft), tf),
                       (option_effect_notes(ot), to), (softcap_scale_notes(st), ts),
                       (battery_notes(bt), tb)):
        for n in notes:
            rep.finding(n, ref)
    rep.section("Figures", "Series: " + ", ".join(f"{m} ({a})" for m, a in SHOWN) + ". Errors "
                "below u/100 are drawn at u/100; the strip under each panel is the "
                "non-finite fraction.")
    _figure(rep, df, "z_loss", "classes", "z_loss", "classes C")
    _figure(rep, df, "softcap", "scale", "softcap", "logit scale s")
    return rep.write(out_dir)
