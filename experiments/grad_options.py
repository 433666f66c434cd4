"""`python experiments/grad_options.py [options]`: the same as `precision-lab run grad_options`.

The experiment itself is precision_lab/experiments/grad_options.py, shipped with the package."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("grad_options"))
