"""Question 6: `precision-lab check` run on the examples (the blog's, the Q&A's loop, the
unshifted textbook form)."""
from __future__ import annotations

import pandas as pd

from precision_lab.analysis.check import DEFAULT_MAX_ULP, check_implementation
from precision_lab.examples import blog, qa, unshifted
from precision_lab.reporting.figures import machine_marked

from ._common import FMT_NAMES, GT, records

__all__ = ["QUESTION", "EXAMPLES", "compute", "tables", "describe"]

QUESTION = "q6"
EXAMPLES = {"blog": blog, "qa": qa, "unshifted": unshifted}
TEXT = ("worst case", "largest working scale", "failing cases", "verdict")


def compute(params) -> list[dict]:
    if not params.get("check"):
        return []
    recs = []
    for name, mod in EXAMPLES.items():
        res = check_implementation(mod.cross_entropy, name=f"precision_lab.examples.{name}")
        for r in res.verdict.to_dict("records"):
            base = {"item": name, "format": r["format"], "method": r["implementation"]}
            recs.append({**base, "quantity": "max ULP", "value": r["max ULP"]})
            recs.append({**base, "quantity": "max bits", "value": r["max bits"]})
            for q in TEXT:
                recs.append({**base, "quantity": q, "value": None, "text": r[q]})
        recs.append({"item": name, "quantity": "exit code", "value": res.exit_code,
                     "text": res.output, "method": res.kind})
    return records(QUESTION, recs)


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per example: one row per (implementation, format), numbers as numbers, text as text."""
    out = {}
    for ex in dict.fromkeys(df["item"]):
        d = df[(df["item"] == ex) & (df["quantity"] != "exit code")]
        num = d[~d["quantity"].isin(TEXT)].pivot_table(
            index=["method", "format"], columns="quantity", values="value", sort=False)
        txt = d[d["quantity"].isin(TEXT)].pivot_table(
            index=["method", "format"], columns="quantity", values="text", aggfunc="first",
            sort=False)
        tab = num.join(txt).reset_index().rename(columns={"method": "implementation"})
        tab["implementation"] = tab["implementation"].map(machine_marked)
        out[ex] = tab[["implementation", "format", "max ULP", "max bits", *TEXT]]
    return out


def describe(df: pd.DataFrame, rep, ctx) -> None:
    if len(df) == 0:
        return
    rep.section("6. `precision-lab check` on the examples",
                f"`precision-lab check MODULE:FUNCTION` runs an implementation over the four "
                f"formats and a standard battery (scales, class counts, adversarial rows) and "
                f"fails a case above {DEFAULT_MAX_ULP:g} ULPs at max(|loss|, 1) (settable). "
                f"The user's rows, with torch and logsumexp beside them as references:")
    for ex, tab in tables(df).items():
        code = df[(df["item"] == ex) & (df["quantity"] == "exit code")].iloc[0]
        rep.paragraph(f"`precision-lab check precision_lab.examples.{ex}:cross_entropy` "
                      f"({code['method']}, {code['text']} output) exits {int(code['value'])}:")
        rep.table(tab, f"precision-lab check on the {ex} example; formats "
                  f"{', '.join(FMT_NAMES)}; battery seed 0; torch rows machine-dependent; "
                  f"{GT}.", stem=f"q6_{ex}")
