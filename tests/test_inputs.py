"""Bad input gets a clear InputError naming what is wrong; the documented non-finite policy;
the CLI turns every input error into one line `precision-lab: error: ...` and exit status 2."""
from __future__ import annotations

import sys
import textwrap
import zipfile

import numpy as np
import pytest

from precision_lab import cli, experiments, runner
from precision_lab.analysis.evaluate import evaluate
from precision_lab.data.inputs import InputError, load_logits, make_logits, validate_batch
from precision_lab.numerics.formats import get_format
from precision_lab.numerics.methods import METHODS, get_method
from precision_lab.truth.reference import reference_loss

X = [[0.5, 1.0, -2.0], [3.0, 0.0, 1.0]]


# ---------------------------------------------------------------------------------------------
# validate_batch

@pytest.mark.parametrize("logits, targets, match", [
    (np.zeros((2, 3, 4)), [0, 0], r"2-D .* got shape \(2, 3, 4\)"),
    (5.0, [0], r"2-D .* got shape \(\)"),
    ([[1.0, 2.0], [3.0]], [0, 0], "not an array of real numbers"),
    ([["a", "b"]], [0], "must be real numbers, got strings"),
    ([[1 + 2j, 0]], [0], "complex"),
    ([[10 ** 400, 0]], [0], "not an array of real numbers"),
    (np.zeros((0, 3)), [], "empty batch"),
    (np.zeros((2, 0)), [0, 0], r"0 classes \(C = 0\)"),
    ([], [], r"0 classes"),
    (X, [0], "1 targets for 2 rows"),
    (X, [0, 1, 2], "3 targets for 2 rows"),
    (X, [[0], [1]], r"targets must be 1-D"),
    (X, [0.5, 1], r"integer class indices, got \[0.5\]"),
    (X, [np.nan, 1], "integer class indices"),
    (X, [np.inf, 1], "integer class indices"),
    (X, [True, False], "booleans"),
    (X, ["0", "1"], "integer class indices"),
    (X, [0, 3], r"target 3 of row 1 is out of range \[0, 3\)"),
    (X, [-1, 0], r"target -1 of row 0 is out of range"),
    (X, [0, 1e300], "out of range"),
    (X, np.array([0, 2 ** 64 - 1], dtype=np.uint64), "18446744073709551615 of row 1"),
], ids=["3d", "scalar", "ragged", "strings", "complex", "huge-int", "empty-batch", "C=0",
        "empty-list", "too-few-targets", "too-many-targets", "2d-targets", "fractional-target",
        "nan-target", "inf-target", "bool-targets", "string-targets", "target-too-large",
        "negative-target", "float-target-too-large", "uint64-target"])
def test_bad_batches_are_named(logits, targets, match):
    with pytest.raises(InputError, match=match):
        validate_batch(logits, targets)


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)


def test_one_row_and_integer_valued_float_targets():
    x, t = validate_batch([1.0, 2.0, 3.0], 2)
    assert x.shape == (1, 3) and t.tolist() == [2] and t.dtype == np.int64
    x, t = validate_batch(np.array(X, dtype=np.float16), np.array([2.0, 0.0]))
    assert x.dtype == np.float64 and t.tolist() == [2, 0]


@pytest.mark.parametrize("entry", [evaluate, reference_loss])
def test_library_entry_points_validate(entry):
    with pytest.raises(InputError, match="out of range"):
        entry(X, [0, 7])
    with pytest.raises(InputError, match="2-D"):
        entry(np.zeros((1, 2, 2)), [0])


# ---------------------------------------------------------------------------------------------
# Non-finite policy: NaN propagates (counted as the "nan" outcome); -inf is a mask

def test_nan_logits_propagate_and_are_counted():
    df = evaluate([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]], [0, 2], formats=["float16"],
                  methods=["logsumexp", "torch"], mean=False)
    nan_row = df[df["row"] == 0]
    assert (nan_row["outcome"] == "nan").all() and nan_row["truth"].isna().all()
    assert (df[df["row"] == 1]["outcome"] == "finite").all()


def test_minus_inf_logits_are_masks():
    x = [[0.5, -np.inf, 1.5, -np.inf], [-np.inf, 2.0, -np.inf, -np.inf]]
    masked = reference_loss(x, [0, 1])
    plain = reference_loss([[0.5, 1.5], [2.0, 2.0]], [0, 0])
    assert masked[0] == plain[0]                 # the masked classes contribute nothing
    assert masked[1] == 0                        # the only unmasked class is the target
    df = evaluate(x, [0, 1], formats=["float32"], methods=["logsumexp", "torch"], mean=False)
    assert (df["outcome"] != "nan").all()
    torch_vals = df[df["method"] == "torch"]["computed"].to_numpy()
    assert np.isfinite(torch_vals).all()
    # a masked target: +inf; every class masked: nan (as torch)
    assert reference_loss([[0.0, -np.inf]], [1])[0] == np.inf
    assert str(reference_loss([[-np.inf, -np.inf]], [0])[0]) == "nan"


