"""The exhaustive check of fast32's exp, tanh and log: every float32 input (all 2**32 bit
patterns, nans, infinities, zeros and subnormals included), its float32 result by the plain
float64 path against the path it replaces, bit for bit:
  exp:  `fastelem.exp_plain` (fast32's kernel, uncertain elements settled by the double-double
        path) against `fastelem.exp_compiled` (`elementary._exp_dd` and `_round` compiled, its
        own uncertain elements settled by arb);
  tanh: `fastelem.tanh_plain` against `elementary.compute("tanh")` (the numpy double-double
        path and arb);
  log:  `fastelem.log_plain` against `elementary.compute("log")`.

    python -m precision_lab.numerics.fast32_check [--function exp|tanh|log] [--chunk-bits 22]
        [--start 0] [--stop 2**32] [--json FILE]

prints the inputs checked, those whose results disagree (the check fails unless 0), those
fast32's kernel left uncertain (fell back), and how many it answered without evaluation
(outside [XLO, XHI] for exp, |x| >= 40 or below 2**(qmin - 2) for tanh, x <= 0, 1 or inf
for log, or nan).
Single-threaded; run it at low priority (`nice -n 19`) on a shared machine: about three
minutes for exp, five for tanh and six for log (their reference is numpy's).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from . import elementary, fast32, fastelem
from .formats import FORMATS

__all__ = ["check", "main"]


def _inputs(start: int, stop: int) -> np.ndarray:
    """The float32 values of bit patterns [start, stop), as float64 (signalling nans quieted,
    silently)."""
    with np.errstate(invalid="ignore"):
        return np.arange(start, stop, dtype=np.uint64).astype(np.uint32).view(np.float32) \
            .astype(np.float64)


def _paths(function: str, fmt):
    """(the plain path, the kernel alone, the reference, mask of evaluated inputs) for
    `function`."""
    if function == "exp":
        lo, hi = fast32.limits(fmt)
        return (fastelem.exp_plain, fast32.exp_f32, fastelem.exp_compiled,
                lambda x: (x >= lo) & (x <= hi))
    if function == "log":
        return (fastelem.log_plain, fast32.log_f32,
                lambda x, f: elementary.compute("log", x, f)[0],
                lambda x: (x > 0) & (x < np.inf) & (x != 1))
    tiny = 2.0 ** (fmt.emin - fmt.precision - 1)
    return (fastelem.tanh_plain, fast32.tanh_f32,
            lambda x, f: elementary.compute("tanh", x, f)[0],
            lambda x: (np.abs(x) >= tiny) & (np.abs(x) < fast32.TANH_MAX))


def check(start: int = 0, stop: int = 1 << 32, chunk_bits: int = 22, progress=None,
          function: str = "exp") -> dict:
    """Counts of the comparison over bit patterns [start, stop) (see the module docstring)."""
    fmt = FORMATS["float32"]
    plain, kernel, reference, evaluated = _paths(function, fmt)
    counts = {"checked": 0, "disagree": 0, "fell_back": 0, "outside_or_nan": 0,
              "first_disagreements": []}
    step = 1 << chunk_bits
    t0 = time.time()
    for a in range(start, stop, step):
        b = min(a + step, stop)
        x = _inputs(a, b)
        out = np.empty_like(x)
        idx = kernel(x, fmt, out)
        got = plain(x, fmt)
        ref = reference(x, fmt)
        bad = np.flatnonzero(got.view(np.uint64) != ref.view(np.uint64))
        counts["checked"] += x.size
        counts["disagree"] += int(bad.size)
        counts["fell_back"] += 0 if idx is None else int(idx.size)
        with np.errstate(invalid="ignore"):
            counts["outside_or_nan"] += int(np.count_nonzero(~evaluated(x)))
        for j in bad[:max(0, 20 - len(counts["first_disagreements"]))]:
            counts["first_disagreements"].append(
                {"bits": f"{a + int(j):#010x}", "x": float(x[j]), "fast": float(got[j]),
                 "reference": float(ref[j])})
        if progress is not None:
            progress(b, counts, time.time() - t0)
    counts["seconds"] = round(time.time() - t0, 1)
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m precision_lab.numerics.fast32_check",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--start", type=lambda s: int(s, 0), default=0)
    ap.add_argument("--stop", type=lambda s: int(s, 0), default=1 << 32)
    ap.add_argument("--chunk-bits", type=int, default=22)
    ap.add_argument("--function", choices=("exp", "tanh", "log"), default="exp")
    ap.add_argument("--json", default=None, help="also write the counts to this file")
    args = ap.parse_args(argv)

    def progress(done, c, s):
        if (done - args.start) % (1 << 28) == 0 or done == args.stop:
            print(f"{done:#011x}: checked {c['checked']}, disagree {c['disagree']}, "
                  f"fell back {c['fell_back']} ({s:.0f} s)", flush=True)
    bound = {"exp": fast32.BOUND, "tanh": fast32.TANH_BOUND, "log": fast32.LOG_BOUND}[
        args.function]
    counts = {"function": args.function, "range": [args.start, args.stop], "bound": bound,
              **check(args.start, args.stop, args.chunk_bits, progress, args.function)}
    print(json.dumps(counts, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(counts, f, indent=1)
            f.write("\n")
    return 0 if counts["disagree"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
