"""Analyze speed: how fast is each part of an analysis, against native cross entropy?

Question: throughput (logits per second) of everything `precision-lab analyze` runs, side by
side in one run on the same logits: the certified truth (`reference_truth`, disk cache off),
each emulated method variant (`numerics.methods`, every operation rounded to the format), a
whole `evaluate` of one format (truth, every variant, metrics, the DataFrame), the whole
`analyze` of a file (a subprocess: reading, chunks, report tables; its peak memory too), and
the same computation done natively: torch `F.cross_entropy` in the format's dtype (one
thread) and numpy's float64 max-shifted log-sum-exp, the baseline every ratio is taken to.
Targets (issue 11): truth within 10x of numpy, each emulated method within 3x, a whole
evaluate within 30x, and the 4096 x 128256 bfloat16 file analysed in at most 10 minutes.

Data: scale * standard normal logits rounded into the format, uniform targets, seeded; the
analysed file is bfloat16 .safetensors of `file_shape`, written into a temporary directory.

Method: each timing is the median of `repeats` calls (garbage collection paused, as timeit
does), after one untimed warm-up call (the truth's tables, numba's kernel); the parts of one
shape and format are timed round-robin (each round calls every part once, in turn), so that
a change of load touches all alike and the ratios to numpy hold. The whole-file
figure for 4096 x 128256 is measured when `file_shape` is that shape, and otherwise
extrapolated linearly from the measured file (per-logit cost; the analysis is chunked, so its
time is linear in the rows) and labelled as such. This 2-core machine is shared: the 1-minute
load average is recorded before and after; compare ratios, measured side by side.

Conclusions: generated from the data into summary.md.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from precision_lab.analysis.evaluate import evaluate
from precision_lab.numerics.formats import FORMATS
from precision_lab.numerics.methods import METHODS
from precision_lab.reporting.document import report_for
from precision_lab.reporting.figures import MARK_STYLE, method_color, plt
from precision_lab.running.provenance import median_times
from precision_lab.truth.reference import reference_truth

NAME = "analyze_speed"
TARGETS = {"truth": 10.0, "method": 3.0, "evaluate": 30.0}
LM_SHAPE = (4096, 128256)
LM_GOAL_S = 600.0
LM_GOAL_MIB = 3072.0

PROFILES = {
    "quick": {"shapes": [[16, 1000]], "formats": ["bfloat16"], "scale": 3.0, "repeats": 2,
              "file_shape": [16, 1000]},
    "full": {"shapes": [[64, 32000], [16, 128256]], "formats": ["bfloat16", "float32"],
             "scale": 3.0, "repeats": 5, "file_shape": [4096, 128256]},
}


def numpy_lse(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The baseline: float64 max-shifted log-sum-exp minus the target logit."""
    a = x.max(axis=1, keepdims=True)
    return a[:, 0] + np.log(np.exp(x - a).sum(axis=1)) - x[np.arange(len(t)), t]


def _timings(fmt_name: str, n: int, c: int, params: dict, rng) -> list[dict]:
    fmt = FORMATS[fmt_name]
    x = fmt.round(params["scale"] * rng.standard_normal((n, c)))
    t = rng.integers(0, c, n)
    reps = params["repeats"]
    xt = torch.from_numpy(x).to(fmt.torch_dtype)
    tt = torch.from_numpy(t)
    jobs = [("numpy float64 log-sum-exp", "native", lambda: numpy_lse(x, t)),
            (f"torch F.cross_entropy ({fmt_name})", "native",
             lambda: torch.nn.functional.cross_entropy(xt, tt, reduction="none")),
            ("certified truth", "truth", lambda: reference_truth(x, t, cache=False))]
    for m in METHODS.values():
        for acc in m.accumulators(fmt):
            jobs.append((f"{m.name} ({acc})", "method",
                         lambda m=m, acc=acc: m(x, t, fmt, acc)))
    jobs.append((f"evaluate ({fmt_name}, all variants)", "evaluate",
                 lambda: evaluate(x, t, formats=[fmt_name], cache=False)))
    rows = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        secs = median_times([fn for _, _, fn in jobs], reps, warmup=True)
        for (what, kind, _), s in zip(jobs, secs):
            rows.append({"format": fmt_name, "rows": n, "classes": c, "what": what,
                         "kind": kind, "seconds": s, "logits_per_s": x.size / s})
    finally:
        torch.set_num_threads(before)
    base = rows[0]["logits_per_s"]
    for r in rows:
        r["times_numpy"] = base / r["logits_per_s"]
        r["target_times_numpy"] = TARGETS.get(r["kind"], np.nan)
        r["within_target"] = bool(r["times_numpy"] <= r["target_times_numpy"]) \
            if r["kind"] in TARGETS else np.nan
    return rows


