"""The options experiment on a tiny grid: its cells, tables, figures and generated findings."""
import json

import numpy as np
import pytest

from precision_lab.experiments import load_experiment
from precision_lab.runner import RunConfig

TINY = {"settings": [["plain", 0.0], ["label_smoothing", 0.1], ["softcap", 30.0]],
        "classes": [16, 8192], "scales": [1.0, 30.0], "scale_classes": 64,
        "max_rows": 4, "max_logits": 1 << 10, "min_rows": 2, "battery_classes": 128,
        "battery_rows": 2}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    out = tmp_path_factory.mktemp("options")
    config = RunConfig(profile="quick", seed=0, out=out, quiet=True, workers=1)
    mod = load_experiment("options")
    df = mod.run(config, TINY)
    rep = out / "report"
    rep.mkdir()
    return mod, df, mod.report(df, config, TINY, rep), rep


def test_cells_cover_settings_and_battery(ran):
    mod, df, _, _ = ran
    assert set(df["kind"]) == {"sweep", "battery"}
    assert set(df[df["kind"] == "battery"]["case"]) == {c for c, _ in mod.CASES}
    # the softmax methods cannot form the z-loss; with soft-cap they are present
    assert "softmax_eps" in set(df[df["option"] == "softcap"]["method"])
    outcomes = df[["n_finite", "n_zero", "n_+inf", "n_-inf", "n_nan"]].sum(axis=1)
    assert np.array_equal(outcomes.to_numpy(), df["count"].to_numpy())


def test_findings_come_from_the_data(ran):
    mod, df, findings, rep = ran
    texts = [f["text"] for f in findings]
    assert all(len(t.split()) <= 40 for t in texts), [t for t in texts if len(t.split()) > 40]
    over = [t for t in texts if t.startswith("float16, label_smoothing 0.1")]
    assert over and "float32 sums: inf from C = 8192" in over[0]
    bt = mod.battery_table(df).set_index(["case", "options"])
    assert np.isnan(bt.loc[("all_ignored", "plain"), "true reduced"])  # the mean of nothing
    matched = (bt["methods not matching"] == "-").sum()
    battery = [t for t in texts if t.startswith("Adversarial battery")]
    assert battery and f"in {matched}/{len(bt)} cases" in battery[0]
    md = (rep / "summary.md").read_text()
    first_table = md.index("**Table ")
    assert first_table == md.index("**Table options:T1.**")
    assert first_table < md.index("![label_smoothing](label_smoothing.png)") < md.index(
        "## Findings")
    assert all(f["link"].startswith("summary.md#options-t") for f in findings)
    for stem in ("label_smoothing", "softcap"):
        assert (rep / f"{stem}.png").is_file() and f"({stem}.png)" in md
    assert "## Adversarial battery" in md and (rep / "summary.tex").is_file()
    json.dumps(findings)


def test_padding_under_a_softcap_moves_the_true_loss(ran):
    _, df, _, _ = ran
    g = df[(df["case"] == "padded_lanes")]
    plain = g[g["option"] == "plain"]["padding_shift_median"].iloc[0]
    smooth = g[g["option"] == "label_smoothing=0.1, softcap=30.0"]["padding_shift_median"]
    assert plain == 0.0 and smooth.iloc[0] > 1e-3
