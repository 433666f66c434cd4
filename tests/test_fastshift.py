"""numerics.fastshift: the fused pass (maxima, shifted exponentials and their sums in one
compiled loop) gives every method the bits of its numpy steps, in every format and
accumulator, on adversarial rows; the rows it declines are recomputed by those steps."""
import numpy as np
import pytest

from precision_lab.numerics import fast32, fastshift
from precision_lab.numerics import methods as methods_module
from precision_lab.numerics.arithmetic import Arithmetic
from precision_lab.numerics.formats import get_format
from precision_lab.numerics.methods import METHODS, shared_steps

FORMATS = ["bfloat16", "float32", "float16", "float8_e4m3fn", "float8_e5m2",
           "bfloat16,round=sr,seed=3"]
ACCUMULATORS = ("working", "float32", "working_sr", "float32_sr")
SHAPES = [(9, 1), (11, 7), (10, 256), (12, 300), (17, 700), (9, 1024)]


def _adversarial(fmt, n, c, rng):
    """Random rows and, at the top, rows that exercise every declined or rare case: -inf
    logits, an all -inf row, +inf, nan, maxima +0 and -0 (with both zeros in the row),
    subnormal logits, logits whose exp overflows (naive), differences at rounding ties."""
    x = 3.0 * rng.standard_normal((n, c))
    x[0, 3 % c] = -np.inf
    x[1, :] = -np.inf
    x[2, 5 % c] = np.inf
    x[3, 7 % c] = np.nan
    x[4] = -np.abs(x[4])
    x[4, 2 % c] = -0.0
    x[5] = -np.abs(x[5])
    x[5, 9 % c] = 0.0
    x[5, 1 % c] = -0.0
    x[6] *= 1e-39
    x[7] *= 40.0
    x[8] = np.ldexp(np.floor(x[8] * 4) + 0.5, -2)     # quarter-odd values: ties in x - m
    if n > 9:
        x[9] = 2.0 ** 8 + np.arange(c) % 7 - 3.5     # a large maximum: x - m at ties
    if n > 10:
        x[10] = -x[10] ** 2                            # every difference tiny or huge
    return fmt.round(x)


