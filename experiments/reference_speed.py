"""`python experiments/reference_speed.py [options]`: the same as `precision-lab run reference_speed`.

The experiment itself is precision_lab/experiments/reference_speed.py, shipped with the package."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("reference_speed"))
