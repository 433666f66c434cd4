"""`python experiments/implementations.py [options]`: the same as `precision-lab run implementations` (the experiment
itself is precision_lab/experiments/implementations.py, shipped with the package)."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("implementations"))