# The analysing process's own peak resident memory: VmHWM of its address space, read by the
# process itself as it exits. (getrusage's ru_maxrss of a child is not that: Linux carries the
# parent's high-water mark across fork/vfork + exec, so a parent that once held the file's
# logits would be counted.) nan where /proc is absent.
_PEAK_WRAPPER = """import sys
from precision_lab.cli import main
out = sys.argv.pop(1)
try:
    rc = main(sys.argv[1:])
finally:
    try:
        lines = [s for s in open('/proc/self/status') if s.startswith('VmHWM')]
    except OSError:
        lines = []
    with open(out, 'w') as f:
        f.write(lines[0].split()[1] if lines else '')
sys.exit(rc)
"""


def _whole_file(shape, seed: int) -> dict:
    """`precision-lab analyze` on a bfloat16 .safetensors file of `shape`, in a subprocess:
    wall time and that process's peak resident memory."""
    n, c = shape
    g = torch.Generator().manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="precision_lab_speed_") as d:
        path = Path(d) / "logits.safetensors"
        save_file({"logits": (3.0 * torch.randn(n, c, generator=g)).to(torch.bfloat16),
                   "targets": torch.randint(0, c, (n,), generator=g)}, str(path))
        env = {**os.environ, "PRECISION_LAB_CACHE": "off"}
        hwm = Path(d) / "peak_kib"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, str(hwm), "analyze", str(path),
                        "--out", str(Path(d) / "report"), "--quiet", "--workers", "1"],
                       check=True, env=env)
        wall = time.perf_counter() - t0
        text = hwm.read_text().strip() if hwm.exists() else ""
        peak = int(text) / 1024 if text else float("nan")
        size = path.stat().st_size
    return {"format": "bfloat16", "rows": n, "classes": c, "what": "analyze (whole file)",
            "kind": "file", "seconds": wall, "logits_per_s": n * c / wall,
            "file_bytes": size, "peak_rss_mib": peak}


def run(config, params) -> pd.DataFrame:
    load_before = os.getloadavg()[0]
    rows = []
    for i, (f, (n, c)) in enumerate((f, s) for s in params["shapes"] for f in params["formats"]):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, i]))
        rows += _timings(f, n, c, params, rng)
    rows.append(_whole_file(params["file_shape"], config.seed))
    df = pd.DataFrame(rows)
    df["load_avg_1min_before"] = load_before
    df["load_avg_1min_after"] = os.getloadavg()[0]
    return df


def _pivot(d: pd.DataFrame, values: str, suffix: str) -> pd.DataFrame:
    table = d.pivot_table(index="what", columns=["format", "rows", "classes"], values=values,
                          sort=False)
    table.columns = [f"{f} {n}x{c}{suffix}" for f, n, c in table.columns]
    return table.reset_index()


# Bar colours: a method in its family's colour (the records'), the rest Okabe-Ito neutrals.
KIND_COLOR = {"native": "#999999", "truth": "#000000", "evaluate": "#CC79A7"}


def _bar_color(what: str, kind: str) -> str:
    return method_color(what.split(" (")[0]) if kind == "method" else KIND_COLOR.get(kind,
                                                                                    "#56B4E9")


