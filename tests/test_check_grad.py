"""`precision-lab check --grad`: passes a careful backward, fails store-then-subtract."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from precision_lab import InputError, get_format
from precision_lab.analysis.check_grad import check_grad, row_errors
from precision_lab.examples import grad_careful, grad_store_first
from precision_lab.truth.grad import reference_grad_dd

ROOT = Path(__file__).resolve().parents[1]


def test_careful_passes_and_store_first_fails_in_bfloat16():
    good = check_grad(grad_careful.cross_entropy, formats=["bfloat16", "float64"],
                      baselines=False)
    bad = check_grad(grad_store_first.cross_entropy, formats=["bfloat16"], baselines=False)
    assert good.passed and good.exit_code == 0
    assert not bad.passed and bad.exit_code == 1
    failing = set(bad.details[bad.details["fails"]]["case"])
    assert "p_t = 0.999" in failing  # the target entry p_t - 1 after p_t was rounded to 1


def test_correct_rounding_scores_at_most_one():
    fmt = get_format("float16")
    rng = np.random.default_rng(0)
    x = fmt.round(rng.standard_normal((5, 7)) * 4)
    t = rng.integers(0, 7, 5)
    hi, lo = reference_grad_dd(x, t, cache=False)
    assert (row_errors(fmt.round(hi), hi, lo, t, fmt) <= 1).all()
    assert (row_errors(np.full_like(hi, np.nan), hi, lo, t, fmt) == np.inf).all()


def test_not_differentiable_is_input_error():
    def detached(x, t):
        return torch.nn.functional.cross_entropy(x.detach().requires_grad_(True), t)

    def numpy_fn(x, t):
        return np.zeros(len(t))

    with pytest.raises(InputError, match="no gradient reached the logits"):
        check_grad(detached, formats=["float32"])
    with pytest.raises(InputError, match="not a torch tensor"):
        check_grad(numpy_fn, formats=["float32"])


def test_an_exception_in_one_format_is_a_failure_not_a_crash():
    def no_half(x, t):
        if x.dtype == torch.float16:
            raise RuntimeError("no float16 kernel")
        return torch.nn.functional.cross_entropy(x.double(), t, reduction="none")

    res = check_grad(no_half, formats=["float16", "float32"], baselines=False)
    v = res.verdict.set_index("format")["verdict"]
    assert v["float16"] == "FAIL" and not res.passed
    assert res.details[res.details["format"] == "float16"]["error"].str.contains(
        "no float16 kernel").all()


def test_cli_exit_codes():
    def run(mod):
        return subprocess.run(
            [sys.executable, "-m", "precision_lab", "check", "--grad",
             f"precision_lab.examples.{mod}:cross_entropy", "--formats", "float16"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={"PYTHONPATH": str(ROOT), "PRECISION_LAB_CACHE": "off", "PATH": "/usr/bin"})
    ok, bad = run("grad_careful"), run("grad_store_first")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verdict: PASS" in ok.stdout and "torch" in ok.stdout
    assert bad.returncode == 1 and "verdict: FAIL" in bad.stdout
