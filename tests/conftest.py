import os
import sys

import mpmath
import pytest
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _mpmath_precision_untouched():
    """Every test must leave mpmath's global precision as it found it (mpmath's own fixture)."""
    prec = mpmath.mp.prec
    yield
    assert mpmath.mp.prec == prec, "a test or the library changed mpmath's global precision"
    mpmath.mp.prec = prec
