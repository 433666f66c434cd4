"""Gradient through training: the backward of each method on a real model's logits

Question: as a real classifier trains, its held-out rows grow confident (p_t -> 1) and the
target entry of the batch-mean gradient, (p_t - 1) / N, cancels. On how many rows does each
backward lose the target entry, in bfloat16 and float16, and does the loss's accuracy predict
the gradient's?

Data: the digits MLP of `trained_logits` (precision_lab.data.trained: scikit-learn's bundled
8x8 digits, full-batch Adam), its held-out logits (540 rows, 10 classes) at each epoch of the
profile.

Method: every method's backward (numerics.gradients) with reduction "mean" (what training
back-propagates), in every format, against the certified gradient of the rounded logits; the
loss's error (the batch mean, `evaluate`) of the same method on the same logits beside it.

Conclusions: generated from results.csv into the findings.
"""
from __future__ import annotations

import pandas as pd

from precision_lab.analysis.cells import stage_arrays
from precision_lab.analysis.evaluate_grad import grad_cell
from precision_lab.data.trained import train_digits
from precision_lab.numerics.formats import STANDARD_FORMATS
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import formats_in, machine_marked, variant_label
from precision_lab.reporting.grad_figures import grad_truth, line_panels

from ._grad_common import LEVEL, floors, loss_vs_grad_notes, loss_vs_grad_table, series_in

NAME = "grad_training"

PROFILES = {
    "quick": {"epochs": [0, 10, 100], "hidden": 64, "lr": 1e-2},
    "full": {"epochs": [0, 10, 30, 100, 300, 1000, 3000], "hidden": 128, "lr": 1e-2},
}


def run(config, params) -> pd.DataFrame:
    snaps = train_digits(epochs=params["epochs"], seed=config.seed, hidden=params["hidden"],
                         lr=params["lr"])
    ckpt = config.checkpoint_dir(NAME)
    cells = [{"distribution": "digits_mlp", "epoch": sn.epoch, "rows": len(sn.targets),
              "seed": config.seed, "reduction": "mean", "with_loss": True,
              "formats": list(STANDARD_FORMATS), "max_abs_logit": sn.max_abs_logit,
              "test_accuracy": sn.test_accuracy,
              **stage_arrays(ckpt, f"epoch{sn.epoch}", sn.logits, sn.targets)}
             for sn in snaps]
    return config.sweep(NAME, cells, fn=grad_cell)


def last_epoch_table(d: pd.DataFrame) -> pd.DataFrame:
    """At the last epoch, per backward drawn and 16-bit format: the held-out rows whose
    target-entry error passes 10% (k/n), the median target-entry error, the loss's error."""
    last = d[d["epoch"] == d["epoch"].max()]
    rows = []
    for fmt in [f for f in ("bfloat16", "float16") if f in set(last["format"])]:
        g = last[last["format"] == fmt].set_index(["method", "accumulator"])
        for m, a in series_in(last[last["format"] == fmt], fmt):
            r = g.loc[(m, a)]
            rows.append({"format": fmt, "variant": machine_marked(variant_label(m, a)),
                         "rows over 10%": f"{int(r['n_target_over_10pct'])}/{int(r['count'])}",
                         "median target error": float(r["target_rel_median"]),
                         "loss error (mean)": float(r["loss_rel_err"])})
    return pd.DataFrame(rows)


def target_notes(d: pd.DataFrame) -> list[str]:
    """Per 16-bit format at the last epoch: the fewest and the most held-out rows whose target
    entry passes 10%, among the backwards drawn."""
    last = d[d["epoch"] == d["epoch"].max()]
    notes = []
    for fmt in [f for f in ("bfloat16", "float16") if f in set(last["format"])]:
        g = last[last["format"] == fmt]
        g = g.set_index(["method", "accumulator"]).loc[series_in(g, fmt)]
        n, e = int(g["count"].iloc[0]), int(last["epoch"].iloc[0])
        lo = g["n_target_over_10pct"].idxmin()
        hi = g["n_target_over_10pct"].idxmax()
        notes.append(f"{fmt}, epoch {e} (median 1 - p_t {g['one_minus_p_median'].iloc[0]:.1g}):"
                     f" the target-entry error passes 10% on {int(g.loc[lo, 'n_target_over_10pct'])}"
                     f"/{n} held-out rows (`{lo[0]}`) to {int(g.loc[hi, 'n_target_over_10pct'])}"
                     f"/{n} (`{hi[0]}`), over the {len(g)} backwards drawn.")
    return notes


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    rep = report_for(NAME, __doc__, config, out_dir, truth=grad_truth(fmts))
    e = int(df["epoch"].max())
    t1 = rep.table(last_epoch_table(df), f"The digits MLP's held-out logits at epoch {e} "
                   f"(reduction mean): rows whose gradient target-entry error passes 10%, the "
                   f"median target-entry error, and the error of the same method's batch-mean "
                   f"loss, per 16-bit format and backward drawn (float32 sums where a method "
                   f"has them).", stem="last_epoch", headline=True)
    fig = line_panels(df, "epoch", "target_rel_median", "format", fmts,
                      {f: series_in(df, f) for f in fmts}, "epoch",
                      "median rel. error, target entry",
                      "Target entry of the batch-mean gradient during training (digits MLP)",
                      xscale="symlog", hline=LEVEL, floor=floors(fmts), hline_label="10%")
    rep.figure(fig, "training", "Median relative error of the batch-mean gradient's target "
               "entry against the training epoch, one panel per format (float32 sums where a "
               "method has them in float16 and bfloat16); dotted: 10%; errors below u/100 "
               "drawn at u/100.", headline=True)
    lt = loss_vs_grad_table(df, "epoch")
    cols = ["epoch", "format", "method", "accumulator", "one_minus_p_median",
            "loss_rel_err", "target_rel_median", "norm_rel_median", "n_target_over_10pct"]
    t2 = rep.table(lt, "Does an accurate loss predict an accurate gradient? (epoch, backward) "
                   "cases whose batch-mean loss is within 1%, and of them those whose median "
                   "target-entry error passes 10%.", stem="loss_vs_grad")
    for n in target_notes(df):
        rep.finding(n, t1)
    for n in loss_vs_grad_notes(df, "epoch"):
        rep.finding(n, t2)
    rep.section("Every epoch and backward")
    rep.table(df[df["format"].isin(["bfloat16", "float16"])][cols], "Loss and gradient "
              "errors on the digits MLP's held-out logits (reduction mean), every epoch, "
              "16-bit format and backward.", stem="all_epochs")
    return rep.write(out_dir)
