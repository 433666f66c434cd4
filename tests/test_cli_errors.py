"""One-line errors where the README promises them: bad --out and --details places, a
precision cap that cannot be reached, an option an experiment would ignore, and Ctrl-C (once
or twice) while the workers start: one line, never a traceback."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from precision_lab.cli import main
from precision_lab.errors import UncertifiedError
from precision_lab.truth.reference import reference_loss, reference_truth

EX = "precision_lab.examples.stable:cross_entropy"
ROOT = Path(__file__).resolve().parents[1]


def _one_line(capsys, rc, match):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("precision-lab: error: ") and match in err, err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("out, match", [
    (lambda d: d / "file" / "sub", "is a file, not a directory"),
    (lambda d: d / "file" / "a" / "b", "is a file, not a directory"),
    (lambda d: "", "--out is empty"),
    (lambda d: "/proc/precision_lab_cannot_be_here", "is not writable"),
], ids=["under-a-file", "deep-under-a-file", "empty", "unwritable"])
def test_run_out_places(tmp_path, capsys, out, match):
    (tmp_path / "file").write_text("")
    _one_line(capsys, main(["run", "logit_scale", "--out", str(out(tmp_path))]), match)

def _default_sigint():
    """In the child before exec: SIGINT to its default, so Python installs its handler even
    where this test runs with SIGINT ignored (a shell's background job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)



@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only directories")
def test_run_out_read_only(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _one_line(capsys, main(["run", "logit_scale", "--out", str(ro / "x")]), "not writable")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("details, match", [
    (lambda d: d, "is a directory"),
    (lambda d: d / "file" / "details.csv", "is a file, not a directory"),
    (lambda d: "/proc/precision_lab_x/details.csv", "is not writable"),
], ids=["a-directory", "under-a-file", "unwritable"])
def test_check_details_bad_path_before_the_check_runs(tmp_path, capsys, details, match):
    (tmp_path / "file").write_text("")
    rc = main(["check", EX, "--formats", "float64", "--details", str(details(tmp_path))])
    out = capsys.readouterr()
    assert rc == 2 and match in out.err and "Traceback" not in out.err
    assert out.out == ""                     # refused before running anything


def test_check_details_write_failure_is_one_line(tmp_path, capsys, monkeypatch):
    from precision_lab.analysis import check

    def fail(df, path):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(check, "write_csv", fail)
    rc = main(["check", EX, "--formats", "float64", "--details", str(tmp_path / "d.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and "Traceback" not in err


def test_an_experiment_that_ignores_logits_file_refuses_it(tmp_path, capsys):
    f = tmp_path / "x.npz"
    np.savez(f, logits=np.zeros((2, 3)), targets=np.array([0, 1]))
    rc = main(["run", "seed_questions", "--logits-file", str(f), "--out", str(tmp_path / "o")])
    _one_line(capsys, rc, "seed_questions does not use --logits-file")
    assert not (tmp_path / "o" / "seed_questions").exists()


@pytest.mark.parametrize("backend", ["mpmath", "arb"])
def test_precision_cap_checked_before_the_first_evaluation(backend):
    start = time.perf_counter()
    with pytest.raises(UncertifiedError, match="precision cap of 32768 bits"):
        reference_loss([[1.0, 2.0]], [0], bits=10 ** 6, backend=backend)
    with pytest.raises(UncertifiedError, match="cannot be certified"):
        reference_truth([[1.0, 2.0]], [0], bits=10 ** 6, backend=backend, cache=False)
    assert time.perf_counter() - start < 1.0


def _workers(pid):
    """The pool workers (spawned interpreters) among pid's children."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = []
    for k in kids:
        try:
            if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes():
                out.append(k)
        except OSError:
            pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and process groups")
@pytest.mark.parametrize("first, second", [(0.0, None), (1.0, 0.1)],
                         ids=["ctrl-c-while-workers-start", "double-ctrl-c"])
def test_ctrl_c_while_workers_start(tmp_path, first, second):
    """SIGINT to the whole process group (as a terminal's Ctrl-C) just as the pool workers
    are starting (still importing), or twice in a row once they run: one line, exit 130, no
    worker's traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PRECISION_LAB_CACHE="off")
    p = subprocess.Popen([sys.executable, "-m", "precision_lab", "run", "logit_scale",
                          "--workers", "2", "--quiet", "--out", str(tmp_path / "o")],
                         env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 60
        while not _workers(p.pid) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)     # until the first worker exists (it is still importing)
        time.sleep(first)
        os.killpg(p.pid, signal.SIGINT)
        if second is not None:
            time.sleep(second)
            os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().count("\n") == 0 and "interrupted" in err
