"""The certified gradient (truth.grad) against mpmath at far higher precision and closed forms."""
import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath import mp
from tolerances import CHECK_PREC, GRAD_BITS, GRAD_DD_REL

from precision_lab import InputError, UncertifiedError, reference_grad
from precision_lab.truth.grad import reference_grad_dd


def direct(row, t, prec=CHECK_PREC, n=1):
    """softmax(x) - onehot(t), straight from the definition at `prec` bits (the target entry
    as p_t - 1: at 4000 bits the cancellation costs nothing)."""
    with mpmath.workprec(prec):
        e = [mp.exp(mp.mpf(v)) if v != -np.inf else mp.zero for v in row]
        s = mp.fsum(e)
        return [(v / s - (1 if i == t else 0)) / n for i, v in enumerate(e)]


def assert_entries(got, want, bits=GRAD_BITS):
    for g, w in zip(got, want):
        if w == 0:
            assert g == 0
        else:
            with mpmath.workprec(CHECK_PREC):
                assert abs(g - w) <= abs(w) * mp.ldexp(1, -bits), (g, w)


ADVERSARIAL = [
    # p_t within 2**-100 of 1: the target entry is -(sum of the others), ~exp(-80)
    ([80.0, 0.0, -3.0], 0),
    ([1000.0, 0.0, 0.0, 999.0], 3),
    # entries ~exp(-1000), below float64's range, kept with 100 bits
    ([0.0, -1000.0, -1000.5, 3.0], 0),
    ([1e-30, 1.0, -1e4, 1e-300], 2),
    # large logits, far apart exponents, masked classes
    ([1e30, 1e30 - 2.0 ** 50, -np.inf, 0.0], 1),
    ([3.5, 3.5, 3.5, -np.inf], 2),
    ([0.1, 0.2, 0.3], 1),
]


@pytest.mark.parametrize("row,t", ADVERSARIAL)
def test_against_definition_at_far_higher_precision(row, t):
    g = reference_grad(np.array([row]), np.array([t]))[0]
    assert_entries(g, direct(row, t))


def test_mean_divides_by_n():
    x = np.array([[80.0, 0.0, -3.0], [0.5, -0.25, 2.0], [1.0, 1.0, 1.0]])
    t = np.array([0, 1, 2])
    g = reference_grad(x, t, reduction="mean")
    for r in range(3):
        assert_entries(g[r], direct(x[r], t[r], n=3))


def test_target_entry_near_certain_is_sum_of_others():
    # p_t = 1 - ~exp(-120): 1 - p_t computed as a difference would be 0 in any precision
    # below ~175 bits; the certified entry is -exp(-120) / (1 + exp(-120)) to 100 bits.
    g = reference_grad(np.array([[120.0, 0.0]]), np.array([0]))[0]
    with mpmath.workprec(CHECK_PREC):
        want = -mp.exp(-120) / (1 + mp.exp(-120))
    assert_entries([g[0]], [want])


@pytest.mark.parametrize("d", [-50.0, -3.25, 0.0, 1e-8, 7.5, 90.0])
def test_two_classes_are_the_logistic_function(d):
    g = reference_grad(np.array([[d, 0.0]]), np.array([0]))[0]
    with mpmath.workprec(CHECK_PREC):
        # g = (sigma(d) - 1, 1 - sigma(d)) = (-sigma(-d), sigma(-d))
        want = [-1 / (1 + mp.exp(d)), 1 / (1 + mp.exp(d))]
    assert_entries(g, want)


@pytest.mark.parametrize("c", [1, 2, 3, 10, 1000])
def test_equal_logits_give_one_over_c_minus_onehot(c):
    t = c // 2
    g = reference_grad(np.full((1, c), 2.5), np.array([t]))[0]
    with mpmath.workprec(CHECK_PREC):
        want = [mp.mpf(1) / c - (1 if i == t else 0) for i in range(c)]
    assert_entries(g, want)


