"""The unit_roundoff experiment on a tiny profile: one input set for every precision, both
rounding modes, the bound, and findings computed from the data."""
import json

import numpy as np
import pandas as pd
import pytest

from precision_lab.experiments import load_experiment
from precision_lab.runner import RunConfig, run_experiment

TINY = {"precisions": [3, 11, 30], "classes": {10: 4}, "emin": -126, "emax": 127,
        "input_precision": 3}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    module = load_experiment("unit_roundoff")
    module.PROFILES["tiny"] = TINY
    try:
        out = run_experiment("unit_roundoff", RunConfig(profile="tiny", quiet=True, workers=1,
                                                        out=tmp_path_factory.mktemp("u")))
    finally:
        del module.PROFILES["tiny"]
    return out


def test_every_precision_and_rounding_on_the_same_inputs(report):
    df = pd.read_csv(report / "results.csv")
    d = df[df["reduction"] == "none"]
    assert sorted(d["precision"].unique()) == [3, 11, 30]
    assert set(d["rounding"]) == {"nearest", "stochastic"}
    assert set(d["format"]) == {f"p{p}_emin-126_emax127{s}" for p in (3, 11, 30)
                                for s in ("", "_sr")}
    assert "torch" not in set(d["method"]) and set(d["accumulator"]) == {"working"}
    # one input set, one truth: the median true loss is the same in every format
    assert d["loss_median"].nunique() == 1
    assert np.allclose(d["unit_roundoff"], 2.0 ** -d["precision"])


def test_errors_shrink_with_u_and_the_bound_holds(report):
    d = pd.read_csv(report / "results.csv")
    d = d[(d["reduction"] == "none") & (d["method"] == "logsumexp")]
    for rnd, g in d.groupby("rounding"):
        e = g.sort_values("precision")["rel_err_max"].to_numpy()
        assert e[0] > e[1] > e[2], rnd
        assert (g["bhh_within_frac"] == 1).all()


def test_findings_come_from_the_data(report):
    f = json.loads((report / "findings.json").read_text())["findings"]
    assert any("BHH bound" in x["text"] and "/" in x["text"] for x in f)
    assert (report / "error_vs_u.png").is_file()


def test_slope_of_a_power_law():
    m = load_experiment("unit_roundoff")
    u = 2.0 ** -np.arange(3, 20)
    assert m.slope(u, 3 * u) == pytest.approx(1.0)
    assert m.slope(u, np.sqrt(u)) == pytest.approx(0.5)
    assert np.isnan(m.slope(u[:2], u[:2]))
