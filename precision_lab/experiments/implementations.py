"""Implementations: other libraries' cross entropy against the certified truth

Question: users pick an implementation, not a formula. How close to the truth are PyTorch's
F.cross_entropy (eager, under each ATen CPU kernel this machine runs, and under
torch.compile), JAX (optax and jax.nn.log_softmax), scipy and TensorFlow, in every format each
supports; which one is closest in each format; where two disagree, which one is right; and
does any return a non-finite loss for a row the format can represent?

Data: three families of logits, targets uniform at random. `scale`: s * z, z standard normal,
for s over the profile's scales, at one class count (with `--logits-file`, the user's rows, a
seeded sample, times s). `classes`: s * z for C = 2 ... 262144 at s = 1 and 10, fewer rows as C
grows. `battery`: one batch of adversarial rows at 16 classes, a few rows per case: huge
logits (1000 + z, -1000 + z), ties (all logits equal), masked classes (-inf, never the target),
confidently correct and confidently wrong rows ([L, 0, ..., 0], L = 10 ... 80).

Method: every implementation `analysis.implementations.available()` lists (an adapter each:
numpy in, per-row losses out, the library's own kernels and accumulators inside), the batch
mean as the library forms it, each in the formats it supports, against the certified loss of
the inputs as rounded into the format. Per implementation: Herbie's bits of error, relative
error, non-finite results on representable rows, and, row by row, whether it differs from
torch eager (the widest ATen kernel here) and then which of the two is closer to the truth.
Gradients: each implementation with a gradient adapter (`Implementation.backward`: autograd,
jax.grad, tf.GradientTape) against the certified gradient, per row (reduction "none"):
norm-wise and target-entry relative errors, rows with a non-finite entry, flushed entries.

Conclusions: generated from results.csv into summary.md (the findings), never typed.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from precision_lab.analysis import implementations as impls
from precision_lab.analysis.cells import cell_logits, cell_rng, stage_arrays
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.metrics import aggregate
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import (
    formats_in,
    plot_error_panels,
    register_colors,
    truth_sentence,
)

NAME = "implementations"

PROFILES = {
    "quick": {"scales": [0.1, 1.0, 10.0, 100.0, 1000.0], "scale_classes": 64, "scale_rows": 16,
              "class_counts": [16, 1024, 16384], "class_scales": [1.0],
              "min_rows": 2, "max_rows": 16, "max_logits": 1 << 14, "rows_per_case": 2,
              "exclude": []},
    "full": {"scales": [0.125, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                        4096.0, 16384.0],
             "scale_classes": 1024, "scale_rows": 64,
             "class_counts": [2, 16, 128, 1024, 8192, 65536, 262144], "class_scales": [1.0, 10.0],
             "min_rows": 4, "max_rows": 64, "max_logits": 1 << 19, "rows_per_case": 4,
             "exclude": []},
}

GROUP = ["format", "method", "accumulator", "reduction", "case"]
BATTERY_CLASSES = 16
CONFIDENT = (10.0, 20.0, 40.0, 80.0)


# ----------------------------------------------------------------------------- the grid

def rows_for(classes: int, params) -> int:
    return int(max(params["min_rows"], min(params["max_rows"], params["max_logits"] // classes)))


def cells(config, params) -> list[dict]:
    names = [n for n in impls.available() if n not in params["exclude"]]
    common = {"implementations": names, "baseline": impls.baseline(), "seed": config.seed}
    out = []
    staged = None
    if config.user_logits is not None:
        x, t = config.user_logits
        staged = stage_arrays(config.checkpoint_dir(NAME), "user", x, t)
    for s in params["scales"]:
        if staged:
            out.append({"kind": "scale", "distribution": "user", "scale": float(s),
                        "rows": min(len(config.user_logits[1]), params["scale_rows"]),
                        **staged, **common})
        else:
            out.append({"kind": "scale", "distribution": "normal", "scale": float(s),
                        "rows": params["scale_rows"], "classes": params["scale_classes"],
                        **common})
    for s in params["class_scales"]:
        for c in params["class_counts"]:
            out.append({"kind": "classes", "distribution": "normal", "scale": float(s),
                        "rows": rows_for(c, params), "classes": int(c), **common})
    k = params["rows_per_case"]
    out.append({"kind": "battery", "rows_per_case": k, "rows": 6 * k,
                "classes": BATTERY_CLASSES, **common})
    return out


def battery(cell: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The adversarial rows: logits (float64), targets, and each row's case."""
    rng = cell_rng(cell)
    k, c = int(cell["rows_per_case"]), int(cell["classes"])
    xs, ts, cases = [], [], []

    def add(case, x, t):
        xs.append(x)
        ts.append(t)
        cases.extend([case] * len(t))
    add("huge logits 1000 + z", 1000.0 + rng.standard_normal((k, c)), rng.integers(0, c, k))
    add("huge negative -1000 + z", -1000.0 + rng.standard_normal((k, c)),
        rng.integers(0, c, k))
    add("ties (all equal)", np.repeat(np.array([0.0, 50.0, -7.0, 3.0] * k)[:k, None], c, 1),
        rng.integers(0, c, k))
    masked = 3.0 * rng.standard_normal((k, c))
    t = rng.integers(0, c, k)
    for i in range(k):
        drop = rng.permutation(np.delete(np.arange(c), t[i]))[: c // 2]
        masked[i, drop] = -np.inf
    add("masked -inf classes", masked, t)
    conf = np.zeros((k, c))
    conf[:, 0] = np.resize(np.array(CONFIDENT), k)
    add("confidently correct", conf, np.zeros(k, dtype=np.int64))
    add("confidently wrong", conf.copy(), np.ones(k, dtype=np.int64))
    return np.vstack(xs), np.concatenate(ts).astype(np.int64), np.array(cases, dtype=object)


def implementation_cell(cell: dict) -> pd.DataFrame:
    """One cell: every implementation in every format it supports on the cell's logits,
    compared row by row with the baseline (torch eager), aggregated per case."""
    if cell["kind"] == "battery":
        x, t, case = battery(cell)
    else:
        x, t = cell_logits(cell)
        case = np.full(len(t), cell["kind"], dtype=object)
    df = impls.evaluate_implementations(x, t, cell["implementations"])
    df = compare_with(df, cell["baseline"])
    rows = df["reduction"] == "none"
    df["case"] = np.where(rows, case[np.clip(df["row"].to_numpy(), 0, None)], "batch mean")
    agg = aggregate(df, GROUP)
    flags = df.assign(n_representable=df["representable"],
                      n_spurious_nonfinite=df["representable"] & ~np.isfinite(df["computed"]),
                      bits_err_sum=df["bits_err"])
    sums = flags.groupby(GROUP, sort=False)[
        ["n_representable", "n_spurious_nonfinite", "n_differ", "n_closer", "n_farther",
         "bits_err_sum"]].sum().reset_index()
    agg = agg.merge(sums, on=GROUP, how="left")
    agg = agg.merge(grad_summary(x, t, case, cell["implementations"]),
                    on=["format", "method", "reduction", "case"], how="left")
    params = {k: v for k, v in cell.items() if k not in ("implementations", "logits_path")}
    for i, (k, v) in enumerate(params.items()):
        agg.insert(i, k, v)
    agg.insert(len(params), "kernel", [impls.IMPLEMENTATIONS[m].kernel or ""
                                       for m in agg["method"]])
    return agg


GRAD_COLUMNS = ["grad_count", "grad_norm_rel_median", "grad_norm_rel_max", "grad_target_rel_max",
                "grad_nonfinite_rows", "grad_flushed"]


def grad_summary(x, t, case, names) -> pd.DataFrame:
    """Per (format, implementation, case): the per-row gradient (reduction "none") against the
    certified one, for the implementations with a gradient adapter: rows, median and largest
    norm-wise relative error, largest target-entry error, rows with a non-finite entry, entries
    flushed to 0."""
    g = impls.evaluate_implementation_grads(x, t, names)
    if not len(g):
        return pd.DataFrame(columns=["format", "method", "reduction", "case", *GRAD_COLUMNS])
    g = g.assign(case=case[g["row"].to_numpy()], bad=g["n_nonfinite"] > 0)
    out = g.groupby(["format", "method", "reduction", "case"], sort=False).agg(
        grad_count=("row", "size"), grad_norm_rel_median=("norm_rel", "median"),
        grad_norm_rel_max=("norm_rel", "max"), grad_target_rel_max=("target_rel", "max"),
        grad_nonfinite_rows=("bad", "sum"), grad_flushed=("n_flushed", "sum"))
    return out.reset_index()


def compare_with(df: pd.DataFrame, base: str) -> pd.DataFrame:
    """Add n_differ (the computed loss is not the baseline's, NaN equal to NaN), n_closer and
    n_farther (of those, closer to / farther from the truth than the baseline; a non-finite
    loss where the truth is finite counts as infinitely far) per row, as 0/1."""
    key = ["format", "row", "reduction"]
    b = df[df["method"] == base][key + ["computed", "abs_err"]].rename(
        columns={"computed": "_bc", "abs_err": "_be"}).assign(_has=True)
    m = df.merge(b, on=key, how="left")
    with np.errstate(invalid="ignore"):
        same = (m["computed"] == m["_bc"]) | (m["computed"].isna() & m["_bc"].isna())
        err = m["abs_err"].fillna(np.inf).to_numpy()
        berr = m["_be"].fillna(np.inf).to_numpy()
    has = m["_has"].notna().to_numpy()
    differ = has & ~same
    m["n_differ"] = differ.astype(int)
    m["n_closer"] = (differ & (err < berr)).astype(int)
    m["n_farther"] = (differ & (err > berr)).astype(int)
    return m.drop(columns=["_bc", "_be", "_has"])


def run(config, params) -> pd.DataFrame:
    return config.sweep(NAME, cells(config, params), fn=implementation_cell)


# --------------------------------------------------------------------------- the report

TORCH_LIBS = ("torch",)


def _colors() -> None:
    register_colors({n: r.color for n, r in impls.IMPLEMENTATIONS.items() if r.color})


def pooled(df: pd.DataFrame, by) -> pd.DataFrame:
    """Per `by`: rows, mean bits of error over all rows, the largest finite relative error,
    non-finite results on representable rows, and the comparison with the baseline."""
    g = df.groupby(by, sort=False)
    out = g[["count", "n_representable", "n_spurious_nonfinite", "n_differ", "n_closer",
             "n_farther", "bits_err_sum"]].sum()
    out["bits_err_mean"] = out["bits_err_sum"] / out["count"]
    grid = df[df["kind"] != "battery"].groupby(by, sort=False)  # the battery's tiny losses
    out["rel_err_max"] = grid["rel_err_max"].max()                # make relative errors of 1
    out["grad_norm_rel_max"] = grid["grad_norm_rel_max"].max()
    return out.drop(columns="bits_err_sum").reset_index()


def _label(name: str) -> str:
    return f"`{name}`"


def _findings(df: pd.DataFrame, base: str) -> list[str]:
    notes = []
    rows = df[df["reduction"] == "none"]
    per = pooled(rows, ["format", "method"])
    for fmt in formats_in(per):
        p = per[per["format"] == fmt].sort_values(["bits_err_mean", "rel_err_max"],
                                                  kind="stable")
        top = p.iloc[0]
        b = p[p["method"] == base]
        text = (f"In {fmt}, closest to the truth: {_label(top['method'])}, "
                f"{top['bits_err_mean']:.2f} bits of error per row on average over "
                f"{int(top['count'])} rows")
        if len(p) > 1:
            nxt = p.iloc[1]
            text += f"; next {_label(nxt['method'])} ({nxt['bits_err_mean']:.2f})"
        if len(b) and b.iloc[0]["method"] != top["method"]:
            text += f"; torch eager {b.iloc[0]['bits_err_mean']:.2f}"
        notes.append(text + ".")
    for fmt in formats_in(per):
        p = per[(per["format"] == fmt) & (per["method"] != base) & (per["n_differ"] > 0)]
        # torch.compile first (the disagreement maintainers ask about), then the largest
        p = p.assign(_c=p["method"] != "torch_compile").sort_values(
            ["_c", "n_differ"], ascending=[True, False], kind="stable").head(2)
        if not len(p):
            continue
        parts = [f"{_label(r['method'])} differs on {int(r['n_differ'])}/{int(r['count'])} "
                 f"rows, closer on {int(r['n_closer'])}, farther on {int(r['n_farther'])}"
                 for _, r in p.iterrows()]
        notes.append(f"In {fmt}, against torch eager ({_label(base)}): " + "; ".join(parts)
                     + ".")
    notes += _battery_findings(df)
    notes += _grad_findings(rows, base)
    bad = per[per["n_spurious_nonfinite"] > 0]
    if not len(bad):
        notes.append(f"No implementation returns a non-finite loss for a row the format can "
                     f"represent ({int(per['n_representable'].sum())} representable "
                     f"(row, format, implementation) results).")
    for _, r in bad.iterrows():
        cases = rows[(rows["format"] == r["format"]) & (rows["method"] == r["method"])
                     & (rows["n_spurious_nonfinite"] > 0)]
        where = sorted(set(cases["case"]))
        cs = sorted(set(cases["classes"].dropna().astype(int))) if "classes" in cases else []
        text = (f"{_label(r['method'])} returns inf or NaN for "
                f"{int(r['n_spurious_nonfinite'])}/{int(r['n_representable'])} representable "
                f"{r['format']} rows ({', '.join(where)}")
        if cs and where == ["classes"]:
            text += f"; C = {', '.join(str(c) for c in cs)}"
        notes.append(text + ").")
    eager = rows[rows["kernel"].fillna("") != ""]
    if len(eager):
        kernels = sorted(set(eager["kernel"]), key=impls.KERNELS.index)
        d = eager[eager["method"] != base]
        notes.append(f"ATen CPU kernels run: {', '.join(kernels)}; against {_label(base)} the "
                     f"other kernels differ on {int(d['n_differ'].sum())}/{int(d['count'].sum())} "
                     f"(row, format) losses.")
    return notes


def _grad_findings(rows: pd.DataFrame, base: str) -> list[str]:
    """Per format: the implementation whose gradient is closest to the certified one (median
    over the grid rows of the norm-wise relative error), and torch eager's."""
    d = rows[(rows["kind"] != "battery") & rows["grad_count"].notna()]
    notes = []
    for fmt in formats_in(d):
        g = d[d["format"] == fmt]
        # the median over rows, from per-cell medians weighted by rows (a summary, not exact)
        med = g.groupby("method", sort=False).apply(
            lambda h: float(np.average(h["grad_norm_rel_median"], weights=h["grad_count"])),
            include_groups=False).sort_values(kind="stable")
        bad = int(g["grad_nonfinite_rows"].sum())
        text = (f"Gradient in {fmt}: closest to the certified one {_label(med.index[0])} "
                f"(norm-wise relative error {med.iloc[0]:.2g}, row-weighted median over cells)")
        if base in med.index and med.index[0] != base:
            text += f"; torch eager {med[base]:.2g}"
        notes.append(text + f"; {bad} rows with a non-finite entry.")
    return notes


def _battery_findings(df: pd.DataFrame) -> list[str]:
    """Per adversarial case whose implementations differ by 2 bits or more (mean over the
    formats each supports): the closest and the farthest."""
    d = df[(df["kind"] == "battery") & (df["reduction"] == "none")]
    notes = []
    for case, g in d.groupby("case", sort=False):
        b = g.groupby("method", sort=False).apply(
            lambda h: h["bits_err_sum"].sum() / h["count"].sum(), include_groups=False)
        if len(b) < 2 or b.max() - b.min() < 2:
            continue
        good = [m for m, v in b.items() if v <= b.min() + 0.5]
        bad = [m for m, v in b.items() if v >= b.max() - 0.5]
        k = int(g["rows_per_case"].iloc[0])
        notes.append(f"On {case} rows, {', '.join(map(_label, good[:3]))}"
                     f"{' and others' if len(good) > 3 else ''} average {b.min():.1f} bits of "
                     f"error; {', '.join(map(_label, bad[:3]))} average {b.max():.1f} ({k} "
                     f"rows per format).")
    return notes


def _summary_table(df: pd.DataFrame, base: str) -> pd.DataFrame:
    p = pooled(df, ["format", "method", "reduction"])
    p = p.assign(_f=p["format"].map({f: i for i, f in enumerate(FORMATS)}),
                 _m=p["method"].map({m: i for i, m in enumerate(impls.IMPLEMENTATIONS)}))
    p = p.sort_values(["reduction", "_f", "_m"], ascending=[False, True, True], kind="stable")
    return pd.DataFrame({
        "format": p["format"], "implementation": p["method"], "reduction": p["reduction"],
        "results": p["count"], "mean bits of error": p["bits_err_mean"].map(lambda v: f"{v:.2f}"),
        "largest finite rel. error (grids)": p["rel_err_max"],
        "non-finite on representable": p["n_spurious_nonfinite"],
        f"differ from {base}": p["n_differ"], "closer": p["n_closer"],
        "farther": p["n_farther"],
        "largest grad error (grids)": p["grad_norm_rel_max"]}).reset_index(drop=True)


def _battery_table(df: pd.DataFrame) -> pd.DataFrame:
    d = df[(df["kind"] == "battery") & (df["reduction"] == "none")]
    d = d.assign(cell=[f"{b:.1f}" + (f" ({int(n)} non-finite)" if n else "")
                       for b, n in zip(d["bits_err_mean"], d["n_spurious_nonfinite"])])
    piv = d.pivot_table(index=["case", "format"], columns="method", values="cell",
                        aggfunc="first", sort=False).reset_index()
    piv.columns.name = None
    cols = [m for m in impls.IMPLEMENTATIONS if m in piv.columns]
    return piv[["case", "format", *cols]].fillna("n/a")


def _groups(d: pd.DataFrame) -> pd.DataFrame:
    """A panel-row key: the torch adapters in one row of panels, the other libraries in the
    next, the yardstick in both (at most about six lines a panel)."""
    lib = d["method"].map(lambda m: impls.IMPLEMENTATIONS[m].library)
    torch_rows = d[lib.isin(TORCH_LIBS) | (d["method"] == impls.YARDSTICK)]
    other = d[~lib.isin(TORCH_LIBS)]
    return pd.concat([torch_rows.assign(group="torch"), other.assign(group="other libraries")])


def _panels(d: pd.DataFrame, x: str, xlabel: str, title: str, extra_key=None):
    d = _groups(d).assign(representable_frac=lambda v: v["n_representable"] / v["count"])
    if extra_key is not None:
        d = d.assign(group=[f"{g}, s = {s:g}" for g, s in zip(d["group"], d[extra_key])])
    keys = list(dict.fromkeys(d["group"]))
    return plot_error_panels(d, x=x, row_key="group", row_values=keys, row_label=str,
                             xlabel=xlabel, bound=False, title=title)


def report(df, config, params, out_dir) -> list[dict]:
    _colors()
    base = df["baseline"].iloc[0]
    fmts = formats_in(df)
    rep = report_for(NAME, __doc__, config, out_dir, truth=truth_sentence(fmts))
    d = df[df["reduction"] == "none"]
    t1 = rep.table(_summary_table(df, base), f"Each implementation against the certified "
                   f"truth, pooled over the scale, class count and adversarial cells: results "
                   f"(rows, or batch means), Herbie's bits of error (non-finite at full width), "
                   f"the largest finite relative error on the scale and class-count grids (the "
                   f"battery's confidently correct rows have losses below ulp(1)), non-finite "
                   f"results on rows the format represents, and rows differing from torch "
                   f"eager ({base}) with which is closer.", stem="implementations",
                   headline=True)
    sc = d[d["kind"] == "scale"]
    cl = d[d["kind"] == "classes"]
    what = ("Upper row of panels: the torch adapters and the suite's yardstick; lower: the "
            "other libraries and the yardstick; errors below u/100 drawn at u/100; the strip "
            "under each panel: the fraction of non-finite rows.")
    if len(sc):
        rep.figure(_panels(sc, "scale", "logit scale s", "Median relative error of the per-row "
                           "loss against the logit scale, per implementation"), "scale",
                   "Median relative error of the per-row loss against the logit scale s. "
                   + what, headline=True)
    bt = _battery_table(df)
    rep.section("Adversarial battery")
    t2 = rep.table(bt, "Adversarial battery (16 classes): mean bits of error per row of each "
                   "implementation, with non-finite results on representable rows counted; "
                   "n/a where the library does not support the format.", stem="battery")
    battery = set(_battery_findings(df))
    for n in _findings(df, base):
        rep.finding(n, t2 if n in battery else t1)
    if len(cl):
        rep.section("Against the class count")
        rep.figure(_panels(cl, "classes", "number of classes C", "Median relative error of "
                           "the per-row loss against the class count, per implementation",
                           extra_key="scale"), "classes",
                   "Median relative error of the per-row loss against the class count C. "
                   + what, headline=not len(sc))
    shapes = sorted({(int(r), int(c)) for r, c in zip(df["rows"].fillna(0),
                                                      df["classes"].fillna(0)) if r and c})
    names = sorted(set(df["method"]), key=list(impls.IMPLEMENTATIONS).index)
    kernels = sorted({k for k in df["kernel"].fillna("") if k}, key=impls.KERNELS.index)
    rep.section("How it was run", f"Implementations: {', '.join(names)}. ATen CPU kernels run, "
                f"each in a process of its own: {', '.join(kernels)}. torch.compile: one "
                f"static graph per (shape, dtype); the grid has {len(shapes)} shapes, so at "
                f"most {len(shapes) * 4} graphs per process. Gradients: per row, for the "
                f"implementations with a gradient adapter (torch.compile and scipy have none).")
    return rep.write(out_dir)
