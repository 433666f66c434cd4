"""The kernels on threads (`precision_lab.threads`): the same bits as on one thread, for each
kernel that splits its rows or elements (the one-thread paths are tested bit for bit against
the numpy paths they mirror elsewhere); the split itself; the setting and its errors."""
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fast32 import F32, NAN_PAYLOAD, _near_midpoints, float32_inputs, raw

from precision_lab import threads
from precision_lab.analysis.evaluate import evaluate
from precision_lab.errors import InputError
from precision_lab.numerics import fast32, fastelem, fastround
from precision_lab.numerics.formats import get_format

EDGE = np.concatenate([[0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-40, 2.0 ** -126,
                        3.4e38, -3.4e38, 88.72, -104.0, 1e300, 2.0 ** -149, 0.1, 1.0 / 3],
                       NAN_PAYLOAD])


def _split(monkeypatch, n):
    """THREADS = n and MIN_SPLIT = 1: every call of more than one item splits; returns the
    list of the bounds each `threads.run` got."""
    monkeypatch.setattr(threads, "THREADS", n)
    monkeypatch.setattr(threads, "MIN_SPLIT", 1)
    seen = []
    real = threads.run
    monkeypatch.setattr(threads, "run", lambda fn, b: seen.append(b) or real(fn, b))
    return seen


def _same(monkeypatch, fn, n=3):
    """fn() on one thread and on n: the same bits (arrays by their raw bits, in order);
    returns the bounds the threaded run split at."""
    with threads.using(1):
        want = fn()
    seen = _split(monkeypatch, n)
    got = fn()
    assert len(want) == len(got)
    for w, g in zip(want, got):
        if isinstance(w, np.ndarray):
            assert w.dtype == g.dtype and w.shape == g.shape and np.array_equal(raw(w), raw(g))
        else:
            assert w == g
    assert any(len(b) > 2 for b in seen), "nothing was split"
    monkeypatch.undo()
    return seen


@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "float32", "p=5,emin=-6,emax=7"])
def test_rounding_and_subtraction(monkeypatch, fmt):
    f = get_format(fmt)
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.normal(0, 30, (7, 301)), np.resize(EDGE, (2, 301))])
    b = np.resize(EDGE, (9, 1))
    for bb in (b, a[::-1].copy(), a.max(axis=1, keepdims=True)):
        _same(monkeypatch, lambda bb=bb: (
            fastround.round_compiled(a, f.precision, f.emin, f.max_finite),
            fastround.sub_compiled(a, bb, f.precision, f.emin, f.max_finite)))


def test_float32_exp_and_its_uncertain_places(monkeypatch):
    """fast32's exp and fused exp(a - b): the results and the places of the uncertain
    elements (more than 64 of them in one range, too) as on one thread."""
    near = _near_midpoints(150)
    x = np.concatenate([float32_inputs(np.random.default_rng(2)), np.resize(EDGE, 50), near])

    def exp():
        out = np.empty_like(x)
        return out, fast32.exp_f32(x, F32, out)

    _same(monkeypatch, exp)
    a = np.resize(np.concatenate([near, F32.round(x[:3000])]), (5, 2000))
    a[0] = np.resize(near, 2000)                    # a row with more than 64 uncertain
    for b in (np.zeros((5, 1)), a.max(axis=1, keepdims=True), a[::-1].copy()):
        def sub_exp(b=b):
            out = np.empty_like(a)
            with np.errstate(all="ignore"):
                idx, inf = fast32.sub_exp_f32(a, b, F32, out)
            return out, idx, inf
        _same(monkeypatch, sub_exp)


