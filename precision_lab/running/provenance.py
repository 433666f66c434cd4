"""Provenance: what a number depends on (one code fingerprint) and where it was computed."""
from __future__ import annotations

import datetime as _dt
import functools
import gc
import hashlib
import importlib.metadata
import json
import os
import pickle
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .storage import atomic_write

__all__ = ["median_time", "median_times", "provenance", "write_metadata", "peak_memory_mib",
           "code_fingerprint", "PACKAGE_DIR", "NUMERIC_LIBRARIES", "kernels", "library_versions", "git_commit"]

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = PACKAGE_DIR.parent

# Every installed distribution whose version can change a number the suite computes.
NUMERIC_LIBRARIES = ("numpy", "torch", "mpmath", "gmpy2", "python-flint", "pandas", "ml_dtypes",
                     "scipy", "scikit-learn", "numba", "jax", "jaxlib", "optax",
                     "tensorflow-cpu")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def library_versions() -> dict[str, str]:
    return {d: _version(d) for d in NUMERIC_LIBRARIES}


def _source_files(fn=None, files=None) -> list[Path]:
    """`files` (default: every .py file of the package), plus the source file of `fn`'s module."""
    files = sorted(PACKAGE_DIR.rglob("*.py")) if files is None else [Path(f) for f in files]
    while isinstance(fn, functools.partial):
        fn = fn.func
    mod = sys.modules.get(getattr(fn, "__module__", None) or "")
    f = getattr(mod, "__file__", None)
    if f and Path(f).resolve() not in files and Path(f).is_file():
        files.append(Path(f).resolve())
    return files


def _identity(fn) -> bytes:
    if fn is None:
        return b""
    if isinstance(fn, functools.partial):
        try:
            bound = pickle.dumps((fn.args, sorted(fn.keywords.items())), protocol=4)
        except Exception:
            bound = repr((fn.args, fn.keywords)).encode()
        return b"partial(" + _identity(fn.func) + b")" + hashlib.sha256(bound).digest()
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}".encode()


def code_fingerprint(fn=None, files=None, salt: bytes = b"") -> str:
    """The one fingerprint of the code behind a number: a sha256 of `salt`, the function `fn`
    (its name and any arguments bound into it), the source `files` (default: every .py file
    of precision_lab) and `fn`'s own source file, and the version of every library in
    NUMERIC_LIBRARIES. Checkpoints and cached truths are keyed by it."""
    h = hashlib.sha256(salt + _identity(fn))
    for f in _source_files(fn, files):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    for name, version in library_versions().items():
        h.update(f"{name}={version};".encode())
    return h.hexdigest()[:16]


def git_commit() -> str:
    """HEAD of the checkout precision_lab runs from, "+dirty" if its sources changed."""
    return _git_commit()


def _git_commit() -> str:
    try:
        root = REPO_DIR
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "precision_lab", "experiments"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kernels() -> dict:
    """The machine-dependent kernels behind the numbers: torch's ATen CPU capability (it picks
    torch's vectorised exp/log/sum kernels; `ATEN_CPU_CAPABILITY` overrides it) and the SIMD
    features numpy dispatches to (its float64 exp/log kernels differ by an ulp between them);
    and the CPU numba compiles the project's kernels for (LLVM's host CPU: their speed, not
    their numbers, depends on it: they are IEEE without fastmath, tested bit for bit against
    the numpy paths they mirror)."""
    import llvmlite.binding
    import numpy
    import torch
    from numpy._core import _multiarray_umath as um
    return {"numba_target_cpu": llvmlite.binding.get_host_cpu_name(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "aten_cpu_capability_env": os.environ.get("ATEN_CPU_CAPABILITY"),
            "numpy_cpu_baseline": list(um.__cpu_baseline__),
            "numpy_cpu_dispatch_used": sorted(f for f in um.__cpu_dispatch__
                                              if um.__cpu_features__.get(f)),
            "npy_disable_cpu_features_env": os.environ.get("NPY_DISABLE_CPU_FEATURES"),
            "numpy_version": numpy.__version__}


def provenance() -> dict:
    """Date, commit, versions, machine and kernels, for metadata.json."""
    import matplotlib
    import mpmath
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "versions": {"python": platform.python_version(), **library_versions(),
                     "mpmath_backend": mpmath.libmp.BACKEND,
                     "matplotlib": matplotlib.__version__},
        "cpu": _cpu(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "kernels": kernels(),
    }


def write_metadata(out_dir, **fields) -> Path:
    path = Path(out_dir) / "metadata.json"
    with atomic_write(path) as f:
        json.dump({**provenance(), **fields}, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    return path


def peak_memory_mib() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_memory_mib": round(max(own, children), 1), "peak_memory_main_mib": round(own, 1),
            "peak_memory_largest_worker_mib": round(children, 1)}


def median_time(fn, repeats: int, warmup: bool = False) -> float:
    """Median wall time of `repeats` calls of `fn` (after one untimed call if `warmup`), garbage
    collection paused while timing (as timeit does), so a collection of an earlier cell's
    objects is not charged to this one. Benchmarks report it beside the machine's load."""
    return median_times([fn], repeats, warmup)[0]


def median_times(fns, repeats: int, warmup: bool = False) -> list[float]:
    """`median_time` of each of `fns`, timed round-robin: each of the `repeats` rounds calls
    every function once, in turn, so that a change of the machine's load during the
    measurement touches all of them alike and their ratios (what the benchmarks compare)
    hold better than those of medians taken one function after another."""
    if warmup:
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
            finally:
                gc.enable()
    return [float(statistics.median(t)) for t in times]
