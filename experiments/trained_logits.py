"""`python experiments/trained_logits.py [options]`: the same as `precision-lab run trained_logits`.

The experiment itself is precision_lab/experiments/trained_logits.py, shipped with the package."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("trained_logits"))
