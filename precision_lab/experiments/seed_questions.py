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

Conclusions: generated from the data into summary.md (findings.json lists the headlines).
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mpmath  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from mpmath import mp  # noqa: E402

from precision_lab.analysis.check import DEFAULT_MAX_ULP, check_implementation  # noqa: E402
from precision_lab.analysis.evaluate import evaluate  # noqa: E402
from precision_lab.examples import blog, qa, unshifted  # noqa: E402
from precision_lab.numerics import elementary  # noqa: E402
from precision_lab.numerics.formats import FORMATS  # noqa: E402
from precision_lab.numerics.methods import METHODS  # noqa: E402
from precision_lab.numerics.metrics import errors, ordinal  # noqa: E402
from precision_lab.reporting.figures import save_figure  # noqa: E402
from precision_lab.reporting.tables import format_number, write_latex  # noqa: E402
from precision_lab.running.storage import atomic_write  # noqa: E402
from precision_lab.truth.reference import (  # noqa: E402
    DEFAULT_BITS,  # noqa: E402
    reference_loss,
    reference_mean,
    to_double_double,
)

PROFILES = {
    "quick": {"grid_per_octave": 8, "grid_max_log2": 20, "p_points": 161, "qa_batches": 100,
              "check": False},
    "full": {"grid_per_octave": 128, "grid_max_log2": 20, "p_points": 801, "qa_batches": 1000,
             "check": True},
}

EPS = 1e-7
BLOG_SEED = 42
QA_SEED = 0
WRONG_ULP = DEFAULT_MAX_ULP
FMT_NAMES = list(FORMATS)
COLS = ["question", "item", "format", "method", "quantity", "value", "text"]


def _rows(question, records):
    out = []
    for r in records:
        d = {c: r.get(c, "") for c in COLS}
        d["question"] = question
        d["value"] = float(r["value"]) if r.get("value") is not None and r.get("value") != "" \
            else np.nan
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# 1. The blog's comparison, decomposed

def blog_batch():
    np.random.seed(BLOG_SEED)
    logits = np.random.randn(3, 4)
    targets = np.random.randint(0, 4, size=3)
    return logits, targets


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


def q1_blog():
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
               ("torch: mean reduction", "-(torch - mean of its rows)", -(mp.mpf(torch_mean) - R))]
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
        recs += [{"item": f"row {i}", "quantity": "target", "value": int(t[i])},
                 {"item": f"row {i}", "quantity": "p_t", "value": float(p)},
                 {"item": f"row {i}", "quantity": "true loss", "value": float(loss)},
                 {"item": f"row {i}", "quantity": "epsilon bias -log1p(eps/p_t)",
                  "value": float(bias)},
                 {"item": f"row {i}", "quantity": "torch float32 row error",
                  "value": float(mp.mpf(float(torch_rows[i])) - r32[i])}]
    return _rows("q1", recs)


# ---------------------------------------------------------------------------------------------
# 2. The overflow claim

def _grid(per_octave: int, max_log2: int) -> np.ndarray:
    """bfloat16 numbers (exact in every format) from 2**-2 to 2**max_log2, `per_octave` each."""
    step = 128 // per_octave
    vals = [2.0 ** e * (1 + k / 128) for e in range(-2, max_log2) for k in range(0, 128, step)]
    return np.array(vals + [2.0 ** max_log2])


FAMILIES = {
    "A": "[L, 0, 0, 0] target 0 (confidently correct)",
    "B": "[L, 0, 0, 0] target 1 (confidently wrong)",
    "C": "the blog's logits rescaled to max |logit| = L",
}


def _family_batch(grid):
    bx, bt = blog_batch()
    bx = bx / np.abs(bx).max()
    xs, ts, fam, L = [], [], [], []
    for v in grid:
        row = np.array([v, 0.0, 0.0, 0.0])
        xs += [row, row]
        ts += [0, 1]
        fam += ["A", "B"]
        L += [v, v]
        xs += list(v * bx)
        ts += list(bx.shape[0] * [0]) if False else list(bt)
        fam += ["C"] * len(bt)
        L += [v] * len(bt)
    return np.array(xs), np.array(ts), np.array(fam), np.array(L)


def _mixed_ulp(df: pd.DataFrame) -> np.ndarray:
    out = np.empty(len(df))
    for name, idx in df.groupby("format").groups.items():
        fmt = FORMATS[name]
        d = df.loc[idx]
        truth = d["truth"].to_numpy()
        c = d["computed"].to_numpy()
        unit = fmt.ulp(np.maximum(np.abs(truth), 1.0))
        with np.errstate(over="ignore", invalid="ignore"):
            rt = fmt.round(truth)  # a true loss past the format's range rounds to inf
            u = d["abs_err"].to_numpy() / unit
        u = np.where(np.isinf(rt) & (c == rt), 0.0, u)
        bad = ~np.isfinite(c) & np.isfinite(rt)
        out[df.index.get_indexer(idx)] = np.where(bad | np.isnan(u), np.inf, u)
    return out


