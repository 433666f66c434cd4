"""`python experiments/tolerance.py [options]`: the same as `precision-lab run tolerance` (the experiment
itself is precision_lab/experiments/tolerance.py, shipped with the package)."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("tolerance"))