@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "float32"])
def test_lookups_and_sums(monkeypatch, fmt):
    """bfloat16's table look-ups by the top 16 bits (with inputs that are not its values)
    and the native accumulation (rows of every count of 8-row blocks, rows that decline: an
    overflow, an input not a value)."""
    f = get_format(fmt)
    rng = np.random.default_rng(3)
    x = np.concatenate([f.round(rng.normal(0, 4, 3000)), EDGE, rng.normal(0, 4, 100)])
    for name in ("exp", "log", "tanh") if fmt == "bfloat16" else ():   # float16: numpy's take
        with np.errstate(all="ignore"):
            _same(monkeypatch, lambda name=name: (fastelem.compute(name, x, f),))
    v = f.round(np.abs(rng.normal(0, 1, (19, 500))))
    _same(monkeypatch, lambda: (fastelem.accumulate_native(v, f),))
    for bad in (np.inf, 0.1 if fmt != "float32" else np.nan, f.max_finite):
        w = v.copy()
        w[13, 7:] = bad
        with threads.using(1):
            one = fastelem.accumulate_native(w, f)
        _split(monkeypatch, 3)
        many = fastelem.accumulate_native(w, f)
        monkeypatch.undo()
        assert (one is None) == (many is None)
        assert one is None or np.array_equal(raw(one), raw(many))


def test_evaluate_alike_on_any_number_of_threads(monkeypatch):
    """A whole evaluate (every kernel split): the frame of one thread, value for value."""
    rng = np.random.default_rng(4)
    x = rng.normal(0, 5, (12, 700))
    x[3, 5] = 400.0
    t = rng.integers(0, 700, 12)
    with threads.using(1):
        want = evaluate(x, t, formats=["bfloat16", "float32"], cache=False)
    _split(monkeypatch, 2)
    got = evaluate(x, t, formats=["bfloat16", "float32"], cache=False)
    for col in want:
        w, g = want[col].to_numpy(), got[col].to_numpy()
        if w.dtype.kind == "f":
            assert np.array_equal(raw(w), raw(g)), col
        else:
            assert np.array_equal(w, g), col


@given(n=st.integers(0, 300), size=st.integers(0, 10 ** 6), k=st.integers(1, 9),
       split=st.integers(1, 5000), weights=st.none() | st.lists(st.integers(0, 50), min_size=1,
                                                               max_size=300))
def test_ranges(n, size, k, split, weights):
    """The bounds tile 0..n in ascending ranges, no more than the threads, each of at least
    MIN_SPLIT of the work on average; weighted: no range beyond its share by more than the
    largest item."""
    start = None
    if weights is not None:
        n = len(weights)
        start = np.concatenate(([0], np.cumsum(weights)))
        size = int(start[-1])
    old = threads.THREADS, threads.MIN_SPLIT
    threads.THREADS, threads.MIN_SPLIT = k, split
    try:
        b = threads.ranges(n, size, start)
    finally:
        threads.THREADS, threads.MIN_SPLIT = old
    assert b[0] == 0 and b[-1] == n and all(x < y for x, y in zip(b, b[1:])) or b == [0, 0]
    parts = len(b) - 1
    assert parts <= max(1, min(k, n))
    assert parts == 1 or size // parts >= split // 2
    if start is not None and parts > 1:
        work = np.diff(start[b])
        assert work.max() <= size / parts + max(weights) + 1


def test_setting(monkeypatch):
    monkeypatch.setattr(threads, "THREADS", None)
    monkeypatch.setenv("PRECISION_LAB_THREADS", "3")
    assert threads.count() == 3
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("PRECISION_LAB_THREADS", bad)
        with pytest.raises(InputError, match="PRECISION_LAB_THREADS"):
            threads.count()
    monkeypatch.delenv("PRECISION_LAB_THREADS")
    assert threads.count() >= 1
    with threads.using(1):
        assert threads.count() == 1
    assert threads.THREADS is None
    monkeypatch.setattr(threads, "THREADS", 5)     # `using` is this thread's alone
    seen = []
    with threads.using(2):
        other = threading.Thread(target=lambda: seen.append(threads.count()))
        other.start()
        other.join()
        assert threads.count() == 2
    assert seen == [5] and threads.count() == 5
