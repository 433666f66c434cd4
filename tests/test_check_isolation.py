"""`check` cannot pass by accident: the user's function runs in a child process, and every way
it can end other than returning numbers fails the case (exit 1) or is an error (exit 2)."""
import os
import sys
import textwrap

import numpy as np
import pytest

from precision_lab.analysis.check import battery, check_implementation, detect
from precision_lab.cli import main
from precision_lab.data.inputs import InputError
from precision_lab.examples import stable

CASES = [c for c in battery(0) if c.name in ("scale 1", "ties")]


def _on_battery(action):
    """A function that is a good cross entropy on the detection batch (5 rows) and does
    `action` on the battery."""
    def fn(x, t):
        if len(t) != 5:
            action(x)
        return stable.cross_entropy(x, t)
    return fn


def _check(fn, **kw):
    return check_implementation(fn, name="f", formats=["float32"], baselines=False,
                                cases=CASES, **kw)


def _errors(res):
    return set(res.details["error"])


@pytest.mark.parametrize("action, message", [
    (lambda x: sys.exit(0), "called sys.exit(0)"),
    (lambda x: os._exit(0), "the process exited with status 0 during this case"),
    (lambda x: os.kill(os.getpid(), 9), "the process was killed by SIGKILL during this case"),
    (lambda x: (_ for _ in ()).throw(KeyboardInterrupt), "raised KeyboardInterrupt"),
], ids=["sys.exit", "os._exit", "kill -9", "KeyboardInterrupt"])
def test_every_way_to_end_fails_the_case(action, message):
    res = _check(_on_battery(action))
    assert not res.passed and res.exit_code == 1
    assert _errors(res) == {message}
    assert (res.details["fails"]).all() and (res.verdict["verdict"] == "FAIL").all()


def test_a_hang_times_out_and_fails():
    res = _check(_on_battery(lambda x: __import__("time").sleep(60)), timeout=1.5)
    assert not res.passed
    assert _errors(res) == {"timed out after 1.5 s", "not run: an earlier case timed out "
                                                       "after 1.5 s"}


def test_only_the_misbehaving_case_fails():
    def fn(x, t):
        if x.shape == (4, 4):   # the ties case only
            os._exit(0)
        return stable.cross_entropy(x, t)
    d = _check(fn).details
    assert not d[d["case"] == "scale 1"]["fails"].any()
    assert d[d["case"] == "ties"]["fails"].all()


@pytest.mark.parametrize("out, match", [
    (lambda x: np.zeros(len(x), dtype=complex), "complex"),
    (lambda x: np.array(["1.5"] * len(x)), "strings"),
    (lambda x: np.ma.masked_array(np.ones(len(x))), "masked"),
    (lambda x: np.ones(len(x), dtype=bool), "booleans"),
    (lambda x: [None] * len(x), "objects"),
], ids=["complex", "strings", "masked", "bool", "None"])
def test_outputs_that_are_not_losses_are_refused(out, match):
    with pytest.raises(InputError, match=match):
        detect(lambda x, t: out(x))
    res = _check(lambda x, t: out(x) if len(t) != 5 else stable.cross_entropy(x, t))
    assert not res.passed and all(match in e for e in _errors(res))


def test_baselines_are_computed_on_copies_before_the_function_runs():
    def scales_in_place(x, t):
        out = stable.cross_entropy(x, t)
        x *= 3
        t[:] = 0
        return out
    kw = dict(name="f", formats=["float32"], cases=CASES)
    a = check_implementation(scales_in_place, **kw).details
    b = check_implementation(stable.cross_entropy, **kw).details
    cols = ["computed", "truth", "ulp"]
    for impl in ("torch", "logsumexp"):
        assert a[a["implementation"] == impl][cols].equals(b[b["implementation"] == impl][cols])
    assert a[a["implementation"] == "f"][cols].equals(b[b["implementation"] == "f"][cols])


@pytest.mark.parametrize("kw, match", [
    ({"max_ulp": float("nan")}, "max_ulp must be a finite number"),
    ({"max_ulp": -1.0}, "max_ulp"), ({"max_bits": float("inf")}, "max_bits"),
    ({"timeout": 0}, "timeout must be a finite number above 0"),
    ({"timeout": float("nan")}, "timeout"), ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
    ({"formats": "float32"}, "formats must be a non-empty list"), ({"formats": []}, "formats"),
])
def test_numeric_options_are_validated(kw, match):
    with pytest.raises(InputError, match=match):
        check_implementation(stable.cross_entropy, **{"formats": ["float32"], **kw})


# ---------------------------------------------------------------------------------------------
# The command line: exit 1 for a misbehaving function, 2 for a module that cannot be run

def _module(tmp_path, body):
    f = tmp_path / "mine.py"
    f.write_text(textwrap.dedent(body))
    return f"{f}:ce"


GOOD = """
import numpy as np
from precision_lab.examples.stable import cross_entropy as ce0
def ce(x, t):
    {}
    return ce0(x, t)
"""


@pytest.mark.parametrize("line, extra, code, message", [
    ("import sys; sys.exit(0) if len(t) != 5 else None", [], 1, "verdict: FAIL"),
    ("import os; os._exit(0) if len(t) != 5 else None", [], 1, "verdict: FAIL"),
    ("import time; time.sleep(30) if len(t) != 5 else None", ["--timeout", "1"], 1,
     "verdict: FAIL"),
    ("pass", ["--max-ulp", "nan"], 2, "--max-ulp must be a finite number"),
    ("pass", ["--max-ulp", "-1"], 2, "--max-ulp must be"),
    ("pass", ["--max-bits", "nan"], 2, "--max-bits must be"),
    ("pass", ["--timeout", "-3"], 2, "--timeout must be"),
    ("pass", ["--seed", "-1"], 2, "--seed must be a non-negative integer"),
], ids=["sys.exit", "os._exit", "sleep", "max-ulp-nan", "max-ulp-negative", "max-bits-nan",
        "timeout-negative", "seed-negative"])
def test_cli_misbehaviour(tmp_path, capsys, line, extra, code, message):
    spec = _module(tmp_path, GOOD.format(line))
    assert main(["check", spec, "--formats", "float64", *extra]) == code
    out = capsys.readouterr()
    assert message in (out.out if code == 1 else out.err) and "Traceback" not in out.err


@pytest.mark.parametrize("body, message", [
    ("import sys\nsys.exit(0)\n", "called sys.exit(0)"),
    ("import sys\nsys.exit(3)\n", "called sys.exit(3)"),
    ("import os\nos._exit(0)\n", "exited with status 0 while importing"),
    ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
    ("import time\ntime.sleep(30)\n", "timed out after 1 s"),
], ids=["sys.exit(0)", "sys.exit(3)", "os._exit", "raises", "hangs"])
def test_cli_module_that_ends_at_import_is_an_error(tmp_path, capsys, body, message):
    spec = _module(tmp_path, body + "def ce(x, t):\n    return 0.0\n")
    assert main(["check", spec, "--formats", "float64", "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("precision-lab: error: ") and message in err
