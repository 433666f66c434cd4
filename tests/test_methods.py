import math

import numpy as np
import pytest
import torch

from precision_lab import FORMATS, METHODS, Arithmetic, batch_mean, get_method, round_to_format
from precision_lab.errors import InputError

NAMES = list(FORMATS) + ["p5_emin-14_emax15"]
TORCH = [n for n in NAMES if METHODS["torch"].runs_in(n)]


def scalar_definition(method, row, t, fmt, acc):
    """Each method written out one scalar operation at a time, every result rounded."""
    R = lambda v: float(round_to_format(v, fmt))  # noqa: E731
    A = R if acc == "working" or fmt.precision >= 24 else \
        (lambda v: float(round_to_format(v, FORMATS["float32"])))

    def total(vals):
        s = 0.0
        for v in vals:
            s = A(s + v)
        return R(s)

    def ex(v):
        try:
            return R(math.exp(v))
        except OverflowError:
            return math.inf

    def lg(v, f=math.log):
        if v == 0:
            return R(-math.inf)  # NaN in a format without infinities (float8_e4m3fn)
        return R(f(v)) if v == v and v != math.inf else v

    def div(a, b):
        if b == math.inf and a == math.inf:
            return math.nan
        return R(a / b) if b != 0 else math.inf

    a = max(row)
    if method == "naive":
        e = [ex(v) for v in row]
        return -lg(div(e[t], total(e)))
    e = [ex(R(v - a)) for v in row]
    if method in ("softmax_eps", "softmax_log"):
        p = div(e[t], total(e))
        return -lg(R(p + R(1e-7))) if method == "softmax_eps" else -lg(p)
    if method == "logsumexp":
        return R(R(a + lg(total(e))) - row[t])
    if method == "log1p":
        k = row.index(a)
        s = total([v for i, v in enumerate(e) if i != k])
        return R(R(a + lg(s, math.log1p) if s else a) - row[t])
    if method == "log_softmax":
        return -R(R(row[t] - a) - lg(total(e)))
    if method == "online":
        from precision_lab.numerics.methods import ONLINE_BLOCK
        m, s = -math.inf, 0.0
        for b in range(0, len(row), ONLINE_BLOCK):
            blk = row[b:b + ONLINE_BLOCK]
            mb = max(blk)
            sb = total([ex(R(v - mb)) for v in blk])
            new = max(m, mb)
            scale = 0.0 if m == -math.inf else ex(R(m - new))
            s = R(R(s * scale) + R(sb * ex(R(mb - new))))
            m = new
        return R(R(m + lg(s)) - row[t])
    raise AssertionError(method)


ROWS = [
    ([0.0, 0.0, 0.0, 1.0], 3),
    ([3.5, -2.25, 0.125, 7.0, 1.0], 1),
    ([10.0, 10.5, 11.0, 9.0], 2),
    ([0.1, 0.2, 0.3], 0),
    ([-30.0, 5.0, 4.0, 5.0], 3),
]


@pytest.mark.parametrize("fmt_name", NAMES)
@pytest.mark.parametrize("method", [m for m in METHODS if m != "torch"])
@pytest.mark.parametrize("acc", ["working", "float32"])
def test_method_matches_scalar_definition(fmt_name, method, acc):
    fmt = FORMATS[fmt_name]
    rng = np.random.default_rng(7)
    rows = [(list(map(float, fmt.round(r))), t) for r, t in ROWS]
    rows += [(list(map(float, fmt.round(rng.standard_normal(c) * 4))), 11) for c in (40, 40, 600)]
    for row, t in rows:
        got = get_method(method)(np.array([row]), np.array([t]), fmt, acc)[0]
        want = scalar_definition(method, row, t, fmt, acc)
        assert got == want or (math.isnan(got) and math.isnan(want)), (row, t, got, want)


