"""The experiments shipped with precision_lab, one module each, found by name.

An experiment module provides
  __doc__                 the question, the data, the method, what the report concludes;
  PROFILES                {"quick": {...}, "full": {...}}: the parameters of each profile;
  run(config, params)     -> pandas.DataFrame, the tidy results (written as results.csv);
  report(df, config, params, out_dir) -> list of findings, each {"text": ..., "link": ...}:
                          writes summary.md, summary.tex and figures into out_dir; build them
                          with `reporting.document.report_for(NAME, __doc__, config, out_dir)`
                          (tables with ids NAME:T<n>, the headline table and figure first,
                          findings linked to them) and return its `write(out_dir)`.
Every module of this package whose name does not start with "_" is an experiment, and so is
every sub-package (a directory with an `__init__.py`, e.g. `seed_questions/`, whose modules are
its parts); adding one is adding a file. `precision_lab.runner` runs them.
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


def _source(name: str) -> Path | None:
    """The file that defines experiment `name`: NAME.py or NAME/__init__.py."""
    for p in (EXPERIMENTS_DIR / f"{name}.py", EXPERIMENTS_DIR / name / "__init__.py"):
        if p.is_file():
            return p
    return None


def available() -> list[str]:
    """The experiments: modules and sub-packages of this directory not starting with "_"."""
    names = {p.stem for p in EXPERIMENTS_DIR.glob("*.py")}
    names |= {p.parent.name for p in EXPERIMENTS_DIR.glob("*/__init__.py")}
    return sorted(n for n in names if not n.startswith("_"))

def load_experiment(name: str):
    names = available()
    if name not in names:
        raise InputError(f"unknown experiment {name!r}; available: {', '.join(names)}")
    modname = f"{__name__}.{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    path = _source(name)
    package = [str(path.parent)] if path.name == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(modname, path,
                                                  submodule_search_locations=package)
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
