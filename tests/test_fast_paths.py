"""The shortcuts `evaluate` and `analyze` take (issue 11: speed) change no bit of any result:
frozen (read-only) rounded logits that every method's check takes without a copy, the BHH
terms with exp once per distinct 16-bit value, the top-2 gap without a partition. Each is
compared with the path it replaces, bit for bit, on adversarial and random inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from precision_lab.analysis import analyze as analyze_mod
from precision_lab.analysis import evaluate as evaluate_mod
from precision_lab.analysis.analyze import analyze, analyze_chunk, top2_gap, top2_gap_partition
from precision_lab.analysis.analyze_report import worst_rows, write_report
from precision_lab.analysis.evaluate import evaluate, frozen
from precision_lab.data.inputs import check_array, validate_batch
from precision_lab.numerics import bounds
from precision_lab.numerics import methods as methods_mod
from precision_lab.numerics.formats import FORMATS, get_format
from precision_lab.numerics.methods import METHODS

SPECIALS = (np.inf, -np.inf, np.nan, -0.0, 0.0)


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("PRECISION_LAB_CACHE", "off")


def _adversarial(n, c, fmt, seed=0, scale=3.0):
    """Logits rounded into `fmt`, with every special in some row: +-inf, nan, signed zeros,
    the format's subnormals, a row of -inf only, a row of equal values, a huge logit."""
    f = FORMATS[fmt]
    rng = np.random.default_rng(seed)
    x = scale * rng.standard_normal((n, c))
    x[0, 5] = np.inf
    x[1, :] = -np.inf
    x[2, 7] = np.nan
    x[3, :c // 2] = -0.0
    x[3, c // 2:] = 0.0
    x[4, 1] = f.min_subnormal
    x[4, 2] = -f.min_subnormal
    x[5, :] = 2.0
    x[6, 3] = f.max_finite
    x[7, ::3] = -np.inf
    return f.round(x), rng.integers(0, c, n)


def _same_bits(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    return a.shape == b.shape and bool(np.all(both_nan | ((a == b)
                                                          & (np.signbit(a) == np.signbit(b)))))


@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2", "tf32",
                                 "float32", "float64"])
def test_lse_terms_fast_equals_direct(fmt):
    x, _ = _adversarial(10, 5000, fmt)
    fast, direct = bounds.lse_terms(x), bounds.lse_terms_direct(x)
    for a, b in zip(fast, direct):
        assert _same_bits(a, b)
    used = bounds._row_exp_16bit(x, np.where(np.isfinite(x), x, -np.inf).max(axis=1))
    # the 16-bit path runs exactly where every value is a bfloat16 or float16 pattern
    assert (used is not None) == (fmt in ("bfloat16", "float16", "float8_e4m3fn",
                                          "float8_e5m2"))


def test_lse_terms_fast_on_random_rows_of_every_scale():
    rng = np.random.default_rng(5)
    for scale in (1e-3, 1.0, 30.0, 1e4):
        x = FORMATS["bfloat16"].round(scale * rng.standard_normal((3, 9000)))
        for a, b in zip(bounds.lse_terms(x), bounds.lse_terms_direct(x)):
            assert _same_bits(a, b)


def test_top2_gap_equals_partition():
    rng = np.random.default_rng(0)
    pool = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 2.0, 5e-324, -5e-324])
    for _ in range(500):
        x = rng.choice(pool, size=(6, int(rng.integers(1, 30))))
        assert _same_bits(top2_gap(x), top2_gap_partition(x))
    x = rng.standard_normal((50, 777))
    assert _same_bits(top2_gap(x), top2_gap_partition(x))


def test_check_array_takes_read_only_float64_without_a_copy():
    x = np.arange(12.0).reshape(3, 4)
    v = frozen(x)
    assert x.flags.writeable and not v.flags.writeable   # the caller's array is untouched
    assert np.shares_memory(check_array(v), x)
    xv, _ = validate_batch(v, np.zeros(3, dtype=np.int64))
    assert np.shares_memory(xv, x) and not xv.flags.writeable
    assert not np.shares_memory(check_array(x), x)       # writable input: a copy, as before
    assert not np.shares_memory(check_array(x.astype(np.float32)), x)


def _thawed(monkeypatch):
    """The paths before the shortcuts: writable copies, direct exp, the partition."""
    monkeypatch.setattr(evaluate_mod, "frozen", lambda a: np.array(a))
    monkeypatch.setattr(analyze_mod, "frozen", lambda a: np.array(a))
    monkeypatch.setattr(analyze_mod, "lse_terms", bounds.lse_terms_direct)
    monkeypatch.setattr(analyze_mod, "top2_gap", top2_gap_partition)
    monkeypatch.setattr(evaluate_mod, "_block", _block_per_variant)


def _block_per_variant(fmt, parts):
    """The frame's columns formed variant by variant (`_block_one`), then joined."""
    blocks = [evaluate_mod._block_one(fmt, *p) for p in parts]
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


