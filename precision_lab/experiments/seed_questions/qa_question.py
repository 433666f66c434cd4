"""Question 4: the Q&A (Stack Overflow 49390842): why logits [0, 0, 0, 1] with target 3 give
0.7437 and not 0."""
from __future__ import annotations

import mpmath
import numpy as np
import pandas as pd
from mpmath import mp

from precision_lab.analysis.evaluate import evaluate
from precision_lab.numerics import elementary
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.methods import METHODS
from precision_lab.reporting.figures import machine_marked
from precision_lab.truth.reference import DEFAULT_BITS, reference_loss

from ._common import FMT_NAMES, GT, WRONG_ULP, records, select, value

F64 = FORMATS["float64"]

__all__ = ["QUESTION", "compute", "tables", "describe"]

QUESTION = "q4"


def compute(params) -> list[dict]:
    x = np.array([[0.0, 0.0, 0.0, 1.0]])
    t = np.array([3])
    truth = reference_loss(x, t)[0]
    with mpmath.workprec(DEFAULT_BITS + 64):
        closed = mp.log(3 + mp.e) - 1
        e = [mp.exp(v) for v in (0, 0, 0, 1)]
        probs = [v / mp.fsum(e) for v in e]
        diff = truth - closed
    recs = [{"item": "truth", "quantity": "certified loss", "value": float(truth),
             "text": mpmath.nstr(truth, 30)},
            {"item": "truth", "quantity": "closed form log(3 + e) - 1", "value": float(closed),
             "text": mpmath.nstr(closed, 30)},
            {"item": "truth", "quantity": "certified - closed form", "value": float(diff)},
            {"item": "truth", "quantity": "-log(1): the loss if [0,0,0,1] were probabilities",
             "value": 0.0}]
    for i, p in enumerate(probs):
        recs.append({"item": "softmax", "quantity": f"p_{i}", "value": float(p), "argument": i})
    df = evaluate(x, t, formats=FMT_NAMES, methods=list(METHODS), accumulators=("working",),
                  mean=False)
    for r in df.itertuples(index=False):
        recs.append({"item": "computed", "format": r.format, "method": r.method,
                     "quantity": "computed", "value": r.computed})
        recs.append({"item": "computed", "format": r.format, "method": r.method,
                     "quantity": "ULP error", "value": r.ulp_err})
    for L in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0):
        v = reference_loss(np.array([[0.0, 0.0, 0.0, L]]), np.array([3]))[0]
        recs.append({"item": "[0,0,0,L]", "quantity": f"loss at L = {L:g}", "value": float(v),
                     "argument": L})
    for target in (1e-2, 1e-3):
        recs.append({"item": "[0,0,0,L]", "quantity": f"L for a loss of {target:g}",
                     "value": float(elementary.log(3.0 / elementary.expm1(target, F64), F64)),
                     "argument": target})
    return records(QUESTION, recs)


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Computed value and ULP error of each method in each format (numbers, one column each)."""
    comp = select(df, item="computed")
    ct = comp[comp["quantity"] == "computed"].pivot_table(index="method", columns="format",
                                                          values="value", sort=False)
    ce = comp[comp["quantity"] == "ULP error"].pivot_table(index="method", columns="format",
                                                           values="value", sort=False)
    t4 = pd.DataFrame({"method": [machine_marked(m) for m in ct.index]})
    for f in FMT_NAMES:
        t4[f] = ct[f].to_numpy()
        t4[f"{f} ULP error"] = ce[f].to_numpy()
    return {"computed": t4, "ulp": ce}


def describe(df: pd.DataFrame, rep, ctx) -> None:
    t = tables(df)
    ce = t["ulp"]
    truth = value(df, "certified loss")
    true_txt = select(df, quantity="certified loss")["text"].iloc[0]
    diff4 = value(df, "certified - closed form")
    probs = select(df, item="softmax").sort_values("argument")["value"].to_numpy()
    Ls = select(df, item="[0,0,0,L]")
    Ls = Ls[Ls["quantity"].str.startswith("loss at")]
    bad = [(m, f, ce.loc[m, f]) for m in ce.index for f in ce.columns if ce.loc[m, f] > WRONG_ULP]
    within = float(np.nanmax(ce.where(ce <= WRONG_ULP).to_numpy()))
    rep.section("4. The Q&A: logits [0, 0, 0, 1], target 3",
                f"nn.CrossEntropyLoss takes *logits* (unnormalised log-probabilities) and "
                f"applies softmax itself. [0, 0, 0, 1] read as logits gives probabilities "
                f"{', '.join(f'{p:.4f}' for p in probs)}, so the loss is -log({probs[3]:.4f}) = "
                f"log(3 + e) - 1 = **{true_txt}** (certified; it differs from the closed form by "
                f"{abs(diff4):.1e}). Only if [0, 0, 0, 1] were the probabilities themselves "
                f"would the loss be -log 1 = 0. As logits the loss only tends to 0: "
                + ", ".join(f"L = {r.argument:g}: {r.value:.3g}" for r in Ls.itertuples())
                + f"; a loss of 0.01 needs L >= {value(df, 'L for a loss of 0.01'):.3g}. "
                f"Every method and format is within {within:.2g} ULPs of it"
                + (" except " + ", ".join(f"{m} in {f} ({v:.2g} ULPs)" for m, f, v in bad)
                   if bad else "") + " (computed, with the error in ULPs of the format):")
    fmts = {f: (lambda v: f"{v:.8g}") for f in FMT_NAMES}
    fmts.update({f"{f} ULP error": (lambda v: f"{v:.2g}") for f in FMT_NAMES})
    ref = rep.table(t["computed"], f"The Q&A's logits [0,0,0,1], target 3: each method's result "
                    f"and its error in ULPs of the format (torch rows machine-dependent; {GT}).",
                    stem="q4", formats=fmts)
    rep.finding(f"Logits [0, 0, 0, 1] with target 3 give log(3 + e) - 1 = {truth:.6f} "
                f"(certified): they are logits, and softmax gives the target only "
                f"{probs[3]:.4f}.", ref)
