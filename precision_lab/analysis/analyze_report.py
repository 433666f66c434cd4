"""The report of `analyze`: tables, findings generated from the data, a figure, metadata.

Written into a staging directory that replaces OUT whole (`running.storage.replace_dir`), with
the experiments' writers: results.csv (`write_csv`), summary.md / summary.tex, error.png/.pdf
(`save_figure`), findings.json and metadata.json (`write_metadata`: the file's name, size and
SHA-256, the rows analysed and how they were chosen, the chunking, wall time, peak memory).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..numerics.formats import get_format
from ..numerics.metrics import NONFINITE, OUTCOMES
from ..reporting.figures import floored, plt, save_figure, variant_label, variant_style
from ..reporting.tables import markdown_table, write_csv, write_latex
from ..running.provenance import peak_memory_mib, write_metadata
from ..running.storage import atomic_write, exclusive, recover_dir, replace_dir
from .analyze import QUANTILE_METHOD, ROW_STATS, Analysis, analyze
from .option_args import add_option_arguments, options_from_args

__all__ = ["findings", "write_report", "add_arguments", "cli", "error_table", "row_stat_table",
           "worst_rows",
           "mean_table", "WORST"]

WORST = 8
_STAT_LABEL = {"max_logit": "largest logit", "top2_gap": "gap between the top two logits",
               "lse": "log-sum-exp", "loss": "true loss"}


def _label(method: str, acc: str) -> str:
    return variant_label(method, acc)


def _q(v, q):
    v = np.asarray(v, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(np.quantile(v, q, method=QUANTILE_METHOD)) if len(v) else np.nan


def error_table(a: Analysis, fmt: str) -> pd.DataFrame:
    r = a.results
    r = r[(r["format"] == fmt) & (r["reduction"] == "none")]
    out = pd.DataFrame({"method": [_label(m, c) for m, c in zip(r["method"], r["accumulator"])]})
    for o in OUTCOMES[1:]:
        out[o] = r[f"n_{o}"].to_numpy().astype(int)
    for k in ("ulp_err", "rel_err"):
        for s in ("median", "p99", "max"):
            out[f"{k.split('_')[0]} {s}"] = r[f"{k}_{s}"].to_numpy()
    out["BHH within"] = [f"{int(w)}/{int(c)}" if np.isfinite(f) else "-" for w, c, f in
                         zip(r["bhh_n_within"], r["bhh_n_checked"], r["bhh_within_frac"])]
    return out


def row_stat_table(a: Analysis, fmt: str) -> pd.DataFrame:
    d = a.rows[a.rows["format"] == fmt].drop_duplicates("row")
    recs = []
    for s in ROW_STATS:
        v = d[s].to_numpy(dtype=np.float64)
        recs.append({"statistic": _STAT_LABEL[s], "min": _q(v, 0.0), "median": _q(v, 0.5),
                     "p99": _q(v, 0.99), "max": _q(v, 1.0),
                     "non-finite rows": int(np.sum(~np.isfinite(v)))})
    return pd.DataFrame(recs)


def worst_rows(a: Analysis, fmt: str, k: int = WORST) -> pd.DataFrame:
    """The k rows with the largest error over the variants (Herbie bits; a non-finite result
    counts as the full width), each method's value beside the truth."""
    d = a.rows[a.rows["format"] == fmt]
    score = d.groupby("row", sort=True)["bits_err"].max()
    ulp = d.assign(u=d["ulp_err"].fillna(np.inf)).groupby("row", sort=True)["u"].max()
    order = pd.DataFrame({"bits": score, "ulp": ulp}).reset_index()
    order = order.sort_values(["bits", "ulp", "row"], ascending=[False, False, True],
                              kind="mergesort").head(k)
    base = d.drop_duplicates("row").set_index("row")
    out = pd.DataFrame({"row": order["row"].to_numpy()})
    for col, name in (("target", "target"), ("max_logit", "largest logit"),
                      ("top2_gap", "top-2 gap"), ("lse", "lse"), ("truth", "true loss")):
        out[name] = base.loc[out["row"], col].to_numpy()
    # dropna=False: a row where every variant gives nan (a nan logit, every class masked) is
    # among the worst and must stay in the table
    vals = d.pivot_table(index="row", columns=["method", "accumulator"], values="computed",
                         aggfunc="first", sort=False, dropna=False)
    for (m, c) in dict.fromkeys(zip(d["method"], d["accumulator"])):
        out[_label(m, c)] = vals.loc[out["row"], (m, c)].to_numpy()
    return out


def mean_table(a: Analysis, fmt: str) -> pd.DataFrame:
    m = a.means[a.means["format"] == fmt]
    return pd.DataFrame({"method": [_label(x, c) for x, c in zip(m["method"], m["accumulator"])],
                         "batch mean": m["computed"].to_numpy(), "truth": m["truth"].to_numpy(),
                         "ulp error": m["ulp_err"].to_numpy(), "outcome": m["outcome"].to_numpy()})


