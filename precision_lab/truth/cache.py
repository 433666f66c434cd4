"""A disk cache of certified ground truths, so re-running a report computes no truth twice.

An entry is keyed by the SHA-256 of the exact input bytes (the rounded float64 logits, their
shape, the int64 targets) and the certified bit count. It holds plain float64 arrays (the
per-row truth and the batch mean as double-double hi/lo pairs, and their binary exponents
`exp`, `mean_exp`, exact integers, 0 except beyond float64's range) in an .npz read without
pickle,
plus the key itself and a SHA-256 checksum of every stored array (its name, dtype, shape and
bytes; generic over whatever fields an entry has). On read an entry is trusted only when
  - it can be read without pickle, and its stored key is the key asked for;
  - its checksum matches its content (a bit flip, an array rewritten in place);
  - its arrays have the expected dtypes and shapes;
  - and, given the inputs, it passes cheap invariants of a cross entropy (`invariant_violation`):
    per row, with a = the largest live logit and C the number of live (not -inf) classes,
    a - x_t <= loss <= a - x_t + log C, finite where the row's inputs are finite, nan or +inf
    exactly where the non-finite policy says so; the mean the mean of the rows.
Anything else is reported once (a RuntimeWarning naming the file and what failed) and
recomputed by the caller, which overwrites it. Threat model: accidents (a truncated or
bit-flipped file, a copy from another machine, a hand-edited entry, a stale entry of another
batch under this name), not an adversary with write access, who can recompute the checksum.

The directory: the `cache` argument where one is passed, else $PRECISION_LAB_CACHE, else
~/.cache/precision_lab. PRECISION_LAB_CACHE set to "off", "0", "none" or "" disables it.
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..running.provenance import code_fingerprint
from ..running.storage import atomic_write

__all__ = ["TruthCache", "default_cache_dir", "resolve_cache", "truth_key", "FIELDS",
           "checksum", "invariant_violation", "UntrustedEntryWarning"]

VERSION = b"precision_lab.truth.v2"


def _code_fingerprint() -> bytes:
    """The code that computes a truth (the reference and its engine, and the libraries'
    versions): a fixed reference cannot be served a truth cached by an older version of itself."""
    here = Path(__file__).resolve().parent
    return code_fingerprint(files=[here / "reference.py", here / "fastref.py"],
                            salt=VERSION).encode()


_CODE = None
FIELDS = ("hi", "lo", "mean_hi", "mean_lo", "exp", "mean_exp")
_OFF = {"off", "0", "none", "false", ""}


def default_cache_dir() -> Path | None:
    """$PRECISION_LAB_CACHE, or ~/.cache/precision_lab; None when the variable disables it."""
    env = os.environ.get("PRECISION_LAB_CACHE")
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    return Path.home() / ".cache" / "precision_lab"


def truth_key(x: np.ndarray, t: np.ndarray, bits: int) -> str:
    """SHA-256 of the reference's code and the exact inputs (float64 logits with their shape,
    int64 targets) and bits."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    t = np.ascontiguousarray(t, dtype=np.int64)
    global _CODE
    if _CODE is None:
        _CODE = _code_fingerprint()
    h = hashlib.sha256(_CODE)
    h.update(np.asarray(x.shape, dtype=np.int64).tobytes())
    h.update(x.tobytes())
    h.update(t.tobytes())
    h.update(np.int64(bits).tobytes())
    return h.hexdigest()


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of every array (sorted by name): name, dtype, shape and bytes."""
    h = hashlib.sha256(VERSION)
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


_SLACK = 2.0 ** -40     # relative: float64 rounding of a - x_t, log C and hi (about 2**-52 each)


def invariant_violation(entry: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray) -> str | None:
    """None when the truth `entry` (hi, lo, mean_hi, mean_lo; exp, mean_exp where present) is
    consistent with the inputs x (N, C) float64 and t (N,), else what is wrong (see the module
    docstring). A truth beyond float64's range ((hi + lo) 2**exp) is checked as float64 does:
    inf above, 0 below."""
    hi, lo = entry["hi"], entry["lo"]
    exp = np.asarray(entry.get("exp", np.zeros(len(hi)))).astype(np.int64)
    with np.errstate(over="ignore"):
        loss = np.ldexp(hi, exp)
        mean_loss = float(np.ldexp(float(entry["mean_hi"]),
                                   int(entry.get("mean_exp", np.float64(0)))))
    n = len(t)
    rows = np.arange(n)
    xt = x[rows, t]
    nan_in = np.isnan(x).any(axis=1) | (x == np.inf).any(axis=1)
    live = x != -np.inf
    dead = ~live.any(axis=1)
    want_nan = nan_in | dead
    want_inf = ~want_nan & (xt == -np.inf)
    regular = ~want_nan & ~want_inf
    if not np.array_equal(np.isnan(hi), want_nan):
        i = int(np.flatnonzero(np.isnan(hi) != want_nan)[0])
        return (f"row {i}: loss {hi[i]!r}, but the inputs give "
                f"{'nan' if want_nan[i] else 'a number'}")
    if not (hi[want_inf] == np.inf).all():
        return "a masked target's loss is not +inf"
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        a = np.where(live, x, -np.inf).max(axis=1)
        lower = a - xt
        upper = lower + np.log(np.count_nonzero(live, axis=1))
        h = loss[regular]
        lo_ok = h >= lower[regular] * (1 - _SLACK)
        up_ok = (h <= upper[regular] * (1 + _SLACK)) | ~np.isfinite(upper[regular])
        fin_ok = np.isfinite(h) | ~np.isfinite(upper[regular]) | (h > np.finfo(float).max / 2)
    bad = ~(lo_ok & up_ok & fin_ok)
    if bad.any():
        i = int(rows[regular][np.flatnonzero(bad)[0]])
        return (f"row {i}: loss {hi[i]!r} outside [a - x_t, a - x_t + log C] = "
                f"[{lower[i]!r}, {upper[i]!r}]")
    fin = np.isfinite(hi)
    if not (np.isfinite(lo) & (~fin | (hi + lo == hi))).all():
        return "a low part is not below half an ulp of its high part"
    mean_hi = mean_loss
    if want_nan.any():
        ok = math.isnan(mean_hi)
    elif not fin.all():
        ok = mean_hi == math.inf
    else:
        with np.errstate(over="ignore"):
            m = float(np.sum(loss / n))
        ok = math.isfinite(mean_hi) and abs(mean_hi - m) <= 1e-9 * abs(m) + 1e-300 \
            if math.isfinite(m) else mean_hi >= np.finfo(float).max / (2 * n)
    if not ok:
        return f"the mean {mean_hi!r} is not the mean of the rows"
    return None


class UntrustedEntryWarning(RuntimeWarning):
    """A cache entry failed verification and is being recomputed."""


_REPORTED: set[tuple] = set()


def _report(path: Path, why: str) -> None:
    """Warn once per process and version of an entry file that it is not trusted (a file
    that cannot be overwritten is not reported on every read)."""
    try:
        st = path.stat()
        seen = (str(path), st.st_mtime_ns, st.st_size, why)
    except OSError:
        seen = (str(path), why)
    if seen in _REPORTED:
        return
    _REPORTED.add(seen)
    warnings.warn(f"precision_lab truth cache: {path}: {why}; recomputing it",
                  UntrustedEntryWarning,
                  stacklevel=3)


class TruthCache:
    """Certified truths on disk, one .npz per batch, in `directory` (created on first write)."""

    def __init__(self, directory):
        self.directory = Path(directory).expanduser()

    def path(self, key: str) -> Path:
        return self.directory / f"truth-{key}.npz"

    def load(self, key: str, n: int, x: np.ndarray | None = None,
             t: np.ndarray | None = None) -> dict[str, np.ndarray] | None:
        """The arrays stored under `key` for an n-row batch, or None when absent or not
        trusted (reported once; see the module docstring). With the inputs `x`, `t` the
        entry's invariants are checked too."""
        p = self.path(key)
        if not p.is_file():
            return None
        why = self._verify(p, key, n, x, t)
        if isinstance(why, str):
            _report(p, why)
            return None
        return why

    @staticmethod
    def _verify(p: Path, key: str, n: int, x, t) -> dict[str, np.ndarray] | str:
        try:
            with np.load(p, allow_pickle=False) as z:
                stored = {f: np.array(z[f]) for f in z.files}
        except Exception as exc:  # unreadable, truncated, pickled objects
            return f"unreadable ({type(exc).__name__})"
        if "key" not in stored or str(stored["key"]) != key:
            return "stored under another key"
        if "checksum" not in stored or str(stored.pop("checksum")) != checksum(stored):
            return "checksum mismatch (content changed since it was written)"
        missing = [f for f in FIELDS if f not in stored]
        if missing:
            return f"missing fields {missing}"
        out = {f: v for f, v in stored.items() if f != "key"}
        for f in FIELDS:
            want = (n,) if f in ("hi", "lo", "exp") else ()
            if out[f].dtype != np.float64 or out[f].shape != want:
                return f"field {f} has dtype {out[f].dtype}, shape {out[f].shape}"
        if x is not None and t is not None:
            why = invariant_violation(out, x, t)
            if why is not None:
                return f"fails an invariant: {why}"
        return out

    def store(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Write atomically (`atomic_write`); errors writing are not fatal. The exponents
        `exp` and `mean_exp` default to 0."""
        arrays = {"exp": np.zeros(np.shape(arrays["hi"])), "mean_exp": np.float64(0), **arrays}
        try:
            content = {"key": np.array(key),
                       **{f: np.asarray(v, dtype=np.float64) if f in FIELDS else np.asarray(v)
                          for f, v in arrays.items()}}
            with atomic_write(self.path(key), "wb") as fh:
                np.savez(fh, checksum=np.array(checksum(content)), **content)
        except OSError:
            pass


def resolve_cache(cache) -> TruthCache | None:
    """None: the default directory (or none if disabled); False: no cache; a path or a
    TruthCache: that one."""
    if cache is False:
        return None
    if isinstance(cache, TruthCache):
        return cache
    if cache is None or cache is True:
        d = default_cache_dir()
        return None if d is None else TruthCache(d)
    return TruthCache(cache)
