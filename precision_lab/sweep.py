"""Grid runner: cells computed on every core (or a Dask cluster), checkpointed, resumable.

A cell is a dict of plain parameters. `run_cells` computes each cell with a picklable function,
writes every finished cell to the checkpoint directory atomically, skips cells already there,
and returns the concatenation *read back from the checkpoint files in grid order*, so the
result is the same bytes whether a run was interrupted, how many workers ran it, and in which
order cells finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .evaluate import evaluate
from .inputs import make_logits
from .metrics import aggregate
from .report import write_csv

__all__ = ["cell_key", "cell_rng", "run_cells", "evaluate_cell", "GROUP"]

GROUP = ["format", "method", "accumulator", "reduction"]


def cell_key(cell: dict) -> str:
    """A stable name for a cell: sha256 of its parameters as canonical JSON."""
    text = json.dumps(cell, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cell_rng(cell: dict) -> np.random.Generator:
    """The cell's own random stream: from its seed and parameters, not from its position."""
    key = int(cell_key({k: v for k, v in cell.items() if k != "seed"}), 16)
    return np.random.default_rng(np.random.SeedSequence([int(cell["seed"]), key]))


def evaluate_cell(cell: dict) -> pd.DataFrame:
    """The standard cell: synthetic logits (distribution, rows, classes, scale, seed) through
    every requested format and method, aggregated per (format, method, accumulator, reduction).
    Optional keys: formats, methods, accumulators (lists)."""
    x, t = make_logits(cell["distribution"], int(cell["rows"]), int(cell["classes"]),
                       float(cell["scale"]), cell_rng(cell))
    kw = {k: cell[k] for k in ("formats", "methods", "accumulators") if k in cell}
    df = evaluate(x, t, **kw)
    agg = aggregate(df, GROUP)
    params = {k: v for k, v in cell.items() if k not in ("formats", "methods", "accumulators")}
    for i, (k, v) in enumerate(params.items()):
        agg.insert(i, k, v)
    return agg


def _init_worker():
    import torch
    torch.set_num_threads(1)


def _progress(total: int, done: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=done, desc=desc, unit="cell", dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty(), smoothing=0.1)


def run_cells(cells: Sequence[dict], fn: Callable[[dict], pd.DataFrame] = evaluate_cell,
              checkpoint_dir=None, workers: int | None = None, scheduler: str | None = None,
              quiet: bool = False, desc: str = "cells", keep_checkpoints: bool = False
              ) -> pd.DataFrame:
    """Compute every cell (skipping those checkpointed) and return their rows in grid order.

    workers: processes on this machine (default: every core; 1 runs in this process).
    scheduler: the address of a Dask distributed scheduler; cells then run on its workers.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
    keys = [cell_key(c) for c in cells]
    if len(set(keys)) != len(keys):
        raise ValueError("the grid holds duplicate cells")
    results: dict[str, pd.DataFrame] = {}

    def path(k):
        return ckpt / f"{k}.csv"

    todo = [(k, c) for k, c in zip(keys, cells) if ckpt is None or not path(k).exists()]
    bar = _progress(len(cells), len(cells) - len(todo), desc, quiet)

    def finish(k, df):
        if ckpt is not None:
            write_csv(df, path(k))
        else:
            results[k] = df
        bar.update(1)

    try:
        if scheduler:
            _run_dask(todo, fn, scheduler, finish)
        elif (workers or os.cpu_count() or 1) == 1 or len(todo) <= 1:
            for k, c in todo:
                finish(k, fn(c))
        else:
            _run_pool(todo, fn, workers or os.cpu_count() or 1, finish)
    finally:
        bar.close()
    if ckpt is None:
        return pd.concat([results[k] for k in keys], ignore_index=True)
    out = pd.concat([pd.read_csv(path(k), keep_default_na=False, na_values=["", "nan", "NaN"])
                     for k in keys], ignore_index=True)
    if not keep_checkpoints:
        shutil.rmtree(ckpt, ignore_errors=True)
    return out


def _run_pool(todo, fn, workers, finish):
    # spawn, not fork: forking a process that has started torch's thread pools can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                             initializer=_init_worker) as pool:
        pending = {pool.submit(fn, c): k for k, c in todo}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    finish(pending.pop(fut), fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _run_dask(todo, fn, scheduler, finish):
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RuntimeError("--scheduler needs dask's distributed package: "
                           "pip install 'precision_lab[dask]'") from None
    with Client(scheduler) as client:
        futures = {client.submit(fn, c, key=f"cell-{k}", pure=False): k for k, c in todo}
        for fut in as_completed(futures):
            finish(futures[fut], fut.result())
