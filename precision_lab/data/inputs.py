"""Checking a batch of logits and targets, and loading a user's logits from a file.

`check_array` is the one gate every array passes (from the API, a list, a torch tensor or a
file loader): it refuses what is not a real number, and returns float64 values that are
exactly the given ones. Every loader (`load_logits` and the loaders of other modules) goes
through it.

The CSV dialect (`read_csv`): UTF-8, an optional byte-order mark; fields separated by commas,
spaces around a field ignored, no quoting; blank lines ignored; every row has the same number
of fields, the last one the target. Every field of a data row is a number: a decimal or
scientific literal (`-1.5`, `2e-3`, `.5`, `7`), or `nan`, `inf`, `-inf` (`infinity` too; any
case). The header rule: the first non-blank line is a header when every field is a name (a
letter or `_`, then letters, digits, `_`, `.`, `-` or spaces, and not itself a number such as
`nan` or `inf`); a header has as many fields as the rows. Anything else (a mix of names and
numbers, a quoted number, a typo such as `2.0O`, an empty field, a literal past float64's range
such as `1e400`) is an error naming the line and the column.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from . import files
from .arrays import check_array

__all__ = ["check_array", "check_bits", "check_names", "validate_batch", "load_logits",
           "read_csv", "make_logits", "DISTRIBUTIONS", "InputError"]

def check_bits(bits) -> int:
    """`bits` (the certified bit count) as an int >= 1, or InputError."""
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)) or bits < 1:
        raise InputError(f"bits must be a positive integer, got {bits!r}")
    return int(bits)


def check_names(names, what: str) -> list:
    """A non-empty list of names (formats, methods, accumulators), or InputError: a bare string
    is refused (it would be read letter by letter), and so is an empty list."""
    if isinstance(names, (str, bytes)):
        raise InputError(f"{what} must be a list of names, got the bare string {names!r} "
                         f"(write [{names!r}])")
    try:
        out = list(names)
    except TypeError:
        raise InputError(f"{what} must be a list of names, got {type(names).__name__}") from None
    if not out:
        raise InputError(f"{what} is empty: give at least one")
    return out


def validate_batch(logits: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (logits as float64 (N, C), targets as int64 (N,)) or raise InputError.

    Shapes: logits (N, C) with N >= 1 and C >= 1; a 1-D logits vector is one row (and a
    scalar target is its target). Logits pass `check_array` (real numbers, read exactly);
    torch tensors are accepted, detached. Targets: N integer class indices in [0, C);
    integer-valued floats (as read from a CSV file) are accepted, booleans are not.

    Values (the same policy as torch.nn.functional.cross_entropy, which every method and the
    reference follow):
      -inf logits are masked classes (exp(-inf) = 0); a masked target gives +inf, a row with
      every class masked gives nan;
      a +inf logit anywhere in a row gives nan (torch shifts by the maximum: inf - inf), at
      the target or elsewhere, once or twice, with or without -inf classes;
      NaN logits are allowed and propagate: the row's loss is nan, counted as the "nan"
      outcome by `metrics.errors`, never dropped.
    Logits too large for float64 (Python integers past 1.8e308) are an error, not an infinity.
    """
    x = check_array(logits, "logits")
    try:
        t = check_array(targets, "targets", dtype=None)
    except InputError as exc:
        raise InputError(f"{exc} (targets must be integer class indices)") from None
    if x.ndim == 1:
        x = x[None, :]
        t = t.reshape(1) if t.ndim == 0 else t
    if x.ndim != 2:
        raise InputError(f"logits must be 2-D (rows, classes) or 1-D (one row), "
                         f"got shape {x.shape}")
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
            raise InputError(f"targets must be integer class indices, "
                             f"got {t[~integral][:5].tolist()}")
        bad = (tf < 0) | (tf >= c)
    else:
        raise InputError(f"targets must be integer class indices, got {t.dtype} values "
                         f"{t.ravel()[:5].tolist()}")
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        v = t[i].item()
        raise InputError(f"target {v} of row {i} is out of range [0, {c}) for {c} classes")
    return np.ascontiguousarray(x), t.astype(np.int64)