def _same(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


def _both(monkeypatch, m, x, t, fmt, acc):
    monkeypatch.setattr(fastshift, "ENABLED", False)
    ref = m(x, t, fmt, acc)
    monkeypatch.setattr(fastshift, "ENABLED", True)
    return ref, m(x, t, fmt, acc)


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_every_method_identical_with_and_without_the_fused_pass(fmt_name, monkeypatch):
    fmt = get_format(fmt_name)
    rng = np.random.default_rng(11)
    for n, c in SHAPES:
        x = _adversarial(fmt, n, c, rng)
        t = rng.integers(0, c, n)
        for m in METHODS.values():
            for acc in m.accumulators(fmt, ACCUMULATORS):
                ref, new = _both(monkeypatch, m, x, t, fmt, acc)
                assert _same(ref, new), (fmt_name, n, c, m.name, acc, ref, new)


@pytest.mark.parametrize("fmt_name,acc", [("bfloat16", "working"), ("bfloat16", "float32"),
                                          ("float32", "working")])
def test_fused_pass_serves_the_fast_formats_and_declines_only_odd_rows(fmt_name, acc):
    fmt = get_format(fmt_name)
    ar = Arithmetic(fmt, acc)
    assert fastshift.fusable(ar)
    rng = np.random.default_rng(5)
    x = _adversarial(fmt, 12, 700, rng)
    t = rng.integers(0, 700, 12)
    m, s, ep, ok = fastshift.shifted_sums(ar, x, pick=t)
    assert not ok[[1, 2, 3]].any()                  # all -inf, +inf, nan
    assert ok[[0, 6, 8, 9, 11]].all()               # -inf logits, subnormals, ties: served
    ref = Arithmetic(fmt, acc)
    mr = np.max(x, axis=1, keepdims=True)
    e = ref.exp_sub(x, mr)
    assert _same(m[ok], mr[ok])
    assert _same(s[ok, 0], ref.sum(e)[ok])
    assert _same(ep[ok], e[np.arange(12), t][ok])


@pytest.mark.parametrize("fmt_name,acc", [("bfloat16", "working"), ("bfloat16", "float32"),
                                          ("float32", "working")])
def test_fused_blocks_and_skip_match_the_numpy_steps(fmt_name, acc):
    fmt = get_format(fmt_name)
    rng = np.random.default_rng(6)
    for c in (200, 256, 512, 700):
        x = fmt.round(3.0 * rng.standard_normal((10, c)))
        ar = Arithmetic(fmt, acc)
        m, s, _, ok = fastshift.shifted_sums(ar, x, block=256)
        assert ok.all()
        mb, sb = methods_module._online_block_sums(Arithmetic(fmt, acc), x)
        assert _same(m, mb) and _same(s, sb)
        _, s1, _, ok = fastshift.shifted_sums(ar, x, skip_argmax=True)
        _, s2, _ = methods_module._max_sum_numpy(Arithmetic(fmt, acc), x, skip_argmax=True)
        assert ok.all() and _same(s1[:, 0], s2)


def test_uncertain_exponentials_decline_their_rows(monkeypatch):
    """float32: an exp whose rounding fast32 leaves uncertain declines its row (the numpy path
    settles it); a coarse bound makes many uncertain, and the results stay the same bits."""
    fmt = get_format("float32")
    rng = np.random.default_rng(8)
    x = fmt.round(3.0 * rng.standard_normal((16, 2000)))
    t = rng.integers(0, 2000, 16)
    ref = {name: METHODS[name](x, t, fmt) for name in METHODS if name != "torch"}
    monkeypatch.setattr(fast32, "BOUND", 2.0 ** -38)
    _, _, _, ok = fastshift.shifted_sums(Arithmetic(fmt), x)
    assert 0 < ok.sum() < len(ok)
    for name, r in ref.items():
        assert _same(METHODS[name](x, t, fmt), r), name


def test_methods_use_the_fused_pass(monkeypatch):
    """With the pass on, a clean batch never reaches the unfused steps (which would be slower
    and hold (N, C) float64 temporaries); with it off, they run."""
    fmt = get_format("bfloat16")
    rng = np.random.default_rng(9)
    x = fmt.round(3.0 * rng.standard_normal((8, 300)))
    t = rng.integers(0, 300, 8)

    def unfused(*args, **kwargs):
        raise AssertionError("the unfused steps ran")
    for name in ("_shifted_exp", "_online_block_sums", "_naive_numpy"):
        monkeypatch.setattr(methods_module, name, unfused)
    for m in METHODS.values():
        if m.name != "torch":
            for acc in m.accumulators(fmt):
                m(x, t, fmt, acc)
    monkeypatch.setattr(fastshift, "ENABLED", False)
    with pytest.raises(AssertionError):
        METHODS["logsumexp"](x, t, fmt)


def test_methods_neither_copy_nor_freeze_the_callers_logits():
    fmt = get_format("float32")
    x = fmt.round(np.random.default_rng(1).standard_normal((4, 50)))
    before = x.copy()
    for m in METHODS.values():
        m(x, np.zeros(4, dtype=int), fmt)
    assert x.flags.writeable and _same(x, before)


def test_shared_steps_still_share_rather_than_fuse():
    """Within shared_steps a frozen batch's steps are computed once and handed to every
    method (the fused pass would recompute them per method): the same bits either way."""
    fmt = get_format("bfloat16")
    rng = np.random.default_rng(4)
    x = fmt.round(3.0 * rng.standard_normal((6, 400)))
    t = rng.integers(0, 400, 6)
    plain = {m: METHODS[m](x, t, fmt) for m in METHODS if m != "torch"}
    x.flags.writeable = False
    with shared_steps():
        assert not methods_module._fuse(Arithmetic(fmt), x)
        for m, r in plain.items():
            assert _same(METHODS[m](x, t, fmt), r), m
