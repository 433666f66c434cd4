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

__all__ = ["check_array", "check_bits", "check_names", "validate_batch", "load_logits",
           "read_csv", "make_logits", "DISTRIBUTIONS", "InputError"]

_KINDS = {"b": "booleans", "U": "strings", "S": "bytes", "O": "Python objects",
          "M": "datetimes", "m": "timedeltas", "c": "complex numbers"}
_EXACT_INT = 2 ** 53


def _describe_objects(a: np.ndarray) -> str:
    kinds = sorted({type(v).__name__ for v in a.ravel()[:1000].tolist()})
    return ", ".join(kinds[:4])


def _from_tensor(a):
    """A torch tensor (duck-typed, so this layer need not import torch) as a numpy array:
    detached (a tensor that requires grad is accepted as it is), on the CPU, floating types
    widened exactly to float64 (numpy has no bfloat16)."""
    a = a.detach().cpu()
    if a.is_complex():
        raise InputError("complex numbers")
    if a.is_floating_point():
        a = a.double()
    return a.numpy()


def check_array(a, what: str = "logits", dtype=np.float64) -> np.ndarray:
    """`a` as a numpy array of real numbers, or InputError naming `what` and what is wrong.

    Accepts numpy arrays of integers or floats of any width (ml_dtypes' bfloat16 too), nested
    lists of numbers and torch tensors (detached first: one that requires grad is fine).
    Refuses booleans, strings, bytes, Python objects (a None would become nan), datetimes,
    complex numbers, structured records and masked arrays (mark a masked class with -inf).
    With `dtype=np.float64` (the default) returns float64 holding exactly the given values:
    an integer past 2**53 that float64 cannot hold, or a finite value past float64's range
    (a longdouble or a huge Python integer), is refused; longdouble values inside the range
    are rounded to the nearest float64. With `dtype=None` returns the numeric array as given.
    A read-only float64 array comes back as it is (a view of the caller's array, never a copy:
    no one can write through it, so no copy is needed; `evaluate` and `analyze` freeze their
    rounded logits this way, so the methods' own `validate_batch` of them copies nothing); any
    other input comes back as a fresh array.
    """
    if isinstance(a, np.ma.MaskedArray):
        raise InputError(f"{what}: masked arrays are not accepted (the mask would be dropped); "
                         f"mark a masked class with a -inf logit")
    if hasattr(a, "detach") and hasattr(a, "requires_grad"):
        try:
            a = _from_tensor(a)
        except InputError as exc:
            raise InputError(f"{what} must be real numbers, got {exc}") from None
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{what} are not an array of real numbers: {exc}") from None
    dt = arr.dtype
    if dt.names is not None:
        raise InputError(f"{what} must be real numbers, got a structured array with fields "
                         f"{list(dt.names)}")
    if dt.kind in _KINDS:
        desc = _KINDS[dt.kind]
        if dt.kind == "O":
            desc += f" ({_describe_objects(arr)}): not an array of real numbers (a ragged " \
                    f"list, a None, or an integer too large for float64?)"
        raise InputError(f"{what} must be real numbers, got {desc}")
    if dt.kind == "V":  # ml_dtypes' formats are kind V; raw bytes are not numbers
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{what} must be real numbers, got raw {dt} values") from None
    if dtype is None:
        return arr
    if dt == np.float64 and not arr.flags.writeable and dtype == np.float64:
        return arr   # already exact float64 that nobody can write through: no copy needed
    if dt.kind in "iu":
        if arr.size and (arr.max() > _EXACT_INT or arr.min() < -_EXACT_INT):
            big = arr[(arr > _EXACT_INT) | (arr < -_EXACT_INT)]
            bad = [int(v) for v in big.ravel()[:50].tolist() if int(float(v)) != int(v)]
            if bad:
                raise InputError(f"{what}: integer {bad[0]} is not exactly a float64 "
                                 f"(past 2**53); give it as a float")
        return arr.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float64)
    if dt.itemsize > 8 and dt.kind == "f":
        over = np.isinf(out) & np.isfinite(arr)
        if over.any():
            i = tuple(int(k) for k in np.argwhere(over)[0])
            raise InputError(f"{what}: value {arr[i]!r} at index {i} is outside float64's range")
    return out


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