# ---------------------------------------------------------------------------------------------
# Names: formats, methods

def test_unknown_format_and_method_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid formats: float16, bfloat16, float32, float64"):
        get_format("float8")
    with pytest.raises(ValueError, match="valid methods: .*logsumexp"):
        get_method("fast")
    with pytest.raises(InputError, match="unknown format 'half'"):
        evaluate(X, [0, 1], formats=["half"])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_methods_called_directly_validate(name):
    m = METHODS[name]
    for bad, match in (([0, 5], "out of range"), ([0, -1], "out of range"),
                       ([0], "1 targets for 2 rows")):
        with pytest.raises(InputError, match=match):
            m(np.array(X), np.array(bad), "float32")


# ---------------------------------------------------------------------------------------------
# make_logits

@pytest.mark.parametrize("kw, match", [
    ({"scale": 0.0}, "scale"), ({"scale": -1.0}, "scale"), ({"scale": np.inf}, "scale"),
    ({"scale": np.nan}, "scale"), ({"scale": "1"}, "scale"), ({"rows": 0}, "rows"),
    ({"classes": 0}, "classes"), ({"rows": 2.5}, "rows"), ({"distribution": "cauchy"},
                                                           "valid: normal, uniform, peaked"),
])
def test_make_logits_rejects(kw, match):
    args = {"distribution": "normal", "rows": 2, "classes": 3, "scale": 1.0, **kw}
    with pytest.raises(InputError, match=match):
        make_logits(args.pop("distribution"), args.pop("rows"), args.pop("classes"),
                    args.pop("scale"), np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# load_logits

def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_good_files(tmp_path):
    x = np.array(X)
    a = _npz(tmp_path / "a.npz", logits=x, targets=np.array([0, 2]))
    np.save(tmp_path / "b.npy", np.column_stack([x, [0, 2]]))
    (tmp_path / "c.csv").write_text("l0,l1,l2,target\n0.5,1.0,-2.0,0\n3,0,inf,2\n")
    (tmp_path / "d.csv").write_text("0.5,1.0,-inf,0\nnan,0,1,2.0\n")
    for p in (a, tmp_path / "b.npy", tmp_path / "c.csv", tmp_path / "d.csv"):
        lx, lt = load_logits(p)
        assert lx.shape == (2, 3) and lt.tolist() == [0, 2]


@pytest.mark.parametrize("setup, match", [
    (lambda d: d / "missing.npz", "not found"),
    (lambda d: d, "not a regular file"),
    (lambda d: _write(d / "x.txt", "1,2,0"), "unsupported file type '.txt'"),
    (lambda d: _write(d / "x.npz", "not a zip file"), "cannot read logits"),
    (lambda d: _write(d / "x.npy", "garbage"), "cannot read logits"),
    (lambda d: _truncated_npz(d / "x.npz"), "cannot read logits"),
    (lambda d: _npz(d / "x.npz", logits=np.zeros((2, 3))), r"missing \['targets'\]"),
    (lambda d: _npz(d / "x.npz", logits=np.zeros((2, 3, 1)), targets=[0, 0]), "2-D"),
    (lambda d: _npz(d / "x.npz", logits=np.zeros((2, 3)), targets=[0, 3]), "out of range"),
    (lambda d: _npz(d / "x.npz", logits=np.zeros((2, 3)), targets=[0]), "1 targets for 2"),
    (lambda d: _npy(d / "x.npy", np.zeros(4)), r"\(N, C \+ 1\) .* shape \(4,\)"),
    (lambda d: _npy(d / "x.npy", np.zeros((3, 1))), r"shape \(3, 1\)"),
    (lambda d: _npy(d / "x.npy", np.array([{"logits": 1}], dtype=object), pickle=True),
     "cannot read logits"),
    (lambda d: _write(d / "x.csv", ""), "empty file"),
    (lambda d: _write(d / "x.csv", "a,b,target\n"), "no rows"),
    # the CSV dialect: one parser, no guessing (a first data row is never taken for a header)
    (lambda d: _write(d / "x.csv", "2.0O,1,0\n1,2,0\n"), r"line 1, column 1: '2.0O'"),
    (lambda d: _write(d / "x.csv", '"1.5",1,0\n1,2,0\n'), r"line 1, column 1: '\"1.5\"'"),
    (lambda d: _write(d / "x.csv", 'a,b,t\n"1.5",1,0\n'), r"line 2, column 1"),
    (lambda d: _write(d / "x.csv", "l0,target\n1,2,0\n"), "line 2 has 3 fields, the header has 2"),
    (lambda d: _write(d / "x.csv", "1,2,0\n1e400,2,0\n"), "line 2, column 1: 1e400 is outside"),
    (lambda d: _write(d / "x.csv", "a,b,c\n\n1,-1e999,0\n"), "line 3, column 2"),
    (lambda d: _write(d / "x.csv", "1,2,0\n1,2,0,\n"), "line 2 has 4 fields"),
    (lambda d: _write(d / "x.csv", "1;2;0\n"), "line 1, column 1: '1;2;0'"),
    (lambda d: _write(d / "x.csv", "1,1_000,0\n"), "'1_000' is not a number"),
    (lambda d: _wbytes(d / "x.csv", b"1,\xff,0\n"), "not UTF-8"),
    # every loader refuses what is not a real number
    (lambda d: _npy(d / "x.npy", np.ones((2, 3), dtype=bool)), "booleans"),
    (lambda d: _npy(d / "x.npy", np.array([["1", "2", "0"]])), "strings"),
    (lambda d: _npy(d / "x.npy", np.array([[b"1", b"2", b"0"]])), "bytes"),
    (lambda d: _npy(d / "x.npy", np.zeros((2, 3), dtype="datetime64[s]")), "datetimes"),
    (lambda d: _npy(d / "x.npy", np.zeros((2, 3), dtype="timedelta64[s]")), "timedeltas"),
    (lambda d: _npy(d / "x.npy", np.zeros((2, 3), dtype=complex)), "complex"),
    (lambda d: _npy(d / "x.npy", np.zeros((2, 3), dtype="f8,f8")), "structured"),
    (lambda d: _npy(d / "x.npy", np.zeros((2, 3), dtype="V8")), "raw"),
    (lambda d: _npz(d / "x.npz", logits=np.ones((2, 3), dtype=bool), targets=[0, 1]), "booleans"),
    (lambda d: _npz(d / "x.npz", logits=np.zeros((2, 3), dtype="f8,f8"), targets=[0, 1]),
     "structured"),
    (lambda d: _npz(d / "x.npz", logits=np.zeros((2, 3)), targets=np.array(["0", "1"])),
     "targets must be real numbers, got strings"),
    (lambda d: _npz(d / "x.npz", logits=np.zeros((2, 3), dtype="M8[D]"), targets=[0, 1]),
     "datetimes"),
    (lambda d: _npz(d / "x.npz", logits=np.full((1, 2), 2 ** 60 + 1), targets=[0]),
     r"not exactly a float64"),
    (lambda d: _npz(d / "x.npz", logits=_huge_longdouble(), targets=[0]),
     "outside float64's range"),
    (lambda d: _write(d / "x.csv", "1,2,0\n1,x,0\n"), r"line 2, column 2: 'x' is not a number"),
    (lambda d: _write(d / "x.csv", "1,,0\n1,2,0\n"), "line 1, column 2: empty field"),
    (lambda d: _write(d / "x.csv", "1,2,0\n1,2\n"), "line 2 has 2 fields, line 1 has 3"),
    (lambda d: _write(d / "x.csv", "1,2,0.5\n"), "integer class indices"),
    (lambda d: _write(d / "x.csv", "1,2,5\n"), "out of range"),
    (lambda d: _write(d / "x.csv", "1\n2\n"), r"shape \(2, 1\)"),
], ids=["missing", "directory", "suffix", "npz-garbage", "npy-garbage", "npz-truncated",
        "npz-no-targets", "npz-3d", "npz-target-range", "npz-target-count", "npy-1d",
        "npy-one-column", "npy-pickle", "csv-empty", "csv-header-only", "csv-typo-first-row",
        "csv-quoted-first-row",
        "csv-quoted-number", "csv-short-header", "csv-overflow", "csv-overflow-negative",
        "csv-trailing-comma", "csv-semicolons", "csv-underscore", "csv-not-utf8", "npy-bool",
        "npy-str", "npy-bytes", "npy-datetime", "npy-timedelta", "npy-complex",
        "npy-structured", "npy-void", "npz-bool", "npz-structured", "npz-string-targets",
        "npz-datetime", "npz-inexact-int", "npz-longdouble", "csv-text",
        "csv-empty-field", "csv-ragged", "csv-fractional-target", "csv-target-range",
        "csv-one-column"])
def test_bad_logits_files_are_named(tmp_path, setup, match):
    path = setup(tmp_path)
    with pytest.raises(InputError, match=match) as info:
        load_logits(path)
    assert str(path) in str(info.value)


def _write(path, text):
    path.write_text(text)
    return path


def _wbytes(path, data):
    path.write_bytes(data)
    return path


def _huge_longdouble():
    a = np.ones((1, 2), dtype=np.longdouble)
    if np.finfo(np.longdouble).max <= np.finfo(np.float64).max:
        pytest.skip("longdouble is float64 on this platform")
    a[0, 1] = np.longdouble(np.finfo(np.float64).max) * 4
    return a


def test_csv_dialect_header_bom_and_blank_lines(tmp_path):
    p = _write(tmp_path / "a.csv", "")
    p.write_bytes("\ufeff1.5, -2 ,0\r\n\r\n.5,1e-3,1\n".encode())
    x, t = load_logits(p)        # a BOM before a data row: still a data row
    assert x.tolist() == [[1.5, -2.0], [0.5, 0.001]] and t.tolist() == [0, 1]
    p.write_bytes("\ufefflogit 0,logit_1,target\n1,2,1\n".encode())
    x, t = load_logits(p)        # a BOM before a header: a header
    assert x.tolist() == [[1.0, 2.0]] and t.tolist() == [1]
    p.write_text("nan,inf,0\n-Infinity,NaN,1\n")   # nan/inf are numbers, never names
    x, t = load_logits(p)
    assert np.isnan(x[0, 0]) and x[0, 1] == np.inf and x[1, 0] == -np.inf and len(t) == 2


def test_csv_reads_every_row(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 5)) * 1e3
    t = rng.integers(0, 5, size=7)
    p = tmp_path / "r.csv"
    p.write_text("\n".join(",".join(repr(float(v)) for v in row) + f",{k}"
                           for row, k in zip(x, t)))
    lx, lt = load_logits(p)
    assert np.array_equal(lx, x) and np.array_equal(lt, t)   # exactly, every row


