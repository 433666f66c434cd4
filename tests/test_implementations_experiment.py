"""The implementations experiment on a tiny grid: its outputs, the row-by-row comparison with
torch eager, and the adversarial battery."""
import json

import numpy as np
import pandas as pd
import pytest

from precision_lab.experiments import load_experiment
from precision_lab.runner import RunConfig, run_experiment
from precision_lab.running.sweep import read_table

EXP = load_experiment("implementations")
TINY = {"scales": [1.0, 100.0], "scale_classes": 8, "scale_rows": 4, "class_counts": [8],
        "class_scales": [1.0], "min_rows": 2, "max_rows": 4, "max_logits": 64,
        "rows_per_case": 1,
        "exclude": ["torch_compile", "tensorflow", "jax_log_softmax", "scipy_log_softmax"]}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("impl")
    EXP.PROFILES["tiny"] = TINY
    try:
        run_experiment("implementations", RunConfig(profile="tiny", out=out, workers=1,
                                                    quiet=True))
    finally:
        del EXP.PROFILES["tiny"]
    return out / "implementations"


def test_outputs(report):
    for f in ("results.csv", "summary.md", "summary.tex", "tables/battery.tex",
              "findings.json", "scale.png", "classes.png"):
        assert (report / f).is_file(), f
    md = (report / "summary.md").read_text()  # the answer first: headline table, figure
    first_table = md.index("**Table ")
    assert first_table == md.index("**Table implementations:T1.**")
    assert first_table < md.index("![scale](scale.png)") < md.index("## Findings")
    assert "**Table implementations:T2.**" in md.split("## Adversarial battery")[1]
    df = read_table(report / "results.csv")
    assert set(df["kind"]) == {"scale", "classes", "battery"}
    assert not set(df["method"]) & set(TINY["exclude"])
    assert set(df[df["method"] == "scipy_logsumexp"]["format"]) == {"float32", "float64"}
    base = df["baseline"].iloc[0]
    assert (df[df["method"] == base]["n_differ"] == 0).all()
    assert (df["n_closer"] + df["n_farther"] <= df["n_differ"]).all()
    findings = json.loads((report / "findings.json").read_text())["findings"]
    assert any("closest to the truth" in f["text"] for f in findings)
    assert all(len(f["text"].split()) <= 45 for f in findings)


def test_compare_with_counts_closer_and_farther():
    df = pd.DataFrame({"format": ["float32"] * 6, "row": [0, 1, 2] * 2,
                       "reduction": ["none"] * 6, "method": ["base"] * 3 + ["other"] * 3,
                       "computed": [1.0, 2.0, np.nan, 1.0, 2.5, 3.0],
                       "abs_err": [0.1, 0.5, np.nan, 0.1, 0.2, 0.0]})
    out = EXP.compare_with(df, "base").set_index(["method", "row"])
    assert out.loc[("other", 0), "n_differ"] == 0
    assert out.loc[("other", 1), ["n_differ", "n_closer", "n_farther"]].tolist() == [1, 1, 0]
    # the baseline's NaN is infinitely far from a finite truth
    assert out.loc[("other", 2), ["n_differ", "n_closer", "n_farther"]].tolist() == [1, 1, 0]


def test_battery_cases_and_masks():
    x, t, case = EXP.battery({"rows_per_case": 2, "classes": 16, "seed": 0, "kind": "battery"})
    assert x.shape == (12, 16) and len(set(case)) == 6
    masked = x[case == "masked -inf classes"]
    tm = t[case == "masked -inf classes"]
    assert np.isfinite(masked[np.arange(2), tm]).all() and np.isinf(masked).any()
