"""`check_array`: the one gate every array of logits or targets passes (from the API, a list,
a torch tensor or a file reader, `inputs` and `files` alike): it refuses what is not a real
number, and returns float64 values that are exactly the given ones."""
from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["check_array"]

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
