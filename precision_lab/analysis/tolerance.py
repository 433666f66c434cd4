"""`precision_lab.tolerance(fmt, classes, scale=...)`: the rtol / atol a test of a cross-entropy
implementation should use, measured, not picked by hand.

The table behind it (tolerance.json, shipped in this package) is written by the `tolerance`
experiment (`precision-lab run tolerance --profile full --out reports`, copied here by
`make reports`); the file records the command, profile, seed, commit and date that made it.
For each format, class-count range and logit-scale range it holds the 99th and 99.9th
percentiles of the error that correct implementations (the library adapters and the suite's
best methods, `experiments/tolerance.py` lists them) show on normal logits s * z:

  against="truth":  |computed - truth| / max(|truth|, 1), the truth certified (>= 100 bits);
  against="torch":  |computed - torch| / max(|torch|, 1), torch eager in the same format;

per row (reduction="none") and for the batch mean ("mean"), taken per row (or batch) as the
largest over the implementations, so every one of them stays within it on that share of rows.
With rtol = atol = that error, `abs(a - e) <= atol + rtol * abs(e)` holds on that share,
i.e. `torch.testing.assert_close(actual, expected, **tolerance(...).kwargs())`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..errors import InputError
from ..numerics.formats import get_format

__all__ = ["Tolerance", "tolerance", "load_table", "TABLE_PATH", "AGAINST", "QUANTILES",
           "round_up"]

TABLE_PATH = Path(__file__).resolve().parent / "tolerance.json"
AGAINST = ("truth", "torch")
QUANTILES = ("p99", "p99.9")
REDUCTIONS = ("none", "mean")


@dataclass(frozen=True)
class Tolerance:
    """rtol = atol for comparing a cross entropy in `format` against `against`."""
    rtol: float
    atol: float
    format: str
    classes: tuple      # (lowest, highest) class count of the range measured
    scale: tuple        # (above, up to) logit scale s of the range measured
    against: str
    reduction: str
    quantile: str
    samples: int        # rows (or batch means) the percentile is taken over
    measured: float     # the percentile itself, before rounding up

    def kwargs(self) -> dict:
        """{"rtol": ..., "atol": ...} for torch.testing.assert_close or numpy.allclose."""
        return {"rtol": self.rtol, "atol": self.atol}


def round_up(v: float, digits: int = 2) -> float:
    """v rounded up to `digits` significant digits (a tolerance is never rounded down)."""
    if not (v > 0 and math.isfinite(v)):
        return v
    e = math.floor(math.log10(v)) - digits + 1
    r = math.ceil(round(v / 10.0 ** e, 9)) * 10.0 ** e
    return float(f"{r:.{digits}g}")


@cache
def load_table(path: str | None = None) -> dict:
    """The tolerance table: {"generated_by": {...}, "entries": [...]}."""
    p = Path(path) if path else TABLE_PATH
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no tolerance table at {p}; generate it with `precision-lab run "
                         f"tolerance --profile full --out reports` (make reports)") from None


def _key(against: str, reduction: str, quantile: str) -> str:
    return f"{'row' if reduction == 'none' else 'mean'}_{against}_{quantile.replace('.', '')}"


def tolerance(fmt: str, classes: int, scale: float = 1.0, against: str = "truth",
              reduction: str = "none", quantile: str = "p99.9",
              path: str | None = None) -> Tolerance:
    """The measured tolerance for a cross entropy in `fmt` over `classes` classes with logits
    of scale `scale` (standard deviation of the logits), compared against the certified truth
    or against torch eager in the same format, per row or for the batch mean."""
    f = get_format(fmt)
    if against not in AGAINST:
        raise InputError(f"against must be one of {', '.join(AGAINST)}, got {against!r}")
    if reduction not in REDUCTIONS:
        raise InputError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if quantile not in QUANTILES:
        raise InputError(f"quantile must be one of {', '.join(QUANTILES)}, got {quantile!r}")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise InputError(f"classes must be an integer of at least 2, got {classes!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
            or not (math.isfinite(scale) and scale > 0):
        raise InputError(f"scale must be a positive number, got {scale!r}")
    entries = [e for e in load_table(path)["entries"] if e["format"] == f.name]
    for e in entries:
        if e["classes_min"] <= classes <= e["classes_max"] \
                and e["scale_above"] < scale <= e["scale_max"]:
            key = _key(against, reduction, quantile)
            v = e.get(key)
            if v is None or not math.isfinite(v):
                raise InputError(f"the tolerance table has no {key} for {f.name}, C = "
                                 f"{classes}, s = {scale:g} (no finite samples)")
            tol = round_up(v)
            return Tolerance(tol, tol, f.name, (e["classes_min"], e["classes_max"]),
                             (e["scale_above"], e["scale_max"]), against, reduction, quantile,
                             int(e["rows" if reduction == "none" else "means"]), float(v))
    ranges = "; ".join(f"C {e['classes_min']}-{e['classes_max']}, s in ({e['scale_above']:g}, "
                       f"{e['scale_max']:g}]" for e in entries)
    raise InputError(f"no tolerance measured for {f.name} at C = {classes}, s = {scale:g}; "
                     f"measured: {ranges or 'none'}")
