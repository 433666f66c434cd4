"""Grid runner: cells computed on every core (or a Dask cluster), checkpointed, resumable.

A cell is a dict of plain parameters. `run_cells` computes each cell with a picklable function
and returns the rows of every cell in grid order. Its guarantees:

Resumable.  With a checkpoint directory, every finished cell is written there at once,
  atomically (a temporary file, then a rename), as one CSV; a cell whose checkpoint exists is
  not computed again. A run killed at any moment (SIGINT, SIGTERM, SIGKILL, a crash, a power
  cut after the rename) loses at most the cells in flight. Ctrl-C stops the worker processes at
  once (they ignore SIGINT; the main process terminates them) and raises KeyboardInterrupt.
Safe to resume.  A checkpoint is named KEY-CODE-CONTENT.csv: KEY hashes the cell's parameters,
  CODE fingerprints the code that computes it (every precision_lab source file, the cell
  function's own source file, the arguments bound into it, and the numpy/torch/mpmath/pandas/
  ml_dtypes versions), CONTENT hashes the file's bytes. A checkpoint written by other code is
  never reused, and one whose bytes do not match its name (damaged) is deleted; either way
  the cell is recomputed. Two runs cannot share a checkpoint directory (a lock).
Reproducible.  Every cell's rows go through the same CSV round trip (floats written with
  repr, read back exactly), checkpointed or not, and are concatenated in grid order, so the
  result is the same bytes however many workers ran it, in whichever order cells finished,
  whether it ran on a Dask cluster, and whether it was interrupted and resumed. Each cell
  draws its random numbers from its own seed and parameters (`cell_rng`), and torch runs with
  one thread in every process that computes cells (its reductions could otherwise depend on
  the thread count).
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import os
import shutil
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ..errors import InputError
from .provenance import code_fingerprint
from .storage import atomic_write, exclusive

__all__ = ["cell_key", "run_cells", "code_fingerprint",
           "default_workers", "checkpoints_kept", "read_table"]

def cell_key(cell: dict) -> str:
    """A stable name for a cell: sha256 of its parameters as canonical JSON."""
    text = json.dumps(cell, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# --------------------------------------------------------------------------------------------
# Tables: one CSV round trip for every cell.

def read_table(source) -> pd.DataFrame:
    """Read a CSV written by `report.write_csv` back exactly: floats parsed round-trip, the
    strings 'NA', 'None', 'null' kept as strings; only empty fields and nan are missing."""
    return pd.read_csv(source, keep_default_na=False, na_values=["", "nan", "NaN"],
                       **_ROUND_TRIP)


# pandas >= 3 parses floats exactly by default (and deprecates the option); before, only
# float_precision="round_trip" guarantees it.
_ROUND_TRIP = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}


def _csv_text(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, lineterminator="\n")


def default_workers() -> int:
    """Every core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# Running cells.

def _init_worker():
    """Each process that computes cells: torch on one thread (the same arithmetic everywhere),
    and SIGINT ignored in pool workers, so Ctrl-C reaches only the main process, which stops
    the workers itself."""
    import torch
    torch.set_num_threads(1)


