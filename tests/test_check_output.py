"""`check`'s output explains itself: the references carry no verdict of their own, a format
that cannot run a case says which and why, and --details holds each case's inputs."""
import numpy as np
import pytest

from precision_lab.analysis.check import battery, check_implementation
from precision_lab.examples import blog
from precision_lab.numerics.formats import get_format


@pytest.fixture(scope="module")
def res():
    return check_implementation(blog.cross_entropy, name="blog",
                                formats=["float16", "float32"])


def test_references_have_no_verdict_of_their_own(res):
    v = res.verdict
    assert set(v[v["implementation"] != "blog"]["verdict"]) == {"reference"}
    assert set(v[v["implementation"] == "blog"]["verdict"]) == {"FAIL"}
    text = res.to_text()
    mine, refs = text.split("references, for comparison only")
    refs = refs.split("cases a format cannot represent")[0]
    assert "torch" in refs and "logsumexp" in refs
    assert "PASS" not in refs and "FAIL" not in refs     # torch's inf in float16: no FAIL
    assert "torch" not in mine.split("judged")[1]
    assert text.count("verdict: ") == 1 and text.rstrip().endswith("FAIL (blog)")
    assert set(res.details["role"]) == {"checked", "reference"}


def test_a_format_that_cannot_run_a_case_says_which_and_why(res):
    n = len(battery(0))
    d = res.details
    per_format = d[d["role"] == "checked"].groupby("format")["case"].nunique()
    sk = res.skipped
    assert per_format["float32"] == n and sk[sk["format"] == "float32"].empty
    f16 = sk[sk["format"] == "float16"]
    assert per_format["float16"] + len(f16) == n and len(f16) > 0
    assert all("overflow float16 (largest finite 65504)" in r for r in f16["reason"])
    text = res.to_text()
    assert f"float16: {per_format['float16']} cases" in text and "float32: 32 cases" in text
    for case in f16["case"]:
        assert case in text.split("cannot represent")[1]


def test_details_hold_each_cases_inputs(res):
    d = res.details
    cases = {c.name: c for c in battery(0)}
    for _, r in d[(d["role"] == "checked") & (d["format"] == "float32")].iterrows():
        case = cases[r["case"]]
        x = np.array([[float(v) for v in row.split()] for row in r["logits"].split("; ")])
        assert np.array_equal(x, get_format("float32").round(case.logits), equal_nan=True)
        assert [int(k) for k in r["target"].split()] == case.targets.tolist()