def q2_overflow(params):
    grid = _grid(params["grid_per_octave"], params["grid_max_log2"])
    x, t, fam, L = _family_batch(grid)
    frames = []
    for name in FMT_NAMES:
        fmt = FORMATS[name]
        keep = L <= fmt.max_finite
        df = evaluate(x[keep], t[keep], formats=[name], methods=list(METHODS),
                      accumulators=("working",), mean=False)
        df["family"] = fam[keep][df["row"].to_numpy()]
        df["L"] = L[keep][df["row"].to_numpy()]
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["mixed_ulp"] = _mixed_ulp(df)
    df["nonfinite"] = ~np.isfinite(df["computed"]) & (df["mixed_ulp"] == np.inf)
    df["wrong"] = df["mixed_ulp"] > WRONG_ULP
    # per (family, format, method, L): the worst row
    g = df.groupby(["family", "format", "method", "L"], sort=False).agg(
        mixed_ulp=("mixed_ulp", "max"), nonfinite=("nonfinite", "any"), wrong=("wrong", "any"))
    g = g.reset_index()
    recs = []
    for r in g.itertuples(index=False):
        recs.append({"item": f"{r.family} L={r.L!r}", "format": r.format, "method": r.method,
                     "quantity": "worst error (ULPs at max(|loss|,1))", "value": r.mixed_ulp,
                     "text": r.family})
    for (f, fmt, m), s in g.groupby(["family", "format", "method"], sort=False):
        s = s.sort_values("L")
        first_nf = s.loc[s["nonfinite"], "L"].min() if s["nonfinite"].any() else np.inf
        first_w = s.loc[s["wrong"], "L"].min() if s["wrong"].any() else np.inf
        recs.append({"item": f"{f} first", "format": fmt, "method": m, "text": f,
                     "quantity": "first non-finite L", "value": first_nf})
        recs.append({"item": f"{f} first", "format": fmt, "method": m, "text": f,
                     "quantity": "first wrong L", "value": first_w})
        recs.append({"item": f"{f} first", "format": fmt, "method": m, "text": f,
                     "quantity": "grid end", "value": s["L"].max()})
    for name in FMT_NAMES:
        fmt = FORMATS[name]
        with np.errstate(over="ignore"):
            e1000 = float(fmt.round(np.exp(1000.0)))
        recs.append({"item": "overflow", "format": name, "quantity": "log(max finite)",
                     "value": fmt.overflow_logit})
        recs.append({"item": "overflow", "format": name, "quantity": "exp(1000) in format",
                     "value": e1000})
    return _rows("q2", recs)


# ---------------------------------------------------------------------------------------------
# 3. The epsilon

def q3_epsilon(params):
    recs = []
    with mpmath.workprec(200):
        cap = -mp.log(mp.mpf(EPS))
    recs.append({"item": "cap", "format": "exact", "quantity": "-log(eps)", "value": float(cap),
                 "text": mpmath.nstr(cap, 20)})
    # The cap each format's softmax_eps actually reaches: a target logit far below the rest.
    for name in FMT_NAMES:
        fmt = FORMATS[name]
        row = np.array([[0.0, 60.0]])
        v = float(METHODS["softmax_eps"](row, np.array([0]), fmt, "working")[0])
        recs.append({"item": "cap", "format": name, "quantity": "eps rounded to format",
                     "value": float(fmt.round(EPS))})
        recs.append({"item": "cap", "format": name, "quantity": "largest loss softmax_eps returns",
                     "value": v})
    # Closed form on a dense grid in the logit of p.
    d = np.linspace(-60, 60, 24001)
    f64 = FORMATS["float64"]  # correctly rounded exp/log1p: the same digits on every CPU
    p = 1.0 / (1.0 + elementary.exp(d, f64))
    loss = elementary.log1p(elementary.exp(d, f64), f64)  # -log p, accurate at both ends
    rel = elementary.log1p(EPS / p, f64) / loss
    imin = int(np.argmin(rel))
    recs.append({"item": "closed form", "quantity": "smallest relative bias", "value": rel[imin]})
    recs.append({"item": "closed form", "quantity": "p at smallest relative bias",
                 "value": p[imin]})
    for frac in (1e-2, 0.5):
        below = p[rel > frac]
        lo = below[below < p[imin]].max() if (below < p[imin]).any() else np.nan
        hi = below[below > p[imin]].min() if (below > p[imin]).any() else np.nan
        recs.append({"item": "closed form", "quantity": f"bias above {frac:g} of the loss: p below",
                     "value": lo})
        recs.append({"item": "closed form", "quantity": f"bias above {frac:g} of the loss: p above",
                     "value": hi})
    for name in FMT_NAMES:
        u = FORMATS[name].unit_roundoff
        ok = rel <= u
        recs.append({"item": "harmless", "format": name, "quantity": "unit roundoff u", "value": u})
        recs.append({"item": "harmless", "format": name, "quantity": "smallest bias / u",
                     "value": rel[imin] / u})
        recs.append({"item": "harmless", "format": name, "quantity": "harmless p from",
                     "value": p[ok].min() if ok.any() else np.nan})
        recs.append({"item": "harmless", "format": name, "quantity": "harmless p to",
                     "value": p[ok].max() if ok.any() else np.nan})
    # Measured: softmax_eps and logsumexp on rows [0, d], target 0, in every format.
    dm = np.linspace(-38, 38, params["p_points"])
    x = np.stack([np.zeros_like(dm), dm], axis=1)
    t = np.zeros(len(dm), dtype=np.int64)
    df = evaluate(x, t, formats=FMT_NAMES, methods=["softmax_eps", "logsumexp"],
                  accumulators=("working",), mean=False)
    for r in df.itertuples(index=False):
        recs.append({"item": f"measured {r.row}", "format": r.format, "method": r.method,
                     "quantity": "relative error", "value": r.rel_err,
                     "text": repr(float(elementary.exp(-r.truth, FORMATS["float64"])))})
    pt = elementary.exp(-df["truth"].to_numpy(), FORMATS["float64"])
    central = df[(pt >= 0.01) & (pt <= 0.99)]
    for (fmt, m), s in central.groupby(["format", "method"], sort=False):
        recs.append({"item": "measured summary", "format": fmt, "method": m,
                     "quantity": "median relative error, 0.01 <= p <= 0.99",
                     "value": float(s["rel_err"].median())})
    return _rows("q3", recs)


# ---------------------------------------------------------------------------------------------
# 4. The Q&A's question

def q4_qa_question():
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
        recs.append({"item": "softmax", "quantity": f"p_{i}", "value": float(p)})
    df = evaluate(x, t, formats=FMT_NAMES, methods=list(METHODS), accumulators=("working",),
                  mean=False)
    for r in df.itertuples(index=False):
        recs.append({"item": "computed", "format": r.format, "method": r.method,
                     "quantity": "computed", "value": r.computed})
        recs.append({"item": "computed", "format": r.format, "method": r.method,
                     "quantity": "ULP error", "value": r.ulp_err})
    for L in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0):
        v = reference_loss(np.array([[0.0, 0.0, 0.0, L]]), np.array([3]))[0]
        recs.append({"item": "[0,0,0,L]", "quantity": f"loss at L = {L:g}", "value": float(v)})
    for target in (1e-2, 1e-3):
        recs.append({"item": "[0,0,0,L]", "quantity": f"L for a loss of {target:g}",
                     "value": float(elementary.log(
                         3.0 / elementary.expm1(target, FORMATS["float64"]), FORMATS["float64"]))})
    return _rows("q4", recs)


