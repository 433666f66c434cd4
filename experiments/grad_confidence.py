"""`python experiments/grad_confidence.py [options]`: the same as `precision-lab run grad_confidence`.

The experiment itself is precision_lab/experiments/grad_confidence.py, shipped with the package."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("grad_confidence"))
