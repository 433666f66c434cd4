"""Record the experiments' measured wall times for `precision-lab list` and the README.

    python -m precision_lab.experiments._timings REPORT_DIR [REPORT_DIR ...]

reads every REPORT_DIR/NAME/metadata.json (written by the runner after a run) and writes
precision_lab/experiments/timings.json: per experiment and profile, the wall time, the machine's
core count and CPU, and the date. `make reports` runs it after the full and quick runs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..running.storage import atomic_write
from . import TIMINGS, measured_timings


def collect(dirs) -> dict:
    out = measured_timings()
    for d in dirs:
        for meta_path in sorted(Path(d).glob("*/metadata.json")):
            meta = json.loads(meta_path.read_text())
            if "experiment" not in meta or "wall_time_s" not in meta:
                continue
            out.setdefault(meta["experiment"], {})[meta["profile"]] = {
                "wall_time_s": meta["wall_time_s"], "cpu_count": meta.get("cpu_count"),
                "cpu": meta.get("cpu"), "date": meta.get("date")}
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def main(argv=None) -> int:
    dirs = sys.argv[1:] if argv is None else argv
    with atomic_write(TIMINGS) as f:
        json.dump(collect(dirs), f, indent=1)
        f.write("\n")
    print(f"wrote {TIMINGS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
