"""Training options (numerics.options): validation, torch's semantics, the certified truth."""
import math

import mpmath
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath import mp
from tolerances import OPTIONS_CHECK_PREC, REFERENCE_BITS, TORCH_F64_REL

from precision_lab import InputError, reference_loss, reference_mean
from precision_lab.numerics.options import LossOptions, check_batch
from precision_lab.truth.options import certified_option_losses
from precision_lab.truth.reference import reference_truth


def torch_f64(x, targets, o: LossOptions):
    """torch's float64 F.cross_entropy with o (z-loss and soft-cap composed from torch ops as
    numerics.options defines them): (per-row losses, mean)."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    if o.softcap is not None:
        xt = o.softcap * torch.tanh(xt / o.softcap)
    tg = torch.from_numpy(np.asarray(targets))
    wt = None if o.weight is None else torch.tensor(o.weight, dtype=torch.float64)
    kw = dict(weight=wt, label_smoothing=o.label_smoothing)
    if not o.probabilities:
        kw["ignore_index"] = o.ignore_index
    rows = F.cross_entropy(xt, tg, reduction="none", **kw)
    mean = F.cross_entropy(xt, tg, reduction="mean", **kw)
    if o.z_loss:
        lse2 = torch.logsumexp(xt, 1) ** 2
        if o.probabilities:
            zl, d = lse2, len(tg)
        else:
            keep = tg != o.ignore_index
            wr = torch.ones(len(tg), dtype=torch.float64) if wt is None else wt[tg.clamp(min=0)]
            zl, d = torch.where(keep, wr * lse2, 0.0), (wr * keep).sum()
        rows, mean = rows + o.z_loss * zl, mean + o.z_loss * zl.sum() / d
    return rows.numpy(), float(mean)


def direct(x, targets, o: LossOptions, prec=OPTIONS_CHECK_PREC):
    """The definitions of numerics.options, term by term, at a precision far above any
    cancellation: (per-row losses, mean) as mpf (finite inputs only)."""
    n, c = x.shape
    w = [1.0] * c if o.weight is None else list(o.weight)
    with mpmath.workprec(prec):
        rows, den = [], mp.zero
        for i in range(n):
            y = [mp.mpf(v) for v in x[i]]
            if o.softcap is not None:
                y = [o.softcap * mp.tanh(v / o.softcap) for v in y]
            lse = mp.log(mp.fsum(mp.exp(v) for v in y))
            logp = [v - lse for v in y]
            eps = mp.mpf(o.label_smoothing)
            if o.probabilities:
                q = [(1 - eps) * mp.mpf(p) + eps / c for p in targets[i]]
                rows.append(-mp.fsum(w[j] * q[j] * logp[j] for j in range(c))
                            + o.z_loss * lse ** 2)
                den += 1
                continue
            t = int(targets[i])
            if t == o.ignore_index:
                rows.append(mp.zero)
                continue
            smooth = -mp.fsum(w[j] * logp[j] for j in range(c))
            rows.append((1 - eps) * -w[t] * logp[t] + eps / c * smooth
                        + mp.mpf(o.z_loss) * w[t] * lse ** 2)
            den += w[t]
        return rows, mp.fsum(rows) / den


def batch(seed, n=5, c=9, scale=3.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * scale
    t = rng.integers(0, c, n)
    t[1] = -100
    return x, t, rng.uniform(0.1, 2.0, c), rng.uniform(0.0, 1.0, (n, c))


def every_option(w):
    return [
        LossOptions(),
        LossOptions(weight=w),
        LossOptions(label_smoothing=0.1),
        LossOptions(weight=w, label_smoothing=0.25),
        LossOptions(z_loss=1e-4),
        LossOptions(softcap=2.0),
        LossOptions(weight=w, label_smoothing=0.1, z_loss=1e-2, softcap=3.0),
        LossOptions(ignore_index=3, label_smoothing=0.1),
        LossOptions(reduction="sum", label_smoothing=1.0),
        LossOptions(probabilities=True),
        LossOptions(probabilities=True, weight=w, label_smoothing=0.2),
        LossOptions(probabilities=True, z_loss=1e-3, softcap=1.5),
    ]


def targets_for(o, t, p):
    return p if o.probabilities else np.where(t == -100, o.ignore_index, t)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", range(12))
def test_truth_agrees_with_torch_float64(seed, k):
    x, t, w, p = batch(seed)
    o = every_option(w)[k]
    tg = targets_for(o, t, p)
    want_rows, want_mean = torch_f64(x, tg, o)
    got = certified_option_losses(x, tg, o)
    g = np.array([float(v) for v in got.rows])
    np.testing.assert_allclose(g, want_rows, rtol=TORCH_F64_REL, atol=0)
    assert abs(float(got.mean) - want_mean) <= TORCH_F64_REL * abs(want_mean)


def assert_bits(got, want, bits=REFERENCE_BITS):
    with mpmath.workprec(OPTIONS_CHECK_PREC):
        assert abs(got - want) <= abs(want) * mp.ldexp(1, -bits), (got, want)


@pytest.mark.parametrize("k", range(12))
def test_truth_has_100_bits_against_mpmath(k):
    x, t, w, p = batch(7, n=3, c=6)
    o = every_option(w)[k]
    tg = targets_for(o, t, p)
    got = certified_option_losses(x, tg, o)
    rows, mean = direct(x, tg, o)
    for g, r in zip(got.rows, rows):
        assert_bits(g, r)
    assert_bits(got.mean, mean)


HARD = [
    # smoothing where C * lse - sum x cancels: huge, nearly equal logits
    (np.array([[1e6, 1e6 + 2.0**-20, 1e6 - 2.0**-19, 1e6]]), np.array([0]),
     LossOptions(label_smoothing=0.1)),
    # a confident row: the loss is ~1e-26, the smoothing term dominates nothing
    (np.array([[0.0, -60.0, -61.0]]), np.array([0]), LossOptions(label_smoothing=1e-9)),
    # lse close to zero under a z-loss: log(e^a + e^b) ~ 0
    (np.array([[math.log(0.5), math.log(0.5) + 1e-12]]), np.array([1]), LossOptions(z_loss=1.0)),
    # soft-cap saturating: tanh(x / c) of nearly equal large logits
    (np.array([[300.0, 299.0, 100.0]]), np.array([1]), LossOptions(softcap=30.0)),
    # weights of both signs, probability targets
    (np.array([[1.0, 2.0, 3.0]]), np.array([[0.2, 0.3, 0.5]]),
     LossOptions(probabilities=True, weight=(1.0, -0.5, 2.0), label_smoothing=0.3)),
]


@pytest.mark.parametrize("x,t,o", HARD, ids=[str(i) for i in range(len(HARD))])
def test_truth_hard_cases_100_bits(x, t, o):
    got = certified_option_losses(x, t, o)
    rows, mean = direct(x, t, o, prec=3000)
    for g, r in zip(got.rows, rows):
        assert_bits(g, r)
    assert_bits(got.mean, mean)


def test_non_finite_and_degenerate_batches_follow_torch():
    x, t, w, p = batch(3, n=6, c=5)
    x[0, 2] = -math.inf               # a masked non-target class
    x[2, t[2]] = -math.inf            # a masked target
    x[3, :] = -math.inf               # every class masked
    x[4, 1] = math.inf                # a +inf logit
    x[1, 0] = math.nan                # nan in an ignored row: still 0
    w0 = w.copy()
    w0[2] = 0.0
    for o in [LossOptions(), LossOptions(label_smoothing=0.1), LossOptions(weight=w0),
              LossOptions(weight=w0, label_smoothing=0.1), LossOptions(label_smoothing=1.0),
              LossOptions(softcap=5.0), LossOptions(softcap=5.0, label_smoothing=0.1),
              LossOptions(probabilities=True), LossOptions(probabilities=True, softcap=5.0)]:
        tg = targets_for(o, t, p)
        want, _ = torch_f64(x, tg, o)
        got = np.array([float(v) for v in certified_option_losses(x, tg, o).rows])
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=o.label())
        fin = np.isfinite(want)
        np.testing.assert_array_equal(got[~fin & ~np.isnan(want)], want[~fin & ~np.isnan(want)])
        np.testing.assert_allclose(got[fin], want[fin], rtol=TORCH_F64_REL)


@pytest.mark.parametrize("o", [LossOptions(), LossOptions(label_smoothing=0.1),
                               LossOptions(weight=(1.0, 2.0, 3.0))], ids=["plain", "ls", "w"])
def test_all_ignored_batch_mean_is_nan_sum_is_zero(o):
    x = np.zeros((3, 3))
    t = np.full(3, -100)
    got = certified_option_losses(x, t, o)
    _, want = torch_f64(x, t, o)
    assert math.isnan(want) and mp.isnan(got.mean)
    assert got.total == 0 and all(v == 0 for v in got.rows)


def test_weights_summing_to_zero():
    x = np.array([[1.0, 2.0, 0.0], [0.5, 0.0, 3.0]])
    t = np.array([0, 1])
    got = certified_option_losses(x, t, LossOptions(weight=(1.0, -1.0, 5.0)))
    _, want = torch_f64(x, t, LossOptions(weight=(1.0, -1.0, 5.0)))
    assert math.isinf(want) and mp.isinf(got.mean) and (got.mean > 0) == (want > 0)
    got0 = certified_option_losses(x, t, LossOptions(weight=(0.0, 0.0, 0.0)))
    assert mp.isnan(got0.mean)


def test_reference_dispatches_options_and_keeps_the_plain_path():
    x, t, w, _ = batch(4)
    t[1] = 2
    plain = reference_loss(x, t)
    same = reference_loss(x, t, options=LossOptions())
    for a, b in zip(plain, same):
        assert_bits(b, a)
    o = LossOptions(weight=w, label_smoothing=0.1)
    m = reference_mean(None, logits=x, targets=t, options=o)
    assert m == certified_option_losses(x, t, o).mean
    with pytest.raises(InputError, match="needs logits"):
        reference_mean(None, options=o)
    truth = reference_truth(x, t, options=o, cache=False)
    assert truth.mean_hi == float(m)
    assert list(truth.hi) == [float(v) for v in certified_option_losses(x, t, o).rows]


@pytest.mark.parametrize("kwargs,match", [
    ({"reduction": "avg"}, "reduction"),
    ({"label_smoothing": 1.5}, "between 0.0 and 1.0"),
    ({"label_smoothing": "0.1"}, "real number"),
    ({"z_loss": -1.0}, "z_loss"),
    ({"softcap": 0.0}, "softcap"),
    ({"softcap": math.inf}, "softcap"),
    ({"weight": [1.0, math.nan]}, "finite"),
    ({"weight": [[1.0]]}, "1-D"),
    ({"ignore_index": 1.5}, "ignore_index"),
    ({"probabilities": True, "ignore_index": 0}, "not supported"),
])
def test_options_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        LossOptions(**kwargs)


def test_batch_validation():
    x = np.zeros((2, 3))
    with pytest.raises(InputError, match="weight has 2 entries"):
        check_batch(x, [0, 1], LossOptions(weight=(1.0, 2.0)))
    with pytest.raises(InputError, match="out of range"):
        check_batch(x, [0, -1], LossOptions())
    with pytest.raises(InputError, match="probabilities=True"):
        check_batch(x, np.ones((2, 3)), LossOptions())
    with pytest.raises(InputError, match=">= 0"):
        check_batch(x, -np.ones((2, 3)), LossOptions(probabilities=True))
    _, t = check_batch(x, [0, 5], LossOptions(ignore_index=5))
    assert t.tolist() == [0, 5]
    assert LossOptions(weight=np.array([1, 2])) == LossOptions(weight=(1.0, 2.0))
    assert LossOptions().used == frozenset() and LossOptions().label() == "plain"


def test_target_at_the_maximum_with_every_other_class_far_below():
    # the loss is T = exp(-300000) alone: terms are dropped relative to T, not to 1
    x = np.array([[0.0, -300000.0, -300001.0]])
    got = certified_option_losses(x, np.array([0]), LossOptions(label_smoothing=0.0)).rows[0]
    with mpmath.workprec(200):
        want = mp.log1p(mp.exp(-300000) + mp.exp(-300001))
    assert_bits(got, want)


@settings(max_examples=40)
@given(n=st.integers(1, 6), c=st.integers(1, 12), scale=st.sampled_from([0.1, 1.0, 10.0, 50.0]),
       eps=st.sampled_from([0.0, 0.1, 1.0]), weighted=st.booleans(),
       z=st.sampled_from([0.0, 1e-4, 0.5]), cap=st.sampled_from([None, 3.0, 30.0]),
       probs=st.booleans(), seed=st.integers(0, 2**16))
def test_truth_agrees_with_torch_float64_for_random_options(n, c, scale, eps, weighted, z, cap,
                                                            probs, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * scale
    w = tuple(rng.uniform(0.1, 2.0, c).tolist()) if weighted else None
    o = LossOptions(weight=w, label_smoothing=eps, z_loss=z, softcap=cap, probabilities=probs)
    if probs:
        tg = rng.uniform(0.0, 1.0, (n, c))
    else:
        tg = rng.integers(0, c, n)
        tg[rng.random(n) < 0.3] = -100
    want_rows, want_mean = torch_f64(x, tg, o)
    got = certified_option_losses(x, tg, o)
    np.testing.assert_allclose([float(v) for v in got.rows], want_rows, rtol=TORCH_F64_REL,
                               atol=1e-300)
    if math.isnan(want_mean):
        assert mp.isnan(got.mean)
    else:
        assert abs(float(got.mean) - want_mean) <= TORCH_F64_REL * abs(want_mean)
