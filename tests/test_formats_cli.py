"""Formats on the command line: `list` shows every format's facts, `--formats` takes names
and custom spellings in `run` and `check`, bad spellings are one clear line (exit 2)."""
import json

import pandas as pd
import pytest

from precision_lab.cli import main
from precision_lab.errors import InputError
from precision_lab.experiments import load_experiment
from precision_lab.numerics.formats import FORMATS
from precision_lab.runner import RunConfig, run_experiment

EX = "precision_lab.examples"


def test_list_shows_every_format_and_its_derived_facts(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for f in FORMATS.values():
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [f.name])
        cols = line.split()
        assert int(cols[1]) == f.bits and int(cols[2]) == f.precision
        assert float(cols[5]) == pytest.approx(f.unit_roundoff, rel=1e-3)
        assert cols[6] == f"{f.max_finite:.5g}"
        assert float(cols[9]) == pytest.approx(f.overflow_logit, rel=1e-5)
        assert cols[10] == f.overflow and int(cols[11]) == f.nan_encodings
    assert "p=P,emin=EMIN,emax=EMAX" in out
    assert "torch" in out and "runs in float16, bfloat16, float32, float64" in out


def test_run_config_names_formats_by_their_stable_names():
    c = RunConfig(formats=["p=5,emin=-14,emax=15", "float16,round=sr", "float8_e4m3fn"])
    assert c.formats == ("p5_emin-14_emax15", "float16_sr", "float8_e4m3fn")
    with pytest.raises(InputError, match="unknown format"):
        RunConfig(formats=["float7"])
    with pytest.raises(InputError, match="precision"):
        RunConfig(formats=["p=99,emax=3"])
    cells = [{"distribution": "normal", "rows": 2, "classes": 3, "scale": 1.0, "seed": 0}]
    c = RunConfig(formats=["p=4,emax=7"], out="/nonexistent-unused", quiet=True, workers=1)
    df = c.sweep("x", cells)
    assert set(df["format"]) == {"p4_emin-6_emax7"}


def test_custom_format_through_an_experiment_run(tmp_path, monkeypatch):
    module = load_experiment("class_count")
    monkeypatch.setitem(module.PROFILES, "tiny", {
        "exponents": [1, 3], "scales": [1.0], "min_rows": 2, "max_rows": 2, "max_logits": 64,
        "user_scales": [1.0]})
    config = RunConfig(profile="tiny", out=tmp_path, quiet=True, workers=1,
                       formats=["p=6,emin=-14,emax=15,round=sr", "float8_e5m2"])
    out = run_experiment("class_count", config)
    df = pd.read_csv(out / "results.csv")
    assert set(df["format"]) == {"p6_emin-14_emax15_sr", "float8_e5m2"}
    assert "torch" not in set(df["method"])  # cannot run in either: skipped, not crashed
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["formats"] == ["p6_emin-14_emax15_sr", "float8_e5m2"]
    assert "p6_emin-14_emax15_sr" in (out / "summary.md").read_text()


def test_bad_formats_on_the_command_line_are_one_line(tmp_path, capsys):
    assert main(["run", "logit_scale", "--out", str(tmp_path), "--formats", "p=5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "emax" in err
    assert main(["run", "seed_questions", "--out", str(tmp_path), "--formats",
                 "float16"]) == 2
    assert "takes no --formats" in capsys.readouterr().err
    assert main(["check", f"{EX}.stable:cross_entropy", "--formats", "float9"]) == 2
    assert "unknown format" in capsys.readouterr().err


def test_check_runs_a_custom_format_and_float8(capsys):
    rc = main(["check", f"{EX}.stable:cross_entropy", "--formats", "p=20,emin=-126,emax=127",
               "float8_e5m2"])
    out = capsys.readouterr().out
    assert "p20_emin-126_emax127" in out and "float8_e5m2" in out
    assert rc in (0, 1)  # a verdict, not a crash
    rows = [ln for ln in out.splitlines() if ln.strip().startswith("torch ")]
    assert not rows  # torch has no kernel in these formats: no baseline row, no failure
