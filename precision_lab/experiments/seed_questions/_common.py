"""What the seed questions share: the sources' constants, the long results table, the blog's
batch, and selections from the table (typed: values are numbers, `argument` the numeric
argument of a row: L, p or a ULP distance)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from precision_lab.analysis.check import DEFAULT_MAX_ULP
from precision_lab.numerics.formats import STANDARD_FORMATS
from precision_lab.truth.reference import DEFAULT_BITS

__all__ = ["EPS", "BLOG_SEED", "QA_SEED", "WRONG_ULP", "FMT_NAMES", "COLS", "GT", "records",
           "blog_batch", "select", "value"]

EPS = 1e-7
BLOG_SEED = 42
QA_SEED = 0
WRONG_ULP = DEFAULT_MAX_ULP
FMT_NAMES = list(STANDARD_FORMATS)
# results.csv: one row per number; `argument` (added) is the row's numeric argument.
COLS = ["question", "item", "format", "method", "quantity", "value", "text", "argument"]
GT = f"ground truth: certified, at least {DEFAULT_BITS} correct bits"


def records(question: str, recs: list[dict]) -> list[dict]:
    """Rows of the long table, every column present, `value` and `argument` floats (nan if
    none)."""
    out = []
    for r in recs:
        d = {c: r.get(c, "") for c in COLS}
        d["question"] = question
        for c in ("value", "argument"):
            v = r.get(c)
            d[c] = float(v) if v is not None and v != "" else np.nan
        out.append(d)
    return out


def blog_batch():
    """The blog's batch: np.random.seed(42), randn(3, 4) logits, randint(0, 4, 3) targets."""
    np.random.seed(BLOG_SEED)
    logits = np.random.randn(3, 4)
    targets = np.random.randint(0, 4, size=3)
    return logits, targets


def select(df: pd.DataFrame, **kw) -> pd.DataFrame:
    for k, v in kw.items():
        df = df[df[k] == v]
    return df


def value(df: pd.DataFrame, quantity: str, **kw) -> float:
    return float(select(df, quantity=quantity, **kw)["value"].iloc[0])
