"""`python experiments/scale_classes.py [options]`: the same as `precision-lab run scale_classes`.

The experiment itself is precision_lab/experiments/scale_classes.py, shipped with the package."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("scale_classes"))
