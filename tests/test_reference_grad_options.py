"""The certified gradient with training options (truth.grad + truth.grad_options) against
mpmath at far higher precision (direct formulas, no tricks) and torch's float64 autograd."""
import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath import mp
from tolerances import CHECK_PREC, GRAD_BITS, GRAD_DD_REL, TORCH_F64_REL

from precision_lab import InputError, reference_grad
from precision_lab.numerics.options import LossOptions
from precision_lab.truth.grad import reference_grad_dd


def direct(x, target, o: LossOptions, den=1, prec=CHECK_PREC):
    """dL/dx_i = (B + 2 zw lse) p_i - b_i, times 1 - tanh^2 under the soft-cap, at `prec` bits
    straight from the definition (softmax, then the subtraction)."""
    c = len(x)
    with mpmath.workprec(prec):
        eps, z = mp.mpf(o.label_smoothing), mp.mpf(o.z_loss)
        w = [mp.one] * c if o.weight is None else [mp.mpf(v) for v in o.weight]
        if o.softcap is None:
            y = [mp.mpf(v) if v != -np.inf else None for v in x]
            dy = [1] * c
        else:
            k = mp.mpf(o.softcap)
            y = [k * mp.tanh(mp.mpf(v) / k) for v in x]
            dy = [1 - mp.tanh(mp.mpf(v) / k) ** 2 for v in x]
        e = [mp.exp(v) if v is not None else mp.zero for v in y]
        s = mp.fsum(e)
        lse = mp.log(s)
        if o.probabilities:
            b = [w[i] * ((1 - eps) * mp.mpf(target[i]) + eps / c) for i in range(c)]
            zw = z
        else:
            b = [w[i] * ((1 - eps) * (i == target) + eps / c) for i in range(c)]
            zw = z * w[target]
        a = mp.fsum(b) + 2 * zw * lse
        return [(a * e[i] / s - b[i]) * dy[i] / den for i in range(c)]


def assert_entries(got, want, bits=GRAD_BITS):
    for g, w in zip(got, want):
        if w == 0:
            assert g == 0, (g, w)
        else:
            with mpmath.workprec(CHECK_PREC):
                assert abs(g - w) <= abs(w) * mp.ldexp(1, -bits), (g, w)


LS = {"label_smoothing": 0.1}
ADVERSARIAL = [
    # p_t within exp(-80) of 1 with smoothing: the target entry -(1 - eps)(1 - p_t) + ...
    ([80.0, 0.0, -3.0], 0, LS),
    ([80.0, 0.0, -3.0], 0, {"z_loss": 1e-4}),
    ([1000.0, 0.0, 0.0, 999.0], 3, {**LS, "z_loss": 1e-4}),
    # an entry whose p_i nearly equals b_i / A: A p_i - b_i cancels to ~1e-17 relative
    ([0.0, float(np.log(0.1 / 3 / (1 - 0.1 / 3 * 2) * 2))], 0, LS),
    # masked classes (p = 0: the entry is -b_i), a masked target
    ([1.0, -np.inf, 2.0, 0.5], 0, LS),
    ([1.0, -np.inf, 2.0, 0.5], 1, {"z_loss": 1e-2}),
    # soft-cap: large logits (sech^2 ~ exp(-400)), -inf padding becomes -c, +inf is 0
    ([1000.0, 3.0, -1000.0, -np.inf], 1, {"softcap": 5.0}),
    ([30.0, 29.0, -np.inf, np.inf], 0, {"softcap": 30.0, **LS, "z_loss": 1e-4}),
    # weights, negative and zero ones
    ([0.1, 0.2, 0.3], 1, {"weight": (2.0, -1.0, 0.0), **LS}),
    # probability targets with zeros, smoothing mixing in the uniform
    ([5.0, -2.0, 0.25, 40.0], (0.0, 0.0, 1.0, 0.0), {"probabilities": True, **LS}),
    ([5.0, -2.0, 0.25, 40.0], (0.5, 0.25, 0.0, 0.25),
     {"probabilities": True, "z_loss": 1e-3, "weight": (1.0, 3.0, 0.5, 2.0)}),
    # logits near zero where lse = log(1 + tiny) matters for the z-loss term
    ([-50.0, 1e-30, -60.0], 1, {"z_loss": 1.0}),
]


