"""The grad_options experiment on a tiny grid: outputs, and findings computed from the data."""
import json
import re

import pytest

from precision_lab.experiments import load_experiment
from precision_lab.runner import RunConfig

TINY = {"digits": [0.30103, 4], "classes": 8, "rows": 2, "scales": [100.0],
        "scale_classes": 16, "settings": ["plain", "z_loss 1e-4", "softcap 30"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("grad_options")
    config = RunConfig(profile="quick", seed=0, out=out, quiet=True, workers=1)
    mod = load_experiment("grad_options")
    df = mod.run(config, TINY)
    return mod, df, mod.report(df, config, TINY, out), out


def test_outputs(run):
    mod, df, findings, out = run
    assert findings and all(len(f["text"].split()) <= 40 for f in findings)
    md = (out / "summary.md").read_text()
    assert "## Findings" in md and "confidence_bfloat16.png" in md and "scale_float32.png" in md
    assert "100 correct bits per entry" in (out / "summary.tex").read_text()
    assert set(df["format"]) == {"float16", "bfloat16", "float32"}
    assert set(df["setting"]) == set(TINY["settings"]) and set(df["reduction"]) == {"none"}
    json.dumps(findings)


def test_settings_select_the_backwards_that_express_them(run):
    mod, df, _, _ = run
    z = set(df[df["setting"] == "z_loss 1e-4"]["method"])
    assert "logsumexp" in z and "softmax_log" not in z
    assert "softmax_log" in set(df[df["setting"] == "softcap 30"]["method"])
    assert set(df[df["setting"] == "softcap 30"]["options"]) == {"reduction=none, softcap=30.0"}


def test_findings_are_the_data_counted(run):
    mod, df, findings, _ = run
    ff = mod.first_failures(df)
    text = next(f["text"] for f in findings if f["text"].startswith("bfloat16: variants"))
    for setting in TINY["settings"]:
        g = ff[(ff["format"] == "bfloat16") & (ff["setting"] == setting)]
        want = f"{setting} {int((g['fails_at_p'] != 'never').sum())}/{len(g)}"
        assert want in text
    cap = [f["text"] for f in findings if "soft-capped" in f["text"]]
    assert len(cap) == 3
    top = df[(df["sweep"] == "scale") & (df["scale"] == 100.0) & (df["format"] == "float16")
             & (df["method"] == "logsumexp") & (df["accumulator"] == "working")]
    flushed = int(top[top["setting"] == "softcap 30"]["n_flushed"].iloc[0])
    assert re.search(rf"{flushed}/\d+ soft-capped", next(c for c in cap if c.startswith("float16")))


def test_summary_opens_with_the_headline_table_and_figure(run):
    mod, df, findings, out = run
    md = (out / "summary.md").read_text()
    first_table = md.index("**Table ")
    assert first_table == md.index("**Table grad_options:T1.**")
    assert first_table < md.index("![confidence_bfloat16]") < md.index("## Findings")
    t1 = mod.failing_table(df[df["reduction"] == "none"]).set_index("setting")
    text = next(f["text"] for f in findings if f["text"].startswith("bfloat16: variants"))
    assert all(f"{s} {t1.loc[s, 'bfloat16']}" in text for s in TINY["settings"])
    assert all(f["link"].startswith("summary.md#grad_options-t") for f in findings)