# ---------------------------------------------------------------------------------------------
# 5. The Q&A answer's experiment

def q5_qa_experiment(params):
    torch.manual_seed(QA_SEED)
    n = params["qa_batches"]
    crit = torch.nn.CrossEntropyLoss()
    xs, ts, tv, mv = [], [], [], []
    for _ in range(n):
        x = torch.rand(10, 10)
        t = torch.randint(0, 10, (10,))
        tv.append(float(crit(x, t)))
        mv.append(float(qa.cross_entropy(x, t)))
        xs.append(x.double().numpy())
        ts.append(t.numpy())
    tv, mv = np.array(tv), np.array(mv)
    hi, lo = np.empty(n), np.empty(n)
    for i in range(n):
        h, l_ = to_double_double([reference_mean(reference_loss(xs[i], ts[i]))])
        hi[i], lo[i] = h[0], l_[0]
    f32 = FORMATS["float32"]
    et, em = errors(tv, hi, lo, f32), errors(mv, hi, lo, f32)
    dist = np.abs(ordinal(tv, f32) - ordinal(mv, f32))
    correct = np.abs(tv - mv) < 1e-15
    recs = []
    for i in range(n):
        signed_t = ((tv[i] - hi[i]) - lo[i]) / f32.ulp(hi[i])
        signed_m = ((mv[i] - hi[i]) - lo[i]) / f32.ulp(hi[i])
        recs += [{"item": f"batch {i}", "quantity": "torch", "value": tv[i]},
                 {"item": f"batch {i}", "quantity": "manual", "value": mv[i]},
                 {"item": f"batch {i}", "quantity": "truth", "value": hi[i]},
                 {"item": f"batch {i}", "quantity": "ULP distance torch-manual",
                  "value": float(dist[i])},
                 {"item": f"batch {i}", "quantity": "torch error (ULPs, signed)",
                  "value": signed_t},
                 {"item": f"batch {i}", "quantity": "manual error (ULPs, signed)",
                  "value": signed_m},
                 {"item": f"batch {i}", "quantity": "correct (abs diff < 1e-15)",
                  "value": float(correct[i])}]
    at, am = et["abs_err"].to_numpy(), em["abs_err"].to_numpy()
    summary = {
        "batches": n,
        "correct (abs diff < 1e-15), %": 100 * correct.mean(),
        "bitwise equal, %": 100 * (tv == mv).mean(),
        "smallest nonzero abs(torch - manual)": np.min(np.abs(tv - mv)[tv != mv])
        if (tv != mv).any() else np.nan,
        "smallest float32 ULP at the losses": float(f32.ulp(np.minimum(tv, mv)).min()),
        "torch closer to truth, %": 100 * (at < am).mean(),
        "manual closer to truth, %": 100 * (am < at).mean(),
        "equally close, %": 100 * (am == at).mean(),
        "torch max error (ULPs)": float(et["ulp_err"].max()),
        "manual max error (ULPs)": float(em["ulp_err"].max()),
        "torch mean error (ULPs)": float(et["ulp_err"].mean()),
        "manual mean error (ULPs)": float(em["ulp_err"].mean()),
        "torch correctly rounded, %": 100 * (et["bits_err"] == 0).mean(),
        "manual correctly rounded, %": 100 * (em["bits_err"] == 0).mean(),
        "max ULP distance torch-manual": float(dist.max()),
    }
    for k in range(int(dist.max()) + 1):
        summary[f"ULP distance = {k}, %"] = 100 * (dist == k).mean()
    for k, v in summary.items():
        recs.append({"item": "summary", "quantity": k, "value": v, "format": "float32",
                     "text": torch.__version__ if k == "batches" else ""})
    return _rows("q5", recs)


# ---------------------------------------------------------------------------------------------
# 6. precision-lab check on the examples

def q6_check():
    recs = []
    for name, mod in (("blog", blog), ("qa", qa), ("unshifted", unshifted)):
        res = check_implementation(mod.cross_entropy, name=f"precision_lab.examples.{name}")
        for r in res.verdict.to_dict("records"):
            base = {"item": name, "format": r["format"], "method": r["implementation"]}
            recs.append({**base, "quantity": "max ULP", "value": r["max ULP"]})
            recs.append({**base, "quantity": "max bits", "value": r["max bits"]})
            for q in ("worst case", "largest working scale", "failing cases", "verdict"):
                recs.append({**base, "quantity": q, "value": None, "text": r[q]})
        recs.append({"item": name, "quantity": "exit code", "value": res.exit_code,
                     "text": res.output, "method": res.kind})
    return _rows("q6", recs)


def run(config, params) -> pd.DataFrame:
    rows = q1_blog() + q2_overflow(params) + q3_epsilon(params) + q4_qa_question() \
        + q5_qa_experiment(params)
    if params.get("check"):
        rows += q6_check()
    return pd.DataFrame(rows, columns=COLS)


# =============================================================================================
# Report: everything below reads only the DataFrame.

def _sel(df, q, **kw):
    d = df[df["question"] == q]
    for k, v in kw.items():
        d = d[d[k] == v]
    return d


def _val(df, q, quantity, **kw):
    d = _sel(df, q, quantity=quantity, **kw)
    return float(d["value"].iloc[0])


def _md(df: pd.DataFrame) -> str:
    body = df.apply(lambda c: c.map(format_number) if c.dtype != object else c)
    return body.to_markdown(index=False, disable_numparse=True)