def speed_figure(timed: pd.DataFrame):
    """One panel per (format, shape): each part's time per logit as a multiple of numpy's, a
    bar each (methods in their family's colour), its target marked by a black tick."""
    groups = list(timed.groupby(["format", "rows", "classes"], sort=False))
    n = len(groups[0][1]) if groups else 1
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups) + 1.6, 0.2 * n + 1.3),
                             squeeze=False)  # own rows and labels per panel
    for ax, ((fmt, r, c), g) in zip(axes[0], groups):
        y = np.arange(len(g))[::-1]
        ax.barh(y, g["times_numpy"], color=[_bar_color(w, k) for w, k in
                                           zip(g["what"], g["kind"])], height=0.7)
        tg = g["target_times_numpy"].to_numpy(dtype=float)
        ax.plot(tg, y, "|", color="white", markersize=11, markeredgewidth=3.6)  # a halo
        ax.plot(tg, y, "|", color="black", markersize=9, markeredgewidth=1.6)
        ax.set_xscale("log")
        ax.axvline(1.0, **MARK_STYLE, linestyle=":")
        ax.set_yticks(y)
        ax.set_yticklabels(g["what"], fontsize=7)
        ax.set_title(f"{fmt}, {r} x {c} logits", fontsize=9)
        ax.set_xlabel("time per logit / numpy float64 log-sum-exp", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle("Each part of an analysis against numpy (lower is faster; tick: target)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def report(df: pd.DataFrame, config, params, out_dir) -> list[dict]:
    load = (f"{df['load_avg_1min_before'].iloc[0]:.2f} before, "
            f"{df['load_avg_1min_after'].iloc[0]:.2f} after")
    rep = report_for(NAME, __doc__, config, out_dir,
                     truth=f"Medians of {params['repeats']} calls after a warm-up, timed "
                           f"round-robin; 1-minute load average {load} (2 shared cores).")
    timed = df[df["kind"] != "file"]
    t1 = rep.table(_pivot(timed, "times_numpy", " (x numpy)"), "Time per logit of each part "
                   "of an analysis, as a multiple of numpy's float64 max-shifted log-sum-exp "
                   "on the same logits in the same run (lower is faster).", stem="times",
                   headline=True)
    rep.figure(speed_figure(timed), "speed", "Time per logit against numpy's, one bar "
                    "per part (methods in their family's colour; grey native, black the "
                    "certified truth, purple a whole evaluate), the target as a black tick.",
                    headline=True)
    for kind, goal in TARGETS.items():
        d = timed[timed["kind"] == kind]
        ok = int(d["within_target"].astype(bool).sum())
        rep.finding(f"{kind}: within {goal:g}x of numpy in {ok} of {len(d)} measurements "
                    f"(from {d['times_numpy'].min():.3g}x to {d['times_numpy'].max():.3g}x).",
                    t1)
    f = df[df["kind"] == "file"].iloc[0]
    lm = LM_SHAPE[0] * LM_SHAPE[1]
    measured = (int(f["rows"]), int(f["classes"])) == LM_SHAPE
    if measured:
        whole = f"{f['seconds']:.0f} s (measured)"
    elif f["rows"] * f["classes"] >= 1 << 22:
        whole = (f"{lm / f['logits_per_s']:.0f} s (EXTRAPOLATED linearly from the measured "
                 f"file, not measured)")
    else:
        whole = "not estimated (the measured file is too small: start-up dominates)"
    rep.section("The whole file")
    t3 = rep.table(pd.DataFrame([{"rows": int(f["rows"]), "classes": int(f["classes"]),
                                  "file bytes": int(f["file_bytes"]), "seconds": f["seconds"],
                                  "logits/s": f["logits_per_s"],
                                  "peak RSS MiB": f["peak_rss_mib"]}]),
                   "`precision-lab analyze` on a bfloat16 .safetensors file (a subprocess, "
                   "its defaults: bfloat16, every variant): wall time and peak resident "
                   "memory of one call (not a median: the file is analysed once, its "
                   "process's start and imports included).", stem="whole_file")
    rep.finding(f"Whole file: `precision-lab analyze` on {int(f['rows'])} x "
                f"{int(f['classes'])} bfloat16 logits took {f['seconds']:.1f} s "
                f"({f['logits_per_s']:.3g} logits/s), peak RSS {f['peak_rss_mib']:.0f} MiB "
                f"(goal {LM_GOAL_MIB:.0f} MiB; the process's own VmHWM).",
                t3)
    rep.finding(f"4096 x 128256 bfloat16 (goal {LM_GOAL_S:.0f} s): {whole}.", t3)
    rep.section("Throughput")
    rep.table(_pivot(timed, "logits_per_s", ""), "Throughput (logits per second) of each part "
              "of an analysis.", stem="throughput")
    return rep.write(out_dir)