@pytest.mark.parametrize("fmt", ["bfloat16", "float8_e5m2", "float16"])
def test_evaluate_frame_identical_without_the_shortcuts(fmt, monkeypatch):
    x, t = _adversarial(9, 4100, fmt, seed=2)
    x[8, :] = -1.7e308   # in float64, a true loss past float64's range (scaled: exp != 0)
    x[8, 0], t[8] = 1.7e308, 1
    before = x.copy()
    fast = evaluate(x, t, formats=[fmt, "float64"])
    assert x.flags.writeable and _same_bits(x, before)   # the caller's array untouched
    assert (evaluate_mod.reference_truth(x, t, cache=False).exp != 0).any()
    with monkeypatch.context() as mp:
        _thawed(mp)
        slow = evaluate(x, t, formats=[fmt, "float64"])
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)


def _file(tmp_path, x, t, name="logits.safetensors"):
    path = tmp_path / name
    save_file({"logits": torch.from_numpy(x).to(torch.bfloat16),
               "targets": torch.from_numpy(t)}, str(path))
    return path


def test_analyze_chunk_identical_without_the_shortcuts(tmp_path, monkeypatch):
    x, t = _adversarial(10, 4100, "bfloat16", seed=4)
    path = _file(tmp_path, x, t)
    cell = {"path": str(path), "sha256": "", "file_rows": 10, "stored_format": "bfloat16",
            "formats": ["bfloat16", "float8_e4m3fn"], "methods": list(METHODS),
            "accumulators": ["working", "float32"], "seed": 0, "bits": 100,
            "truth_block": 5, "start": 0, "stop": 10}
    fast = analyze_chunk(cell)
    with monkeypatch.context() as mp:
        _thawed(mp)
        slow = analyze_chunk(cell)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)


def test_report_keeps_rows_where_every_variant_is_nan(tmp_path):
    """A row of masked classes only, or with a nan logit, is among the worst rows: the table
    keeps it (it used to drop it and fail with a KeyError)."""
    x, t = _adversarial(12, 50, "bfloat16", seed=1)
    a = analyze(_file(tmp_path, x, t), methods=["logsumexp", "naive"])
    w = worst_rows(a, "bfloat16")
    assert {1, 2} <= set(w["row"])
    assert w.loc[w["row"] == 1, "logsumexp"].isna().all()
    write_report(a, tmp_path / "rep")
    assert "| row |" in (tmp_path / "rep" / "summary.md").read_text().replace("   ", " ")


def test_shared_steps_hand_every_method_the_same_shifted_exp():
    """Within `shared_steps` the second method of a frozen array gets the first's exp(x - max)
    (the same object, its operations counted), its sum per accumulator, exp(x) and the
    online method's block exponentials;
    elsewhere each computes its own."""
    x, _ = _adversarial(8, 300, "bfloat16", seed=5)
    xf = frozen(x)
    fmt = FORMATS["bfloat16"]
    with methods_mod.shared_steps():
        a1, a2 = methods_mod.Arithmetic(fmt, "working"), methods_mod.Arithmetic(fmt, "float32")
        m1, e1 = methods_mod._shifted_exp(a1, xf, share=True)
        m2, e2 = methods_mod._shifted_exp(a2, xf, share=True)
        assert e2 is e1 and m2 is m1 and a2.ops == a1.ops > 0
        assert not e1.flags.writeable
        s1 = methods_mod._shared_sum(a1, e1)
        a3 = methods_mod.Arithmetic(fmt, "working")
        methods_mod._shifted_exp(a3, xf, share=True)
        assert methods_mod._shared_sum(a3, e1) is s1           # the same accumulator
        assert methods_mod._shared_sum(a2, e1) is not s1       # another one: its own sum
        assert _same_bits(s1, methods_mod.Arithmetic(fmt, "working").sum(np.array(e1)))
        n1 = methods_mod._share(a1, xf, "exp", lambda: a1.exp(xf))
        assert methods_mod._share(a2, xf, "exp", lambda: a2.exp(xf)) is n1
        calls = []
        for a in (a1, a2):
            a.exp = lambda v, a=a: calls.append(v.shape) or type(a).exp(a, v)
            methods_mod.online_lse(a, xf)
        assert calls.count((8, 1, 256)) == 1       # the blocks' exp: once, for a1 only
        _, e3 = methods_mod._shifted_exp(methods_mod.Arithmetic(fmt), np.array(x), share=True)
        assert e3 is not e1 and _same_bits(e3, e1)        # a writable array: not shared
        sr = get_format("bfloat16,round=sr")
        _, e4 = methods_mod._shifted_exp(methods_mod.Arithmetic(sr), xf, share=True)
        _, e5 = methods_mod._shifted_exp(methods_mod.Arithmetic(sr), xf, share=True)
        assert e5 is not e4                               # stochastic rounding: never shared
    _, e6 = methods_mod._shifted_exp(methods_mod.Arithmetic(fmt), xf, share=True)
    assert e6 is not e1 and _same_bits(e6, e1)            # outside the block: not shared


def test_evaluate_identical_without_shared_steps_under_stochastic_accumulators(monkeypatch):
    """Stochastic accumulators' bits follow the operation count, which the shared steps keep."""
    x, t = _adversarial(8, 600, "bfloat16", seed=6)
    accs = ["working", "float32", "working_sr", "float32_sr"]
    fast = evaluate(x, t, formats=["bfloat16", "float16,round=sr"], accumulators=accs)
    with monkeypatch.context() as mp:
        _thawed(mp)
        slow = evaluate(x, t, formats=["bfloat16", "float16,round=sr"], accumulators=accs)
    pd.testing.assert_frame_equal(fast, slow, check_exact=True)
