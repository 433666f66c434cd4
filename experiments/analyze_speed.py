"""`python experiments/analyze_speed.py [options]`: the same as `precision-lab run analyze_speed` (the experiment
itself is precision_lab/experiments/analyze_speed.py, shipped with the package)."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("analyze_speed"))
