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
from precision_lab.numerics.formats import FORMATS
from precision_lab.reporting.figures import formats_in, plt, save_figure
from precision_lab.reporting.grad_figures import grad_caption, line_panels
from precision_lab.reporting.tables import write_latex, write_markdown

from ._grad_common import LEVEL, floors, loss_vs_grad_notes, series_in

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
              "formats": list(FORMATS), "max_abs_logit": sn.max_abs_logit,
              "test_accuracy": sn.test_accuracy,
              **stage_arrays(ckpt, f"epoch{sn.epoch}", sn.logits, sn.targets)}
             for sn in snaps]
    return config.sweep(NAME, cells, fn=grad_cell)


def target_notes(d: pd.DataFrame) -> list[str]:
    last = d[d["epoch"] == d["epoch"].max()]
    notes = []
    for fmt in [f for f in ("bfloat16", "float16") if f in set(last["format"])]:
        g = last[last["format"] == fmt]
        g = g.set_index(["method", "accumulator"]).loc[series_in(g, fmt)]
        n, e = int(g["count"].iloc[0]), int(last["epoch"].iloc[0])
        parts = ", ".join(f"`{m}` {int(r['n_target_over_10pct'])}/{n}" for (m, _), r in g.iterrows())
        notes.append(f"{fmt}, epoch {e} (median 1 - p_t {g['one_minus_p_median'].iloc[0]:.1g}):"
                     f" rows whose target-entry error passes 10%: {parts}.")
    return notes


def report(df, config, params, out_dir) -> list[dict]:
    fmts = formats_in(df)
    fig = line_panels(df, "epoch", "target_rel_median", "format", fmts,
                      {f: series_in(df, f) for f in fmts}, "epoch",
                      "median rel. error, target entry",
                      "Target entry of the batch-mean gradient during training (digits MLP)",
                      xscale="symlog", hline=LEVEL, floor=floors(fmts))
    save_figure(fig, out_dir, "training")
    plt.close(fig)
    notes = target_notes(df) + loss_vs_grad_notes(df, "epoch")
    cols = ["epoch", "format", "method", "accumulator", "one_minus_p_median",
            "loss_rel_err", "target_rel_median", "norm_rel_median", "n_target_over_10pct"]
    table = df[df["format"].isin(["bfloat16", "float16"])][cols]
    cap = (f"Loss and gradient errors on the digits MLP's held-out logits (reduction mean). "
           f"{grad_caption(fmts, config.seed)}")
    md = out_dir / "summary.md"
    write_markdown(table, md, title="Gradient through training", caption=cap)
    write_latex(table, out_dir / "summary.tex", caption=cap, label="tab:grad-training")
    with open(md, "a", encoding="utf-8") as f:
        f.write("\n## Findings\n\n" + "\n".join(f"- {n}" for n in notes)
                + "\n\n## Figures\n\n![training](training.png)\n")
    return [{"text": n, "link": "summary.md"} for n in notes]
