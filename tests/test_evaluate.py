import subprocess
import sys

import numpy as np

from precision_lab import FORMATS, METHODS, STANDARD_FORMATS, evaluate, variants
from precision_lab.cli import main

COLUMNS = ["format", "method", "accumulator", "row", "reduction", "truth", "computed", "abs_err",
           "rel_err", "ulp_err", "bits_err", "outcome"]


def test_evaluate_is_tidy_one_row_per_input_row_format_method():
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 7)) * 4, rng.integers(0, 7, 5)
    df = evaluate(x, t)
    assert list(df.columns) == COLUMNS
    n_variants = sum(len(variants(m, f)) for f in STANDARD_FORMATS for m in METHODS)
    assert len(df) == n_variants * (5 + 1)
    assert (df[df.reduction == "mean"].row == -1).all()
    # float32 accumulator variants exist only for the 16-bit formats; torch runs once
    assert set(df[df.accumulator == "float32"].format) == {"float16", "bfloat16"}
    assert set(df[df.method == "torch"].accumulator) == {"internal"}
    # float64 stable methods are within a few ulps on benign data
    f64 = df[(df.format == "float64") & df.method.isin(["logsumexp", "log1p", "torch"])]
    assert f64.ulp_err.max() < 8


def test_truth_is_of_the_inputs_rounded_into_each_format():
    x = np.array([[0.1, 0.2, 0.3]])  # none is a float16 value
    df = evaluate(x, [2], formats=["float16", "float64"], methods=["logsumexp"], mean=False)
    t16 = df[df.format == "float16"].truth.iloc[0]
    t64 = df[df.format == "float64"].truth.iloc[0]
    assert t16 != t64
    assert df.bits_err.max() <= 1


def test_overflow_counted_not_dropped():
    x = np.array([[12.0, 0.0], [1.0, 0.0]])
    df = evaluate(x, [1, 1], formats=["float16"], methods=["naive"], mean=False,
                  accumulators=("working",))
    assert df.outcome.tolist() == ["+inf", "finite"]


def test_cli_list_shows_formats_and_methods(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in FORMATS:
        assert name in out
    assert sum(f"  {m} " in out for m in METHODS) >= 6
    assert f"{FORMATS['float16'].overflow_logit:.6g}" in out  # log(65504)


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "precision_lab", "list"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "bfloat16" in r.stdout
