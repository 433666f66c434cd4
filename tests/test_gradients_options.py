"""Backwards with training options (numerics.optioned_grad through numerics.gradients) and
evaluate_grad(options=)."""
import numpy as np
import pytest
import torch

from precision_lab import InputError, evaluate_grad, get_format
from precision_lab.numerics.methods import gradient_methods, gradient_options
from precision_lab.numerics.options import LossOptions
from precision_lab.truth.grad import reference_grad_dd

RNG = np.random.default_rng(11)
X = RNG.standard_normal((5, 40)) * 4
T = RNG.integers(0, 40, 5)
FULL = LossOptions(weight=tuple((RNG.random(40) + 0.5).tolist()), label_smoothing=0.1,
                   z_loss=1e-4, softcap=30.0)


@pytest.mark.parametrize("label", list(gradient_methods()))
@pytest.mark.parametrize("fmt", ["bfloat16", "float32"])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_default_options_are_the_plain_backward_bit_for_bit(label, fmt, reduction):
    m, fn = gradient_methods()[label]
    f = get_format(fmt)
    x = f.round(X)
    for acc in m.accumulators(f):
        a = None if acc == "internal" else acc
        plain = fn(x, T, f, a, reduction)
        opt = fn(x, T, f, a, reduction, options=LossOptions(reduction=reduction))
        assert np.array_equal(plain, opt)


@pytest.mark.parametrize("label", list(gradient_methods()))
def test_every_entry_is_a_value_of_the_format_and_ignored_rows_are_zero(label):
    m, fn = gradient_methods()[label]
    f = get_format("float16")
    t = T.copy()
    t[2] = -100
    o = FULL if "z_loss" in gradient_options()[label] else \
        LossOptions(label_smoothing=0.1, softcap=30.0, weight=FULL.weight)
    for acc in m.accumulators(f):
        g = fn(f.round(X), t, f, None if acc == "internal" else acc, "mean", options=o)
        assert np.array_equal(f.round(g), g)
        assert (g[2] == 0).all() and np.isfinite(g).all()


@pytest.mark.parametrize("label", list(gradient_methods()))
@pytest.mark.parametrize("probs", [False, True])
def test_float64_backwards_match_the_certified_gradient(label, probs):
    m, fn = gradient_methods()[label]
    f = get_format("float64")
    z = 1e-4 if "z_loss" in gradient_options()[label] else 0.0
    t = RNG.random(X.shape) if probs else T
    o = LossOptions(weight=FULL.weight, label_smoothing=0.1, z_loss=z, softcap=5.0,
                    probabilities=probs)
    hi, lo = reference_grad_dd(X, t, "mean", options=o, cache=False)
    g = fn(X, t, f, None if m.own_reduction else "working", "mean", options=o)
    scale = np.abs(hi).max(axis=1, keepdims=True)
    # the soft-cap's 1 - tanh^2 (autograd's form) loses ~ u cosh^2(x / c) relative
    tol = 1e-13 * np.cosh(np.abs(X) / 5.0) ** 2
    assert (np.abs(g - hi) <= tol * scale).all()


def test_softcap_chain_rule_cancels_as_autograd_does():
    # x / c = 8: 1 - tanh^2 = 4.5e-7 is ~7.5 float32 ulps of 1 - tanh: the emulated methods
    # and torch float32 form it with a large error, the truth (sech^2) does not
    x = np.array([[240.0, 0.0, -1.0]], dtype=np.float64)
    t = np.array([1])
    o = LossOptions(softcap=30.0, reduction="none")
    f = get_format("float32")
    hi, _ = reference_grad_dd(x, t, options=o, cache=False)
    lse = gradient_methods()["logsumexp"][1](x, t, f, "working", "none", options=o)
    tg = gradient_methods()["torch"][1](x, t, f, None, "none", options=o)
    err = abs(lse[0, 0] - hi[0, 0]) / abs(hi[0, 0])
    assert err > 1e-2 and abs(tg[0, 0] - hi[0, 0]) / abs(hi[0, 0]) > 1e-2
    assert abs(lse[0, 1] - hi[0, 1]) / abs(hi[0, 1]) < 1e-6  # sech^2(0) = 1: no loss there


def test_torch_backward_is_autograd_of_the_options_loss():
    xt = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    y = 30.0 * torch.tanh(xt / 30.0)
    w = torch.tensor(FULL.weight, dtype=torch.float64)
    tg = torch.tensor(T)
    loss = torch.nn.functional.cross_entropy(y, tg, weight=w, label_smoothing=0.1,
                                             reduction="sum")
    lse = torch.logsumexp(y, dim=1)
    (loss + (1e-4 * w[tg] * lse * lse).sum()).backward()
    g = gradient_methods()["torch"][1](X, T, get_format("float64"), None, "sum", options=FULL)
    assert np.allclose(g, xt.grad.numpy(), rtol=1e-14, atol=0)


def test_option_a_backward_cannot_express_is_refused_by_name():
    with pytest.raises(InputError, match="z_loss"):
        evaluate_grad(X, T, formats=["float32"], methods=["softmax_log"],
                      options=LossOptions(z_loss=1e-4), cache=False)


def test_evaluate_grad_with_options():
    t = T.copy()
    t[0] = -100
    df = evaluate_grad(X[:, :8], np.where(t < 0, t, t % 8),
                       formats=["bfloat16", "float32"], options=LossOptions(z_loss=1e-4),
                       cache=False)
    assert "softmax_log" not in set(df["method"]) and "logsumexp" in set(df["method"])
    assert set(df["reduction"]) == {"mean"} and set(df["options"]) == {"z_loss=0.0001"}
    ign = df[~df["kept"]]
    assert len(ign) and (ign["n_nonfinite"] == 0).all() and (ign["norm_rel"] == 0).all()
    f32 = df[(df["format"] == "float32") & df["kept"]]
    assert (f32["entry_rel_max"] < 1e-5).all()
    df = evaluate_grad(X[:, :8], np.where(t < 0, t, t % 8), formats=["float16"],
                       reduction="none", options=LossOptions(label_smoothing=0.1),
                       cache=False)
    assert set(df["method"]) == set(gradient_methods()) and set(df["reduction"]) == {"none"}
