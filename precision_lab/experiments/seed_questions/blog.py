"""Question 1: the blog post's printed difference (float64 numpy with eps minus float32 torch),
telescoped into four terms against the certified truths."""
from __future__ import annotations

import mpmath
import pandas as pd
import torch
from mpmath import mp

from precision_lab.examples import blog
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.metrics import round_truth
from precision_lab.reporting.figures import plt
from precision_lab.truth.reference import DEFAULT_BITS, reference_loss, reference_mean, to_double_double

from ._common import BLOG_SEED, EPS, GT, blog_batch, records, select, value

__all__ = ["QUESTION", "compute", "tables", "describe"]

QUESTION = "q1"
FIGURE = "decomposition"


def _exact_blog(x, t, prec):
    """The blog's formula in exact arithmetic: mean of -log(p_t + eps), eps the float64 1e-7."""
    with mpmath.workprec(prec):
        total = mp.zero
        for row, k in zip(x, t):
            a = mp.mpf(float(row.max()))
            e = [mp.exp(mp.mpf(float(v)) - a) for v in row]
            p = e[int(k)] / mp.fsum(e)
            total += -mp.log(p + mp.mpf(EPS))
        return total / len(t)


def compute(params) -> list[dict]:
    x, t = blog_batch()
    b64 = float(blog.cross_entropy(x, t))
    torch_mean = float(torch.nn.CrossEntropyLoss()(torch.FloatTensor(x), torch.LongTensor(t)))
    torch_rows = torch.nn.functional.cross_entropy(torch.FloatTensor(x), torch.LongTensor(t),
                                                   reduction="none").double().numpy()
    x32 = FORMATS["float32"].round(x)
    r64, r32 = reference_loss(x, t), reference_loss(x32, t)
    prec = DEFAULT_BITS + 64
    with mpmath.workprec(prec + 64):
        T64, T32 = reference_mean(r64), reference_mean(r32)
        hi, lo = to_double_double([T32])
        rn32 = mp.mpf(float(round_truth(hi, lo, FORMATS["float32"])[0]))
        bstar = _exact_blog(x, t, prec + 64)
        check = _exact_blog(x, t, prec + 128)
        assert abs(bstar - check) <= abs(check) * mp.ldexp(1, -prec)
        R = mp.fsum(mp.mpf(float(v)) for v in torch_rows) / len(t)
        observed = mp.mpf(b64) - mp.mpf(torch_mean)  # exact: Sterbenz
        terms = [
            ("epsilon bias", "B* - T64: the blog's formula in exact arithmetic minus the truth",
             bstar - T64),
            ("blog float64 rounding", "blog(float64) - B*", mp.mpf(b64) - bstar),
            ("input rounding to float32", "-(T32 - T64): truth of float32 inputs minus truth",
             -(T32 - T64)),
            ("torch float32 arithmetic", "-(torch - T32)", -(mp.mpf(torch_mean) - T32)),
        ]
        sub = [("torch: per-row losses", "-(mean of torch's float32 rows - T32)", -(R - T32)),
               ("torch: mean reduction", "-(torch - mean of its rows)", -(mp.mpf(torch_mean) - R)),
               ("torch: unavoidable output rounding",
                "-(RN32(T32) - T32): the truth rounded to float32, the best any float32 "
                "result can do", -(rn32 - T32)),
               ("torch: beyond the output rounding", "-(torch - RN32(T32))",
                -(mp.mpf(torch_mean) - rn32))]
        total = mp.fsum(v for _, _, v in terms)
        resid = total - observed
    recs = [{"item": "value", "quantity": "blog float64 (observed)", "value": b64,
             "format": "float64", "method": "blog"},
            {"item": "value", "quantity": "torch float32 (observed)", "value": torch_mean,
             "format": "float32", "method": "torch"},
            {"item": "value", "quantity": "observed difference blog - torch",
             "value": float(observed)},
            {"item": "value", "quantity": "T64: truth of the float64 inputs", "value": float(T64),
             "text": mpmath.nstr(T64, 25)},
            {"item": "value", "quantity": "T32: truth of the float32-rounded inputs",
             "value": float(T32), "text": mpmath.nstr(T32, 25)},
            {"item": "value", "quantity": "B*: blog formula, exact arithmetic",
             "value": float(bstar), "text": mpmath.nstr(bstar, 25)}]
    for name, how, v in terms:
        recs.append({"item": "term", "quantity": name, "value": float(v), "text": how})
    for name, how, v in sub:
        recs.append({"item": "subterm", "quantity": name, "value": float(v), "text": how})
    recs.append({"item": "check", "quantity": "sum of the four terms", "value": float(total)})
    recs.append({"item": "check", "quantity": "sum - observed", "value": float(resid)})
    for i in range(len(t)):
        with mpmath.workprec(prec):
            loss = r64[i]
            p = mp.exp(-loss)
            bias = -mp.log1p(mp.mpf(EPS) / p)
        recs += [{"item": f"row {i}", "quantity": "target", "value": int(t[i]), "argument": i},
                 {"item": f"row {i}", "quantity": "p_t", "value": float(p), "argument": i},
                 {"item": f"row {i}", "quantity": "true loss", "value": float(loss),
                  "argument": i},
                 {"item": f"row {i}", "quantity": "epsilon bias -log1p(eps/p_t)",
                  "value": float(bias), "argument": i},
                 {"item": f"row {i}", "quantity": "torch float32 row error",
                  "value": float(mp.mpf(float(torch_rows[i])) - r32[i]), "argument": i}]
    return records(QUESTION, recs)


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The decomposition (numbers as numbers), the values, and the per-row table."""
    obs = value(df, "observed difference blog - torch")
    parts = pd.concat([select(df, item="term"), select(df, item="subterm")])
    t1 = parts[["quantity", "text", "value"]].rename(
        columns={"quantity": "term", "text": "definition", "value": "contribution"})
    t1 = pd.concat([t1, pd.DataFrame([
        {"term": "sum of the four terms",
         "definition": "(equals the observed difference by construction: the terms telescope)",
         "contribution": value(df, "sum of the four terms")},
        {"term": "observed blog - torch", "definition": "blog(float64) - torch(float32)",
         "contribution": obs},
        {"term": "sum - observed", "definition": "", "contribution": value(df, "sum - observed")}
    ])], ignore_index=True)
    t1["share of observed"] = t1["contribution"] / obs
    vals = select(df, item="value")[["quantity", "value", "text"]].rename(
        columns={"text": "25 digits"})
    rows = df[df["item"].str.startswith("row ")]
    piv = rows.pivot_table(index="argument", columns="quantity", values="value", sort=False)
    piv = piv.reset_index().rename(columns={"argument": "row"})
    return {"decomposition": t1, "values": vals, "rows": piv}


def describe(df: pd.DataFrame, rep, ctx) -> None:
    t = tables(df)
    t1 = t["decomposition"]
    obs = value(df, "observed difference blog - torch")
    term = dict(zip(t1["term"], t1["contribution"]))
    eps_b, torch_a = term["epsilon bias"], term["torch float32 arithmetic"]
    inp, b64r = term["input rounding to float32"], term["blog float64 rounding"]
    unavoid = term["torch: unavoidable output rounding"]
    rep.section("1. The blog post's comparison, decomposed",
                f"The blog's code in float64 minus `nn.CrossEntropyLoss` on `torch.FloatTensor` "
                f"gives **{obs:.4e}** on the blog's batch. Telescoping through the certified "
                f"truths T64 (float64 inputs) and T32 (inputs rounded to float32): the "
                f"epsilon's bias contributes {eps_b:.4e}, torch's float32 arithmetic "
                f"{torch_a:.4e} (of which {unavoid:.4e} is the unavoidable rounding of the "
                f"output to float32), the rounding of the inputs to float32 {inp:.4e}, and "
                f"the blog's own float64 rounding {b64r:.1e}. The terms telescope, so they sum "
                f"to the observed difference by construction (the zero residual checks the "
                f"arithmetic, not a model). The epsilon alone is larger than the whole "
                f"difference; torch's float32 rounding pulls the other way.")
    ref = rep.table(t1, f"Decomposition of the blog's printed difference (numpy seed "
                    f"{BLOG_SEED}, 3x4 logits; blog in float64, torch in float32 on the CPU, "
                    f"machine-dependent; {GT}).", stem="q1", headline=True,
                    formats={"contribution": lambda v: f"{v:.6e}",
                             "share of observed": lambda v: f"{v:.3g}"})
    rep.paragraph("Values (the truths to 25 digits):")
    rep.table(t["values"], f"The blog's batch: observed values and certified truths ({GT}).",
              stem="q1_values", formats={"value": lambda v: f"{v:.17g}"})
    rep.paragraph("Per row (the epsilon's bias is -log1p(1e-7 / p_t): largest where p_t is "
                  "smallest):")
    rep.table(t["rows"], f"The blog's rows (numpy seed {BLOG_SEED}; {GT}).", stem="q1_rows")
    fig = _figure(t1, obs)
    rep.figure(fig, FIGURE, f"The blog's difference, term by term (numpy seed {BLOG_SEED}; "
                   f"blog float64, torch float32); {GT}.", headline=True)
    rep.finding(f"The blog's difference {obs:.3e} is epsilon bias {eps_b:.3e} plus torch's "
                f"float32 arithmetic {torch_a:.3e} (unavoidable output rounding "
                f"{unavoid:.2e}) plus input rounding {inp:.2e}; the sum matches by "
                f"construction.", ref)


def _figure(t1, obs):
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    keep = t1[~t1["term"].isin(["sum - observed"]) & ~t1["term"].str.startswith("torch:")]
    names, vals = list(keep["term"]), list(keep["contribution"])
    colors = ["#0072B2"] * len(names)
    colors[-2:] = ["#999999", "black"]
    ax.barh(names[::-1], vals[::-1], color=colors[::-1])
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(obs, color="#D55E00", lw=0.8, ls="--")
    ax.annotate(f"observed {obs:.3e}", xy=(obs, 1.0), xycoords=("data", "axes fraction"),
                xytext=(3, -3), textcoords="offset points", fontsize=8, color="#D55E00",
                va="top")
    ax.set_xlabel("contribution to blog - torch")
    ax.set_title(f"The blog's difference, term by term (numpy seed {BLOG_SEED}; blog float64, "
                 f"torch float32)\n{GT}", fontsize=9)
    return fig

