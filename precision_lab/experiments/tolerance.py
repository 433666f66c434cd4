"""Tolerance: the rtol / atol a cross-entropy test should use, measured

Question: a test compares a cross-entropy kernel with a reference, in low precision, with a
tolerance somebody picked (rtol 5e-2 for bfloat16 in one project, 1e-2 in another). What error
does a correct implementation actually show, per format, class count and logit scale, against
the certified truth and against torch in the same precision, per row and for the batch mean?

Data: normal logits s * z (z standard normal, targets uniform) for the profile's class counts
and scales, in batches of `batch_rows` rows (several batches per cell when C is small), grouped
into the profile's ranges of class count and of scale.

Method: the correct implementations: the library adapters (torch eager under this machine's
widest ATen kernel, JAX/optax, TensorFlow, scipy where it has the format) and the suite's
yardstick (`log1p`), plus, in float16 and bfloat16, the suite's shifted methods with float32
sums (logsumexp, log_softmax), each against the certified loss of the rounded inputs.
Per row (and per batch, for its mean), the error is |computed - truth| / max(|truth|, 1)
against the truth and |computed - torch| / max(|torch|, 1) against torch eager, the largest
over the implementations that return a finite result (a non-finite result on a row the format
represents is counted, not taken as an error); rows the format cannot represent are left out.
The table gives the 99th and 99.9th percentiles per range, and rtol = atol = the 99.9th rounded
up to two digits: `torch.testing.assert_close(a, e, rtol=..., atol=...)` then passes every one
of these implementations on at least 99.9% of such rows (the share is measured, not assumed;
with fewer than 1000 samples the 99.9th percentile is the largest error). The same numbers are
written to tolerance.json, which `make reports` copies into the package for
`precision_lab.tolerance`.

Conclusions: generated from results.csv into summary.md, never typed.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from precision_lab.analysis import implementations as impls
from precision_lab.analysis.cells import cell_logits
from precision_lab.analysis.tolerance import QUANTILES, round_up
from precision_lab.numerics.formats import get_format
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import (
    caption,
    format_title,
    formats_in,
    light_log_axis,
    mark_unit_roundoff,
    panel_grid,
    plt,
    truth_sentence,
)
from precision_lab.running.provenance import provenance
from precision_lab.running.storage import atomic_write

NAME = "tolerance"

BINS = {"classes": [[2, 64], [65, 4096], [4097, 262144]],
        "scale": [[0.0, 1.0], [1.0, 10.0], [10.0, 100.0]]}

PROFILES = {
    "quick": {"class_counts": [8, 256, 8192], "scales": [1.0, 10.0], "batch_rows": 8,
              "max_batches": 4, "max_logits": 1 << 14, **BINS,
              "implementations": ["baseline", "jax_optax", "tensorflow", "scipy_logsumexp",
                                  impls.YARDSTICK],
              "methods16": ["logsumexp", "log_softmax"]},
    "full": {"class_counts": [2, 8, 64, 256, 4096, 16384, 65536, 262144],
             "scales": [0.25, 1.0, 3.0, 10.0, 30.0, 100.0], "batch_rows": 16,
             "max_batches": 16, "max_logits": 1 << 20, **BINS,
             "implementations": ["baseline", "jax_optax", "tensorflow", "scipy_logsumexp",
                                 impls.YARDSTICK],
             "methods16": ["logsumexp", "log_softmax"]},
}

MEASURES = {"truth": "e_truth", "torch": "e_torch"}


def batches_for(classes: int, params) -> int:
    return int(max(1, min(params["max_batches"],
                          params["max_logits"] // (params["batch_rows"] * classes))))


def cells(config, params) -> list[dict]:
    base = impls.baseline()
    names = [base if n == "baseline" else n for n in params["implementations"]]
    names = [n for n in names if n in impls.available()]
    out = []
    for c in params["class_counts"]:
        for s in params["scales"]:
            b = batches_for(c, params)
            out.append({"distribution": "normal", "classes": int(c), "scale": float(s),
                        "rows": b * params["batch_rows"], "batch_rows": params["batch_rows"],
                        "implementations": names, "methods16": params["methods16"],
                        "baseline": base, "seed": config.seed})
    return out


def _largest(df: pd.DataFrame, col: str, key) -> pd.DataFrame:
    """Per key: the largest finite `col` and the candidate that has it (nan, '' if none)."""
    d = df[np.isfinite(df[col].to_numpy())]
    if not len(d):
        return pd.DataFrame(columns=[*key, col, f"{col}_by"])
    i = d.groupby(key, sort=False)[col].idxmax()
    return d.loc[i, [*key, col, "method"]].rename(columns={"method": f"{col}_by"})


def tolerance_cell(cell: dict) -> pd.DataFrame:
    """Per (format, reduction, batch, row): the largest error over the candidates against the
    truth and against torch eager, and how many candidates were non-finite there."""
    x, t = cell_logits(cell)
    br = int(cell["batch_rows"])
    base = cell["baseline"]
    blocks = []
    for b in range(len(t) // br):
        sl = slice(b * br, (b + 1) * br)
        df = impls.evaluate_implementations(x[sl], t[sl], cell["implementations"],
                                            methods=cell["methods16"])
        narrow = df["format"].map(lambda f: get_format(f).precision < 24)
        keep = (df["kind"] == "implementation") | (narrow & (df["accumulator"] == "float32"))
        df = df[keep & df["representable"]].copy()
        key = ["format", "reduction", "row"]
        with np.errstate(invalid="ignore", over="ignore"):
            df["e_truth"] = df["abs_err"] / np.maximum(np.abs(df["truth"]), 1.0)
            tb = df[df["method"] == base][key + ["computed"]].rename(columns={"computed": "_t"})
            df = df.merge(tb, on=key, how="left")
            df["e_torch"] = np.where(df["method"] == base, np.nan,
                                     np.abs(df["computed"] - df["_t"])
                                     / np.maximum(np.abs(df["_t"]), 1.0))
        fin = np.isfinite(df["computed"].to_numpy())
        g = df.assign(_bad=~fin).groupby(key, sort=False)
        rec = g.agg(truth=("truth", "first"), n_candidates=("method", "size"),
                    n_nonfinite=("_bad", "sum")).reset_index()
        for col in ("e_truth", "e_torch"):
            rec = rec.merge(_largest(df, col, key), on=key, how="left")
        rec.insert(0, "batch", b)
        blocks.append(rec)
    out = pd.concat(blocks, ignore_index=True)
    params = {k: v for k, v in cell.items() if k not in ("implementations", "methods16")}
    for i, (k, v) in enumerate(params.items()):
        out.insert(i, k, v)
    return out


def run(config, params) -> pd.DataFrame:
    return config.sweep(NAME, cells(config, params), fn=tolerance_cell)


# --------------------------------------------------------------------------- the table

def _q(v: np.ndarray, q: float) -> float:
    """The q-quantile (0 < q < 1) of the finite values, the higher of the two around it (a
    tolerance errs upwards); nan if none."""
    v = np.sort(v[np.isfinite(v)])
    if not len(v):
        return np.nan
    k = int(np.ceil(round(q * len(v), 9)))  # the k-th smallest, k = ceil(q n) (0.999 * 1000
    return float(v[min(len(v), max(k, 1)) - 1])  # is 999.0000000000001 in floating point)


def table(df: pd.DataFrame, params) -> pd.DataFrame:
    """One entry per (format, class range, scale range) with data."""
    rows = []
    for fmt in formats_in(df):
        for c0, c1 in params["classes"]:
            for s0, s1 in params["scale"]:
                d = df[(df["format"] == fmt) & df["classes"].between(c0, c1)
                       & (df["scale"] > s0) & (df["scale"] <= s1)]
                if not len(d):
                    continue
                per, mean = d[d["reduction"] == "none"], d[d["reduction"] == "mean"]
                e = {"format": fmt, "classes_min": int(c0), "classes_max": int(c1),
                     "scale_above": float(s0), "scale_max": float(s1),
                     "rows": int(len(per)), "means": int(len(mean)),
                     "nonfinite_results": int(d["n_nonfinite"].sum())}
                for red, part in (("row", per), ("mean", mean)):
                    for against, col in MEASURES.items():
                        for q in QUANTILES:
                            level = float(q[1:]) / 100
                            e[f"{red}_{against}_{q.replace('.', '')}"] = _q(
                                part[col].to_numpy(dtype=np.float64), level)
                rows.append(e)
    return pd.DataFrame(rows)


def _display(t: pd.DataFrame) -> pd.DataFrame:
    def rng(a, b, f="{:g}"):
        return f"{f.format(a)}-{f.format(b)}"
    out = pd.DataFrame({
        "format": t["format"],
        "classes": [rng(a, b) for a, b in zip(t["classes_min"], t["classes_max"])],
        "scale s": [f"({a:g}, {b:g}]" for a, b in zip(t["scale_above"], t["scale_max"])],
        "rows": t["rows"], "means": t["means"],
        "row p99": t["row_truth_p99"], "row p99.9": t["row_truth_p999"],
        "mean p99": t["mean_truth_p99"], "mean p99.9": t["mean_truth_p999"],
        "rtol=atol vs truth": t["row_truth_p999"].map(round_up),
        "vs torch": t["row_torch_p999"].map(round_up),
        "mean vs truth": t["mean_truth_p999"].map(round_up),
        "mean vs torch": t["mean_torch_p999"].map(round_up),
        "in u (vs truth)": [f"{v / get_format(f).unit_roundoff:.1f}"
                            for v, f in zip(t["row_truth_p999"].map(round_up), t["format"])]})
    return out


def _findings(t: pd.DataFrame, df: pd.DataFrame) -> list[str]:
    notes = []
    for fmt in formats_in(t):
        d = t[t["format"] == fmt]
        lo, hi = d["row_truth_p999"].min(), d["row_truth_p999"].max()
        u = get_format(fmt).unit_roundoff
        worst = d.loc[d["row_truth_p999"].idxmax()]
        notes.append(f"In {fmt}, the per-row p99.9 error of correct implementations against "
                     f"the truth ranges from {lo:.2g} ({lo / u:.1f} u) to {hi:.2g} "
                     f"({hi / u:.1f} u), largest at C {int(worst['classes_min'])}-"
                     f"{int(worst['classes_max'])}, s up to {worst['scale_max']:g}.")
    for fmt in ("bfloat16", "float16"):
        d = t[t["format"] == fmt]
        if len(d):
            r = d["row_torch_p999"] / d["row_truth_p999"]
            notes.append(f"In {fmt}, comparing against torch needs up to {np.nanmax(r):.1f}x "
                         f"the tolerance against the truth ({len(d)} ranges): torch's own "
                         f"error adds to the implementation's.")
    bad = int(df["n_nonfinite"].sum())
    notes.append(f"{bad} non-finite results on representable rows over "
                 f"{int(df['n_candidates'].sum())} (implementation, row) results; they are "
                 f"counted, not taken as errors.")
    return notes


def _figure(df: pd.DataFrame):
    d = df[df["reduction"] == "none"]
    fmts = formats_in(d)
    fig, axes = panel_grid(1, len(fmts), 3.4, [2.6], top=0.6, bottom=0.9, sharex=False)
    scales = sorted(d["scale"].unique())
    cmap = plt.get_cmap("cividis")  # colour-blind safe; its pale end left out
    for c, fmt in enumerate(fmts):
        ax = axes[0, c]
        for i, s in enumerate(scales):
            g = d[(d["format"] == fmt) & (d["scale"] == s)]
            q = g.groupby("classes")["e_truth"].apply(lambda v: _q(v.to_numpy(), 0.999))
            ax.plot(q.index, np.maximum(q.to_numpy(), get_format(fmt).unit_roundoff / 100),
                    marker="o", markersize=3, color=cmap(0.8 * i / max(1, len(scales) - 1)),
                    label=f"s = {s:g}")
        mark_unit_roundoff(ax, fmt)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        light_log_axis(ax.yaxis)
        ax.set_title(format_title(fmt), fontsize=8)
        ax.set_xlabel("number of classes C", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if c == 0:
            ax.set_ylabel("p99.9 of |err| / max(|loss|, 1)", fontsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8,
               frameon=False)
    fig.suptitle("Per-row error of the worst correct implementation (p99.9 over rows), "
                 "dashed: u", fontsize=10)
    return fig


def report(df, config, params, out_dir) -> list[dict]:
    t = table(df, params)
    fmts = formats_in(df)
    rep = report_for(NAME, __doc__, config, out_dir, truth=truth_sentence(fmts))
    names = sorted({n for col in ("e_truth_by", "e_torch_by") for n in df[col].dropna()})
    how = (f"Measured on normal logits s * z, per row the largest error over the correct "
           f"implementations ({', '.join(names)}; the suite's methods with float32 sums in "
           f"the 16-bit formats only), |computed - truth| / max(|truth|, 1) against the "
           f"certified truth, |computed - torch| / max(|torch|, 1) against torch eager "
           f"({df['baseline'].iloc[0]}) in the same format; rtol = atol = the p99.9 rounded up "
           f"to two digits; with fewer than 1000 rows (means) p99.9 is the largest.")
    t1 = rep.table(_display(t), "The rtol = atol a cross-entropy test should use, per format, "
                   "class range and scale range: p99 and p99.9 of the per-row and batch-mean "
                   "error of correct implementations. " + how, stem="tolerance",
                   headline=True)
    rep.figure(_figure(df), "tolerance", "Per-row p99.9 error of the worst correct "
                    "implementation against the class count, one line per logit scale, one "
                    "panel per format; dashed: u.", headline=True)
    for n in _findings(t, df):
        rep.finding(n, t1)
    gen = provenance()
    data = {"generated_by": {
        "command": f"precision-lab run tolerance --profile {config.profile} --seed "
                   f"{config.seed} --out {config.out}; make reports copies this file into "
                   f"precision_lab/analysis/tolerance.json",
        "experiment": NAME, "profile": config.profile, "seed": config.seed,
        "git_commit": gen["git_commit"], "date": gen["date"], "versions": gen["versions"],
        "kernels": gen["kernels"], "how": f"{how} {caption(fmts, config.seed)}"},
        "entries": t.to_dict(orient="records")}
    with atomic_write(out_dir / "tolerance.json") as f:
        json.dump(data, f, indent=1, allow_nan=True)
        f.write("\n")
    rep.section("Using it", "```python\nimport precision_lab as pl\n"
                "tol = pl.tolerance(\"bfloat16\", 32000, scale=3.0, against=\"torch\")\n"
                "torch.testing.assert_close(mine, torch_ref, **tol.kwargs())\n```")
    rep.paragraph("The numbers are in [tolerance.json](tolerance.json), with the command that "
                  "made them.")
    return rep.write(out_dir)
