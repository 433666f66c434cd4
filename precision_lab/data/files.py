"""Logits files people have, read a block of rows at a time.

Formats:
  .npy          an (N, C + 1) array, the last column the target; memory-mapped (no copy);
  .npz          arrays `logits` and `targets` (read whole: a zip member cannot be mapped);
  .csv          one row per sample, the last column the target (read whole, by `load_logits`'s
                parser, passed in by the caller);
  .pt           a `torch.save`d dict {"logits": tensor, "targets": tensor} or a tuple/list
                (logits, targets), read with `torch.load(weights_only=True, mmap=True)`, so no
                pickled code runs and the tensors stay on disk until a block is read;
  .safetensors  tensors `logits` and `targets`, each block sliced from the mapped file.
Logits stored in float16, bfloat16, float32 or float64 are kept exactly: every such value is a
float64, and `stored_format` names the format they are already in (a bfloat16 file is analysed
as its own values, never rounded a second time).

This module reads; every block it returns has passed `arrays.check_array` (real numbers, read
exactly: a .npy of booleans, strings or integers past 2**53 is refused as `load_logits`
refuses it); the batch itself (shapes, targets in range) is checked by the caller
(`inputs.validate_batch`, applied to every block). Every problem with the file itself raises InputError naming the file.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ..errors import InputError
from .arrays import check_array

__all__ = ["SUFFIXES", "STREAMED", "FileInfo", "file_info", "read_rows", "read_arrays",
           "file_sha256", "IGNORED_TARGET_HINT"]

SUFFIXES = (".pt", ".safetensors")          # read here; .npy/.npz/.csv by inputs.load_logits
STREAMED = (".npy", ".pt", ".safetensors")  # read a block at a time, without loading the file

_TORCH_FORMATS = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32",
                  torch.float64: "float64"}
_NUMPY_FORMATS = {np.dtype(np.float16): "float16", np.dtype(np.float32): "float32",
                  np.dtype(np.float64): "float64"}
IGNORED_TARGET_HINT = ("negative targets (-100-style ignored entries) are refused unless they "
                       "equal the training option ignore_index (analyze --ignore-index I)")


@dataclass(frozen=True)
class FileInfo:
    """What a logits file holds: its rows and classes, and the format its logits are stored in
    (None when they are not one of the formats, e.g. integers or a CSV's text)."""
    path: str
    rows: int
    classes: int
    stored_format: str | None
    size: int


def _suffix(path) -> str:
    return Path(path).suffix.lower()


def _check_file(p: Path) -> None:
    if not p.exists():
        raise InputError(f"logits file not found: {p}")
    if not p.is_file():
        raise InputError(f"logits file is not a regular file: {p}")


def _torch_pair(obj, p: Path):
    if isinstance(obj, dict):
        missing = {"logits", "targets"} - set(obj)
        if missing:
            raise InputError(f"a .pt dict must hold tensors 'logits' and 'targets'; "
                             f"missing {sorted(missing)}, found {sorted(map(str, obj))}")
        pair = obj["logits"], obj["targets"]
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        pair = tuple(obj)
    else:
        raise InputError(f"a .pt file must hold a dict {{'logits', 'targets'}} or a "
                         f"tuple (logits, targets); got {type(obj).__name__}")
    for name, v in zip(("logits", "targets"), pair):
        if not isinstance(v, torch.Tensor):
            raise InputError(f"{name} is a {type(v).__name__}, not a tensor")
    return pair


@functools.lru_cache(maxsize=2)
def _open_pt(path: str, mtime_ns: int, size: int):
    p = Path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be mapped
        obj = torch.load(p, map_location="cpu", weights_only=True)
    return _torch_pair(obj, p)


@functools.lru_cache(maxsize=2)
def _open_npz(path: str, mtime_ns: int, size: int):
    with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
        missing = {"logits", "targets"} - set(z.files)
        if missing:
            raise InputError(f".npz must hold arrays 'logits' and 'targets'; "
                             f"missing {sorted(missing)}, found {z.files}")
        return z["logits"], z["targets"]


def _stat(p: Path) -> tuple[str, int, int]:
    st = p.stat()
    return str(p.resolve()), st.st_mtime_ns, st.st_size


def _safetensors_meta(p: Path):
    with safe_open(str(p), framework="pt") as f:
        keys = set(f.keys())
        missing = {"logits", "targets"} - keys
        if missing:
            raise InputError(f"a .safetensors file must hold tensors 'logits' and 'targets'; "
                             f"missing {sorted(missing)}, found {sorted(keys)}")
        sl = f.get_slice("logits")
        shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
        tshape = tuple(f.get_slice("targets").get_shape())
    return shape, dtype, tshape


_ST_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def _shape_info(p: Path, shape, tshape, stored) -> FileInfo:
    if len(shape) != 2:
        raise InputError(f"logits must be 2-D (rows, classes), got shape {shape}")
    if len(tshape) != 1 or tshape[0] != shape[0]:
        raise InputError(f"targets of shape {tshape} for logits of shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"empty batch: logits of shape {shape}")
    return FileInfo(str(p), int(shape[0]), int(shape[1]), stored, p.stat().st_size)


def _named(fn, p: Path, *args):
    """fn(p, *args), every failure an InputError that names the file once."""
    try:
        return fn(p, *args)
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None
    except Exception as exc:
        raise InputError(f"{p}: cannot read logits ({type(exc).__name__}: {exc})") from None


def file_info(path, csv_reader=None) -> FileInfo:
    """Rows, classes and stored format of a logits file, without reading its logits where the
    format allows (.npy, .pt, .safetensors). `csv_reader(path) -> (x, t)` reads a .csv."""
    p = Path(path)
    _check_file(p)
    return _named(_info, p, csv_reader)


def _info(p: Path, csv_reader) -> FileInfo:
    s = _suffix(p)
    if s == ".npy":
        a = np.load(p, mmap_mode="r", allow_pickle=False)
        if a.dtype.names is not None or a.ndim != 2 or a.shape[1] < 2:
            raise InputError(f"expected an (N, C + 1) array of numbers, the last column "
                             f"the target; got shape {a.shape}, dtype {a.dtype}")
        return FileInfo(str(p), a.shape[0], a.shape[1] - 1, _NUMPY_FORMATS.get(a.dtype),
                        p.stat().st_size)
    if s == ".safetensors":
        shape, dtype, tshape = _safetensors_meta(p)
        return _shape_info(p, shape, tshape, _ST_DTYPES.get(dtype))
    if s == ".pt":
        x, t = _open_pt(*_stat(p))
        return _shape_info(p, tuple(x.shape), tuple(t.shape), _TORCH_FORMATS.get(x.dtype))
    if s == ".npz":
        x, t = _open_npz(*_stat(p))
        return _shape_info(p, x.shape, t.shape, _NUMPY_FORMATS.get(x.dtype))
    if s == ".csv":
        if csv_reader is None:
            raise InputError("a .csv file needs its reader")
        x, _ = csv_reader(p)
        return FileInfo(str(p), x.shape[0], x.shape[1], None, p.stat().st_size)
    raise InputError(f"unsupported file type {s!r}; use .npy, .npz, .csv, .pt or .safetensors")


def _to_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.dtype in _TORCH_FORMATS:
            return x.to(torch.float64).numpy()  # exact: every such value is a float64
        if x.is_floating_point() or x.is_complex():
            raise InputError(f"logits of dtype {x.dtype} are not supported; store float16, "
                             f"bfloat16, float32 or float64")
        return x.numpy().astype(np.float64)
    # a .npy / .npz block: the one gate (booleans, strings, datetimes, integers past 2**53,
    # values past float64's range are refused, as `load_logits` refuses them)
    return check_array(x, "logits")


def _targets(t, ignore_index: int | None = None) -> np.ndarray:
    """Raw targets; negative ones are refused unless they equal `ignore_index` (training
    options: such rows are ignored)."""
    if isinstance(t, torch.Tensor):
        if t.dtype == torch.bool:
            raise InputError("targets must be integer class indices, got booleans")
        t = t.numpy()
    t = check_array(t, "targets", dtype=None)   # real numbers (validated per block after)
    if t.dtype != np.bool_ and np.issubdtype(t.dtype, np.number) and \
            np.any((t < 0) & (t != (0 if ignore_index is None else ignore_index))):
        raise InputError(IGNORED_TARGET_HINT)
    return t


def read_rows(path, start: int, stop: int, index=None, csv_reader=None,
              ignore_index: int | None = None):
    """Rows [start, stop) of the file (or, with `index`, rows index[start:stop]) as float64
    logits (exact) and raw targets (a negative target only if it is `ignore_index`). Maps the
    file where the format allows."""
    return _named(_rows, Path(path), start, stop, index, csv_reader, ignore_index)


def _rows(p: Path, start: int, stop: int, index, csv_reader, ignore_index=None):
    s = _suffix(p)
    sel = slice(start, stop) if index is None else np.asarray(index)[start:stop]
    if s == ".npy":
        a = np.load(p, mmap_mode="r", allow_pickle=False)[sel]
        return _to_float64(a[:, :-1]), _targets(a[:, -1], ignore_index)
    if s == ".safetensors":
        with safe_open(str(p), framework="pt") as f:
            if index is None:
                x = f.get_slice("logits")[start:stop]
                t = f.get_slice("targets")[start:stop]
            else:
                x = torch.stack([f.get_slice("logits")[int(i):int(i) + 1][0] for i in sel])
                t = f.get_tensor("targets")[torch.as_tensor(sel)]
        return _to_float64(x), _targets(t, ignore_index)
    if s == ".pt":
        x, t = _open_pt(*_stat(p))
        sel_t = sel if index is None else torch.as_tensor(sel)
        return _to_float64(x[sel_t]), _targets(t[sel_t], ignore_index)
    if s == ".npz":
        x, t = _open_npz(*_stat(p))
        return _to_float64(x[sel]), _targets(t[sel], ignore_index)
    if s == ".csv":
        x, t = csv_reader(p)
        return _to_float64(x[sel]), _targets(t[sel], ignore_index)
    raise InputError(f"unsupported file type {s!r}")


def read_arrays(path) -> tuple[np.ndarray, np.ndarray]:
    """The whole of a .pt or .safetensors file: (float64 logits, raw targets), for
    `inputs.load_logits`, which validates them and names the file in any error)."""
    p = Path(path)
    return _rows(p, 0, _info(p, None).rows, None, None)


def file_sha256(path, block: int = 1 << 22) -> str:
    """The SHA-256 of the file's bytes, read in blocks (the file is never held whole)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
