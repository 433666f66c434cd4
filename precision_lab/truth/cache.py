"""A disk cache of certified ground truths, so re-running a report computes no truth twice.

An entry is keyed by the SHA-256 of the exact input bytes (the rounded float64 logits, their
shape, the int64 targets) and the certified bit count. It holds plain float64 arrays (the
per-row truth and the batch mean as double-double hi/lo pairs, and their binary exponents
`exp`, `mean_exp`, exact integers, 0 except beyond float64's range) in an .npz read without pickle,
plus the key itself: an entry whose stored key, shapes or dtypes do not match, or that cannot
be read, is ignored (and overwritten by the caller's recomputation), never trusted.

The directory: the `cache` argument where one is passed, else $PRECISION_LAB_CACHE, else
~/.cache/precision_lab. PRECISION_LAB_CACHE set to "off", "0", "none" or "" disables it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..running.provenance import code_fingerprint
from ..running.storage import atomic_write

__all__ = ["TruthCache", "default_cache_dir", "resolve_cache", "truth_key", "FIELDS"]

VERSION = b"precision_lab.truth.v1"


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


class TruthCache:
    """Certified truths on disk, one .npz per batch, in `directory` (created on first write)."""

    def __init__(self, directory):
        self.directory = Path(directory).expanduser()

    def path(self, key: str) -> Path:
        return self.directory / f"truth-{key}.npz"

    def load(self, key: str, n: int) -> dict[str, np.ndarray] | None:
        """The arrays stored under `key` for an n-row batch, or None when absent or invalid."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                if str(z["key"]) != key:
                    return None
                out = {f: np.array(z[f]) for f in FIELDS}
        except Exception:  # unreadable, truncated, missing fields: recompute
            return None
        for f, a in out.items():
            want = (n,) if f in ("hi", "lo", "exp") else ()
            if a.dtype != np.float64 or a.shape != want:
                return None
        return out

    def store(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Write atomically (`atomic_write`); errors writing are not fatal. The exponents
        `exp` and `mean_exp` default to 0."""
        arrays = {"exp": np.zeros(np.shape(arrays["hi"])), "mean_exp": np.float64(0), **arrays}
        try:
            with atomic_write(self.path(key), "wb") as fh:
                np.savez(fh, key=np.array(key),
                         **{f: np.asarray(arrays[f], dtype=np.float64) for f in FIELDS})
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
