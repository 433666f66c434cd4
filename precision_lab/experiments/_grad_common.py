"""What the gradient experiments share: the series drawn, the failure level, the findings
that compare the loss's accuracy with the gradient's. (A leading underscore: not an
experiment.)"""
from __future__ import annotations

import pandas as pd

from precision_lab.numerics.formats import get_format

__all__ = ["LEVEL", "LOSS_OK", "SERIES", "series_in", "loss_vs_grad_notes",
           "loss_vs_grad_table", "floors"]

LEVEL = 0.1     # a gradient "fails": median relative error above 10%
LOSS_OK = 0.01  # a loss "within 1%": median relative error at most this
# The series drawn (at most 6 per panel): one backward of each kind.
SERIES = ("softmax_log", "logsumexp", "log1p", "online", "fused_store_first", "torch")


def floors(fmts) -> dict[str, float]:
    """Where each format's panel draws errors below u/100 (exact ones included)."""
    return {f: get_format(f).unit_roundoff / 100 for f in fmts}


def series_in(d: pd.DataFrame, fmt: str) -> list[tuple[str, str]]:
    """(method, accumulator) drawn for `fmt`: float32 sums where the method has them."""
    out = []
    for m in SERIES:
        accs = list(d[(d["format"] == fmt) & (d["method"] == m)]["accumulator"].unique())
        if accs:
            out.append((m, "float32" if "float32" in accs else accs[0]))
    return out


def loss_vs_grad_table(d: pd.DataFrame, what: str, column: str = "target_rel_median"
                       ) -> pd.DataFrame:
    """Whether an accurate loss means an accurate gradient, counted over the (cell, backward)
    pairs of each 16-bit format: those whose loss is within LOSS_OK, and of them those whose
    gradient `column` passes LEVEL."""
    rows = []
    for fmt in [f for f in ("bfloat16", "float16") if f in set(d["format"])]:
        g = d[d["format"] == fmt]
        ok = g[g["loss_rel_err"] <= LOSS_OK]
        rows.append({"format": fmt, "cases": f"{what}, backward", "loss within 1%": len(ok),
                     "of them gradient above 10%": int((ok[column] > LEVEL).sum()),
                     "gradient error": column.replace("_median", "")})
    return pd.DataFrame(rows)


def loss_vs_grad_notes(d: pd.DataFrame, what: str, column: str = "target_rel_median"
                       ) -> list[str]:
    """The findings of `loss_vs_grad_table`, one per 16-bit format."""
    return [f"{r['format']}: {r['of them gradient above 10%']} of the {r['loss within 1%']} "
            f"cases ({what}, backward) whose loss is within 1% have a median "
            f"{r['gradient error']} gradient error above 10%."
            for _, r in loss_vs_grad_table(d, what, column).iterrows()]
