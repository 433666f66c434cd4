"""Cell functions for the sweep tests: importable by spawned pool workers and Dask workers
(tests/ is on sys.path via conftest.py), and a script that runs a small sweep to be killed.

`marked_cell` leaves one marker file per computation in $PRECISION_LAB_TEST_MARKERS, so a test
can count how many times each cell was computed, and sleeps $PRECISION_LAB_TEST_SLEEP seconds
so a run can be killed midway (the environment, not the cell, so that slow and fast runs of one
grid compute the same numbers). Its rows exercise the CSV round trip: floats with full 17-digit expansions,
tiny and huge magnitudes, nan, +-inf, strings and integers.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

MARKERS = "PRECISION_LAB_TEST_MARKERS"
SLEEP = "PRECISION_LAB_TEST_SLEEP"
FAIL_AT = "PRECISION_LAB_TEST_FAIL_AT"


def marked_cell(cell: dict) -> pd.DataFrame:
    from precision_lab.analysis.cells import cell_rng
    from precision_lab.running.sweep import cell_key
    d = os.environ.get(MARKERS)
    if d:
        Path(d, f"{cell_key(cell)}.{uuid.uuid4().hex}").touch()
    time.sleep(float(os.environ.get(SLEEP, "0")))
    if str(cell["i"]) == os.environ.get(FAIL_AT):
        raise ZeroDivisionError(f"cell {cell['i']} fails on purpose")
    rng = cell_rng(cell)
    v = rng.standard_normal(5) * 10.0 ** rng.integers(-300, 300, size=5)
    return pd.DataFrame({
        "i": [cell["i"]] * 7,
        "label": ["a", "NA", "None", "b,c", "x", "y", "z"],
        "value": [*v.tolist(), np.nan, np.inf],
        "third": (v[:1] / 3.0).tolist() * 7,
        "count": rng.integers(0, 10**12, size=7),
    })


def computed_counts(marker_dir) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in Path(marker_dir).iterdir():
        k = p.name.split(".")[0]
        counts[k] = counts.get(k, 0) + 1
    return counts


def grid(n: int, seed: int = 0) -> list[dict]:
    return [{"i": i, "seed": seed} for i in range(n)]


def main(argv=None) -> int:
    """python tests/sweep_cells.py OUT CELLS WORKERS: run the grid with checkpoints in OUT/ckpt
    and write OUT/results.csv, as an experiment would."""
    out, n, workers = argv or sys.argv[1:]
    from precision_lab.reporting.tables import write_csv
    from precision_lab.running.sweep import run_cells
    try:
        df = run_cells(grid(int(n)), marked_cell,
                       checkpoint_dir=Path(out) / "ckpt", workers=int(workers), quiet=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    write_csv(df, Path(out) / "results.csv")
    return 0


if __name__ == "__main__":
    import sweep_cells  # the cell function pickled by module name, not as __main__'s

    sys.exit(sweep_cells.main())
