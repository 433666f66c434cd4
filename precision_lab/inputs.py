"""Checking a batch of logits and targets, and loading a user's logits from a file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["validate_batch", "load_logits", "make_logits", "DISTRIBUTIONS", "InputError"]


class InputError(ValueError):
    """The logits, targets or file given are not a valid batch; the message says why."""


def validate_batch(logits, targets) -> tuple[np.ndarray, np.ndarray]:
    """Return (logits as float64 (N, C), targets as int64 (N,)) or raise InputError.

    A 1-D logits vector is one row (and a scalar target is its target). NaN logits are allowed
    and propagate to a nan loss, as in PyTorch; -inf logits are masked classes.
    """
    if np.iscomplexobj(logits):
        raise InputError("logits must be real numbers, got complex values")
    try:
        x = np.asarray(logits, dtype=np.float64)  # exact for every format and for integers
    except (TypeError, ValueError) as exc:
        raise InputError(f"logits are not an array of real numbers: {exc}") from None
    t = np.asarray(targets)
    if x.ndim == 1:
        x = x[None, :]
        t = t.reshape(1) if t.ndim == 0 else t
    if x.ndim != 2:
        raise InputError(f"logits must be 2-D (rows, classes) or 1-D (one row), got shape {x.shape}")
    n, c = x.shape
    if n == 0:
        raise InputError("empty batch: logits have 0 rows")
    if c == 0:
        raise InputError("logits have 0 classes (C = 0)")
    if t.ndim != 1:
        raise InputError(f"targets must be 1-D (one class index per row), got shape {t.shape}")
    if len(t) != n:
        raise InputError(f"{len(t)} targets for {n} rows of logits")
    if not (np.issubdtype(t.dtype, np.integer) or t.dtype == np.bool_):
        tf = t.astype(np.float64) if np.issubdtype(t.dtype, np.floating) else None
        if tf is None or not np.all(np.isfinite(tf)) or not np.all(tf == np.round(tf)):
            bad = t if tf is None else t[~(np.isfinite(tf) & (tf == np.round(np.nan_to_num(tf))))]
            raise InputError(f"targets must be integer class indices, got {bad[:5].tolist()}")
    t = t.astype(np.int64)
    out = (t < 0) | (t >= c)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise InputError(f"target {t[i]} of row {i} is out of range [0, {c}) for {c} classes")
    return np.ascontiguousarray(x), t


def load_logits(path) -> tuple[np.ndarray, np.ndarray]:
    """Read logits and targets from .npy, .npz or .csv and validate them.

    .npz: arrays named `logits` and `targets`. .npy: a dict saved with allow_pickle is refused;
    an (N, C + 1) array whose last column is the target. .csv: one row per sample, the last
    column the target, an optional header line.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"logits file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                missing = {"logits", "targets"} - set(z.files)
                if missing:
                    raise InputError(f"{p}: .npz must hold arrays 'logits' and 'targets'; "
                                     f"missing {sorted(missing)}, found {z.files}")
                return validate_batch(z["logits"], z["targets"])
        if suffix == ".npy":
            a = np.load(p, allow_pickle=False)
        elif suffix == ".csv":
            a = _read_csv(p)
        else:
            raise InputError(f"{p}: unsupported file type {suffix!r}; use .npy, .npz or .csv")
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{p}: cannot read logits ({type(exc).__name__}: {exc})") from None
    if a.ndim != 2 or a.shape[1] < 2:
        raise InputError(f"{p}: expected an (N, C + 1) array, the last column the target; "
                         f"got shape {a.shape}")
    return validate_batch(a[:, :-1], a[:, -1])


def _read_csv(p: Path) -> np.ndarray:
    import pandas as pd
    first = p.read_text().splitlines()[:1]
    has_header = bool(first) and any(c.isalpha() and c not in "eE" for c in first[0].replace(
        "nan", "").replace("inf", ""))
    df = pd.read_csv(p, header=0 if has_header else None)
    if df.empty:
        raise InputError(f"{p}: no rows")
    try:
        return df.to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{p}: non-numeric values ({exc})") from None


DISTRIBUTIONS = ("normal", "uniform", "peaked")


def make_logits(distribution: str, rows: int, classes: int, scale: float,
                rng: np.random.Generator, margin: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic float64 logits (rows, classes) and uniform random targets.

    normal:  scale * z, z standard normal;
    uniform: scale * u, u uniform on [-1, 1];
    peaked:  scale * z, then the target logit set to lead every other by scale * margin
             (a confidently correct model: the loss is about C * exp(-scale * margin)).
    """
    if distribution not in DISTRIBUTIONS:
        raise InputError(f"unknown distribution {distribution!r}; valid: {', '.join(DISTRIBUTIONS)}")
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"scale must be a positive finite number, got {scale!r}")
    if rows < 1 or classes < 1:
        raise InputError(f"rows and classes must be at least 1, got {rows} x {classes}")
    targets = rng.integers(0, classes, size=rows)
    if distribution == "uniform":
        x = scale * rng.uniform(-1.0, 1.0, size=(rows, classes))
    else:
        x = scale * rng.standard_normal((rows, classes))
    if distribution == "peaked":
        others = x.copy()
        others[np.arange(rows), targets] = -np.inf
        lead = others.max(axis=1) if classes > 1 else np.zeros(rows)
        x[np.arange(rows), targets] = lead + scale * margin
    return x, targets
