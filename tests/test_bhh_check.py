"""The Blanchard-Higham-Higham bound as a check that can fail: non-finite results on
representable rows are violations; the distribution of error / bound and the share of rows
where the bound says anything (bound < |loss|) are reported per cell."""
from __future__ import annotations

import numpy as np
import pytest

from precision_lab.analysis.cells import evaluate_with_bound
from precision_lab.numerics.bounds import BHH_CHECK_COLUMNS, bhh_check


def test_bhh_check_counts_nonfinite_results_on_representable_rows():
    abs_err = np.array([0.0, 1e-3, 5e-3, np.inf, np.nan, np.inf, 1e-3])
    computed = np.array([1.0, 1.0, 1.0, np.inf, np.nan, np.inf, 1.0])
    bound = np.array([1e-3, 2e-3, 2e-3, 1e-3, 1e-3, 1e-3, np.nan])
    truth = np.array([1.0, 1.0, 1e-3, 1.0, 1.0, 1e300, 1.0])
    representable = np.array([True, True, True, True, True, False, True])
    c = bhh_check(abs_err, computed, bound, truth, representable)
    assert set(c) == set(BHH_CHECK_COLUMNS)
    # checked: rows 0-4 (row 5 not representable and non-finite, row 6 has no bound)
    assert c["bhh_checked"] == 5
    assert c["bhh_violations"] == 3                     # row 2 (2.5x) and the two non-finite
    assert c["bhh_within_frac"] == pytest.approx(2 / 3)  # finite results only, as before
    assert c["bhh_ratio_median"] == 2.5 and c["bhh_ratio_max"] == np.inf
    # informative: bound < |loss| on rows 0, 1, 3, 4 (not 2: bound 2e-3 > loss 1e-3; 5: yes)
    assert c["bhh_informative_frac"] == pytest.approx(5 / 6)


def test_bhh_check_with_nothing_to_check():
    c = bhh_check(np.array([1.0]), np.array([np.inf]), np.array([np.nan]), np.array([1.0]),
                  np.array([True]))
    assert c["bhh_checked"] == 0 and c["bhh_violations"] == 0
    assert np.isnan(c["bhh_ratio_median"]) and np.isnan(c["bhh_informative_frac"])


def test_overflowing_float32_sum_in_float16_is_a_violation():
    """70000 equal logits in float16: the float32 sum (70000) overflows when rounded back to
    float16, so logsumexp and log1p return inf on rows whose loss log(70000) = 11.16 float16
    holds: every row violates the bound (it used to be left out). With float16 partial sums
    the sum stalls at 2048 and the error (3.5) stays within a bound larger than the loss."""
    x = np.zeros((3, 70000))
    t = np.array([0, 1, 2])
    df = evaluate_with_bound(x, t, {"formats": ["float16"], "methods": ["logsumexp", "log1p"],
                                    "accumulators": ["float32", "working"]})
    rows = df[df["reduction"] == "none"].set_index(["method", "accumulator"])
    for m in ("logsumexp", "log1p"):
        over, stall = rows.loc[(m, "float32")], rows.loc[(m, "working")]
        assert over["representable_frac"] == 1 and over["nonfinite_frac"] == 1
        assert over["bhh_checked"] == 3 and over["bhh_violations"] == 3
        assert over["bhh_ratio_max"] == np.inf and over["bhh_informative_frac"] == 1
        assert stall["bhh_violations"] == 0 and stall["bhh_informative_frac"] == 0
        assert 0 < stall["bhh_ratio_median"] <= stall["bhh_ratio_max"] < 1
    assert df[df["reduction"] == "mean"]["bhh_checked"].isna().all()
