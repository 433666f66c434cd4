"""Streamed blocks of a .npy / .npz file pass the same gate as `load_logits` (check_array):
a file `load_logits` refuses, `analyze` refuses too, with a clear error naming the file."""
from __future__ import annotations

import numpy as np
import pytest

from precision_lab.analysis.analyze import analyze
from precision_lab.data import files
from precision_lab.data.inputs import load_logits
from precision_lab.errors import InputError


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("PRECISION_LAB_CACHE", "off")


def _bad(tmp_path):
    t = np.array([0, 1])
    yield "booleans", "b.npz", {"logits": np.array([[True, False], [False, True]]), "targets": t}
    yield r"past 2\*\*53", "i.npy", np.array([[2 ** 60 + 1, 2, 0], [3, 4, 1]], dtype=np.int64)
    yield r"past 2\*\*53", "i.npz", {"logits": np.array([[2 ** 60 + 1, 2], [3, 4]]), "targets": t}
    yield "strings", "s.npy", np.array([["1.5", "2", "0"], ["3", "4", "1"]])
    yield "datetimes", "d.npz", {"logits": np.array([[1, 2], [3, 4]], dtype="datetime64[s]"),
                                 "targets": t}


def test_streamed_npy_and_npz_blocks_pass_check_array(tmp_path):
    for what, name, content in _bad(tmp_path):
        path = tmp_path / name
        if name.endswith(".npz"):
            np.savez(path, **content)
        else:
            np.save(path, content)
        with pytest.raises(InputError, match=what):
            load_logits(path)
        with pytest.raises(InputError, match=what) as err:
            analyze(path, formats=["float32"], methods=["logsumexp"])
        assert name in str(err.value)
        with pytest.raises(InputError, match=what):
            files.read_rows(path, 0, 2)


def test_streamed_npy_still_reads_exactly(tmp_path):
    a = np.array([[1.5, -np.inf, 0], [2.0 ** -1074, 3.0, 1]])
    np.save(tmp_path / "ok.npy", a)
    x, t = files.read_rows(tmp_path / "ok.npy", 0, 2)
    np.testing.assert_array_equal(x, a[:, :-1])
    np.testing.assert_array_equal(t, [0, 1])
    np.save(tmp_path / "f16.npy", a.astype(np.float16))
    x, _ = files.read_rows(tmp_path / "f16.npy", 0, 2)
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, a[:, :-1].astype(np.float16).astype(np.float64))
