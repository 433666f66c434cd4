"""`python experiments/class_count.py [options]`: the same as `precision-lab run class_count`.

The experiment itself is precision_lab/experiments/class_count.py, shipped with the package."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("class_count"))
