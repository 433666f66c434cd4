"""`python experiments/options.py [options]`: the same as `precision-lab run options`.

The experiment itself is precision_lab/experiments/options.py, shipped with the package."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("options"))
