"""Grid pieces the sweep experiments share: rows per cell, and the cells over a user's logits.

A sweep over `--logits-file` replaces the synthetic logits by the user's (distribution
"user"), staged once as arrays beside the checkpoints; `user_cells` builds those cells the same
way for every experiment.
"""
from __future__ import annotations

from typing import Callable

from .cells import class_counts_up_to, stage_arrays

__all__ = ["rows_for", "user_cells"]


def rows_for(classes: int, params: dict) -> int:
    """Rows of a cell with `classes` classes: at most max_rows, at least min_rows, and rows x C
    at most max_logits (the profile's keys)."""
    return int(max(params["min_rows"], min(params["max_rows"], params["max_logits"] // classes)))


def user_cells(config, name: str, scales, rows: Callable[[int], int],
               exponents=None, scale_outer: bool = True) -> list[dict]:
    """The cells of experiment `name` over the user's logits: for each scale in `scales`, the
    user's class count C alone, or (with `exponents`) every C = 2^k below it and C itself
    (each row truncated to its first C - 1 non-target classes plus the target); rows(C) rows,
    at most the user's. `scale_outer` orders the cells scale-major (else class-count-major)."""
    x, t = config.user_logits
    staged = stage_arrays(config.checkpoint_dir(name), "user", x, t)
    full = int(x.shape[1])
    counts = [full] if exponents is None else class_counts_up_to(full, exponents)
    pairs = ([(s, c) for s in scales for c in counts] if scale_outer
             else [(s, c) for c in counts for s in scales])
    return [{"distribution": "user", "rows": min(len(t), int(rows(c))), "classes": int(c),
             "scale": float(s), "seed": config.seed, **staged} for s, c in pairs]
