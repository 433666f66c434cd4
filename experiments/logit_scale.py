"""`python experiments/logit_scale.py [options]`: the same as `precision-lab run logit_scale`.

The experiment itself is precision_lab/experiments/logit_scale.py, shipped with the package."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("logit_scale"))
