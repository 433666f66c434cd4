"""`python experiments/seed_questions.py [options]`: the same as `precision-lab run seed_questions`.

The experiment itself is the package precision_lab/experiments/seed_questions/, shipped with
precision_lab."""
import sys

from precision_lab.runner import script_main

if __name__ == "__main__":
    sys.exit(script_main("seed_questions"))
