"""reference_speed: how fast is the certified ground truth?

Question: throughput (logits per second) of precision_lab's certified reference (the default
arb + fixed-point backend, disk cache disabled) against a plain per-element mpmath loop at the
same precision, and against numpy float64 log-sum-exp, side by side in one run. Goal: at
least 40x the plain mpmath loop, with the same >= 100-bit guarantee.

Data: logits = scale * standard normal, rounded correctly into each format, for every C x scale
x format of the profile; targets uniform. Seeded.

Method: each timing is a median over `repeats` runs (time.perf_counter, garbage collection
paused while timing, as timeit does). The reference gets
one untimed warm-up run first (it fills per-process exp tables; its time is reported as
`ref_cold_s`). The plain mpmath loop works at the precision the certified mpmath path starts at
(bits + 24 + log2 C bits) and evaluates once, without the second evaluation that certifies it,
which favours it; for large batches it is timed on a sample of logits (at least
`mpmath_sample` logits: whole rows, or the first elements of one row when C is larger) and
reported per logit (`mpmath_sampled_logits` says how many). numpy is the stable float64
log-sum-exp over the whole batch.
"""
from __future__ import annotations

import gc
import math
import time

import mpmath
import numpy as np
import pandas as pd

from precision_lab.formats import FORMATS
from precision_lab.reference import DEFAULT_BITS, reference_truth

GOAL = 40.0

PROFILES = {
    "quick": {"classes": [10, 1000], "scales": [1.0, 1000.0], "formats": list(FORMATS),
              "logits": 20_000, "repeats": 3, "mpmath_sample": 2_000, "bits": DEFAULT_BITS},
    "full": {"classes": [10, 1000, 32000, 262144], "scales": [1.0, 10.0, 1000.0],
             "formats": list(FORMATS), "logits": 1 << 20, "repeats": 3,
             "mpmath_sample": 20_000, "bits": DEFAULT_BITS},
}


def _median_time(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls, garbage collection paused while timing (as timeit
    does), so a collection of an earlier cell's objects is not charged to this one."""
    times = []
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return float(np.median(times))


def plain_mpmath(x: np.ndarray, t: np.ndarray, prec: int) -> list:
    """The baseline: per row, mpmath.exp of every logit minus the maximum, fsum, log."""
    out = []
    with mpmath.workprec(prec):
        for row, ti in zip(x.tolist(), t.tolist()):
            a = mpmath.mpf(max(row))
            s = mpmath.fsum(mpmath.exp(mpmath.mpf(v) - a) for v in row)
            out.append(mpmath.log(s) + (a - mpmath.mpf(row[ti])))
    return out


def numpy_lse(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    a = x.max(axis=1, keepdims=True)
    lse = a[:, 0] + np.log(np.exp(x - a).sum(axis=1))
    return lse - x[np.arange(len(t)), t]


def _cell(fmt: str, c: int, scale: float, cfg: dict, rng: np.random.Generator) -> dict:
    n = max(1, cfg["logits"] // c)
    x = FORMATS[fmt].round(scale * rng.standard_normal((n, c)))
    t = rng.integers(0, c, n)
    bits = cfg["bits"]
    reps = cfg["repeats"]

    def ours():
        return reference_truth(x, t, bits, cache=False)

    t0 = time.perf_counter()
    ours()
    cold = time.perf_counter() - t0
    t_ref = _median_time(ours, reps)

    prec = bits + 24 + int(math.log2(max(c, 2)))
    sample = cfg["mpmath_sample"]
    if c >= sample:
        xs, ts = x[:1, :sample], np.array([min(int(t[0]), sample - 1)])
    else:
        k = min(n, -(-sample // c))
        xs, ts = x[:k], t[:k]
    t_mp = _median_time(lambda: plain_mpmath(xs, ts, prec), reps)
    t_np = _median_time(lambda: numpy_lse(x, t), max(reps, 5))

    ref_rate = x.size / t_ref
    mp_rate = xs.size / t_mp
    np_rate = x.size / t_np
    return {"format": fmt, "classes": c, "scale": scale, "rows": n, "logits": x.size,
            "bits": bits, "mpmath_prec": prec,
            "ref_logits_per_s": ref_rate, "mpmath_logits_per_s": mp_rate,
            "numpy_logits_per_s": np_rate,
            "speedup_vs_mpmath": ref_rate / mp_rate, "numpy_over_ref": np_rate / ref_rate,
            "goal_met": ref_rate / mp_rate >= GOAL,
            "ref_cold_s": cold, "ref_median_s": t_ref,
            "mpmath_sampled_logits": xs.size, "repeats": reps}


def run(profile: str = "quick", seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """One row per C x scale x format: the three throughputs and their ratios."""
    cfg = PROFILES[profile]
    rng = np.random.default_rng(seed)
    cells = [(f, c, s) for c in cfg["classes"] for s in cfg["scales"] for f in cfg["formats"]]
    if progress:
        from tqdm import tqdm
        cells = tqdm(cells, desc="reference_speed")
    return pd.DataFrame([_cell(f, c, s, cfg, rng) for f, c, s in cells])


if __name__ == "__main__":  # pragma: no cover - a manual look until the framework runs it
    import sys
    pd.set_option("display.width", 200)
    df = run(sys.argv[1] if len(sys.argv) > 1 else "quick")
    print(df[["format", "classes", "scale", "ref_logits_per_s", "mpmath_logits_per_s",
              "numpy_logits_per_s", "speedup_vs_mpmath", "ref_cold_s"]].to_string())
