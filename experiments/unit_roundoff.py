"""`python experiments/unit_roundoff.py [options]`: the same as
`precision-lab run unit_roundoff` (the experiment itself is
precision_lab/experiments/unit_roundoff.py, shipped with the package)."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("unit_roundoff"))