def load_logits(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read logits and targets from .npy, .npz, .csv, .pt or .safetensors and validate them.

    .npz: arrays named `logits` and `targets`. .npy: an (N, C + 1) array whose last column is
    the target (pickled objects are refused). .csv: the dialect of `read_csv`, the last column
    the target. Every array passes `check_array` (booleans, strings, datetimes, objects,
    structured records, values past float64's range are refused). Every problem raises
    InputError naming the file.
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
                a = check_array(np.load(fh, allow_pickle=False), "the array", dtype=None)
        elif suffix == ".csv":
            a = read_csv(p)
        elif suffix in files.SUFFIXES:  # .pt, .safetensors: data/files.py
            x, t = files.read_arrays(p)
        else:
            raise InputError(f"unsupported file type {suffix!r}; use .npy, .npz, .csv, .pt "
                             f"or .safetensors")
        if suffix in (".npy", ".csv"):
            if a.ndim != 2 or a.shape[1] < 2:
                raise InputError(f"expected an (N, C + 1) array of numbers, the last column "
                                 f"the target; got shape {a.shape}, dtype {a.dtype}")
            x, t = a[:, :-1], a[:, -1]
        return validate_batch(x, t)
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None
    except Exception as exc:
        raise InputError(f"{p}: cannot read logits ({type(exc).__name__}: {exc})") from None


_NUMBER = r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)"
_NUMBER_RE = re.compile(_NUMBER, re.IGNORECASE)
_ROW_RE = re.compile(rf"\s*{_NUMBER}\s*(?:,\s*{_NUMBER}\s*)*", re.IGNORECASE)
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\- ]*")


def _is_name(field: str) -> bool:
    f = field.strip()
    return bool(_NAME_RE.fullmatch(f)) and not _NUMBER_RE.fullmatch(f)


def _bad_field(no: int, fields: list[str]) -> str:
    """The message for line `no`'s first field that is not a number."""
    j, f = next((j, f.strip()) for j, f in enumerate(fields) if not _NUMBER_RE.fullmatch(f.strip()))
    what = "empty field (write nan for a NaN logit)" if not f else f"{f!r} is not a number"
    return f"line {no}, column {j + 1}: {what}"


def read_csv(path) -> np.ndarray:
    """The CSV file at `path` (the dialect in this module's docstring) as a float64 (N, K)
    array, or InputError naming the line (1-based, as an editor counts) and column."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})") from None
    lines = [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]
    if not lines:
        raise InputError("empty file")
    first_no, first = lines[0]
    header = None
    if not _ROW_RE.fullmatch(first):
        fields = first.split(",")
        if all(_is_name(f) for f in fields):
            header, lines = fields, lines[1:]
        else:
            raise InputError(_bad_field(first_no, fields) + " (nor is the line a header: a "
                             "header holds names only)")
    if not lines:
        raise InputError("no rows (a header line only)")
    width = len(header) if header is not None else lines[0][1].count(",") + 1
    flat: list[str] = []
    for no, line in lines:
        fields = line.split(",")
        if len(fields) != width:
            what = "the header" if header is not None else f"line {lines[0][0]}"
            raise InputError(f"line {no} has {len(fields)} fields, {what} has {width}")
        if not _ROW_RE.fullmatch(line):
            raise InputError(_bad_field(no, fields))
        flat.extend(f.strip() for f in fields)
    values = np.asarray(flat, dtype=np.float64)
    over = np.flatnonzero(np.isinf(values))
    for k in over.tolist():
        if "inf" not in flat[k].lower():
            no = lines[k // width][0]
            raise InputError(f"line {no}, column {k % width + 1}: {flat[k]} is outside "
                             f"float64's range")
    return values.reshape(len(lines), width)


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
        raise InputError(f"unknown distribution {distribution!r}; "
                         f"valid: {', '.join(DISTRIBUTIONS)}")
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
