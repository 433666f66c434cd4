"""Report files are written atomically; a report directory is replaced whole, so its figures
never disagree with its table; an experiment interrupted anywhere resumes from its checkpoints."""
from __future__ import annotations

import contextlib
import os
import stat
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st
from sweep_cells import MARKERS, computed_counts  # noqa: E402

from precision_lab import experiments  # noqa: E402
from precision_lab.errors import InputError  # noqa: E402
from precision_lab.reporting import figures, index, tables  # noqa: E402
from precision_lab.runner import RunConfig, run_experiment  # noqa: E402
from precision_lab.running import provenance, storage  # noqa: E402
from precision_lab.running.storage import exclusive  # noqa: E402
from precision_lab.running.sweep import read_table  # noqa: E402


def _leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with storage.atomic_write(path) as f:
            f.write("half a new fi")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_atomic_write_gives_normal_permissions(tmp_path):
    path = tables.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "a.csv")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1,
                max_size=20))
def test_csv_round_trip_is_exact(values):
    import io
    df = pd.DataFrame({"v": values, "s": ["NA"] * len(values)})
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    back = read_table(io.StringIO(buf.getvalue()))
    v = np.array(values)
    got = back["v"].to_numpy(dtype=np.float64)
    assert np.array_equal(np.isnan(v), np.isnan(got))
    ok = ~np.isnan(v)
    assert np.array_equal(v[ok].view(np.int64), got[ok].view(np.int64))  # bits, signed zeros
    assert (back["s"] == "NA").all()


def test_figures_are_atomic_and_reproducible(tmp_path):
    def draw():
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([1, 2, 3], [1, 4, 9])
        ax.set_title("f")
        return fig
    fig = draw()
    paths = figures.save_figure(fig, tmp_path / "a", "fig")
    plt.close(fig)
    first = [p.read_bytes() for p in paths]
    fig = draw()
    figures.save_figure(fig, tmp_path / "a", "fig")
    plt.close(fig)
    assert [p.read_bytes() for p in paths] == first
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert _leftovers(tmp_path / "a") == []


def test_writers_produce_tables(tmp_path):
    df = pd.DataFrame({"method": ["log_sum_exp"], "rel": [1.23456e-5], "n": [3]})
    md = tables.write_markdown(df, tmp_path / "t.md", title="T", caption="C").read_text()
    tex = tables.write_latex(df, tmp_path / "t.tex", caption="50% of x_1", label="t").read_text()
    assert "1.23e-05" in md and "log_sum_exp" in md
    assert r"log\_sum\_exp" in tex and r"50\% of x\_1" in tex and r"\toprule" in tex
    meta = provenance.write_metadata(tmp_path, seed=3).read_text()
    assert '"seed": 3' in meta and '"git_commit"' in meta


# ---------------------------------------------------------------------------------------------
# The experiment runner: staging, publish, resume