def _separation(rows: pd.DataFrame, bad: np.ndarray, fmt) -> str:
    """The row statistic and threshold that best separate the non-finite rows from the
    others (fewest rows on the wrong side), stated in counts; '' if none is informative."""
    best = None
    for s in ("max_logit", "lse", "loss", "top2_gap"):
        v = rows[s].to_numpy(dtype=np.float64)
        if np.isnan(v).any():
            continue
        order = np.argsort(v, kind="mergesort")
        vs, b = v[order], bad[order].astype(np.int64)
        # threshold after position k (rows 0..k-1 below): wrong = bad below + good above
        bad_below = np.concatenate([[0], np.cumsum(b)])
        good_above = np.concatenate([[0], np.cumsum((1 - b)[::-1])])[::-1]
        wrong = bad_below + good_above
        cut = np.flatnonzero(np.r_[True, vs[1:] != vs[:-1], True])  # between distinct values
        k = int(cut[np.argmin(wrong[cut])])
        if best is None or wrong[k] < best[0]:
            best = (int(wrong[k]), s, vs, b, k)
    if best is None or best[4] in (0, len(bad)) and best[0]:
        return ""
    wrong, s, vs, b, k = best
    name = _STAT_LABEL[s]
    thr = vs[k] if k < len(vs) else vs[-1]
    above, below = b[k:], b[:k]
    mark = ""
    if s in ("max_logit", "lse") and (k == 0 or vs[k - 1] <= fmt.overflow_logit) \
            and (k == len(vs) or fmt.overflow_logit < vs[k]):
        mark = f"; log(max finite) = {fmt.overflow_logit:.4g} lies at the boundary"
    if wrong == 0:
        return f": exactly the rows whose {name} is at least {thr:.4g}{mark}"
    return (f": {int(above.sum())} of the {len(above)} rows whose {name} is at least "
            f"{thr:.4g}, and {int(below.sum())} of the {len(below)} below it{mark}")


def findings(a: Analysis) -> list[str]:
    """Statements generated from the analysis, in counts, scoped to this file's rows."""
    out = []
    n = a.n_rows
    how = (f"a seeded sample of {n} of the file's {a.info.rows} rows (seed {a.seed})"
           if a.sample_rows else f"all {n} rows of the file")
    out.append(f"Analysed {how}, as stored ({a.info.stored_format or 'not one of the formats'}"
               f"; {a.info.classes} classes), with no rescaling, in "
               f"{', '.join(a.formats)}.")
    if a.options is not None:
        out.append(_options_finding(a))
    for fname in a.formats:
        fmt = get_format(fname)
        d = a.rows[a.rows["format"] == fname]
        for (m, c), g in d.groupby(["method", "accumulator"], sort=False):
            outc = g["outcome"].to_numpy()
            bad = np.isin(outc, NONFINITE)
            if bad.any():
                kinds = ", ".join(f"{int(np.sum(outc == o))} {o}" for o in NONFINITE
                                  if np.any(outc == o))
                rep = g["representable"].to_numpy(dtype=bool)
                spur = int(np.sum(bad & rep))
                out.append(f"{_label(m, c)} in {fname} gives a non-finite loss on "
                           f"{int(bad.sum())} of {len(g)} rows ({kinds})"
                           f"{_separation(g, bad, fmt)}; {spur} of them have a finite true "
                           f"loss and log-sum-exp in {fname}.")
        r = a.results[(a.results["format"] == fname) & (a.results["reduction"] == "none")]
        fin = r[r["n_finite"] + r["n_zero"] == r["count"]]
        if len(fin):
            best = fin.sort_values(["ulp_err_max", "ulp_err_median"], kind="mergesort").iloc[0]
            worst = fin.sort_values(["ulp_err_max"], kind="mergesort").iloc[-1]
            out.append(f"In {fname}, {len(fin)} of {len(r)} variants are finite on every row; "
                       f"the most accurate is {_label(best['method'], best['accumulator'])} "
                       f"(median {best['ulp_err_median']:.3g}, max {best['ulp_err_max']:.3g} "
                       f"ULPs), the least {_label(worst['method'], worst['accumulator'])} "
                       f"(max {worst['ulp_err_max']:.3g} ULPs).")
        b = r[np.isfinite(r["bhh_within_frac"])]
        for _, row in b.iterrows():
            w, k = int(row["bhh_n_within"]), int(row["bhh_n_checked"])
            verdict = "holds" if w == k else "is exceeded"
            out.append(f"The BHH bound {verdict} for {_label(row['method'], row['accumulator'])}"
                       f" in {fname} on {w} of {k} rows with a finite result and bound.")
        mt = mean_table(a, fname)
        ok = mt[(mt["outcome"] == "finite") & (mt["ulp error"] <= 1.0)]
        out.append(f"Batch {a.reduction} in {fname}: true value {mt['truth'].iloc[0]:.6g}; {len(ok)} of "
                   f"{len(mt)} variants give it within 1 ULP"
                   + ("" if len(mt[mt["outcome"] != "finite"]) == 0 else
                      "; non-finite: " + ", ".join(mt.loc[mt["outcome"] != "finite", "method"]))
                   + ".")
    return out


