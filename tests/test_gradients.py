"""Every method's backward (numerics.gradients), the gradient metrics and evaluate_grad."""
import numpy as np
import pytest

from precision_lab import METHODS, evaluate_grad, get_format, grad_methods
from precision_lab.numerics.grad_metrics import grad_error_columns
from precision_lab.numerics.gradients import fused, fused_store_first, textbook, torch_grad
from precision_lab.numerics.methods import gradient_methods
from precision_lab.truth.grad import reference_grad_dd


def confident(p, c=1000):
    """One row whose target (class 0) has probability p among c classes (before rounding)."""
    x = np.zeros((1, c))
    x[0, 0] = np.log(p * (c - 1) / (1 - p))
    return x, np.array([0])


def test_every_method_declares_a_backward():
    assert all(m.backward is not None for m in METHODS.values())
    assert set(grad_methods()) == set(METHODS) | {"fused_store_first"}


@pytest.mark.parametrize("label", list(gradient_methods()))
def test_float64_backwards_match_the_certified_gradient(label):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 40)) * 3
    t = rng.integers(0, 40, 3)
    method, fn = gradient_methods()[label]
    fmt = get_format("float64")
    for reduction in ("none", "mean"):
        hi, lo = reference_grad_dd(x, t, reduction, cache=False)
        g = fn(x, t, fmt, "working" if method.uses_accumulator else None, reduction)
        cols = grad_error_columns(g, hi, lo, t)
        assert (cols["norm_rel"] < 1e-13).all(), (label, reduction, cols["norm_rel"])


def test_backward_output_is_in_the_format():
    x, t = confident(0.9, 50)
    fmt = get_format("bfloat16")
    x = fmt.round(x)
    for label, (m, fn) in gradient_methods().items():
        g = fn(x, t, fmt, "float32" if m.uses_accumulator else None, "mean")
        assert (fmt.round(g) == g).all(), label


def test_textbook_is_the_scalar_definition_in_float16():
    # Each operation in numpy float16 scalars (float16 +,-,/ are correctly rounded; exp of a
    # float16 in float32 then rounded equals float64 exp rounded for these inputs).
    x = np.array([[0.5, -1.25, 2.0, 0.0, 3.5]])
    f16 = np.float16
    m = f16(3.5)
    e = [f16(np.exp(np.float64(f16(f16(v) - m)))) for v in x[0]]
    s = f16(0)
    for v in e:
        s = f16(s + v)
    want = [f16(v / s) for v in e]
    want[2] = f16(want[2] - f16(1))
    got = textbook(x, np.array([2]), get_format("float16"))
    assert got[0].tolist() == [float(v) for v in want]


def test_store_first_loses_the_target_gradient_where_fused_keeps_it():
    # The failure the kernels shipped: at p_t = 0.999 in bfloat16, the softmax stored in
    # bfloat16 rounds p_t to 1 and the target gradient to 0 (100% error); the fused form
    # subtracts in float32 and keeps it to ~1%.
    fmt = get_format("bfloat16")
    x, t = confident(0.999)
    x = fmt.round(x)
    hi, lo = reference_grad_dd(x, t, cache=False)
    bad = grad_error_columns(fused_store_first(x, t, fmt, "float32"), hi, lo, t)
    good = grad_error_columns(fused(x, t, fmt, "float32"), hi, lo, t)
    assert bad["target_rel"][0] == 1.0 and bad["n_flushed"][0] == 1
    assert good["target_rel"][0] < 0.02 and good["n_flushed"][0] == 0


@pytest.mark.parametrize("name", ["logsumexp", "log1p", "log_softmax"])
def test_lse_backward_target_is_expm1_of_minus_the_loss(name):
    # The target entry expm1(x_t - lse) is expm1(-loss) of the method's own forward: it is as
    # accurate as that loss (and fails where the loss does, lse rounded near x_t).
    fmt = get_format("bfloat16")
    x, t = confident(0.97, 30)
    x = fmt.round(x)
    m = METHODS[name]
    g = m.backward(x, t, fmt, "working", "none")
    assert g[0, 0] == fmt.round(np.expm1(-m(x, t, fmt, "working")))[0]


def test_mean_is_each_row_over_n():
    fmt = get_format("float32")
    x = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]])
    t = np.array([0, 2])
    g = fused(x, t, fmt, "working", "mean")
    assert np.allclose(g, fused(x, t, fmt, "working", "none") / 2, rtol=1e-6)
    tg = torch_grad(x, t, fmt, reduction="mean")
    assert np.allclose(tg, torch_grad(x, t, fmt) / 2, rtol=1e-6)


def test_metrics_count_outcomes():
    hi = np.array([[-0.5, 0.25, 0.25, 0.0]])
    lo = np.zeros_like(hi)
    t = np.array([0])
    c = np.array([[0.5, 0.0, np.inf, 0.0]])
    cols = grad_error_columns(c, hi, lo, t)
    assert cols["target_sign_error"][0] and cols["target_rel"][0] == 2.0
    assert cols["n_flushed"][0] == 1 and cols["n_nonfinite"][0] == 1
    assert cols["entry_rel_max"][0] == np.inf and cols["norm_rel"][0] == np.inf
    exact = grad_error_columns(hi, hi, lo, t)
    assert exact["norm_rel"][0] == 0 and exact["angle"][0] == 0 and exact["entry_rel_max"][0] == 0


def test_angle_is_accurate_when_small():
    g = np.array([[-1.0, 1.0]])
    c = np.array([[-1.0, 1.0 + 1e-12]])
    a = grad_error_columns(c, g, np.zeros_like(g), np.array([0]))["angle"][0]
    assert a == pytest.approx(0.5e-12, rel=1e-3)  # arccos of the cosine would give 0


def test_evaluate_grad_is_tidy():
    x, t = confident(0.99, 20)
    df = evaluate_grad(x, t, formats=["bfloat16"], methods=["online", "torch"], cache=False)
    assert list(df["method"]) == ["online", "online", "torch"]
    assert set(df["accumulator"]) == {"working", "float32", "internal"}
    with pytest.raises(Exception, match="no backward"):
        evaluate_grad(x, t, methods=["nope"], cache=False)
