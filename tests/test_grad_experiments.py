"""The gradient experiments on a tiny grid: outputs, and the findings computed from the data."""
import json

import numpy as np
import pytest

from precision_lab.experiments import load_experiment
from precision_lab.runner import RunConfig

TINY = {"grad_confidence": {"digits": [0.30103, 1, 3, 6], "classes": [16], "rows": 2},
        "grad_scale": {"scales": [1.0, 100.0], "classes": [8, 64], "rows": 2},
        "grad_training": {"epochs": [0, 30], "hidden": 16, "lr": 1e-2}}


_RUNS = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each experiment run once on its tiny grid: {name: (module, df, findings, out)}."""
    def get(name):
        if name not in _RUNS:
            out = tmp_path_factory.mktemp(name)
            config = RunConfig(profile="quick", seed=0, out=out, quiet=True, workers=1)
            mod = load_experiment(name)
            df = mod.run(config, TINY[name])
            _RUNS[name] = (mod, df, mod.report(df, config, TINY[name], out), out)
        return _RUNS[name]
    return get


@pytest.mark.parametrize("name", list(TINY))
def test_outputs(runs, name):
    mod, df, findings, out = runs(name)
    assert findings and all(len(f["text"].split()) <= 60 for f in findings)
    md = (out / "summary.md").read_text()
    assert "## Findings" in md and ".png" in md
    assert all((out / p.name.replace(".png", ".pdf")).is_file() for p in out.glob("*.png"))
    assert "100 correct bits per entry" in (out / "summary.tex").read_text()
    assert set(df["format"]) == {"float16", "bfloat16", "float32", "float64"}
    assert (df["n_nonfinite"] >= 0).all()
    assert (df["n_target_over_10pct"] <= df["count"]).all()
    json.dumps(findings)


@pytest.mark.parametrize("name", list(TINY))
def test_summary_opens_with_the_headline_table_and_figure(runs, name):
    mod, df, findings, out = runs(name)
    md = (out / "summary.md").read_text()
    first_table = md.index("**Table ")
    assert first_table == md.index(f"**Table {name}:T1.**")
    assert first_table < md.index("![") < md.index("## Findings")
    doc = json.loads((out / "findings.json").read_text())
    assert [t["id"] for t in doc["tables"] if t["headline"]] == [f"{name}:T1"]
    assert all(len(f["text"].split()) <= 40 for f in findings), findings
    assert all(f["label"] == "figure" or f["link"].startswith("summary.md#") for f in findings)


def test_confidence_findings_come_from_the_data(runs):
    mod, df, findings, out = runs("grad_confidence")
    ff = mod.first_failures(df)
    b = ff[(ff["format"] == "bfloat16") & (ff["accumulator"] == "float32")].set_index("method")
    # storing the softmax in bfloat16 fails before the fused kernel that subtracts in float32
    assert b.loc["fused_store_first", "fails_at_p"] < b.loc["online", "fails_at_p"]
    texts = {f["text"].split(":")[0]: f["text"] for f in findings}
    assert {"bfloat16, C = 16", "float16, C = 16"} <= set(texts)
    # the bfloat16 finding: the first failure among the backwards drawn, and the last
    drawn = b[[(m, a) in set(mod.series_in(ff[ff["format"] == "bfloat16"], "bfloat16"))
               for m, a in zip(b.index, b["accumulator"])]]
    text = texts["bfloat16, C = 16"]
    assert f"from p_t = {mod._p(drawn['fails_at_p'].min())}" in text
    assert f"`online` (float32 sums) only from {mod._p(b.loc['online', 'fails_at_p'])}" in text
    assert np.isfinite(df["target_rel_median"]).any()


def test_training_counts_rows_and_compares_the_loss(runs):
    mod, df, findings, out = runs("grad_training")
    assert set(df["epoch"]) == {0, 30} and df["loss_rel_err"].notna().all()
    assert (df["reduction"] == "mean").all()
    texts = [f["text"] for f in findings]
    last = df[(df["epoch"] == 30) & (df["format"] == "bfloat16") & (df["method"] == "torch")]
    n = int(last["n_target_over_10pct"].iloc[0])
    t1 = mod.last_epoch_table(df).set_index(["format", "variant"])
    assert t1.loc[("bfloat16", "torch [machine-dependent]"), "rows over 10%"] == \
        f"{n}/{int(last['count'].iloc[0])}"
    worst = t1.loc["bfloat16", "rows over 10%"].map(lambda v: int(v.split("/")[0])).max()
    assert any(t.startswith("bfloat16, epoch 30") and f" to {worst}/" in t for t in texts)
    ok = df[(df["format"] == "float16") & (df["loss_rel_err"] <= 0.01)]
    assert any(f"of the {len(ok)} cases" in t and t.startswith("float16") for t in texts)