def _g(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v == math.inf:
        return "never (within the grid)"
    return f"{v:.{digits}g}"


def _L(v) -> str:
    if v == math.inf:
        return "—"
    return f"{v:.6g}"


def report(df: pd.DataFrame, config, params, out_dir):
    df = df.copy()
    df["text"] = df["text"].fillna("")
    for c in ("format", "method", "item", "quantity"):
        df[c] = df[c].fillna("")
    tables = {}   # key -> (caption, DataFrame)
    md = []
    findings = []
    gt = f"ground truth: certified, at least {DEFAULT_BITS} correct bits"
    torch_version = _sel(df, "q5", quantity="batches")["text"].iloc[0]
    md.append("# The two founding questions\n")
    md.append(f"Profile `{config.profile}`; the sources' own seeds (numpy {BLOG_SEED} for the "
              f"blog, torch {QA_SEED} for the Q&A); {gt}; torch {torch_version} on the CPU. "
              "Every number below is computed by `experiments/seed_questions.py` "
              "(data: `results.csv`).\n")

    # ---- 1
    obs = _val(df, "q1", "observed difference blog - torch")
    terms = _sel(df, "q1", item="term")
    sub = _sel(df, "q1", item="subterm")
    total = _val(df, "q1", "sum of the four terms")
    resid = _val(df, "q1", "sum - observed")
    t1 = pd.concat([terms, sub])[["quantity", "text", "value"]].rename(
        columns={"quantity": "term", "text": "definition", "value": "contribution"})
    t1["share of observed"] = t1["contribution"] / obs
    t1 = pd.concat([t1, pd.DataFrame([
        {"term": "sum of the four terms", "definition": "", "contribution": total,
         "share of observed": total / obs},
        {"term": "observed blog - torch", "definition": "blog(float64) - torch(float32)",
         "contribution": obs, "share of observed": 1.0},
        {"term": "sum - observed", "definition": "", "contribution": resid,
         "share of observed": resid / obs}])], ignore_index=True)
    t1["contribution"] = t1["contribution"].map(lambda v: f"{v:.6e}")
    cap1 = (f"Decomposition of the blog's printed difference (numpy seed {BLOG_SEED}, 3x4 "
            f"logits; blog in float64, torch in float32; {gt}).")
    tables["q1"] = (cap1, t1)
    vals = _sel(df, "q1", item="value")[["quantity", "value", "text"]].rename(
        columns={"text": "25 digits"})
    vals["value"] = vals["value"].map(lambda v: f"{v:.17g}")
    eps_b = float(terms.loc[terms["quantity"] == "epsilon bias", "value"].iloc[0])
    torch_a = float(terms.loc[terms["quantity"] == "torch float32 arithmetic", "value"].iloc[0])
    inp = float(terms.loc[terms["quantity"] == "input rounding to float32", "value"].iloc[0])
    b64r = float(terms.loc[terms["quantity"] == "blog float64 rounding", "value"].iloc[0])
    md.append("## 1. The blog post's comparison, decomposed\n")
    md.append(f"The blog's code in float64 minus `nn.CrossEntropyLoss` on `torch.FloatTensor` "
              f"gives **{obs:.4e}** on the blog's batch. Telescoping through the certified "
              f"truths T64 (float64 inputs) and T32 (inputs rounded to float32): the epsilon's "
              f"bias contributes {eps_b:.4e} ({100 * eps_b / obs:.0f}% of the difference), "
              f"torch's float32 arithmetic {torch_a:.4e} ({100 * torch_a / obs:.0f}%), the "
              f"rounding of the inputs to float32 {inp:.4e} ({100 * inp / obs:.1f}%), and the "
              f"blog's own float64 rounding {b64r:.1e}. The four terms sum to {total:.6e}; "
              f"minus the observed difference: {resid:.1e} (the truths are certified to "
              f"2^-{DEFAULT_BITS} relative). The epsilon alone is larger than the whole "
              f"difference; torch's float32 rounding pulls the other way.\n")
    md.append(_md(t1) + "\n")
    md.append("Values (the truths to 25 digits):\n")
    md.append(_md(vals) + "\n")
    rows1 = _sel(df, "q1").loc[lambda d: d["item"].str.startswith("row ")]
    piv = rows1.pivot_table(index="item", columns="quantity", values="value", sort=False)
    piv = piv.reset_index().rename(columns={"item": "row"})
    md.append("Per row (the epsilon's bias is -log1p(1e-7 / p_t): largest where p_t is "
              "smallest):\n")
    md.append(_md(piv) + "\n")
    tables["q1_rows"] = (f"The blog's rows (numpy seed {BLOG_SEED}; {gt}).", piv)
    findings.append({"text": f"The blog's printed difference (float64 numpy with eps minus "
                             f"float32 torch) is {obs:.3e}: epsilon bias {eps_b:.3e}, torch's "
                             f"float32 arithmetic {torch_a:.3e}, input rounding to float32 "
                             f"{inp:.3e}, blog's float64 rounding {b64r:.1e}; they sum to the "
                             f"observed value (residual {resid:.1e}).",
                     "link": "summary.md", "label": "table"})
    _fig_q1(t1, obs, out_dir, gt)

    # ---- 2
    md.append("## 2. \"For logits as big as 1000 ...\": where each method fails\n")
    ov = _sel(df, "q2", item="overflow")
    ovt = ov.pivot_table(index="format", columns="quantity", values="value", sort=False)
    ovt = ovt.reindex(FMT_NAMES).reset_index()
    n_inf = int(np.isinf(ovt["exp(1000) in format"]).sum())
    md.append(f"exp(1000) is infinite in {n_inf} of the {len(ovt)} formats: the claim holds for "
              "the *unshifted* softmax, and exp overflows far earlier in the narrow formats "
              "(log of the largest finite number):\n")
    md.append(_md(ovt) + "\n")
    firsts = _sel(df, "q2").loc[lambda d: d["item"].str.endswith(" first")]
    md.append(f"For each method and format, the first L (on a grid of "
              f"{params['grid_per_octave']} bfloat16 numbers per octave, exact in every format, "
              f"up to 2^{params['grid_max_log2']}; float16 up to its largest finite number) at "
              f"which the result is wrong — more than {WRONG_ULP:g} ULPs of the format at "
              f"max(|loss|, 1), the default of `precision-lab check`, a non-finite result "
              f"included — and, in parentheses, the first L at which it is non-finite; "
              f"\"—\" means never on the grid. Sums are sequential in the working format; torch "
              f"is PyTorch's own CPU kernel.\n")
    q2tabs = {}
    for fam, desc in FAMILIES.items():
        f = firsts[firsts["text"] == fam]
        rows = []
        for m in dict.fromkeys(f["method"]):
            r = {"method": m}
            for name in FMT_NAMES:
                s = f[(f["method"] == m) & (f["format"] == name)]
                w = float(s.loc[s["quantity"] == "first wrong L", "value"].iloc[0])
                nf = float(s.loc[s["quantity"] == "first non-finite L", "value"].iloc[0])
                r[name] = f"{_L(w)} ({_L(nf)})"
            rows.append(r)
        tab = pd.DataFrame(rows)
        q2tabs[fam] = tab
        md.append(f"**{desc}**\n")
        md.append(_md(tab) + "\n")
        tables[f"q2_{fam}"] = (f"First wrong L (first non-finite L), {desc}; formats "
                               f"{', '.join(FMT_NAMES)}; wrong = error above {WRONG_ULP:g} ULPs "
                               f"at max(|loss|,1); {gt}.", tab)

    def first(fam, m, fmt, q="first non-finite L"):
        s = firsts[(firsts["text"] == fam) & (firsts["method"] == m) & (firsts["format"] == fmt)]
        s = s[s["quantity"] == q]
        return float(s["value"].iloc[0]) if len(s) else math.nan

    nv64 = first("B", "naive", "float64")
    nv32 = first("B", "naive", "float32")
    nv16 = first("B", "naive", "float16")
    eps32 = first("B", "softmax_eps", "float32", "first wrong L")
    eps64 = first("B", "softmax_eps", "float64", "first wrong L")
    ovl = {n: FORMATS[n].overflow_logit for n in FMT_NAMES}
    robust = [m for m in dict.fromkeys(firsts["method"])
              if all(first(f, m, n, "first wrong L") == math.inf
                     for f in FAMILIES for n in FMT_NAMES)]
    cancel = [(m, first("A", m, "float64", "first wrong L")) for m in dict.fromkeys(
        firsts["method"]) if m not in ("naive", "softmax_eps")
        and first("A", m, "float64", "first wrong L") < math.inf]
    md.append(f"Reading the tables: the unshifted softmax (`naive`) on a confidently wrong row "
              f"first returns a non-finite loss at L = {_L(nv64)} in float64, {_L(nv32)} in "
              f"float32 and {_L(nv16)} in float16, the first grid points past log(max finite) "
              f"= {ovl['float64']:.6g}, {ovl['float32']:.4g} and {ovl['float16']:.4g}: the "
              f"blog is right about the unshifted form, and the shift removes the overflow in "
              f"every format. "
              f"The shift alone does not make the loss right: the blog's `softmax_eps` is wrong "
              f"from L = {_L(eps32)} in float32 and {_L(eps64)} in float64 on the same row, "
              f"because the epsilon caps the loss (section 3); `softmax_log` (shifted, no "
              f"epsilon) goes infinite once p_t underflows. "
              + (f"Never wrong on these rows, in any format: {', '.join(robust)}. "
                 if robust else "")
              + ("On a confidently correct row in float64, " + ", ".join(
                  f"{m} from L = {_L(v)}" for m, v in cancel) + " lose the tiny loss to the "
                 "cancellation in (a + log s) - x_t, which forms the large a + log s first "
                 "(torch subtracts x_t - a first)." if cancel else "") + "\n")
    md.append("![worst error against L](overflow.png)\n")
    md.append(f"*Figure: worst error (ULPs of the format at max(|loss|, 1), log scale; "
              f"non-finite results drawn at the top) against L, per method; formats "
              f"{', '.join(FMT_NAMES)}; rows [L, 0, 0, 0] with target 1 and the blog's logits "
              f"(numpy seed {BLOG_SEED}) rescaled; {gt}.*\n")
    _fig_q2(_sel(df, "q2").loc[lambda d: d["item"].str.contains(" L=")], out_dir, gt)
    findings.append({"text": f"exp(1000) overflows in all four formats, but only the unshifted "
                             f"softmax fails there (first non-finite at L = {_L(nv64)} in "
                             f"float64, {_L(nv16)} in float16); the blog's shifted softmax with "
                             f"epsilon is wrong from L = {_L(eps32)} in float32 on a "
                             f"confidently wrong row because the epsilon caps the loss.",
                     "link": "summary.md", "label": "table"})

    # ---- 3
    md.append("## 3. The epsilon\n")
    cap = _sel(df, "q3", item="cap")
    capx = cap[cap["format"] == "exact"].iloc[0]
    capt = cap[cap["format"] != "exact"].pivot_table(index="format", columns="quantity",
                                                      values="value", sort=False)
    capt = capt.reindex(FMT_NAMES).reset_index()
    for c in capt.columns[1:]:
        capt[c] = capt[c].map(lambda v: f"{v:.8g}")
    rmin = _val(df, "q3", "smallest relative bias")
    pmin = _val(df, "q3", "p at smallest relative bias")
    p1lo = _val(df, "q3", "bias above 0.01 of the loss: p below")
    p1hi = _val(df, "q3", "bias above 0.01 of the loss: p above")
    p50lo = _val(df, "q3", "bias above 0.5 of the loss: p below")
    harm = _sel(df, "q3", item="harmless").pivot_table(index="format", columns="quantity",
                                                       values="value", sort=False)
    harm = harm.reindex(FMT_NAMES).reset_index()
    harm = harm[["format", "unit roundoff u", "smallest bias / u", "harmless p from",
                 "harmless p to"]]
    meas = _sel(df, "q3", item="measured summary").pivot_table(
        index="format", columns="method", values="value", sort=False).reindex(FMT_NAMES)
    harm["median rel. error softmax_eps"] = meas["softmax_eps"].to_numpy()
    harm["median rel. error logsumexp"] = meas["logsumexp"].to_numpy()
    for c in ("harmless p from", "harmless p to"):
        harm[c] = harm[c].map(lambda v: "never" if math.isnan(v) else f"{v:.6g}")
    never = [r["format"] for _, r in harm.iterrows() if r["harmless p from"] == "never"]
    somet = [r for _, r in harm.iterrows() if r["harmless p from"] != "never"]
    md.append(f"-log(p + 1e-7) can never exceed -log(1e-7) = **{capx['text'][:12]}**: a "
              f"prediction that gives the target probability 0 costs at most that much. Each "
              f"format rounds the epsilon first, so the cap it reaches differs slightly:\n")
    md.append(_md(capt) + "\n")
    para = []
    para.append(f"The bias is -log(p + eps) + log p = -log1p(eps/p): always negative, about "
              f"-eps/p for p >> eps. Relative to the loss -log p it is smallest, "
              f"{rmin:.3g}, at p = {pmin:.3g} (1/e), exceeds 1% of the loss for p below "
              f"{p1lo:.3g} or above {p1hi:.10g}, and half of it for p below {p50lo:.3g} "
              f"(where the cap takes over). Compared with one rounding of the loss (unit "
              f"roundoff u): the bias is larger than u at every p in "
              f"{' and '.join(never) or 'no format'}")
    para.append(" (the smallest bias is " + ", ".join(
        f"{r['smallest bias / u']:.3g} u in {r['format']}" for _, r in harm.iterrows()
        if r["format"] in never) + ")")
    if somet:
        para.append("; it stays below u only for " + "; ".join(
            f"{r['harmless p from']} <= p <= {r['harmless p to']} in {r['format']}"
            for r in somet))
    para.append(". Where the bias exceeds u it dominates the error: measured on two-class "
                "rows with 0.01 <= p <= 0.99, the median relative error of softmax_eps divided "
                "by that of logsumexp is " +
                ", ".join(f"{r['median rel. error softmax_eps'] / r['median rel. error logsumexp']:.3g}"
                          f" in {r['format']}" for _, r in harm.iterrows()) + ".\n")
    md.append("".join(para))
    md.append(_md(harm) + "\n")
    tables["q3"] = (f"The epsilon's bias against each format's unit roundoff (closed form "
                    f"-log1p(eps/p) relative to -log p; measured on two-class rows; {gt}).", harm)
    md.append("![the epsilon's bias](epsilon.png)\n")
    md.append(f"*Figure: left, the loss with and without the epsilon against p; right, the "
              f"relative bias |log1p(eps/p)| / -log p (closed form) and the measured relative "
              f"error of softmax_eps in {', '.join(FMT_NAMES)}, with each format's unit "
              f"roundoff; two-class rows, no random seed; {gt}.*\n")
    _fig_q3(_sel(df, "q3"), float(capx["value"]), out_dir, gt)
    findings.append({"text": f"The epsilon caps every loss at -log(1e-7) = {capx['text'][:7]} "
                             f"and biases it by -log1p(1e-7/p): at least {rmin:.2g} of the loss "
                             f"(at p = 1/e), more than one rounding at every p in "
                             f"{' and '.join(never)}.",
                     "link": "summary.md", "label": "figure"})

    # ---- 4
    md.append("## 4. The Q&A: logits [0, 0, 0, 1], target 3\n")
    tr = _sel(df, "q4", item="truth")
    true_txt = tr.loc[tr["quantity"] == "certified loss", "text"].iloc[0]
    diff4 = _val(df, "q4", "certified - closed form")
    probs = _sel(df, "q4", item="softmax")["value"].to_numpy()
    comp = _sel(df, "q4", item="computed")
    ct = comp[comp["quantity"] == "computed"].pivot_table(index="method", columns="format",
                                                          values="value", sort=False)
    ce = comp[comp["quantity"] == "ULP error"].pivot_table(index="method", columns="format",
                                                           values="value", sort=False)
    t4 = pd.DataFrame({"method": ct.index})
    for f in FMT_NAMES:
        t4[f] = [f"{ct.loc[m, f]:.8g} ({ce.loc[m, f]:.2g} ulp)" for m in ct.index]
    Ls = _sel(df, "q4", item="[0,0,0,L]")
    md.append(f"nn.CrossEntropyLoss takes *logits* (unnormalised log-probabilities) and applies "
              f"softmax itself. [0, 0, 0, 1] read as logits gives probabilities "
              f"{', '.join(f'{p:.4f}' for p in probs)}, so the loss is -log({probs[3]:.4f}) = "
              f"log(3 + e) - 1 = **{true_txt}** (certified; it differs from the closed form "
              f"by {abs(diff4):.1e}). Only if [0, 0, 0, 1] were the probabilities themselves "
              f"would the loss be -log 1 = 0. As logits the loss only tends to 0: "
              + ", ".join(f"{r.quantity.replace('loss at ', '')}: {r.value:.3g}"
                          for r in Ls.itertuples() if r.quantity.startswith("loss at"))
              + f"; a loss of 0.01 needs L >= {_val(df, 'q4', 'L for a loss of 0.01'):.3g}. "
              + _q4_sentence(ce) + " (computed, with the error in ULPs of the format):\n")
    md.append(_md(t4) + "\n")
    tables["q4"] = (f"The Q&A's logits [0,0,0,1], target 3, in {', '.join(FMT_NAMES)}; {gt}.",
                    t4)
    findings.append({"text": f"Logits [0, 0, 0, 1] with target 3 give log(3 + e) - 1 = "
                             f"{true_txt[:8]} (certified): the inputs are logits, softmax "
                             f"gives the target only {probs[3]:.4f}.",
                     "link": "summary.md", "label": "table"})

    # ---- 5
    s5 = _sel(df, "q5", item="summary").set_index("quantity")["value"]
    nb = int(s5["batches"])
    md.append("## 5. The Q&A answer's experiment: 1e-15 between two float32 numbers\n")
    dist_rows = [(k, v) for k, v in s5.items() if k.startswith("ULP distance =")]
    t5 = pd.DataFrame({"quantity": [k for k in s5.index if not k.startswith("ULP distance =")],
                       "value": [s5[k] for k in s5.index if not k.startswith("ULP distance =")]})
    t5b = pd.DataFrame({"ULP distance torch - manual": [k.split("= ")[1].rstrip(", %")
                                                         for k, _ in dist_rows],
                        "% of batches": [v for _, v in dist_rows]})
    md.append(f"With torch {torch_version} ({nb} batches, torch.manual_seed({QA_SEED}); the "
              f"manual loop reconstructed from the answer's description, see "
              f"`precision_lab/examples/qa.py`), **{s5['correct (abs diff < 1e-15), %']:.1f}%** "
              f"of the batches count as correct; the post reports 81.4% (another version and "
              f"machine: the vectorised lanes of torch's float32 sum decide the last bits). "
              f"Both results are float32 numbers near 2.3, where neighbouring float32 values "
              f"are at least {s5['smallest float32 ULP at the losses']:.3g} apart, so the "
              f"1e-15 threshold tests bitwise equality: bitwise equal in "
              f"{s5['bitwise equal, %']:.1f}% of batches, the same count. Where they differ, "
              f"they differ by a few ULPs. Against the truth: torch is closer in "
              f"{s5['torch closer to truth, %']:.1f}% of batches, the manual loop in "
              f"{s5['manual closer to truth, %']:.1f}%, and they are equally close in "
              f"{s5['equally close, %']:.1f}%; torch's largest error is "
              f"{s5['torch max error (ULPs)']:.3g} ULPs and the loop's "
              f"{s5['manual max error (ULPs)']:.3g} (means {s5['torch mean error (ULPs)']:.3g} "
              f"and {s5['manual mean error (ULPs)']:.3g}). Neither is 'the' correct answer; "
              f"each is within a few ULPs of it.\n")
    md.append(_md(t5) + "\n")
    md.append(_md(t5b) + "\n")
    tables["q5"] = (f"The Q&A experiment: {nb} batches of 10x10 torch.rand float32 logits, "
                    f"torch seed {QA_SEED}, torch {torch_version}; {gt}.", t5)
    tables["q5_dist"] = (f"ULP distance between nn.CrossEntropyLoss and the manual loop, "
                         f"float32, torch seed {QA_SEED}.", t5b)
    md.append("![ULP distances and errors](qa_experiment.png)\n")
    md.append(f"*Figure: left, the distance between torch and the manual loop in float32 "
              f"ULPs; right, each one's signed error against the truth in float32 ULPs; "
              f"{nb} batches, torch seed {QA_SEED}, torch {torch_version}; {gt}.*\n")
    _fig_q5(_sel(df, "q5"), out_dir, gt, torch_version)
    findings.append({"text": f"The Q&A experiment gives {s5['correct (abs diff < 1e-15), %']:.1f}% "
                             f"'correct' with torch {torch_version} (the post: 81.4%); the "
                             f"1e-15 test is bitwise equality of float32 numbers. Torch is "
                             f"closer to the truth in {s5['torch closer to truth, %']:.1f}% of "
                             f"batches, the loop in {s5['manual closer to truth, %']:.1f}%.",
                     "link": "summary.md", "label": "table"})

    # ---- 6
    q6 = _sel(df, "q6")
    if len(q6):
        md.append("## 6. `precision-lab check` on the examples\n")
        md.append(f"`precision-lab check MODULE:FUNCTION` runs an implementation over the four "
                  f"formats and a standard battery (scales, class counts, adversarial rows) and "
                  f"fails a case above {DEFAULT_MAX_ULP:g} ULPs at max(|loss|, 1) (settable). "
                  f"The user's rows, with torch and logsumexp beside them:\n")
        for ex in dict.fromkeys(q6["item"]):
            d = q6[q6["item"] == ex]
            code = d.loc[d["quantity"] == "exit code"]
            rows = []
            for (impl, fmt), g in d[d["quantity"] != "exit code"].groupby(["method", "format"],
                                                                           sort=False):
                r = {"implementation": impl, "format": fmt}
                for q, v, txt in zip(g["quantity"], g["value"], g["text"]):
                    r[q] = txt if txt else v
                rows.append(r)
            tab = pd.DataFrame(rows)
            md.append(f"`precision-lab check precision_lab.examples.{ex}:cross_entropy` "
                      f"({code['method'].iloc[0]}, {code['text'].iloc[0]} output) exits "
                      f"{int(code['value'].iloc[0])}:\n")
            md.append(_md(tab) + "\n")
            fails = tab[(tab["implementation"].isin(["torch", "logsumexp"]))
                        & (tab["verdict"] == "FAIL")]
            if len(fails):
                md.append("Beside it, " + "; ".join(
                    f"{r['implementation']} fails in {r['format']} (worst: {r['worst case']})"
                    for _, r in fails.iterrows()) + ". " + (
                    "Torch's mean in float16 overflows because nll_loss accumulates the mean "
                    "in the input dtype; " if code["text"].iloc[0] == "mean" else "")
                    + "logsumexp here is the textbook (a + log s) - x_t, which rounds the large "
                    "a + log s before subtracting x_t.\n")
            tables[f"q6_{ex}"] = (f"precision-lab check on the {ex} example; formats "
                                  f"{', '.join(FMT_NAMES)}; battery seed 0; {gt}.", tab)

    with atomic_write(out_dir / "summary.md") as f:
        f.write("\n".join(md))
    _write_tex(tables, out_dir)
    return findings


def _q4_sentence(ce: pd.DataFrame) -> str:
    bad = [(m, f, ce.loc[m, f]) for m in ce.index for f in ce.columns if ce.loc[m, f] > WRONG_ULP]
    good = ce.where(ce <= WRONG_ULP)
    s = f"Every method and format is within {np.nanmax(good.to_numpy()):.2g} ULPs of it"
    if bad:
        s += " except " + ", ".join(f"{m} in {f} ({v:.2g} ULPs)" for m, f, v in bad)
    return s


def _write_tex(tables, out_dir):
    lines = [r"% Generated by experiments/seed_questions.py; needs \usepackage{booktabs}."]
    for key, (caption, tab) in tables.items():
        path = out_dir / "tables" / f"{key}.tex"
        write_latex(tab, path, caption=caption, label=f"tab:seed_questions:{key}")
        lines.append(rf"\input{{tables/{key}.tex}}")
    with atomic_write(out_dir / "summary.tex") as f:
        f.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# Figures

def _fig_q1(t1, obs, out_dir, gt):
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    names = list(t1["term"])
    vals = [float(v) for v in t1["contribution"]]
    keep = [i for i, n in enumerate(names) if n not in ("sum - observed",)
            and not n.startswith("torch:")]
    colors = ["tab:blue"] * len(keep)
    colors[-2:] = ["tab:gray", "black"]
    ax.barh([names[i] for i in keep][::-1], [vals[i] for i in keep][::-1], color=colors[::-1])
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(obs, color="tab:red", lw=0.8, ls="--", label=f"observed {obs:.3e}")
    ax.set_xlabel("contribution to blog - torch")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"The blog's difference, term by term (numpy seed {BLOG_SEED}; blog float64, "
                 f"torch float32)\n{gt}", fontsize=9)
    save_figure(fig, out_dir, "decomposition")
    plt.close(fig)