def _npy(path, a, pickle=False):
    np.save(path, a, allow_pickle=pickle)
    return path


def _truncated_npz(path):
    _npz(path, logits=np.zeros((50, 40)), targets=np.zeros(50, dtype=int))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert not zipfile.is_zipfile(path) or True
    return path


# ---------------------------------------------------------------------------------------------
# The CLI: one line, exit status 2

FAKE = '''
"""Fake experiment for the CLI tests.

It only checks the arguments reach it."""
PROFILES = {"quick": {}, "full": {}}


def run(config, params):
    raise AssertionError("must not run")


def report(df, config, params, out_dir):
    return []
'''


@pytest.fixture
def fake_experiments(tmp_path, monkeypatch):
    d = tmp_path / "experiments"
    d.mkdir()
    (d / "fake.py").write_text(textwrap.dedent(FAKE))
    monkeypatch.setattr(experiments, "EXPERIMENTS_DIR", d)
    monkeypatch.delitem(sys.modules, "precision_lab.experiments.fake", raising=False)
    yield d
    sys.modules.pop("precision_lab.experiments.fake", None)


@pytest.mark.parametrize("args, match", [
    (["--workers", "0"], "--workers must be an integer of at least 1, got 0"),
    (["--workers", "-2"], "--workers must be"),
    (["--seed", "-1"], "--seed must be a non-negative integer"),
    (["--profile", "huge"], "unknown profile 'huge' for fake; valid: quick, full"),
    (["--logits-file", "NOPE.npz"], "logits file not found: NOPE.npz"),
])
def test_cli_bad_values(fake_experiments, tmp_path, capsys, args, match):
    rc = cli.main(["run", "fake", "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("precision-lab: error: ") and match in err
    assert "Traceback" not in err


def test_cli_unknown_experiment_and_bad_out(fake_experiments, tmp_path, capsys):
    assert cli.main(["run", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown experiment 'nope'; available: fake" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli.main(["run", "fake", "--out", str(tmp_path / "file")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_cli_profile_checked_for_all_before_running(fake_experiments, tmp_path, capsys):
    (fake_experiments / "other.py").write_text(textwrap.dedent(FAKE).replace(
        '"full": {}', '"large": {}'))
    sys.modules.pop("precision_lab.experiments.other", None)
    try:
        rc = cli.main(["run", "all", "--profile", "full", "--out", str(tmp_path / "o")])
    finally:
        sys.modules.pop("precision_lab.experiments.other", None)
    assert rc == 2 and "unknown profile 'full' for other" in capsys.readouterr().err


def test_cli_non_integer_workers_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "fake", "--workers", "two"])
    assert info.value.code == 2
    assert "invalid int value: 'two'" in capsys.readouterr().err


def test_script_main_reports_errors_the_same_way(fake_experiments, tmp_path, capsys):
    assert runner.script_main("fake", ["--workers", "0", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("experiments/fake.py: error: --workers")
