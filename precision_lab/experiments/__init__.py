"""The experiments shipped with precision_lab, one module each, found by name.

An experiment module provides
  __doc__                 the question, the data, the method, what the report concludes;
  PROFILES                {"quick": {...}, "full": {...}}: the parameters of each profile;
  run(config, params)     -> pandas.DataFrame, the tidy results (written as results.csv);
  report(df, config, params, out_dir) -> list of findings, each {"text": ..., "link": ...}:
                          writes summary.md, summary.tex and figures into out_dir.
Every module of this package whose name does not start with "_" is an experiment; adding
one is adding a file. `precision_lab.runner` runs them.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from ..errors import InputError

__all__ = ["EXPERIMENTS_DIR", "available", "load_experiment", "measured_timings", "TIMINGS"]

EXPERIMENTS_DIR = Path(__file__).resolve().parent
# Wall times as measured by `make reports` (precision_lab.experiments._timings), shipped so that
# `precision-lab list` and the README quote measurements, not guesses.
TIMINGS = EXPERIMENTS_DIR / "timings.json"


def available() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.stem.startswith("_"))

def load_experiment(name: str):
    names = available()
    if name not in names:
        raise InputError(f"unknown experiment {name!r}; available: {', '.join(names)}")
    modname = f"{__name__}.{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, EXPERIMENTS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    spec.loader.exec_module(module)
    return module


def measured_timings() -> dict:
    """{experiment: {profile: {"wall_time_s", "cpu_count", "cpu", "date"}}} as last measured;
    empty if never measured."""
    try:
        return json.loads(TIMINGS.read_text())
    except (OSError, ValueError):
        return {}