def _fig_q2(d, out_dir, gt):
    d = d.copy()
    d["L"] = d["item"].str.split("L=").str[1].astype(float)
    d["family"] = d["text"]
    fams = ["B", "C"]
    methods = list(dict.fromkeys(d["method"]))
    fig, axes = plt.subplots(len(fams), len(FMT_NAMES), figsize=(15, 7), sharex=True,
                             sharey=True)
    top = 1e20
    cmap = plt.get_cmap("tab10")
    for i, fam in enumerate(fams):
        for j, name in enumerate(FMT_NAMES):
            ax = axes[i, j]
            for k, m in enumerate(methods):
                s = d[(d["family"] == fam) & (d["format"] == name) & (d["method"] == m)]
                s = s.sort_values("L")
                y = np.where(np.isfinite(s["value"]), np.maximum(s["value"], 1e-3), top)
                ax.plot(s["L"], y, lw=1.0, color=cmap(k), label=m, alpha=0.85)
            ax.axhline(WRONG_ULP, color="k", lw=0.6, ls=":")
            ax.axvline(FORMATS[name].overflow_logit, color="gray", lw=0.6, ls="--")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_ylim(1e-3, top * 10)
            ax.set_title(f"{name}: {FAMILIES[fam]}", fontsize=8)
            if i == len(fams) - 1:
                ax.set_xlabel("L")
            if j == 0:
                ax.set_ylabel("worst error, ULPs at max(|loss|,1)\n(top: non-finite)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(methods), fontsize=8,
               bbox_to_anchor=(0.5, -0.04))
    for ax in axes.flat:
        ax.axhspan(top / 10, top * 10, color="0.92", zorder=0)
        ax.text(0.3, top, "non-finite", fontsize=7, va="center", color="0.3")
    fig.suptitle(f"Error against logit size L; dotted: {WRONG_ULP:g} ULPs (wrong above); "
                 f"dashed: log(max finite). Formats {', '.join(FMT_NAMES)}; blog logits numpy "
                 f"seed {BLOG_SEED}; {gt}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_dir, "overflow")
    plt.close(fig)


def _fig_q3(d, cap, out_dir, gt):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    dd = np.linspace(-38, 38, 2001)
    p = 1.0 / (1.0 + np.exp(dd))
    loss = np.log1p(np.exp(dd))
    with_eps = -np.log(p + EPS)
    a1.plot(p, loss, label="-log p (true)")
    a1.plot(p, with_eps, label="-log(p + 1e-7) (the blog)", ls="--")
    a1.axhline(cap, color="gray", lw=0.6, ls=":", label=f"cap -log(1e-7) = {cap:.4g}")
    a1.set_xscale("log")
    a1.set_xlim(1e-17, 1)
    a1.set_xlabel("target probability p")
    a1.set_ylabel("loss")
    a1.legend(fontsize=8)
    rel = np.log1p(EPS / p) / loss
    inside = (p > 0) & (p < 1 - 1e-15)
    a2.plot(p[inside], rel[inside], color="k", lw=1.2, label="closed form log1p(eps/p) / -log p")
    m = d[(d["method"] == "softmax_eps") & d["item"].str.startswith("measured ")
          & (d["item"] != "measured summary")]
    cmap = plt.get_cmap("tab10")
    for k, name in enumerate(FMT_NAMES):
        s = m[m["format"] == name]
        pp = s["text"].astype(float).to_numpy()
        ok = (pp > 0) & (pp < 1 - 1e-15)
        a2.scatter(pp[ok], np.maximum(s["value"].to_numpy()[ok], 1e-20), s=6, color=cmap(k),
                   label=f"softmax_eps measured, {name}")
        a2.axhline(FORMATS[name].unit_roundoff, color=cmap(k), lw=0.7, ls=":")
    a2.set_xscale("logit")
    a2.set_xlim(1e-17, 1 - 1e-15)
    ticks = [1e-15, 1e-10, 1e-5, 0.5, 1 - 1e-5, 1 - 1e-10, 1 - 1e-14]
    a2.set_xticks(ticks, ["1e-15", "1e-10", "1e-5", "0.5", "1-1e-5", "1-1e-10", "1-1e-14"])
    a2.minorticks_off()
    a2.set_yscale("log")
    a2.set_ylim(1e-20, 1e12)
    a2.set_xlabel("target probability p (logit scale)")
    a2.set_ylabel("relative error of the loss (dotted: unit roundoff u)")
    a2.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"The epsilon 1e-7: cap and bias; formats {', '.join(FMT_NAMES)}; "
                 f"two-class rows [0, d] (no random seed); {gt}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_dir, "epsilon")
    plt.close(fig)


def _fig_q5(d, out_dir, gt, tv):
    b = d[d["item"].str.startswith("batch ")]
    dist = b.loc[b["quantity"] == "ULP distance torch-manual", "value"].to_numpy()
    et = b.loc[b["quantity"] == "torch error (ULPs, signed)", "value"].to_numpy()
    em = b.loc[b["quantity"] == "manual error (ULPs, signed)", "value"].to_numpy()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    k = np.arange(int(dist.max()) + 2)
    a1.bar(k[:-1], [100 * np.mean(dist == v) for v in k[:-1]], color="tab:blue")
    a1.set_xlabel("|torch - manual| in float32 ULPs")
    a1.set_ylabel("% of batches")
    a1.set_xticks(k[:-1])
    lim = max(np.abs(et).max(), np.abs(em).max())
    bins = np.linspace(-lim - 0.25, lim + 0.25, 41)
    a2.hist(et, bins=bins, alpha=0.6, label="nn.CrossEntropyLoss")
    a2.hist(em, bins=bins, alpha=0.6, label="manual loop")
    a2.set_xlabel("signed error against the truth, float32 ULPs")
    a2.set_ylabel("batches")
    a2.legend(fontsize=8)
    fig.suptitle(f"The Q&A experiment: {len(dist)} batches of 10x10 float32 torch.rand logits, "
                 f"torch seed {QA_SEED}, torch {tv}; {gt}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_dir, "qa_experiment")
    plt.close(fig)
