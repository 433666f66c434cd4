"""Storage: one atomic writer, one lock, one way to replace a directory whole.

Every file precision_lab writes (reports, checkpoints, cached truths) goes through
`atomic_write`: a temporary file in the same directory, flushed and fsynced, then `os.replace`,
so an interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError

__all__ = ["atomic_write", "scratch_dir", "exclusive", "replace_dir", "recover_dir",
           "check_writable_dir"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0600)


def check_writable_dir(path, what: str) -> Path:
    """`path` as a directory this process can write into, created if missing, or InputError
    naming `what` and why not (a file on the way, a read-only or unwritable place, an empty
    name). A probe file is created and removed: permission bits alone do not tell (root)."""
    if str(path).strip() == "":
        raise InputError(f"{what} is empty; give a directory")
    p = Path(path)
    for parent in (p, *p.parents):
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{what} {p}: {parent} is a file, not a directory")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{what} {p} is not writable: {exc.strerror or exc}") from None
    return p


@contextlib.contextmanager
def scratch_dir(parent, prefix: str):
    """A fresh hidden directory in `parent` (named `prefix` + random), removed with all it
    holds when the block ends, on an exception too: a place on `parent`'s filesystem for
    temporary files that must not appear among `parent`'s own entries."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", tmp_dir=None):
    """Open a temporary file beside `path` (or in `tmp_dir`, a directory on the same
    filesystem, e.g. a `scratch_dir`); on success move it over `path`.

    The data is flushed to disk before the rename, so after a crash `path` holds either its
    old contents or the new ones, never a part. An exception inside the block leaves `path`
    untouched and removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent if tmp_dir is None else tmp_dir,
                               prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8",
                                                             "newline": ""})) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _MODE)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def exclusive(lock_path, busy: str, remove: bool = False):
    """Hold an exclusive posix lock on `lock_path`, or raise InputError(`busy`) at once;
    `remove` deletes the lock file after a successful block."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(busy) from None
        yield
        if remove:
            with contextlib.suppress(OSError):
                lock_path.unlink()
    finally:
        f.close()


def recover_dir(final: Path) -> None:
    """Finish or undo a publish that a crash interrupted, and drop stale staging."""
    old = final.parent / f".{final.name}.old"
    if old.is_dir():
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)
    shutil.rmtree(final.parent / f".{final.name}.staging", ignore_errors=True)


def replace_dir(staging: Path, final: Path) -> None:
    """Replace the directory `final` by `staging` (see the module docstring)."""
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):  # make the renames durable
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
