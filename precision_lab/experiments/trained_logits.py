"""Trained logits: how each method fares on what a real model produces during training

Question: on the logits of a real classifier, from its small, nearly uniform outputs at
initialisation to the large, over-confident ones after long training, which cross-entropy
methods stay accurate and finite in each format?

Data: a multilayer perceptron (64 -> 128 -> 128 -> 10, ReLU) trained with torch (full-batch
Adam, lr 1e-2, no weight decay) on scikit-learn's bundled digits data (8x8 images, 10 classes;
nothing is downloaded), split 70/30 with the seed; the held-out logits (540 rows) at each
epoch of the profile (precision_lab.trained). Training drives the training loss towards zero
and the logits up: the largest held-out |logit| grows from about 0.2 to about 70, passing
float16's overflow logit (11.09) early on. With `--logits-file`, the user's logits are
evaluated as one more stage, `user` (at most `user_rows` rows, a seeded sample), beside the
digits model's.

Method: every registered method in every format, the float32 accumulator as a variant for
float16 and bfloat16, and the batch mean (reduction='mean', what training actually
back-propagates); errors against the certified loss of the logits as rounded into each
format; the Blanchard-Higham-Higham bound of the shifted algorithm.

Conclusions (the numbers in summary.md are computed from results.csv): once the largest
logit passes 11.09 the unshifted float16 loss returns inf for a growing share of the rows,
and the batch mean, what training back-propagates, is inf from then on, so a naive float16
loss breaks early in training; bfloat16 and float32, with an overflow logit of 88.72, do not
reach it here. The shifted methods stay finite at every stage, but as training drives the
typical held-out loss far below u times the logits, the median relative error of every method
rises towards 1 in the 16-bit formats and far above u in float32 and float64: a loss much
smaller than the logits it is computed from cannot be resolved by `lse - x_t`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from precision_lab.analysis.cells import stage_arrays
from precision_lab.data.trained import train_digits
from precision_lab.numerics.formats import FORMATS, get_format
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import (
    error_panels_legend,
    error_pivot,
    formats_in,
    mark_vline,
    plot_error_panels,
    truth_sentence,
)

NAME = "trained_logits"

ACCEPTS_LOGITS_FILE = True  # --logits-file replaces its synthetic logits

PROFILES = {
    "quick": {"epochs": [0, 10, 100], "hidden": 64, "lr": 1e-2, "user_rows": 64},
    "full": {"epochs": [0, 1, 3, 10, 30, 100, 300, 1000, 3000], "hidden": 128, "lr": 1e-2,
             "user_rows": 1024},
}


def cells(config, params) -> list[dict]:
    snaps = train_digits(epochs=params["epochs"], seed=config.seed, hidden=params["hidden"],
                         lr=params["lr"])
    ckpt = config.checkpoint_dir(NAME)
    out = []
    for i, sn in enumerate(snaps):
        staged = stage_arrays(ckpt, f"epoch{sn.epoch}", sn.logits, sn.targets)
        out.append({"distribution": "digits_mlp", "stage": f"epoch {sn.epoch}", "position": i,
                    "epoch": sn.epoch, "rows": len(sn.targets), "classes": 10, "scale": 1.0,
                    "seed": config.seed, "train_loss": sn.train_loss,
                    "test_accuracy": sn.test_accuracy, "max_abs_logit": sn.max_abs_logit,
                    **staged})
    if config.user_logits is not None:
        x, t = config.user_logits
        staged = stage_arrays(ckpt, "user", x, t)
        out.append({"distribution": "user", "stage": "user", "position": len(out),
                    "epoch": -1, "rows": min(len(t), int(params["user_rows"])),
                    "classes": int(x.shape[1]), "scale": 1.0, "seed": config.seed,
                    "train_loss": np.nan, "test_accuracy": np.nan,
                    "max_abs_logit": float(np.nanmax(np.abs(x[np.isfinite(x)])))
                    if np.isfinite(x).any() else np.nan, **staged})
    return out


def run(config, params) -> pd.DataFrame:
    return config.sweep(NAME, cells(config, params))


def _stage_axis(df):
    st = df.drop_duplicates("position").sort_values("position")
    labels = [f"{s.replace('epoch ', '')}\n{m:.3g}" for s, m in zip(st["stage"],
                                                                   st["max_abs_logit"])]
    return st["position"].tolist(), labels, st


def _vlines_for(st):
    def draw(ax, fmt, rv, sub):
        L = get_format(fmt).overflow_logit
        pos, m = st["position"].to_numpy(float), st["max_abs_logit"].to_numpy(float)
        dig = st["distribution"].to_numpy() != "user"
        pos, m = pos[dig], m[dig]
        above = np.flatnonzero(m >= L)
        if len(above) and above[0] > 0:
            i = above[0]
            f = (np.log(L) - np.log(m[i - 1])) / (np.log(m[i]) - np.log(m[i - 1]))
            mark_vline(ax, pos[i - 1] + f * (pos[i] - pos[i - 1]),
                       f"max |x| = {L:.4g}" if sub is not None else None)
    return draw


def _rows(n: pd.Series, frac: pd.Series) -> int:
    return int((n * frac).round().sum())


def _findings(rep, df, t1, t3, fig) -> None:
    d = df[df["reduction"] == "none"]
    dig = d[d["distribution"] == "digits_mlp"].sort_values("position")
    st = dig.drop_duplicates("position")
    if len(st):
        first, last = st.iloc[0], st.iloc[-1]
        rep.finding(f"The digits MLP's largest held-out |logit| grows from "
                    f"{first['max_abs_logit']:.3g} ({first['stage']}) to "
                    f"{last['max_abs_logit']:.3g} ({last['stage']}); held-out accuracy "
                    f"{100 * first['test_accuracy']:.0f}% to {100 * last['test_accuracy']:.1f}%.",
                    t3)
    for fmt in ("float16", "bfloat16", "float32"):
        sel = ((df["distribution"] == "digits_mlp") & (df["method"] == "naive")
               & (df["format"] == fmt) & (df["accumulator"] == "working"))
        n = df[sel & (df["reduction"] == "none")].sort_values("position")
        m = df[sel & (df["reduction"] == "mean")].sort_values("position")
        bad = n[n["nonfinite_frac"] > 0]
        if len(bad):
            b, last = bad.iloc[0], n.iloc[-1]
            mb = m[m["nonfinite_frac"] > 0]
            text = (f"In {fmt}, unshifted `naive` first returns inf or NaN at {b['stage']} "
                    f"(largest |logit| {b['max_abs_logit']:.3g}) for "
                    f"{round(b['count'] * b['nonfinite_frac'])}/{int(b['count'])} rows")
            if last["position"] != b["position"]:
                text += (f", {round(last['count'] * last['nonfinite_frac'])}/"
                         f"{int(last['count'])} at {last['stage']}")
            rep.finding(text + (f"; the batch mean from {mb.iloc[0]['stage']}." if len(mb)
                                else "; the batch mean stays finite."), t1)
        elif len(n):
            rep.finding(f"In {fmt}, unshifted `naive` stays finite at every stage (largest "
                        f"|logit| up to {n['max_abs_logit'].max():.3g}, overflow logit "
                        f"{FORMATS[fmt].overflow_logit:.2f}).", t1)
    for fmt in ("float16", "bfloat16"):
        w = dig[(dig["method"] == "logsumexp") & (dig["format"] == fmt)
                & (dig["accumulator"] == "working")].sort_values("position")
        if len(w):
            first, last = w.iloc[0], w.iloc[-1]
            total = int(w["count"].sum())
            finite = total - _rows(w["count"], w["nonfinite_frac"])
            rep.finding(f"`logsumexp` in {fmt}: {finite}/{total} rows finite over all stages; "
                        f"median relative error {first['rel_err_median']:.2g} "
                        f"({first['stage']}) to {last['rel_err_median']:.2g} ({last['stage']}), "
                        f"where the median true loss is {last['loss_median']:.2g}.", fig)


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    rep = report_for(NAME, __doc__, config, out_dir, truth=truth_sentence(fmts))
    pos, labels, st = _stage_axis(df)
    d = df[df["reduction"] == "none"]
    stages = list(st["position"])
    name = dict(zip(st["position"], st["stage"]))
    t1 = rep.table(error_pivot(d, "position", stages, lambda p: name[p]),
                   "Median relative error of the per-row cross-entropy loss on the held-out "
                   "logits of a digits MLP at each training stage of the profile; non-finite "
                   "rows counted in brackets.", stem="errors", headline=True)
    figs = {}
    for red, stem, ylabel, title in (
            ("none", "stages", "median relative error",
             "Median relative error of the per-row loss on a digits MLP's held-out logits, "
             "through training"),
            ("mean", "stages_mean", "relative error of the batch mean",
             "Relative error of the batch-mean loss (reduction='mean') on the held-out logits, "
             "through training")):
        sub = df[df["reduction"] == red].assign(row_key=0)
        if red == "mean":
            sub = sub.assign(reduction="none", bhh_bound_rel_median=np.nan)
        fig = plot_error_panels(sub, x="position", row_key="row_key", row_values=[0],
                                row_label=lambda _: "", xlog=False,
                                xlabel="training epoch (above) and largest |logit| (below)",
                                ylabel=ylabel, bound=(red == "none"), vlines=_vlines_for(st),
                                title=title)
        for ax in fig.axes:
            if ax.get_xlabel() or ax.get_subplotspec() is not None:
                ax.set_xticks(pos)
                ax.set_xticklabels(labels, fontsize=7)
        if red == "mean":
            rep.section("Batch mean (reduction='mean')")
        figs[stem] = rep.figure(fig, stem, f"{ylabel.capitalize()} at each training stage, one "
                                f"panel per format.", headline=(red == "none"))
    mean = df[df["reduction"] == "mean"]
    rep.table(error_pivot(mean.assign(reduction="none"), "position", stages,
                          lambda p: name[p]),
              "Relative error of the batch-mean loss (reduction='mean') on the same logits.",
              stem="batch_mean")
    info = st[["stage", "max_abs_logit", "test_accuracy", "train_loss"]].rename(columns={
        "max_abs_logit": "largest |logit|", "test_accuracy": "held-out accuracy",
        "train_loss": "training loss (float32)"})
    rep.section("Training stages")
    t3 = rep.table(info, "The training stages: largest held-out |logit|, held-out accuracy, "
                   "and the float32 training loss of the model at that epoch.", stem="stages")
    _findings(rep, df, t1, t3, figs["stages"])
    rep.section("How to read the figures", error_panels_legend(
        "Vertical line: where the largest |logit| passes the format's overflow logit."))
    return rep.write(out_dir)