def _options_caption(a: Analysis) -> str:
    return "" if a.options is None else f", training options: {a.options.label()}"


def _options_finding(a: Analysis) -> str:
    """The training options, the ignored rows (each variant's loss on them, counted) and the
    methods left out."""
    text = (f"Training options: {a.options.label()} (torch's semantics, "
            f"precision_lab.numerics.options); truth and methods under them, the batch "
            f"reduction '{a.reduction}' formed from each method's per-row losses.")
    k = a.n_ignored
    text += f" {k} of the {a.n_rows} analysed rows have target ignore_index " \
            f"({a.options.ignore_index}) and are ignored (loss 0)"
    if k:
        d = a.rows[a.rows["ignored"].astype(bool)]
        zero = d.groupby(["format", "method", "accumulator"], sort=False)["computed"].apply(
            lambda v: bool((v.to_numpy() == 0).all()))
        text += f"; {int(zero.sum())} of {len(zero)} variants give 0 on every one of them"
    text += "."
    if a.skipped:
        text += " Skipped: " + "; ".join(f"{m} ({why})" for m, why in a.skipped.items()) + "."
    return text


def _nonfinite_position(d) -> float:
    """Where the error figure draws non-finite results: a power of ten above every finite
    error of the panel (and at least 1e12), so that no finite error is drawn as non-finite."""
    v = d["ulp_err"].to_numpy(dtype=np.float64)
    v = v[np.isfinite(v) & np.isfinite(d["computed"].to_numpy(dtype=np.float64))]
    worst = max(float(v.max()) if v.size else 0.0, 1e11)
    return float(10.0 ** (np.floor(np.log10(worst)) + 1))


def _figure(a: Analysis, out_dir: Path) -> None:
    fig, axes = plt.subplots(1, len(a.formats), figsize=(5.2 * len(a.formats), 3.8),
                             squeeze=False)
    for ax, fname in zip(axes[0], a.formats):
        u = get_format(fname).unit_roundoff
        d = a.rows[a.rows["format"] == fname]
        top = _nonfinite_position(d)
        for (m, c), g in d.groupby(["method", "accumulator"], sort=False):
            v = g["ulp_err"].to_numpy(dtype=np.float64)
            v = np.where(np.isfinite(g["computed"].to_numpy()), v, np.inf)
            v = np.sort(np.where(np.isinf(v), top, floored(v, 1e-3, top)))
            style = {k: val for k, val in variant_style(m, c).items() if k != "marker"}
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post",
                    label=_label(m, c), **style)
        ax.set_xscale("log")
        ax.set_xlabel(f"error in ULPs of {fname}\n(non-finite drawn at {top:.0e}, exact at 1e-3)")
        ax.set_ylabel("fraction of rows at or below")
        ax.set_title(f"{fname} (u = {u:.3g}), {a.n_rows} rows")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    save_figure(fig, out_dir, "error")
    plt.close(fig)


def _summary(a: Analysis, notes: list[str]) -> str:
    parts = [f"# Analysis of {Path(a.path).name}\n",
             f"File: `{Path(a.path).name}`, {a.info.size} bytes, SHA-256 `{a.sha256}`; "
             f"{a.info.rows} rows x {a.info.classes} classes, logits stored as "
             f"{a.info.stored_format or 'numbers outside the formats'}. Rows analysed: "
             + (f"{a.n_rows}, a seeded sample (seed {a.seed}), in file order" if a.sample_rows
                else f"all {a.n_rows}") + f". In {len(a.chunks)} chunk(s) of at most "
             f"{a.meta.get('chunk_rows')} rows (memory budget {a.memory / 2**20:.0f} MiB). "
             "Ground truth: the certified loss (at least 100 correct bits) of the logits as "
             "held in each format. Quantiles are observed values (the smallest with at least "
             "that fraction of rows at or below it)."
             + ("" if a.options is None else
                f" Training options: {a.options.label()}; {a.n_ignored} row(s) ignored"
                + ("" if not a.skipped else "; skipped: " + "; ".join(
                    f"{m} ({why})" for m, why in a.skipped.items()))
                + ". The BHH bound covers plain cross entropy only: not checked here.")
             + "\n",
             "## Findings\n", "\n".join(f"- {t}" for t in notes) + "\n"]
    for fname in a.formats:
        parts += [f"## {fname}\n",
                  "Per method and accumulator: non-finite results by outcome, error in ULPs "
                  "and relative (median, 99th percentile, max over rows with a finite result), "
                  "and the Blanchard-Higham-Higham bound (rows within / rows checked).\n",
                  markdown_table(error_table(a, fname)),
                  f"\nRow statistics ({fname} values):\n", markdown_table(row_stat_table(a, fname)),
                  f"\nWorst {WORST} rows (largest error over the methods):\n",
                  markdown_table(worst_rows(a, fname)),
                  f"\nBatch {a.reduction} (reduction='{a.reduction}'):\n",
                  markdown_table(mean_table(a, fname))]
    parts.append("\n## Figure\n\n![error](error.png)\n")
    return "\n".join(parts)