@pytest.mark.parametrize("fmt_name", [n for n in NAMES if FORMATS[n].precision >= 8])
def test_naive_overflows_past_log_max(fmt_name):
    # (float8: the thresholds are not resolved by 3-4 bits, and eps = 1e-7 underflows)
    """exp overflows once the logit's exp passes max_finite: finite just below, not above."""
    fmt = FORMATS[fmt_name]
    below = float(fmt.round(fmt.overflow_logit * (1 - 1e-3)))
    above = float(fmt.round(fmt.overflow_logit * (1 + 1e-2)))
    assert below < fmt.overflow_logit < above
    x = np.array([[below, 0.0], [above, 0.0], [above, 0.0]])
    out = METHODS["naive"](x, np.array([1, 1, 0]), fmt)
    assert np.isfinite(out[0])
    assert not np.isfinite(out[1]) and not np.isfinite(out[2])
    for stable in ("logsumexp", "log1p", "log_softmax", "online", "softmax_eps"):
        assert np.isfinite(METHODS[stable](x, np.array([1, 1, 0]), fmt)).all()


def test_float16_sum_stalls_at_2048_and_float32_accumulator_does_not():
    """4096 equal logits: the loss is log 4096 exactly; a float16 running sum stops at 2048."""
    fmt = FORMATS["float16"]
    x, t = np.zeros((1, 4096)), np.array([0])
    working = METHODS["logsumexp"](x, t, fmt, "working")[0]
    mixed = METHODS["logsumexp"](x, t, fmt, "float32")[0]
    assert working == float(fmt.round(math.log(2048)))
    assert mixed == float(fmt.round(math.log(4096)))


@pytest.mark.parametrize("fmt_name", ["float16", "bfloat16"])
def test_sequential_sum_rounds_every_partial_sum(fmt_name):
    fmt = FORMATS[fmt_name]
    v = fmt.round(np.random.default_rng(1).random((3, 3000)))
    s = np.zeros(3)
    for j in range(v.shape[1]):
        s = fmt.round(s + v[:, j])
    assert np.array_equal(Arithmetic(fmt).sum(v), s)


def test_torch_method_says_which_formats_it_cannot_run_in():
    assert set(TORCH) == {"float16", "bfloat16", "float32", "float64"}
    x, t = np.zeros((2, 3)), np.array([0, 1])
    for name, why in [("float8_e5m2", "no CPU kernel"), ("float8_e4m3fn", "no CPU kernel"),
                      ("tf32", "no dtype"), ("p5_emin-14_emax15", "no dtype"),
                      ("float16_sr", "rounds to nearest")]:
        with pytest.raises(InputError, match=why):
            METHODS["torch"](x, t, FORMATS[name])
        assert METHODS["torch"].accumulators(FORMATS[name]) == []


@pytest.mark.parametrize("fmt_name", TORCH)
def test_torch_method_is_torch(fmt_name):
    fmt = FORMATS[fmt_name]
    rng = np.random.default_rng(3)
    x = fmt.round(rng.standard_normal((6, 9)) * 3)
    t = rng.integers(0, 9, 6)
    want = torch.nn.functional.cross_entropy(torch.tensor(x).to(fmt.torch_dtype),
                                             torch.tensor(t), reduction="none")
    assert np.array_equal(METHODS["torch"](x, t, fmt), want.double().numpy())
    mean = torch.nn.functional.cross_entropy(torch.tensor(x).to(fmt.torch_dtype), torch.tensor(t))
    assert METHODS["torch"].batch_mean(None, fmt, x=x, targets=t) == float(mean.double())


def test_batch_mean_rounds_sum_then_division():
    fmt = FORMATS["float16"]
    losses = np.array([1.0, 2.0, 4.0])
    assert batch_mean(losses, fmt) == float(fmt.round(7.0 / 3.0))


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="naive.*logsumexp.*torch"):
        get_method("fast")
    with pytest.raises(ValueError, match="working, float32"):
        Arithmetic(FORMATS["float16"], "float8")


def test_adding_a_method_is_one_function_and_one_registration():
    from precision_lab.numerics.methods import register

    @register("test_double_log", "2 log", "a throwaway method for this test")
    def double_log(x, targets, fmt, acc):
        return Arithmetic(fmt, acc).log(np.full(len(targets), 2.0))

    try:
        assert METHODS["test_double_log"](np.zeros((2, 3)), np.array([0, 1]), "float32")[0] == \
            float(np.float32(math.log(2)))
    finally:
        del METHODS["test_double_log"]