def _init_pool_worker(parent: int):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked by the parent while it started us
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_parent(parent)
    _init_worker()


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this worker when the process that started it dies (a
    SIGKILLed sweep would otherwise leave its workers waiting forever on their queue)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class _Task:
    """`fn` wrapped for a worker process (pool or Dask): one torch thread, then the cell."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, cell):
        _init_worker()
        return _csv_text(self.fn(cell))


@contextlib.contextmanager
def _single_torch_thread():
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_KEEP: contextvars.ContextVar[list | None] = contextvars.ContextVar("precision_lab_keep",
                                                                    default=None)


@contextlib.contextmanager
def checkpoints_kept():
    """Within this block `run_cells` keeps its checkpoint directories and lists them here, for
    the caller to remove once the results are safely written (the experiment runner does)."""
    dirs: list[Path] = []
    token = _KEEP.set(dirs)
    try:
        yield dirs
    finally:
        _KEEP.reset(token)


def run_cells(cells: Sequence[dict], fn: Callable[[dict], pd.DataFrame],
              checkpoint_dir=None, workers: int | None = None, scheduler: str | None = None,
              quiet: bool = False, desc: str = "cells", keep_checkpoints: bool = False
              ) -> pd.DataFrame:
    """Compute every cell (skipping those checkpointed) and return their rows in grid order.

    fn: cell dict -> DataFrame (the experiments use `analysis.cells.evaluate_cell`); must be picklable (a
        module-level function or a partial of one) to run in worker processes, and the cell's
        parameters must determine its result.
    checkpoint_dir: where finished cells are kept; removed after a complete run unless
        `keep_checkpoints` (or inside `checkpoints_kept()`).
    workers: processes on this machine (default: every core; 1 runs in this process).
    scheduler: the address of a Dask distributed scheduler; cells then run on its workers.
    """
    if workers is not None and (isinstance(workers, bool) or int(workers) != workers
                                or workers < 1):
        raise InputError(f"workers must be an integer of at least 1, got {workers!r}")
    cells = list(cells)
    keys = [cell_key(c) for c in cells]
    if len(set(keys)) != len(keys):
        raise InputError("the grid holds duplicate cells")
    if not cells:
        return pd.DataFrame()
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is None:
        return _run(cells, keys, fn, None, workers, scheduler, quiet, desc)
    ckpt.mkdir(parents=True, exist_ok=True)
    with exclusive(ckpt / ".lock", f"another run is using the checkpoint directory {ckpt}; "
                   f"wait for it to finish or give this run another --out"):
        out = _run(cells, keys, fn, ckpt, workers, scheduler, quiet, desc)
    kept = _KEEP.get()
    if kept is not None:
        kept.append(ckpt)
    elif not keep_checkpoints:
        shutil.rmtree(ckpt, ignore_errors=True)
    return out


def _run(cells, keys, fn, ckpt, workers, scheduler, quiet, desc) -> pd.DataFrame:
    tables: dict[str, pd.DataFrame] = {}
    fp = code_fingerprint(fn)
    if ckpt is not None:
        for stale in ckpt.glob(".*.tmp"):  # left by a run killed mid-write (we hold the lock)
            stale.unlink(missing_ok=True)
        for k in keys:
            for path in sorted(ckpt.glob(f"{k}-{fp}-*.csv")):
                table = _read_checkpoint(path)
                if table is None:  # damaged: recompute, never trust
                    path.unlink(missing_ok=True)
                else:
                    tables[k] = table
    todo = [(k, c) for k, c in zip(keys, cells) if k not in tables]
    bar = _progress(len(cells), len(cells) - len(todo), desc, quiet)

    def finish(k, cell, text: str):
        if ckpt is not None:
            with atomic_write(ckpt / f"{k}-{fp}-{_digest(text)}.csv") as f:
                f.write(text)
        tables[k] = read_table(io.StringIO(text))
        bar.update(1)

    n = workers or default_workers()
    try:
        if scheduler:
            _run_dask(todo, fn, scheduler, finish, fp)
        elif n == 1 or len(todo) <= 1:
            with _single_torch_thread():
                for k, c in todo:
                    finish(k, c, _call(fn, c))
        else:
            _run_pool(todo, fn, min(n, len(todo)), finish)
    finally:
        bar.close()
    return pd.concat([tables[k] for k in keys], ignore_index=True)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_checkpoint(path: Path) -> pd.DataFrame | None:
    """The checkpoint's table if its contents match the hash in its name, else None."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.stem.rsplit("-", 1)[-1] != _digest(text):
            return None
        return read_table(io.StringIO(text))
    except Exception:
        return None


def _call(fn, cell) -> str:
    try:
        return _csv_text(fn(cell))
    except Exception as exc:
        _note(exc, cell)
        raise


def _collect(fut, key, cell, finish) -> None:
    """Hand a finished future's CSV text to `finish`; a failure names its cell."""
    try:
        text = fut.result()
    except Exception as exc:
        _note(exc, cell)
        raise
    finish(key, cell, text)


def _note(exc: BaseException, cell) -> None:
    if hasattr(exc, "add_note"):
        exc.add_note(f"while computing the cell {cell}")


def _progress(total: int, done: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=done, desc=desc, unit="cell", dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty(), smoothing=0.1)


def _run_pool(todo, fn, workers, finish):
    # spawn, not fork: forking a process that has started torch's thread pools can deadlock.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_init_pool_worker, initargs=(os.getpid(),))
    completed = False
    try:
        task = _Task(fn)
        with _sigint_held():
            pending = {pool.submit(task, c): (k, c) for k, c in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                _collect(fut, *pending.pop(fut), finish)
        completed = True
    finally:
        if completed:
            pool.shutdown(wait=True)
        else:  # interrupted or failed: the finished cells are checkpointed; stop the rest now
            with _sigint_ignored():
                _terminate(pool)


@contextlib.contextmanager
def _sigint_held():
    """SIGINT blocked in the main thread while the pool starts its workers (in `submit`): a
    worker inherits the blocked mask and drops the signal once its initializer ignores
    SIGINT, so a Ctrl-C while workers start prints no traceback of theirs; the main process
    gets it, held pending, on leaving. A Ctrl-C that another thread of this process takes
    (the mask is the main thread's) is only recorded by a handler installed meanwhile, and
    raised on leaving: it never interrupts a worker's start halfway (the worker would read
    an empty pipe and print EOFError's traceback)."""
    if not hasattr(signal, "pthread_sigmask") or \
            threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)  # a Ctrl-C held meanwhile arrives now
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)  # the previous handler's turn


@contextlib.contextmanager
def _sigint_ignored():
    """A second Ctrl-C while the workers are being stopped is ignored, not a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and stop the workers now (the processes are taken before
    `shutdown`, which forgets them; a worker still starting would otherwise be waited for)."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(timeout=5)


def _run_dask(todo, fn, scheduler, finish, fp):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise InputError("--scheduler needs dask's distributed package: "
                         "pip install 'precision_lab[dask]'") from None
    try:
        client = Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from None
    with client:
        task = _Task(fn)
        futures = {client.submit(task, c, key=f"precision_lab-cell-{k}-{fp}", pure=False): (k, c)
                   for k, c in todo}
        for fut in as_completed(futures):
            _collect(fut, *futures[fut], finish)