FAKE = '''
"""A fake sweep experiment.

Four marked cells through the real sweep runner; a table and a figure from them."""
import os

PROFILES = {"quick": {"n": 4}, "more": {"n": 6}}


def run(config, params):
    import sweep_cells
    from precision_lab.running.sweep import run_cells
    return run_cells(sweep_cells.grid(params["n"], seed=config.seed), sweep_cells.marked_cell,
                     checkpoint_dir=config.checkpoint_dir("fake"), workers=config.workers,
                     quiet=True)


def report(df, config, params, out_dir):
    import matplotlib.pyplot as plt
    from precision_lab.reporting.figures import save_figure
    from precision_lab.reporting.tables import write_markdown
    write_markdown(df, out_dir / "summary.md", title="fake")
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(df["i"], df["count"])
    save_figure(fig, out_dir, "fig")
    plt.close(fig)
    if os.environ.get("FAKE_REPORT_FAILS"):
        raise RuntimeError("the report crashes after writing its figure")
    return [{"text": f"{len(df)} rows", "link": "summary.md"}]
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    d = tmp_path / "experiments"
    d.mkdir()
    (d / "fake.py").write_text(textwrap.dedent(FAKE))
    monkeypatch.setattr(experiments, "EXPERIMENTS_DIR", d)
    monkeypatch.delitem(sys.modules, "precision_lab.experiments.fake", raising=False)
    marks = tmp_path / "markers"
    marks.mkdir()
    monkeypatch.setenv(MARKERS, str(marks))
    monkeypatch.delenv("FAKE_REPORT_FAILS", raising=False)
    yield marks
    sys.modules.pop("precision_lab.experiments.fake", None)


def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name != "metadata.json"}


def test_run_publishes_whole_directory_and_cleans_up(fake, tmp_path):
    out = tmp_path / "reports"
    final = run_experiment("fake", RunConfig(out=out, workers=1, quiet=True))
    assert sorted(p.name for p in final.iterdir()) == [
        "fig.pdf", "fig.png", "findings.json", "metadata.json", "results.csv", "summary.md"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "fake"]  # nothing hidden left
    again = run_experiment("fake", RunConfig(out=tmp_path / "again", workers=1, quiet=True))
    assert _snapshot(final) == _snapshot(again)  # reproducible (tables, figures, findings)


def test_crash_while_reporting_keeps_old_report_and_finished_cells(fake, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "reports"
    run_experiment("fake", RunConfig(out=out, workers=1, quiet=True))
    before = _snapshot(out / "fake")
    monkeypatch.setenv("FAKE_REPORT_FAILS", "1")
    with pytest.raises(RuntimeError, match="crashes"):
        run_experiment("fake", RunConfig(out=out, profile="more", workers=1, quiet=True))
    assert _snapshot(out / "fake") == before  # the old table and its figure, together
    kept = list((out / ".checkpoints" / "fake").glob("*.csv"))
    assert len(kept) == 6
    counts = computed_counts(fake)
    monkeypatch.delenv("FAKE_REPORT_FAILS")
    run_experiment("fake", RunConfig(out=out, profile="more", workers=1, quiet=True))
    assert computed_counts(fake) == counts  # resumed: no cell computed again
    assert read_table(out / "fake" / "results.csv")["i"].nunique() == 6
    assert not (out / ".checkpoints").exists()
    assert not any(p.name.startswith(".fake") for p in out.iterdir())


def test_a_publish_cut_between_its_two_renames_is_recovered(fake, tmp_path):
    out = tmp_path / "reports"
    run_experiment("fake", RunConfig(out=out, workers=1, quiet=True))
    before = _snapshot(out / "fake")
    os.replace(out / "fake", out / ".fake.old")           # killed after the first rename
    (out / ".fake.staging").mkdir()                          # and a stale half-written staging
    (out / ".fake.staging" / "results.csv").write_text("i\n")
    storage.recover_dir(out / "fake")
    assert _snapshot(out / "fake") == before
    assert not (out / ".fake.old").exists() and not (out / ".fake.staging").exists()
    index.write_index(out)
    assert "fake" in (out / "README.md").read_text()


def test_index_ignores_hidden_directories(tmp_path):
    (tmp_path / ".x.staging").mkdir()
    (tmp_path / ".x.staging" / "findings.json").write_text('{"name": "x", "findings": []}')
    assert "[x]" not in index.write_index(tmp_path).read_text()


def test_index_temporary_file_is_not_among_outs_entries(tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "findings.json").write_text('{"name": "x", "title": "X", '
                                                  '"findings": []}')
    before = sorted(os.listdir(tmp_path))
    real, seen = index.atomic_write, []

    @contextlib.contextmanager
    def spy(path, *args, **kwargs):
        with real(path, *args, **kwargs) as f:
            seen.append(sorted((n, (path.parent / n).is_dir())  # OUT while the index is
                               for n in os.listdir(path.parent)))  # written

            yield f

    monkeypatch.setattr(index, "atomic_write", spy)
    index.write_index(tmp_path)
    new = [(n, is_dir) for n, is_dir in seen[0] if n not in before]
    assert len(new) == 1 and new[0][0].startswith(".index.") and new[0][1]  # a hidden dir
    assert not _leftovers(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["README.md"])

    @contextlib.contextmanager
    def crash(path, *args, **kwargs):
        with real(path, *args, **kwargs):
            raise RuntimeError("killed mid-write")
            yield

    monkeypatch.setattr(index, "atomic_write", crash)
    with pytest.raises(RuntimeError):
        index.write_index(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(before + ["README.md"])  # nothing left


def test_two_runs_into_one_out_are_refused(fake, tmp_path):
    out = tmp_path / "reports"
    with exclusive(out / ".fake.lock", "held by this test"):
        with pytest.raises(InputError, match="another run of fake"):
            run_experiment("fake", RunConfig(out=out, workers=1, quiet=True))


def test_median_times_round_robin():
    """`median_times` calls its functions in turn, round after round (after one warm-up round),
    so that a change of load touches all alike, and returns each one's median."""
    calls = []
    fns = [lambda k=k: calls.append(k) for k in "abc"]
    out = provenance.median_times(fns, 3, warmup=True)
    assert calls == list("abc" * 4)
    assert len(out) == 3 and all(v >= 0 for v in out)
    calls.clear()
    assert provenance.median_time(fns[0], 2) >= 0 and calls == ["a", "a"]


def test_metadata_records_the_machine_dependent_kernels():
    """What the numbers or the timings depend on is recorded: torch's ATen capability, numpy's
    SIMD dispatch, the CPU numba compiles the kernels for."""
    k = provenance.kernels()
    assert isinstance(k["numba_target_cpu"], str) and k["numba_target_cpu"]
    assert k["torch_cpu_capability"] and isinstance(k["numpy_cpu_dispatch_used"], list)