@pytest.mark.parametrize("row,target,spec", ADVERSARIAL)
def test_against_definition_at_far_higher_precision(row, target, spec):
    o = LossOptions(reduction="none", **spec)
    t = np.array([target]) if not o.probabilities else np.array([target])
    g = reference_grad(np.array([row]), t, options=o)[0]
    assert_entries(g, direct(row, target, o))


def test_exact_zeros_are_exact():
    # eps = 1 on equal logits: p = b / A = 1 / C exactly, every entry exactly 0
    g = reference_grad(np.full((1, 3), 2.5), np.array([1]), "none",
                       options=LossOptions(label_smoothing=1.0))
    assert all(v == 0 for v in g[0])
    # a zero weight at a masked class, and a zero weight on an ignored-free row
    g = reference_grad(np.array([[0.0, -np.inf]]), np.array([0]), "none",
                       options=LossOptions(weight=(1.0, 0.0), label_smoothing=0.5))
    assert g[0, 1] == 0 and g[0, 0] == 0  # one live class: p_0 = 1, b_0 = A


def test_ignored_rows_zero_and_mean_over_kept_weights():
    x = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0], [0.0, 0.0, 7.0]])
    t = np.array([2, -100, 0])
    o = LossOptions(weight=(0.5, 2.0, 4.0), label_smoothing=0.2)
    g = reference_grad(x, t, "mean", options=o)
    assert all(v == 0 for v in g[1])
    d = 4.0 + 0.5  # the kept rows' target weights
    for r in (0, 2):
        assert_entries(g[r], direct(x[r], t[r], o, den=d))


def test_sum_is_none_and_zero_denominator_is_ieee():
    x = np.array([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]])
    t = np.array([0, 1])
    o = LossOptions(weight=(1.0, -1.0, 3.0))
    hi_none, _ = reference_grad_dd(x, t, "none", options=o, cache=False)
    hi_sum, _ = reference_grad_dd(x, t, "sum", options=o, cache=False)
    assert np.array_equal(hi_none, hi_sum)
    hi, lo = reference_grad_dd(x, t, "mean", options=o, cache=False)  # D = 1 - 1 = 0
    assert np.array_equal(hi, np.sign(hi_none) * np.inf) and (lo == 0).all()


def test_dd_form_is_the_certified_midpoint():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 9)) * 4
    t = np.array([0, 4, 8])
    o = LossOptions(label_smoothing=0.1, z_loss=1e-4, softcap=3.0, weight=tuple(rng.random(9)))
    g = reference_grad(x, t, "mean", options=o)
    hi, lo = reference_grad_dd(x, t, "mean", options=o, cache=False)
    with mpmath.workprec(300):
        for r in range(3):
            for i in range(9):
                v = g[r, i]
                assert abs(mp.mpf(hi[r, i]) + mp.mpf(lo[r, i]) - v) <= abs(v) * GRAD_DD_REL


def test_plain_options_agree_with_the_plain_gradient():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6)) * 10
    t = rng.integers(0, 6, 4)
    for red in ("none", "mean"):
        a, _ = reference_grad_dd(x, t, red, cache=False)
        b, _ = reference_grad_dd(x, t, red, options=LossOptions(), cache=False)
        assert np.allclose(a, b, rtol=2.0 ** -100, atol=0)


def test_cache_keys_differ_by_options(tmp_path):
    x = np.array([[1.0, 2.0, 0.5]])
    t = np.array([0])
    a = reference_grad_dd(x, t, "none", options=LossOptions(label_smoothing=0.1), cache=tmp_path)
    b = reference_grad_dd(x, t, "none", options=LossOptions(label_smoothing=0.2), cache=tmp_path)
    c = reference_grad_dd(x, t, "none", options=LossOptions(label_smoothing=0.1), cache=tmp_path)
    assert not np.array_equal(a[0], b[0]) and np.array_equal(a[0], c[0])
    assert len(list(tmp_path.glob("grad-*.npz"))) == 2


