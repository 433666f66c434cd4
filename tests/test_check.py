"""`precision-lab check` on the shipped examples: expected verdicts, exit codes, detection."""
import numpy as np
import pytest
import torch

from precision_lab.analysis.check import battery, check_implementation, detect, load_function
from precision_lab.cli import main
from precision_lab.data.inputs import InputError
from precision_lab.examples import blog, qa, stable, unshifted

EX = "precision_lab.examples"


@pytest.fixture(scope="module")
def results():
    """Each example checked once (the ground truth is the slow part)."""
    return {name: check_implementation(mod.cross_entropy, name=name)
            for name, mod in [("blog", blog), ("qa", qa), ("unshifted", unshifted),
                              ("stable", stable)]}


def _row(res, impl, fmt):
    v = res.verdict
    return v[(v["implementation"] == impl) & (v["format"] == fmt)].iloc[0]


@pytest.mark.parametrize("name, kind, output", [
    ("blog", "numpy", "mean"), ("qa", "torch", "mean"), ("unshifted", "numpy", "per-row"),
    ("stable", "numpy", "per-row")])
def test_detects_array_library_and_reduction(results, name, kind, output):
    assert (results[name].kind, results[name].output) == (kind, output)


def test_blog_fails_everywhere_by_its_epsilon(results):
    res = results["blog"]
    assert not res.passed and res.exit_code == 1
    # float64: the epsilon's bias (1e-7 / p) is billions of ULPs, even at the smallest scale
    assert _row(res, "blog", "float64")["largest working scale"].startswith("<")
    # 16-bit formats: fine until the loss passes the cap -log(1e-7) = 16.1
    for fmt in ("float16", "bfloat16"):
        assert _row(res, "blog", fmt)["largest working scale"] == "8"


def test_qa_loop_overflows_without_a_shift(results):
    res = results["qa"]
    assert not res.passed
    f32 = _row(res, "qa", "float32")
    assert f32["max ULP"] == np.inf and f32["largest working scale"] == "32"
    d = res.details
    huge = d[(d["implementation"] == "qa") & (d["case"] == "huge logits 1000 + z")]
    assert not np.isfinite(huge["computed"]).any()  # exp(1000) overflows in every format


def test_unshifted_softmax_is_broken_and_torch_beside_it_is_not(results):
    res = results["unshifted"]
    assert res.exit_code == 1
    assert (res.verdict.query("implementation == 'unshifted'")["verdict"] == "FAIL").all()
    torch_rows = res.verdict.query("implementation == 'torch'")
    assert (torch_rows["verdict"] == "reference").all()    # shown, never judged
    assert (torch_rows["failing cases"].str.startswith("0/")).all()


def test_stable_passes_in_every_format(results):
    res = results["stable"]
    assert res.passed and res.exit_code == 0
    assert (res.verdict.query("implementation == 'stable'")["max ULP"] <= 8).all()


def test_relative_ulps_catch_the_confident_row_even_in_torch():
    res = check_implementation(stable.cross_entropy, formats=["float32"], relative=True)
    d = res.details
    conf = d[(d["case"] == "confidently correct [L,0,0,0] at 0") & (d["implementation"] == "torch")]
    assert conf["ulp"].max() > 1e6  # 1 + 3e-9 rounds to 1: the loss comes out 0


def test_cli_exit_codes_and_thresholds(capsys):
    assert main(["check", f"{EX}.stable:cross_entropy", "--formats", "float32"]) == 0
    out = capsys.readouterr().out
    assert "verdict: PASS" in out and "logsumexp" in out and "torch" in out
    assert main(["check", f"{EX}.unshifted:cross_entropy", "--formats", "float32"]) == 1
    assert "verdict: FAIL" in capsys.readouterr().out
    # a threshold the user sets: the blog passes float32 once a billion ULPs are allowed
    assert main(["check", f"{EX}.blog:cross_entropy", "--formats", "float32",
                 "--max-ulp", "1e9"]) == 0
    assert main(["check", f"{EX}.stable:cross_entropy", "--formats", "float32",
                 "--max-bits", "0.1"]) == 1
    capsys.readouterr()


def test_cli_writes_details(tmp_path, capsys):
    path = tmp_path / "details.csv"
    assert main(["check", f"{EX}.stable:cross_entropy", "--formats", "float64", "--details",
                 str(path)]) == 0
    import pandas as pd
    d = pd.read_csv(path)
    assert {"implementation", "format", "case", "computed", "truth", "ulp", "bits"} <= set(d)
    capsys.readouterr()


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "expected MODULE:FUNCTION"),
    ("no_such_module_xyz:f", "cannot import module"),
    (f"{EX}.blog:no_such_function", "has no attribute"),
    (f"{EX}.blog:__doc__", "not callable"),
])
def test_bad_target_is_a_clear_error(spec, message, capsys):
    assert main(["check", spec]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_file_path_target(tmp_path, capsys):
    f = tmp_path / "mine.py"
    f.write_text("import torch\n"
                 "def ce(x, t):\n    return torch.nn.functional.cross_entropy(x, t)\n")
    assert main(["check", f"{f}:ce", "--formats", "float32"]) == 0
    assert "(torch, returns the batch-mean loss)" in capsys.readouterr().out


def test_detection_errors():
    with pytest.raises(InputError, match="shape"):
        detect(lambda x, t: np.zeros((2, 2)))
    with pytest.raises(InputError, match="raised with numpy arrays"):
        detect(lambda x, t: 1 / 0)
    assert detect(lambda x, t: torch.nn.functional.cross_entropy(x, t, reduction="none")) == (
        "torch", "per-row")


def test_a_function_that_raises_in_one_format_fails_there_only():
    def picky(x, t):
        if x.dtype == np.float16:
            raise TypeError("no float16 here")
        return stable.cross_entropy(x, t)

    res = check_implementation(picky, name="picky", formats=["float16", "float64"],
                               baselines=False)
    v = res.verdict.set_index("format")
    assert v.loc["float16", "verdict"] == "FAIL" and v.loc["float64", "verdict"] == "PASS"
    assert "no float16 here" in res.details.query("format == 'float16'")["error"].iloc[0]


def test_battery_is_deterministic_and_names_its_adversarial_rows():
    a, b = battery(0), battery(0)
    assert all(np.array_equal(x.logits, y.logits) for x, y in zip(a, b))
    names = {c.name for c in a if c.family == "adversarial"}
    assert {"ties", "masked -inf class", "huge logits 1000 + z"} <= names
    assert load_function(f"{EX}.qa:cross_entropy") is qa.cross_entropy
