"""The seed_questions experiment: the quick profile end to end, and its claims checked."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from precision_lab.examples import blog, qa
from precision_lab.runner import RunConfig, run_experiment


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    return run_experiment("seed_questions", RunConfig(profile="quick", out=root, quiet=True,
                                                      workers=1))


@pytest.fixture(scope="module")
def df(out):
    return pd.read_csv(out / "results.csv", keep_default_na=False,
                       na_values=["", "nan", "NaN"])


def _v(df, q, quantity, **kw):
    d = df[(df["question"] == q) & (df["quantity"] == quantity)]
    for k, v in kw.items():
        d = d[d[k] == v]
    return float(d["value"].iloc[0])


def test_report_files(out):
    for name in ("results.csv", "findings.json", "metadata.json", "summary.md", "summary.tex",
                 "decomposition.png", "overflow.pdf", "epsilon.png", "qa_experiment.png"):
        assert (out / name).is_file(), name
    findings = json.loads((out / "findings.json").read_text())["findings"]
    assert len(findings) >= 5
    assert all(f["link"].startswith("summary.md#seed_questions-t") for f in findings)
    assert all(len(f["text"].split()) <= 45 for f in findings)
    text = (out / "summary.md").read_text()
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in text
    assert (out.parent / "README.md").is_file()


def test_blog_difference_is_reproduced_and_telescopes(df):
    obs = _v(df, "q1", "observed difference blog - torch")
    assert 3e-7 < abs(obs) < 4e-7  # "about 3.7e-7"
    terms = df[(df["question"] == "q1") & (df["item"] == "term")]["value"]
    assert len(terms) == 4
    assert math.isclose(terms.sum(), obs, rel_tol=1e-12)
    assert abs(_v(df, "q1", "sum - observed")) < 1e-25
    # the epsilon's bias is the largest term, and negative (it lowers every loss)
    eps = _v(df, "q1", "epsilon bias")
    assert eps < 0 and abs(eps) == terms.abs().max()


def test_blog_example_matches_the_post(df):
    np.random.seed(42)
    x, t = np.random.randn(3, 4), np.random.randint(0, 4, size=3)
    assert blog.cross_entropy(x, t) == _v(df, "q1", "blog float64 (observed)")


def test_overflow_thresholds(df):
    first = df[(df["question"] == "q2") & (df["item"] == "B first")]

    def f(m, fmt, q):
        return float(first[(first["method"] == m) & (first["format"] == fmt)
                           & (first["quantity"] == q)]["value"].iloc[0])
    from precision_lab import FORMATS
    for fmt in ("float16", "float32", "float64"):
        nf = f("naive", fmt, "first non-finite L")
        assert FORMATS[fmt].overflow_logit < nf < 1.2 * FORMATS[fmt].overflow_logit + 1
        assert f("torch", fmt, "first wrong L") == math.inf
    assert (df[(df["question"] == "q2") & (df["quantity"] == "exp(1000) in format")]["value"]
            == np.inf).all()


def test_epsilon_cap_and_harmless_ranges(df):
    assert math.isclose(_v(df, "q3", "-log(eps)"), -math.log(1e-7), rel_tol=1e-15)
    assert math.isnan(_v(df, "q3", "harmless p from", format="float32"))
    assert _v(df, "q3", "harmless p from", format="float16") < 1e-3


def test_qa_question_exact_value(df):
    assert math.isclose(_v(df, "q4", "certified loss"), math.log(3 + math.e) - 1, rel_tol=1e-15)
    assert abs(_v(df, "q4", "p_3") - 0.4754) < 5e-5


def test_qa_experiment_one_e_minus_15_is_bitwise_equality(df):
    s = df[(df["question"] == "q5") & (df["item"] == "summary")].set_index("quantity")["value"]
    assert s["correct (abs diff < 1e-15), %"] == s["bitwise equal, %"]
    assert s["smallest nonzero abs(torch - manual)"] >= s["smallest float32 ULP at the losses"]
    assert math.isclose(s["torch closer to truth, %"] + s["manual closer to truth, %"]
                        + s["equally close, %"], 100.0)
    assert s["torch max error (ULPs)"] < 4 and s["manual max error (ULPs)"] < 4


def test_qa_loop_reconstruction_is_float32():
    torch.manual_seed(0)
    x, t = torch.rand(10, 10), torch.randint(0, 10, (10,))
    v = qa.cross_entropy(x, t)
    assert v.dtype == torch.float32
    assert abs(float(v) - float(torch.nn.CrossEntropyLoss()(x, t))) < 1e-6


def test_qa_experiment_under_every_cpu_capability(df, out):
    from precision_lab.experiments.seed_questions.qa_experiment import supported_capabilities
    caps = supported_capabilities()
    assert caps[0] == "default" and torch.backends.cpu.get_cpu_capability().lower() in caps
    c = df[(df["question"] == "q5") & (df["item"] == "capability")]
    assert list(dict.fromkeys(c["method"])) == caps
    for cap in caps:
        d = c[c["method"] == cap].set_index("quantity")["value"]
        assert d["same inputs"] == 1  # the same seeded logits in every process
        assert 0 <= d["correct (abs diff < 1e-15)"] <= d["batches"]
        assert d["correct (abs diff < 1e-15)"] == d["bitwise equal"]
        # the subprocess really ran with that capability
        assert c[c["method"] == cap]["text"].iloc[0].lower() == cap
    # the run with this machine's own capability reproduces the main run exactly
    own = c[c["method"] == caps[-1]].set_index("quantity")["value"]
    assert own["torch differs from this process"] == 0
    text = (out / "summary.md").read_text()
    assert "**Table seed_questions:T" in text and "| ATEN_CPU_CAPABILITY" in text


def test_overflow_findings_match_the_data(df, out):
    at = df[(df["question"] == "q2") & (df["item"] == "L=1000")]
    soft_log = at[at["method"] == "softmax_log"]["value"]
    assert len(soft_log) == 4 and np.isinf(soft_log).all()  # inf in all four formats
    eps = at[at["method"] == "softmax_eps"]["value"]
    assert ((eps > 15) & (eps < 17)).all()  # capped near -log(1e-7), not 1000
    findings = json.loads((out / "findings.json").read_text())["findings"]
    text = " ".join(f["text"] for f in findings)
    assert "`softmax_log`" in text and "only the unshifted" not in text


def test_blog_torch_term_splits_into_output_rounding_and_rest(df):
    sub = df[(df["question"] == "q1") & (df["item"] == "subterm")].set_index("quantity")["value"]
    torch_term = _v(df, "q1", "torch float32 arithmetic")
    unavoidable = sub["torch: unavoidable output rounding"]
    assert math.isclose(unavoidable + sub["torch: beyond the output rounding"], torch_term,
                        rel_tol=1e-12)
    assert abs(unavoidable) <= 2.0 ** -24 * 1.3  # half an ulp of float32 at ~1.27
