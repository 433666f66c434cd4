"""Threads for the compiled kernels, a matter of speed only; every layer may import it.

The kernels that run here on threads (`numba.njit(nogil=True)`) work on independent rows or
elements: each thread takes a range of them and computes exactly what one thread computes
for them, so every result is the same bits on any number of threads. `count()` says how
many a kernel may use: `using(n)`'s n inside such a block of the calling thread, else
`THREADS`, else $PRECISION_LAB_THREADS, else every core this process may run on (sweep
workers set THREADS = 1: there the workers are the parallelism). `ranges` splits work, `run`
runs a kernel over the ranges.

Split so: the truth's per-logit sums (`truth.fastref._sums_threads`, rows), `fastround`'s
rounding (elements) and subtraction (rows), fast32's exp (elements) and fused exp(a - b)
(rows), `fastelem`'s bfloat16 look-ups (elements) and native sums (rows). Tested the same
bits as one thread (`tests/test_threads.py`). Below MIN_SPLIT per thread a call stays
on one; `analyze_speed` and `reference_speed` time one thread beside the default.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .errors import InputError

__all__ = ["count", "using", "ranges", "run", "THREADS", "MIN_SPLIT"]

THREADS = None               # None: $PRECISION_LAB_THREADS, else every core this process may use
MIN_SPLIT = 1 << 21          # elements (or kept logits) per thread at least; fewer: one thread


_LOCAL = threading.local()   # `using`'s setting, per calling thread


def count() -> int:
    """The threads a kernel called from this thread may use (the module docstring says which);
    a bad $PRECISION_LAB_THREADS is an `InputError` naming it."""
    n = getattr(_LOCAL, "n", None)
    if n is not None:
        return n
    if THREADS is not None:
        return max(1, int(THREADS))
    env = os.environ.get("PRECISION_LAB_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise InputError(f"PRECISION_LAB_THREADS must be a positive integer, got {env!r}")
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def using(n: int | None):
    """count() = n for kernels this thread calls inside the block (None: as outside any
    block), restored after it; other threads are not touched."""
    old = getattr(_LOCAL, "n", None)
    _LOCAL.n = None if n is None else max(1, int(n))
    try:
        yield
    finally:
        _LOCAL.n = old


def ranges(n: int, size: int, start=None) -> list[int]:
    """Bounds 0 = b_0 < b_1 < ... < b_k = n of k <= count() ranges of the n items (rows or
    elements) holding `size` units of work, each range at least MIN_SPLIT of them (k = 1
    where fewer); `start`: the work before each item (n + 1 ascending values, start[n] the
    whole), so that the ranges hold about equal work, else equal numbers of items."""
    k = min(count(), n, max(1, size // MIN_SPLIT))
    if k <= 1:
        return [0, n]
    if start is None:
        cuts = np.arange(1, k) * n // k
    else:
        cuts = np.searchsorted(start, np.arange(1, k) * (start[n] / k))
    return [0, *sorted({int(c) for c in cuts if 0 < c < n}), n]


def run(fn, bounds: list[int]) -> list:
    """[fn(b_0, b_1), fn(b_1, b_2), ...] for `ranges`' bounds: on threads where more than one
    range (fn a nogil kernel call on its range), else in this thread."""
    if len(bounds) <= 2:
        return [fn(bounds[0], bounds[-1])]
    with ThreadPoolExecutor(len(bounds) - 1) as pool:
        return list(pool.map(lambda k: fn(bounds[k], bounds[k + 1]), range(len(bounds) - 1)))