def test_masked_classes_are_exactly_zero():
    x = np.array([[1.0, -np.inf, 2.0, -np.inf], [-np.inf, 0.0, -np.inf, -np.inf]])
    g = reference_grad(x, np.array([0, 1]))
    assert g[0, 1] == 0 and g[0, 3] == 0
    assert all(v == 0 for v in g[1])  # only the target is finite: p_t = 1 exactly
    hi, lo = reference_grad_dd(x, np.array([0, 1]), cache=False)
    assert hi[0, 1] == 0 and lo[0, 1] == 0 and (hi[1] == 0).all()


def test_non_finite_policy():
    x = np.array([[np.nan, 0.0], [np.inf, 0.0], [-np.inf, 0.0], [-np.inf, -np.inf]])
    g = reference_grad(x, np.array([1, 1, 0, 0]))
    assert all(mp.isnan(v) for v in g[0]) and all(mp.isnan(v) for v in g[1])
    assert g[2, 0] == -1 and g[2, 1] == 1  # -inf target: p_t = 0
    assert all(mp.isnan(v) for v in g[3])


def test_rows_sum_to_zero():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 50)) * 10
    g = reference_grad(x, rng.integers(0, 50, 4))
    with mpmath.workprec(300):
        for row in g:
            assert abs(mp.fsum(row)) < mp.ldexp(1, -GRAD_BITS)


def test_double_double_is_the_certified_value_rounded():
    x = np.array([[0.0, -700.0, -744.0, -745.5, -760.0, 3.0, 1e-20],
                  [80.0, 0.0, -3.0, 1.0, -700.0, -50.0, 2.0]])
    t = np.array([5, 0])
    hi, lo = reference_grad_dd(x, t, cache=False)
    want = reference_grad(x, t)
    with mpmath.workprec(CHECK_PREC):
        for r in range(2):
            for i in range(x.shape[1]):
                w = want[r, i]
                rn = mpmath.libmp.to_float(w._mpf_, rnd="n")
                assert hi[r, i] == rn                       # hi: round to nearest, subnormals too
                if abs(w) >= mp.ldexp(1, -969):
                    assert abs(mp.mpf(hi[r, i]) + lo[r, i] - w) <= abs(w) * GRAD_DD_REL


def test_dd_cache_round_trip(tmp_path):
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.5, 0.25]])
    t = np.array([1, 0])
    a = reference_grad_dd(x, t, reduction="mean", cache=tmp_path)
    files = list(tmp_path.glob("grad-*.npz"))
    assert len(files) == 1
    b = reference_grad_dd(x, t, reduction="mean", cache=tmp_path)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    c = reference_grad_dd(x, t, reduction="none", cache=tmp_path)  # a distinct key
    assert len(list(tmp_path.glob("grad-*.npz"))) == 2 and (c[0] == 2 * a[0]).all()
    files[0].write_bytes(b"garbage")  # unreadable entries are recomputed, not trusted
    d = reference_grad_dd(x, t, reduction="mean", cache=tmp_path)
    assert (d[0] == a[0]).all()


def test_bad_reduction_is_input_error():
    with pytest.raises(InputError, match="reduction"):
        reference_grad(np.zeros((1, 2)), np.array([0]), reduction="max")


def test_uncertified_at_cap_raises():
    with pytest.raises(UncertifiedError, match="row 0"):
        reference_grad(np.array([[1e300, 0.0, 1.0]]), np.array([1]), max_prec=64)
    assert math.isfinite(float(reference_grad(np.array([[1e300, 0.0, 1.0]]),
                                              np.array([0]))[0, 1]))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(st.floats(-800, 800), st.just(-np.inf)), min_size=1, max_size=6),
       st.integers(0, 5), st.sampled_from(["none", "mean"]))
def test_random_rows_against_the_definition(row, t, reduction):
    t = t % len(row)
    x = np.array([row, row[::-1]])
    targets = np.array([t, len(row) - 1 - t])
    g = reference_grad(x, targets, reduction=reduction)
    n = 2 if reduction == "mean" else 1
    for r in range(2):
        if np.isfinite(x[r]).any():
            assert_entries(g[r], direct(x[r], targets[r], n=n))
        else:
            assert all(mp.isnan(v) for v in g[r])
