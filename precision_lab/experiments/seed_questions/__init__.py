"""The two founding questions: the blog post's comparison and the Stack Overflow Q&A, answered

Question: the two documents that started the project. (1) The blog post "Cross Entropy from
Scratch!" computes cross entropy in float64 numpy as a max-shifted softmax followed by
-log(p + 1e-7), compares it with PyTorch's float32 nn.CrossEntropyLoss and prints a difference of
about 3.7e-7: where does it come from? (2) Its claim that logits "as big as 1000" overflow: at
which logit does each method fail in each format? (3) What the epsilon 1e-7 does to the loss.
(4) The Q&A (Stack Overflow 49390842): why logits [0, 0, 0, 1] with target 3 give 0.7437 and not
0. (5) The Q&A answer's experiment, 1000 batches of torch.rand logits, nn.CrossEntropyLoss
against a manual loop, "correct" when they differ by less than 1e-15 (the post: 81.4%).
(6) `precision-lab check` run on the two implementations.

Data: the blog's batch, np.random.seed(42), np.random.randn(3, 4) logits and
np.random.randint(0, 4, size=3) targets, as the issue states them; rows [L, 0, 0, 0] and the
blog's logits rescaled, for L on a grid of bfloat16 numbers (exact in every format) up to 2**20;
two-class rows [0, d] spanning target probabilities from 1e-17 to 1 - 1e-17; the Q&A's logits
[0, 0, 0, 1]; the Q&A experiment under torch.manual_seed(0) (per batch x = torch.rand(10, 10),
then t = torch.randint(0, 10, (10,))). The answer's own loop was not recovered: it is
reconstructed from its description (precision_lab.examples.qa), a float32 Python loop over rows
of -log(exp(x[i, t_i]) / exp(x[i]).sum()), summed and divided by 10.

Method: every number is computed against the certified ground truth (reference_loss, at
least 100 correct bits) of the exact inputs. (1) telescopes the observed difference
blog - torch into four terms: the epsilon's bias (the blog's formula in exact arithmetic minus
the truth T64 of the float64 inputs), the blog's own float64 rounding, the rounding of the
inputs to float32 (-(T32 - T64)), and torch's float32 arithmetic (-(torch - T32)), the last
split into the per-row losses and the mean reduction. (2) runs every registered method
(sequential sums in the working format; torch its own) and reports the first L at which the
result is non-finite, and the first at which it is wrong: off by more than 8 ULPs of the format
at max(|loss|, 1) (the default threshold of `precision-lab check`). (3) evaluates the bias
-log1p(eps / p) in closed form and measures softmax_eps against it. (5) measures the distance
between torch and the manual loop in float32 ULPs, and each one's error against the truth.

(5) also runs under every ATen CPU capability the machine supports, each in its own process.

Layout: one module per question (blog, overflow, epsilon, qa_question, qa_experiment,
check_examples), each with `compute(params)` (the rows of results.csv for its question) and
`describe(rows, report, context)` (its section of the report: typed tables, figure, findings);
this module runs them in order and hands the sections to one report builder.

Conclusions: generated from the data into summary.md (findings.json lists the headlines).
"""

from __future__ import annotations

import pandas as pd
import torch

from precision_lab.reporting.document import report_for

from . import blog, check_examples, epsilon, overflow, qa_experiment, qa_question
from ._common import BLOG_SEED, COLS, GT, QA_SEED

__all__ = ["PROFILES", "QUESTIONS", "run", "report"]

NAME = "seed_questions"

TAKES_FORMATS = False
FORMATS_NOTE = "its questions are about float16, bfloat16, float32 and float64"

PROFILES = {
    "quick": {"grid_per_octave": 8, "grid_max_log2": 20, "p_points": 161, "qa_batches": 100,
              "check": False, "capabilities": True},
    "full": {"grid_per_octave": 128, "grid_max_log2": 20, "p_points": 801, "qa_batches": 1000,
             "check": True, "capabilities": True},
}

QUESTIONS = (blog, overflow, epsilon, qa_question, qa_experiment, check_examples)


def run(config, params) -> pd.DataFrame:
    rows = []
    for q in QUESTIONS:
        rows += q.compute(params)
    return pd.DataFrame(rows, columns=COLS)


def report(df: pd.DataFrame, config, params, out_dir) -> list[dict]:
    df = df.copy()
    for c in ("text", "format", "method", "item", "quantity"):
        df[c] = df[c].fillna("")
    rep = report_for(NAME, __doc__, config, out_dir, title="The two founding questions")
    capability = torch.backends.cpu.get_cpu_capability()
    rep.intro = (f"Profile `{config.profile}`; the sources' own seeds (numpy {BLOG_SEED} for the "
                 f"blog, torch {QA_SEED} for the Q&A); {GT}; torch {torch.__version__} on the "
                 f"CPU (ATen capability {capability}). Every number below is computed by "
                 f"`precision_lab/experiments/seed_questions/` (data: `results.csv`).")
    ctx = {"params": params, "capability": capability}
    for q in QUESTIONS:
        q.describe(df[df["question"] == q.QUESTION], rep, ctx)
    return rep.write(out_dir)
