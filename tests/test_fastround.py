"""The compiled rounding kernel is `round_to_format`'s numpy path, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from precision_lab.numerics.fastround import round_compiled
from precision_lab.numerics.formats import FORMATS, _round_numpy

EDGE = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-320, -1e-320, 5e-324, 1.7976931348623157e308,
        -1.7976931348623157e308, 65504.0, 65519.99, 65520.0, -65520.0, 2.0 ** -24, 2.0 ** -25,
        3 * 2.0 ** -26, 2.0 ** -149, 2.0 ** -150, 3 * 2.0 ** -150, 2.0 ** -126, 2.0 ** -14,
        np.nextafter(2.0 ** -14, 0), 3.4028235677973366e38, 3.4028235e38 * 1.0000001]


def _same(a, b):
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    np.testing.assert_array_equal(a[ok].view(np.uint64), b[ok].view(np.uint64))


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32"])
def test_bit_for_bit(name):
    fmt = FORMATS[name]
    rng = np.random.default_rng(0)
    v = _round_numpy(rng.standard_normal(20000) * 100, fmt)
    half = fmt.ulp(v) / 2
    xs = [np.array(EDGE),
          rng.standard_normal(50000) * np.exp2(rng.integers(-160, 140, 50000)),
          rng.uniform(-1, 1, 50000) * np.exp2(rng.integers(-1074, 1024, 50000)),
          np.concatenate([v + half, v - half, v, np.nextafter(v + half, 0),
                          np.nextafter(v + half, np.inf)])]           # ties and their neighbours
    sub = np.arange(1, 3000) * fmt.min_subnormal / 2                  # subnormal ties
    xs += [sub, -sub, (rng.standard_normal((40, 30)) * 12)]
    for x in xs:
        _same(_round_numpy(x, fmt).ravel(),
              round_compiled(x, fmt.precision, fmt.emin, fmt.max_finite).ravel())
    assert round_compiled(xs[-1], fmt.precision, fmt.emin, fmt.max_finite).shape == (40, 30)


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float8_e5m2", "tf32"])
def test_fused_subtraction_is_add_negative_then_round(name, monkeypatch):
    """fastround.sub_compiled is round_to_format(np.add(a, np.negative(b))), bit for bit (nan
    payloads and signs included), for b a column and b the same shape; Arithmetic.sub takes
    it for 3-D blocks too (rows of any leading shape)."""
    from precision_lab.numerics import fastround
    from precision_lab.numerics.arithmetic import Arithmetic
    from precision_lab.numerics.fastround import sub_compiled
    fmt = FORMATS[name]
    rng = np.random.default_rng(1)
    nanp = np.array([0x7FF0000000000001, 0xFFF8000000000123], dtype=np.uint64).view(np.float64)
    edge = np.concatenate([EDGE, nanp])
    a = np.concatenate([rng.standard_normal((6, 300)) * np.exp2(rng.integers(-160, 140,
                                                                              (6, 300))),
                        np.resize(edge, (1, 300)), np.resize(edge[::-1], (1, 300))])
    a = np.concatenate([a, _round_numpy(a, fmt)])
    for b in (np.resize(edge, (16, 1)), _round_numpy(a[:, :1] * 1.5, fmt), a[::-1].copy(),
              np.resize(edge, (16, 300))):
        with np.errstate(invalid="ignore", over="ignore"):
            ref = _round_numpy(np.add(a, np.negative(b)), fmt)
        got = sub_compiled(a, b, fmt.precision, fmt.emin, fmt.max_finite)
        np.testing.assert_array_equal(got.view(np.uint64), ref.view(np.uint64))
        np.testing.assert_array_equal(Arithmetic(fmt).sub(a, b).view(np.uint64),
                                      ref.view(np.uint64))
        # leading axes flattened into rows (the online method's blocks: (N, B, C) - (N, B, 1))
        a3, b3 = a.reshape(4, 4, 300), b.reshape(4, 4, b.shape[1])
        ar = Arithmetic(fmt)
        calls = []
        monkeypatch.setattr(fastround, "sub_compiled", lambda *v: calls.append(1) or
                            sub_compiled(*v))
        got3 = ar.sub(a3, b3)
        monkeypatch.undo()
        assert got3.shape == (4, 4, 300) and ar.ops == 1 and calls
        np.testing.assert_array_equal(got3.view(np.uint64), ref.reshape(4, 4, 300).view(np.uint64))


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32", "float8_e5m2"])
def test_scaled_sum_is_rounded_products_and_sums(name):
    """fastround.scaled_sum_compiled is the loop s = round(round(s scale) + term) with
    round_compiled, bit for bit (edge values, subnormals, overflow, nan)."""
    from precision_lab.numerics.fastround import scaled_sum_compiled
    fmt = FORMATS[name]
    rng = np.random.default_rng(2)
    edge = np.resize(np.array(EDGE), (5, 40))
    scale = np.concatenate([_round_numpy(rng.uniform(0, 1, (6, 40)), fmt), np.abs(edge)])
    term = np.concatenate([_round_numpy(rng.uniform(0, 1, (6, 40)) * np.exp2(
        rng.integers(-30, 18, (6, 40))), fmt), _round_numpy(edge[::-1] * 0.75, fmt)])
    s = np.zeros(len(scale))
    args = (fmt.precision, fmt.emin, fmt.max_finite)
    with np.errstate(invalid="ignore", over="ignore"):
        for b in range(scale.shape[1]):
            s = round_compiled(round_compiled(s * scale[:, b], *args) + term[:, b], *args)
    got = scaled_sum_compiled(scale, term, *args)
    _same(got, s)