def test_bad_input_is_input_error():
    with pytest.raises(InputError):
        reference_grad(np.zeros((1, 3)), np.array([5]), options=LossOptions())
    with pytest.raises(InputError):
        reference_grad(np.zeros((1, 3)), np.array([0]), "max", options=LossOptions())
    with pytest.raises(InputError):
        reference_grad(np.zeros((1, 3)), np.array([0]), options=LossOptions(weight=(1.0,)))


def torch_grad(x, targets, o: LossOptions, reduction):
    """torch float64 autograd: F.cross_entropy with the options, the soft-cap and the z-loss
    written in torch."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = xt if o.softcap is None else o.softcap * torch.tanh(xt / o.softcap)
    w = None if o.weight is None else torch.tensor(o.weight, dtype=torch.float64)
    n = len(x)
    if o.probabilities:
        tg = torch.tensor(targets, dtype=torch.float64)
        kw, keep, wr, den = {}, torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.float64), n
    else:
        tg = torch.tensor(targets, dtype=torch.int64)
        kw = {"ignore_index": o.ignore_index}
        keep = tg != o.ignore_index
        wr = torch.ones(n, dtype=torch.float64) if w is None else w[tg.clamp(min=0)]
        den = torch.where(keep, wr, 0.0).sum()
    loss = torch.nn.functional.cross_entropy(y, tg, weight=w, reduction="none",
                                             label_smoothing=o.label_smoothing, **kw)
    lse = torch.logsumexp(y, dim=1)
    loss = loss + torch.where(keep, o.z_loss * wr * lse * lse, 0.0)
    (loss.sum() / den if reduction == "mean" else loss.sum()).backward()
    return xt.grad.numpy()


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), weight=st.booleans(), ignore=st.booleans(),
       eps=st.sampled_from([0.0, 0.1, 0.7]), probs=st.booleans(),
       z=st.sampled_from([0.0, 1e-4, 0.1]), cap=st.sampled_from([None, 2.0, 30.0]),
       reduction=st.sampled_from(["none", "mean", "sum"]))
def test_against_torch_float64_autograd(seed, weight, ignore, eps, probs, z, cap, reduction):
    rng = np.random.default_rng(seed)
    n, c = 5, 7
    x = rng.standard_normal((n, c)) * rng.choice([1.0, 5.0, 20.0])
    w = tuple((rng.random(c) + 0.1).tolist()) if weight else None
    if probs:
        t = rng.random((n, c))
        o = LossOptions(weight=w, label_smoothing=eps, probabilities=True, z_loss=z, softcap=cap)
    else:
        t = rng.integers(0, c, n)
        if ignore:
            t[0] = 2  # ignore_index 2: a class, as torch allows
        o = LossOptions(weight=w, ignore_index=2 if ignore else -100, label_smoothing=eps,
                        z_loss=z, softcap=cap)
    hi, lo = reference_grad_dd(x, t, reduction, options=o, cache=False)
    want = torch_grad(x, t, o, reduction)
    scale = np.max(np.abs(hi), axis=1, keepdims=True)
    # relative to the entry, or to the row's largest where an entry is ~1e-12 of it (torch's
    # float64 sums lose absolute precision near the true cancellation of A p_i - b_i)
    kept = (scale > 0)[:, 0]  # ignored rows: exactly 0 in both
    assert (want[~kept] == 0).all()
    err = np.abs(want - (hi + lo))[kept] / np.maximum(np.abs(hi), scale * 1e-4)[kept]
    # torch's tanh backward forms 1 - tanh^2 in float64, which cancels where |x / c| is large:
    # its own error there is ~2**-52 / sech^2(x / c), allowed on top
    cond = 1.0 if cap is None else np.cosh(np.minimum(np.abs(x) / cap, 300.0)) ** 2
    allowed = TORCH_F64_REL + 2.0 ** -50 * np.broadcast_to(cond, x.shape)[kept]
    assert (err <= allowed).all()
