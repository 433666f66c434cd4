"""`python experiments/grad_scale.py [options]`: the same as `precision-lab run grad_scale`.

The experiment itself is precision_lab/experiments/grad_scale.py, shipped with the package."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("grad_scale"))
