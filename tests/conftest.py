import os
import sys
import tempfile

import mpmath
import pytest
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))

# The suite never writes the user's truth cache (~/.cache/precision_lab): one of its own.
os.environ.setdefault("PRECISION_LAB_CACHE",
                      os.path.join(tempfile.mkdtemp(prefix="precision_lab_test_cache_")))

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _mpmath_precision_untouched():
    """Every test must leave mpmath's global precision as it found it (mpmath's own fixture)."""
    prec = mpmath.mp.prec
    yield
    assert mpmath.mp.prec == prec, "a test or the library changed mpmath's global precision"
    mpmath.mp.prec = prec