def write_report(a: Analysis, out_dir, wall_time_s: float | None = None,
                 command: str = "analyze") -> Path:
    """Write the report of `a` into `out_dir`, replaced whole; `command`: what made it (the
    CLI passes its command line), recorded in metadata.json."""
    final = Path(out_dir)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final} exists and is not a directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(final.parent / f".{final.name}.lock",
                   f"another analysis is writing to {final}", remove=True):
        recover_dir(final)
        staging = final.parent / f".{final.name}.staging"
        staging.mkdir(parents=True)
        try:
            notes = findings(a)
            write_csv(a.results, staging / "results.csv")
            _figure(a, staging)
            with atomic_write(staging / "summary.md") as f:
                f.write(_summary(a, notes))
            first = a.formats[0]
            write_latex(error_table(a, first), staging / "summary.tex",
                        caption=f"Errors of each method on {Path(a.path).name} in {first}"
                                f"{_options_caption(a)}",
                        label="tab:analyze")
            with atomic_write(staging / "findings.json") as f:
                json.dump({"name": final.name, "title": f"Analysis of {Path(a.path).name}",
                           "findings": [{"text": t, "link": "summary.md"} for t in notes]},
                          f, indent=2)
                f.write("\n")
            write_metadata(staging, command=command, file_name=Path(a.path).name,
                           file_path=str(a.path), file_size=a.info.size, file_sha256=a.sha256,
                           file_rows=a.info.rows, classes=a.info.classes,
                           stored_format=a.info.stored_format, rows_analysed=a.n_rows,
                           sampled=bool(a.sample_rows), sample_seed=a.seed if a.sample_rows
                           else None, formats=a.formats, methods=a.methods,
                           memory_budget_bytes=a.memory, chunks=len(a.chunks), **a.meta,
                           options=None if a.options is None else asdict(a.options),
                           rows_ignored=a.n_ignored, skipped_methods=a.skipped,
                           wall_time_s=None if wall_time_s is None else round(wall_time_s, 2),
                           **peak_memory_mib())
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replace_dir(staging, final)
    return final


def add_arguments(p) -> None:
    """The options of `precision-lab analyze`."""
    p.add_argument("file", type=Path, help="logits and targets: .npz, .npy, .csv, .pt or "
                   ".safetensors")
    p.add_argument("--formats", nargs="+", default=None,
                   help="formats (default: the file's own dtype if it is one, else float16 "
                        "bfloat16 float32 float64); names from `precision-lab list` or "
                        "p=P,emin=EMIN,emax=EMAX[,round=sr]")
    p.add_argument("--methods", nargs="+", default=None, help="methods (default: all)")
    p.add_argument("--out", type=Path, default=None,
                   help="report directory (default: analysis/<file stem>)")
    p.add_argument("--rows", type=int, default=None,
                   help="analyse a seeded sample of N rows (default: every row)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (with --rows)")
    p.add_argument("--memory", default="512MiB",
                   help="working-memory budget of the chunks running at once (default 512MiB)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--scheduler", default=None, help="a Dask distributed scheduler address")
    p.add_argument("--quiet", action="store_true", help="no progress bar or closing line")
    add_option_arguments(p, "training options (torch's names; see "
                            "precision_lab.numerics.options): the truth and the methods "
                            "under them; a target equal to --ignore-index is an ignored row")


def cli(args) -> int:
    out = args.out or Path("analysis") / Path(args.file).stem
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    start = time.perf_counter()
    a = analyze(args.file, formats=args.formats, methods=args.methods, rows=args.rows,
                seed=args.seed, memory=args.memory, workers=args.workers,
                scheduler=args.scheduler, quiet=args.quiet,
                checkpoint_dir=out.parent / ".checkpoints" / f"analyze-{out.name}",
                options=options_from_args(args))
    final = write_report(a, out, wall_time_s=time.perf_counter() - start,
                         command=getattr(args, "command_line", "analyze"))
    if not args.quiet:
        print(f"analyze: {a.n_rows} rows of {Path(args.file).name} -> {final} in "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
