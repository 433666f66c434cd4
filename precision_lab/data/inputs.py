"""Checking a batch of logits and targets, and loading a user's logits from a file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from . import files

__all__ = ["validate_batch", "load_logits", "make_logits", "DISTRIBUTIONS", "InputError"]


def validate_batch(logits, targets) -> tuple[np.ndarray, np.ndarray]:
    """Return (logits as float64 (N, C), targets as int64 (N,)) or raise InputError.

    Shapes: logits (N, C) with N >= 1 and C >= 1; a 1-D logits vector is one row (and a
    scalar target is its target). Targets: N integer class indices in [0, C); integer-valued
    floats (as read from a CSV file) are accepted, booleans are not.

    Values (the same policy as torch.nn.functional.cross_entropy, which every method and the
    reference follow):
      -inf logits are masked classes (exp(-inf) = 0); a masked target gives +inf, a row with
      every class masked gives nan;
      +inf logits give +inf (nan when the target is +inf: inf - inf);
      NaN logits are allowed and propagate: the row's loss is nan, counted as the "nan"
      outcome by `metrics.errors`, never dropped.
    Logits too large for float64 (Python integers past 1.8e308) are an error, not an infinity.
    """
    try:
        if np.iscomplexobj(logits):
            raise InputError("logits must be real numbers, got complex values")
        x = np.asarray(logits, dtype=np.float64)  # exact for every format and for integers
    except InputError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"logits are not an array of real numbers: {exc}") from None
    try:
        t = np.asarray(targets)
    except (TypeError, ValueError) as exc:
        raise InputError(f"targets are not an array of class indices: {exc}") from None
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
    if t.dtype == np.bool_:
        raise InputError("targets must be integer class indices, got booleans")
    if np.issubdtype(t.dtype, np.integer):
        # Compare before casting: uint64 values past 2**63 must not wrap to negatives.
        bad = (t < 0) | (t >= c)
    elif np.issubdtype(t.dtype, np.floating):
        tf = t.astype(np.float64)
        with np.errstate(invalid="ignore"):
            integral = np.isfinite(tf) & (tf == np.floor(tf))
        if not integral.all():
            raise InputError(f"targets must be integer class indices, got {t[~integral][:5].tolist()}")
        bad = (tf < 0) | (tf >= c)
    else:
        raise InputError(f"targets must be integer class indices, got {t.dtype} values "
                         f"{t.ravel()[:5].tolist()}")
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        v = t[i].item()
        raise InputError(f"target {v} of row {i} is out of range [0, {c}) for {c} classes")
    return np.ascontiguousarray(x), t.astype(np.int64)


def load_logits(path) -> tuple[np.ndarray, np.ndarray]:
    """Read logits and targets from .npy, .npz or .csv and validate them.

    .npz: arrays named `logits` and `targets`. .npy: an (N, C + 1) array whose last column is
    the target (pickled objects are refused). .csv: one row per sample, the last column the
    target, an optional header line; an empty field is an error (write nan for a NaN logit).
    Every problem raises InputError naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"logits file not found: {p}")
    if not p.is_file():
        raise InputError(f"logits file is not a regular file: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npz":
            # numpy leaks its own file handle when the zip is corrupt: open it ourselves
            with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                missing = {"logits", "targets"} - set(z.files)
                if missing:
                    raise InputError(f".npz must hold arrays 'logits' and 'targets'; "
                                     f"missing {sorted(missing)}, found {z.files}")
                x, t = z["logits"], z["targets"]
        elif suffix == ".npy":
            with open(p, "rb") as fh:
                a = np.load(fh, allow_pickle=False)
        elif suffix == ".csv":
            a = _read_csv(p)
        elif suffix in files.SUFFIXES:  # .pt, .safetensors: data/files.py
            x, t = files.read_arrays(p)
        else:
            raise InputError(f"unsupported file type {suffix!r}; use .npy, .npz or .csv")
        if suffix in (".npy", ".csv"):
            if a.dtype.names is not None or a.ndim != 2 or a.shape[1] < 2:
                raise InputError(f"expected an (N, C + 1) array of numbers, the last column "
                                 f"the target; got shape {a.shape}, dtype {a.dtype}")
            x, t = a[:, :-1], a[:, -1]
        return validate_batch(x, t)
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None
    except Exception as exc:
        raise InputError(f"{p}: cannot read logits ({type(exc).__name__}: {exc})") from None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _read_csv(p: Path) -> np.ndarray:
    import pandas as pd
    lines = p.read_text(encoding="utf-8").splitlines()
    if not any(line.strip() for line in lines):
        raise InputError("empty file")
    # a header is a first line with a field that is text, not a number and not empty
    has_header = any(f.strip() and not _is_number(f) for f in lines[0].split(","))
    df = pd.read_csv(p, header=0 if has_header else None, dtype=str, na_filter=False,
                     skip_blank_lines=True)
    if df.empty:
        raise InputError("no rows")
    values = df.to_numpy(dtype=object)
    out = np.empty(values.shape, dtype=np.float64)
    for (i, j), v in np.ndenumerate(values):
        try:
            out[i, j] = float(v)
        except (TypeError, ValueError):
            raise InputError(f"non-numeric or empty value {v!r} in data row {i + 1}, "
                             f"column {j + 1}") from None
    return out


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
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, float, np.number)) \
            or not (np.isfinite(scale) and scale > 0):
        raise InputError(f"scale must be a positive finite number, got {scale!r}")
    for what, v in (("rows", rows), ("classes", classes)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{what} must be an integer of at least 1, got {v!r}")
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
